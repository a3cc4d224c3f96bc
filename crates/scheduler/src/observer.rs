//! Hooks for metrics, per-image timings and state snapshots.

use std::time::Duration;

use crate::{AdmissionLimit, ModelId};

/// Receiver of scheduler events, for counters and gauges.
///
/// Every method defaults to doing nothing. Methods may be called while the
/// scheduler holds its internal lock, so they must be cheap and must not call
/// back into the [`Scheduler`](crate::Scheduler). Image counts are images,
/// not requests.
#[allow(unused_variables)]
pub trait Observer: Send + Sync + 'static {
    /// Called after a backend call succeeded. `duration` is the wall time of `run_batch`.
    fn batch_executed(&self, model: ModelId, size: usize, duration: Duration) {}

    /// Called after a backend call returned an error, panicked or returned
    /// the wrong number of outputs.
    fn batch_failed(&self, model: ModelId, size: usize) {}

    /// Called once per image that left the backend, successfully or not,
    /// after waiting `queue_wait` in its queue.
    fn entry_finished(&self, model: ModelId, queue_wait: Duration) {}

    /// Called when `limit` rejected a normal-priority request at submit.
    fn rejected(&self, model: ModelId, limit: AdmissionLimit) {}

    /// Called when queued images were removed because their deadline had passed.
    fn expired(&self, model: ModelId, images: usize) {}

    /// Called when queued images were removed because their caller dropped the response.
    fn cancelled(&self, model: ModelId, images: usize) {}

    /// Called when a low-priority request was not admitted.
    fn skipped(&self, model: ModelId) {}

    /// Called with the images queued for `model` (both priorities) after each change.
    fn queue_depth(&self, model: ModelId, images: usize) {}

    /// Called with the images queued or running across all models after each change.
    fn in_flight(&self, images: usize) {}
}

/// Observer that ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

/// How one image's result was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Time from admission to the start of its batch.
    pub queue_wait: Duration,
    /// Wall time of the backend call that produced it.
    pub inference: Duration,
    /// Images in that backend call.
    pub batch_size: usize,
}

/// One image's output with its timings.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed<T> {
    pub value: T,
    pub timings: Timings,
}

/// Point-in-time view of the scheduler's load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Images queued per model (both priorities), indexed by [`ModelId::index`].
    pub queue_depth: Vec<usize>,
    /// Images queued or running across all models.
    pub in_flight: usize,
    /// Backend calls running now.
    pub running_batches: usize,
    /// Whether `close` was called.
    pub closed: bool,
}

// === impl NoopObserver ===

impl Observer for NoopObserver {}
