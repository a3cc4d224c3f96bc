//! The dispatcher task, which forms batches, and the worker side, which runs
//! one batch on a blocking thread and routes its outputs.

use std::{
    any::Any,
    panic::{self, AssertUnwindSafe},
    sync::Arc,
};

use tokio::time::Instant;
use tracing::{error, trace, warn};

use crate::{
    Backend, ScheduleError, Timed, Timings,
    queue::{Batch, Segment},
    scheduler::Inner,
};

/// Forms batches whenever a worker is free and a queue is ready, and hands
/// each to a blocking thread. Runs until the scheduler is dropped.
///
/// Workers run on tokio's blocking pool, which under a paused test clock
/// also keeps time from auto-advancing while a backend call runs.
pub(crate) async fn run_dispatcher<B: Backend>(inner: Arc<Inner<B>>) {
    let workers = inner.config.workers;
    let mut batches = Vec::with_capacity(workers);

    loop {
        let wake_at = {
            let mut state = inner.lock_state();
            if state.stopped {
                return;
            }

            let now = Instant::now();
            while let Some(batch) = state.next_batch(workers, now, &*inner.observer) {
                batches.push(batch);
            }
            inner.notify_if_idle(&state);
            state.next_wake(workers, now)
        };

        for batch in batches.drain(..) {
            trace!(model = %inner.names[batch.model.index()], size = batch.inputs.len(), "dispatching batch");
            let worker = Arc::clone(&inner);
            tokio::task::spawn_blocking(move || worker.execute(batch));
        }

        match wake_at {
            Some(wake_at) => {
                tokio::select! {
                    () = inner.dispatch.notified() => {}
                    () = tokio::time::sleep_until(wake_at) => {}
                }
            }
            None => inner.dispatch.notified().await,
        }
    }
}

// === impl Inner ===

impl<B: Backend> Inner<B> {
    /// Runs `batch` on the backend, sends its outputs or its error to the
    /// requests in it, and frees the worker.
    ///
    /// A panic in the backend is caught and fails this batch only.
    // NOTE: `AssertUnwindSafe` assumes the backend stays usable after a
    // panic in `run_batch`. A backend whose state a panic can corrupt must
    // recover from that itself.
    pub(crate) fn execute(&self, batch: Batch<B>) {
        let Batch {
            model,
            inputs,
            segments,
        } = batch;
        let size = inputs.len();
        let name = &self.names[model.index()];

        let started = Instant::now();
        let result =
            panic::catch_unwind(AssertUnwindSafe(|| self.backend.run_batch(model, inputs)));
        let inference = started.elapsed();

        let outcome = match result {
            Ok(Ok(outputs)) if outputs.len() == size => Ok(outputs),
            Ok(Ok(outputs)) => Err(ScheduleError::Backend {
                model: Arc::clone(name),
                message: format!(
                    "backend returned {} outputs for {size} inputs",
                    outputs.len()
                ),
            }),
            Ok(Err(error)) => Err(ScheduleError::Backend {
                model: Arc::clone(name),
                message: error.to_string(),
            }),
            Err(payload) => Err(ScheduleError::Panicked {
                model: Arc::clone(name),
                message: panic_message(payload.as_ref()),
            }),
        };

        // The observer hears of the batch before any caller gets its result,
        // so a caller that sees its response also sees it counted.
        match &outcome {
            Ok(_) => self.observer.batch_executed(model, size, inference),
            Err(failure) => {
                if matches!(failure, ScheduleError::Panicked { .. }) {
                    error!(model = %name, size, error = %failure, "backend panicked");
                } else {
                    warn!(model = %name, size, error = %failure, "backend call failed");
                }
                self.observer.batch_failed(model, size);
            }
        }
        for segment in &segments {
            for _ in 0..segment.len {
                self.observer.entry_finished(model, segment.queue_wait);
            }
        }

        let failure = match outcome {
            Ok(outputs) => {
                deliver(&segments, outputs, inference, size);
                None
            }
            Err(failure) => {
                for segment in &segments {
                    segment.slot.fail(failure.clone());
                }
                Some(failure)
            }
        };

        let mut state = self.lock_state();
        state.finish_batch(model, size, inference, &*self.observer);
        if failure.is_some() {
            // The failed requests' remaining images must not run.
            for segment in &segments {
                state.remove_request(model, &segment.slot, &*self.observer);
            }
        }
        self.notify_if_idle(&state);
        drop(state);
        self.dispatch.notify_one();
    }
}

/// Routes `outputs`, in batch order, to the requests of `segments`.
fn deliver<O>(
    segments: &[Segment<O>],
    outputs: Vec<O>,
    inference: std::time::Duration,
    size: usize,
) {
    let mut outputs = outputs.into_iter();
    for segment in segments {
        let timings = Timings {
            queue_wait: segment.queue_wait,
            inference,
            batch_size: size,
        };
        let part = outputs
            .by_ref()
            .take(segment.len)
            .map(|value| Timed { value, timings });
        segment.slot.complete(segment.start, part);
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic payload is not a string".to_owned()
    }
}
