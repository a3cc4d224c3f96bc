//! The per-request collector that reassembles outputs from several batches.

use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::oneshot;

use crate::{ScheduleError, Timed};

/// Result delivered to a request's caller: one output per input, in input order.
pub(crate) type Outcome<O> = Result<Vec<Timed<O>>, ScheduleError>;

/// Output collector of one request, shared by its queue entry, the batches
/// running parts of it and its [`ResponseFuture`](crate::ResponseFuture).
///
/// Invariant: once `finished` is set, the sender has been consumed or dropped,
/// so later outputs for this request are discarded.
pub(crate) struct Slot<O> {
    finished: AtomicBool,
    state: Mutex<SlotState<O>>,
}

struct SlotState<O> {
    /// One entry per input, `Some` once its batch has returned.
    results: Vec<Option<Timed<O>>>,
    /// Entries of `results` still `None`.
    remaining: usize,
    sender: Option<oneshot::Sender<Outcome<O>>>,
}

// === impl Slot ===

impl<O> Slot<O> {
    /// Creates a slot for `images` outputs and the receiver of its outcome.
    pub(crate) fn new(images: usize) -> (Arc<Self>, oneshot::Receiver<Outcome<O>>) {
        let (sender, receiver) = oneshot::channel();
        let mut results = Vec::with_capacity(images);
        results.resize_with(images, || None);
        let slot = Self {
            finished: AtomicBool::new(false),
            state: Mutex::new(SlotState {
                results,
                remaining: images,
                sender: Some(sender),
            }),
        };
        (Arc::new(slot), receiver)
    }

    /// Returns whether the request already has its outcome or was abandoned.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Stores the outputs of inputs `start..` and sends the outcome once all
    /// outputs are in. Consumes `outputs` even when the request is finished.
    pub(crate) fn complete(&self, start: usize, outputs: impl Iterator<Item = Timed<O>>) {
        let mut state = self.lock();
        if state.sender.is_none() {
            drop(state);
            outputs.for_each(drop);
            return;
        }

        for (offset, output) in outputs.enumerate() {
            state.results[start + offset] = Some(output);
            state.remaining -= 1;
        }
        if state.remaining > 0 {
            return;
        }

        let sender = state.sender.take();
        let results = std::mem::take(&mut state.results)
            .into_iter()
            .map(|result| result.expect("every output is stored once remaining reaches zero"))
            .collect();
        self.finished.store(true, Ordering::Release);
        drop(state);
        if let Some(sender) = sender {
            // The caller may have dropped the response in the meantime.
            let _ = sender.send(Ok(results));
        }
    }

    /// Sends `error` as the outcome unless the request already has one.
    pub(crate) fn fail(&self, error: ScheduleError) {
        let sender = self.finish();
        if let Some(sender) = sender {
            let _ = sender.send(Err(error));
        }
    }

    /// Marks the request finished without an outcome, because its caller is gone.
    pub(crate) fn abandon(&self) {
        drop(self.finish());
    }

    fn finish(&self) -> Option<oneshot::Sender<Outcome<O>>> {
        let mut state = self.lock();
        self.finished.store(true, Ordering::Release);
        state.results = Vec::new();
        state.sender.take()
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<O>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
