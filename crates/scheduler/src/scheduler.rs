//! The public [`Scheduler`] handle and the response future of one request.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
};

use tokio::{
    sync::{Notify, oneshot},
    time::Instant,
};
use tracing::{debug, info};

use crate::{
    Backend, ConfigError, ModelId, ModelSpec, NoopObserver, Observer, ScheduleError,
    SchedulerConfig, Snapshot, SubmitOptions, Timed, dispatch,
    queue::Queued,
    slot::{Outcome, Slot},
    state::State,
};

/// Per-model batching queues in front of one [`Backend`], sharing
/// `workers` concurrent backend calls.
///
/// # Scheduling policy
///
/// - Each model has a FIFO queue. A batch takes up to `max_batch_size`
///   images from the front of one model's queue, splitting a request that
///   does not fit. Models are never mixed in a batch.
/// - With `max_queue_delay` zero, a batch is formed as soon as a worker is
///   free. Otherwise the queue is dispatched when it contains a full batch
///   or its oldest image has waited `max_queue_delay`, whichever comes first.
///   After [`close`](Self::close) queues are flushed without waiting.
/// - When a worker frees, models with a ready batch are served round-robin,
///   starting after the model served last. So a request at the front of a
///   ready queue waits for at most the batches already running plus one
///   batch of each other model. A request behind others of its own model
///   waits that long for each batch ahead of it.
/// - Low-priority batches are formed only while no normal image is queued
///   for any model. A running low-priority batch is not preempted, so normal
///   work may wait for up to `workers` of them.
///
/// # Admission
///
/// `submit` decides at once. A normal request is rejected when its model's
/// queued images would exceed `queue_limit` or the images queued and running
/// across all models would exceed `max_in_flight`. The rejection carries a
/// retry-after estimate: the time to run the queued batches (of that model,
/// or of all models for the in-flight limit) at each model's recent mean
/// batch duration, divided by `workers`, rounded up to whole seconds and
/// clamped to 1..=60 s. A low-priority request is admitted only when no
/// normal image is queued, the in-flight count including it stays within
/// half of `max_in_flight` and its model's queue has room. Otherwise it gets
/// `Skipped`.
///
/// # Deadlines and cancellation
///
/// Queued images whose deadline has passed are removed when the dispatcher
/// next forms a batch for their model, and their request fails with
/// `DeadlineExceeded`. A caller that needs its error exactly at the deadline
/// can wrap the response in `tokio::time::timeout_at`, because dropping the
/// response removes the request's queued images at once.
///
/// Dropping the scheduler fails queued requests with `Cancelled`. Batches
/// already running finish, and their outputs still reach their callers.
pub struct Scheduler<B: Backend> {
    inner: Arc<Inner<B>>,
}

/// State shared by the scheduler handle, the dispatcher task, the workers
/// and pending responses.
pub(crate) struct Inner<B: Backend> {
    pub(crate) backend: B,
    pub(crate) config: SchedulerConfig,
    pub(crate) observer: Arc<dyn Observer>,
    /// Model names by `ModelId` index, readable without the lock.
    pub(crate) names: Vec<Arc<str>>,
    pub(crate) state: Mutex<State<B>>,
    /// Wakes the dispatcher: new work, a finished batch, close or drop.
    pub(crate) dispatch: Notify,
    /// Wakes `drain` callers when the in-flight count reaches zero.
    pub(crate) idle: Notify,
}

/// Future of one request's outputs, in input order.
///
/// Dropping it before it completes removes the request's queued images, so
/// they never reach the backend. Parts already running complete and their
/// outputs are discarded.
#[must_use = "dropping the response cancels the request"]
pub struct ResponseFuture<B: Backend> {
    receiver: oneshot::Receiver<Outcome<B::Output>>,
    model: Arc<str>,
    /// Present until the outcome arrives, so that dropping the future cancels the request.
    pending: Option<PendingRequest<B>>,
}

struct PendingRequest<B: Backend> {
    inner: Arc<Inner<B>>,
    model: ModelId,
    slot: Arc<Slot<B::Output>>,
}

// === impl Scheduler ===

impl<B: Backend> Scheduler<B> {
    /// Creates a scheduler for `models`, whose ids are their positions in the
    /// list, and starts its dispatcher task.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime.
    pub fn new(
        backend: B,
        config: SchedulerConfig,
        models: Vec<ModelSpec>,
    ) -> Result<Self, ConfigError> {
        Self::with_observer(backend, config, models, Arc::new(NoopObserver))
    }

    /// Creates a scheduler like [`new`](Self::new) that reports events to `observer`.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime.
    pub fn with_observer(
        backend: B,
        config: SchedulerConfig,
        models: Vec<ModelSpec>,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, ConfigError> {
        config.validate(&models)?;
        let names = models
            .iter()
            .map(|spec| Arc::from(spec.name.as_str()))
            .collect();
        let inner = Arc::new(Inner {
            backend,
            config,
            observer,
            names,
            state: Mutex::new(State::new(models)),
            dispatch: Notify::new(),
            idle: Notify::new(),
        });
        tokio::spawn(dispatch::run_dispatcher(Arc::clone(&inner)));
        Ok(Self { inner })
    }

    /// Returns the id of the model named `name`.
    pub fn model_id(&self, name: &str) -> Option<ModelId> {
        self.inner
            .names
            .iter()
            .position(|candidate| &**candidate == name)
            .map(ModelId::new)
    }

    pub fn model_name(&self, model: ModelId) -> Option<&str> {
        self.inner.names.get(model.index()).map(|name| &**name)
    }

    pub fn backend(&self) -> &B {
        &self.inner.backend
    }

    /// Admits a request of one or more images for `model`, or rejects it at once.
    ///
    /// Returns the future of the outputs, one per input in input order. The
    /// request is queued whether or not the future is polled, and dropping the
    /// future cancels it. A request with no inputs completes at once with no
    /// outputs.
    pub fn submit(
        &self,
        model: ModelId,
        inputs: Vec<B::Input>,
        options: SubmitOptions,
    ) -> Result<ResponseFuture<B>, ScheduleError> {
        let inner = &self.inner;
        let name = inner
            .names
            .get(model.index())
            .ok_or(ScheduleError::UnknownModel {
                model,
                models: inner.names.len(),
            })?;
        let images = inputs.len();
        let (slot, receiver) = Slot::new(images);

        if images == 0 {
            if inner.lock_state().closed {
                return Err(ScheduleError::ShuttingDown);
            }
            slot.complete(0, std::iter::empty());
            return Ok(ResponseFuture {
                receiver,
                model: Arc::clone(name),
                pending: None,
            });
        }

        let entry = Queued {
            slot: Arc::clone(&slot),
            inputs: inputs.into_iter(),
            next_index: 0,
            enqueued_at: Instant::now(),
            deadline: options.deadline,
        };
        inner.lock_state().admit(
            model,
            entry,
            options.priority,
            &inner.config,
            &*inner.observer,
        )?;
        inner.dispatch.notify_one();

        Ok(ResponseFuture {
            receiver,
            model: Arc::clone(name),
            pending: Some(PendingRequest {
                inner: Arc::clone(inner),
                model,
                slot,
            }),
        })
    }

    /// Submits a request and waits for its outputs.
    pub async fn infer(
        &self,
        model: ModelId,
        inputs: Vec<B::Input>,
        options: SubmitOptions,
    ) -> Result<Vec<Timed<B::Output>>, ScheduleError> {
        self.submit(model, inputs, options)?.await
    }

    /// Returns the current queue depths and in-flight count.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock_state().snapshot()
    }

    /// Stops admitting requests: later `submit` calls fail with
    /// `ShuttingDown`. Queued requests still run, without waiting for
    /// `max_queue_delay`.
    pub fn close(&self) {
        let mut state = self.inner.lock_state();
        if !state.closed {
            state.closed = true;
            info!(in_flight = state.in_flight, "scheduler closed");
        }
        drop(state);
        self.inner.dispatch.notify_one();
    }

    /// Waits until no image is queued or running. Without a prior
    /// [`close`](Self::close), new submissions can keep it waiting.
    ///
    /// When it returns, every finished request has had its outcome sent and
    /// reported to the observer.
    pub async fn drain(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.lock_state().in_flight == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Closes the scheduler and waits until all admitted work has finished.
    pub async fn shutdown(&self) {
        self.close();
        self.drain().await;
    }
}

impl<B: Backend> Drop for Scheduler<B> {
    fn drop(&mut self) {
        let mut state = self.inner.lock_state();
        state.closed = true;
        state.stopped = true;

        let mut cancelled = Vec::new();
        let mut images = 0;
        for queue in &mut state.models {
            images += queue.queued_images();
            let name = &queue.name;
            cancelled.extend(queue.normal.clear().map(|slot| (Arc::clone(name), slot)));
            cancelled.extend(queue.low.clear().map(|slot| (Arc::clone(name), slot)));
        }
        state.in_flight -= images;
        drop(state);

        if !cancelled.is_empty() {
            debug!(
                requests = cancelled.len(),
                images, "scheduler dropped with queued requests"
            );
        }
        for (model, slot) in cancelled {
            slot.fail(ScheduleError::Cancelled { model });
        }
        self.inner.dispatch.notify_one();
    }
}

impl<B: Backend> fmt::Debug for Scheduler<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.inner.config)
            .field("models", &self.inner.names)
            .finish_non_exhaustive()
    }
}

// === impl Inner ===

impl<B: Backend> Inner<B> {
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State<B>> {
        // State updates never leave it inconsistent halfway, so a panic in an
        // observer while the lock was held does not make it unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes `drain` callers if nothing is queued or running.
    pub(crate) fn notify_if_idle(&self, state: &State<B>) {
        if state.in_flight == 0 {
            self.idle.notify_waiters();
        }
    }

    /// Removes a request whose caller dropped its response.
    fn cancel(&self, model: ModelId, slot: &Arc<Slot<B::Output>>) {
        let mut state = self.lock_state();
        if slot.is_finished() {
            return;
        }
        slot.abandon();

        let images = state.remove_request(model, slot, &*self.observer);
        self.notify_if_idle(&state);
        drop(state);

        if images > 0 {
            self.observer.cancelled(model, images);
            debug!(model = %self.names[model.index()], images, "cancelled queued request");
            // Low-priority lanes may have become eligible.
            self.dispatch.notify_one();
        }
    }
}

// === impl ResponseFuture ===

impl<B: Backend> Future for ResponseFuture<B> {
    type Output = Result<Vec<Timed<B::Output>>, ScheduleError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = match Pin::new(&mut this.receiver).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(outcome)) => outcome,
            // The sender is dropped without a value only when the request's
            // batch or queue entry was dropped with the scheduler.
            Poll::Ready(Err(_)) => Err(ScheduleError::Cancelled {
                model: Arc::clone(&this.model),
            }),
        };
        this.pending = None;
        Poll::Ready(outcome)
    }
}

impl<B: Backend> Drop for ResponseFuture<B> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.inner.cancel(pending.model, &pending.slot);
        }
    }
}

impl<B: Backend> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("model", &self.model)
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}
