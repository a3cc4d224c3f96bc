//! The scheduler's shared state: admission control, fair batch selection and
//! the image counts behind limits, snapshots and shutdown.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tracing::debug;

use crate::{
    AdmissionLimit, Backend, ModelConfig, ModelId, ModelSpec, Observer, Priority, ScheduleError,
    SchedulerConfig, Snapshot,
    queue::{Batch, Lane, Queued, Readiness, Removed},
    slot::Slot,
};

/// Weight of the newest batch in a model's average batch duration.
const BATCH_DURATION_WEIGHT: f64 = 0.2;

/// Bounds of the suggested retry-after. The lower bound is also the value
/// used before any batch has run.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// All mutable scheduler state, behind one mutex.
pub(crate) struct State<B: Backend> {
    pub(crate) models: Vec<ModelQueue<B>>,
    /// Images admitted and not yet finished, across all models.
    pub(crate) in_flight: usize,
    /// Backend calls running now, at most `SchedulerConfig::workers`.
    pub(crate) running: usize,
    /// Model index at which the next round-robin scan starts, per priority.
    next_normal: usize,
    next_low: usize,
    pub(crate) closed: bool,
    /// Set when the scheduler is dropped, which makes the dispatcher exit.
    pub(crate) stopped: bool,
}

pub(crate) struct ModelQueue<B: Backend> {
    pub(crate) name: Arc<str>,
    pub(crate) config: ModelConfig,
    pub(crate) normal: Lane<B>,
    pub(crate) low: Lane<B>,
    /// Exponentially weighted mean of recent backend call durations. It is
    /// `None` until the first batch has finished.
    batch_duration: Option<Duration>,
}

// === impl State ===

impl<B: Backend> State<B> {
    pub(crate) fn new(models: Vec<ModelSpec>) -> Self {
        let models = models
            .into_iter()
            .map(|spec| ModelQueue {
                name: spec.name.into(),
                config: spec.config,
                normal: Lane::new(),
                low: Lane::new(),
                batch_duration: None,
            })
            .collect();
        Self {
            models,
            in_flight: 0,
            running: 0,
            next_normal: 0,
            next_low: 0,
            closed: false,
            stopped: false,
        }
    }

    /// Admits `entry` into `model`'s queue or returns why not. `model` must be valid.
    ///
    /// Normal requests are rejected when they would exceed the model's
    /// `queue_limit` or the global `max_in_flight`. Low-priority requests are
    /// skipped unless no normal image is queued anywhere, the in-flight count
    /// stays within half of `max_in_flight` and the model's queue has room.
    pub(crate) fn admit(
        &mut self,
        model: ModelId,
        entry: Queued<B>,
        priority: Priority,
        config: &SchedulerConfig,
        observer: &dyn Observer,
    ) -> Result<(), ScheduleError> {
        if self.closed {
            return Err(ScheduleError::ShuttingDown);
        }
        let images = entry.inputs.len();
        let queue = &self.models[model.index()];
        let queued = queue.queued_images();

        match priority {
            Priority::Normal => {
                self.check_limits(model, images, config)
                    .inspect_err(|error| {
                        if let ScheduleError::Rejected { limit, .. }
                        | ScheduleError::TooLarge { limit, .. } = error
                        {
                            observer.rejected(model, *limit);
                        }
                    })?;
            }
            Priority::Low => {
                let idle = self.normal_queued() == 0
                    && self.in_flight + images <= config.max_in_flight / 2
                    && queued + images <= queue.config.queue_limit;
                if !idle {
                    observer.skipped(model);
                    return Err(ScheduleError::Skipped {
                        model: Arc::clone(&queue.name),
                    });
                }
            }
        }

        let queue = &mut self.models[model.index()];
        match priority {
            Priority::Normal => queue.normal.push(entry),
            Priority::Low => queue.low.push(entry),
        }
        observer.queue_depth(model, queue.queued_images());
        self.in_flight += images;
        observer.in_flight(self.in_flight);
        Ok(())
    }

    fn check_limits(
        &self,
        model: ModelId,
        images: usize,
        config: &SchedulerConfig,
    ) -> Result<(), ScheduleError> {
        let queue = &self.models[model.index()];
        let checks = [
            (
                AdmissionLimit::ModelQueue,
                queue.queued_images(),
                queue.config.queue_limit,
            ),
            (
                AdmissionLimit::InFlight,
                self.in_flight,
                config.max_in_flight,
            ),
        ];

        for (limit, used, max) in checks {
            if images > max {
                return Err(ScheduleError::TooLarge {
                    model: Arc::clone(&queue.name),
                    limit,
                    images,
                    max,
                });
            }
            if used + images > max {
                return Err(ScheduleError::Rejected {
                    model: Arc::clone(&queue.name),
                    limit,
                    max,
                    retry_after: self.retry_after(model, limit, config.workers),
                });
            }
        }
        Ok(())
    }

    /// Estimates when a rejected request may be admitted: the time to run the
    /// batches queued for `model` (for the model queue limit) or for all models
    /// (for the in-flight limit), at each model's recent batch duration, spread
    /// over all workers. Rounded up to whole seconds and clamped to 1..=60 s.
    fn retry_after(&self, model: ModelId, limit: AdmissionLimit, workers: usize) -> Duration {
        let busy_time: Duration = match limit {
            AdmissionLimit::ModelQueue => self.models[model.index()].drain_estimate(),
            AdmissionLimit::InFlight => self.models.iter().map(ModelQueue::drain_estimate).sum(),
        };
        let estimate = busy_time / u32::try_from(workers).unwrap_or(u32::MAX);
        let seconds = estimate.as_secs() + u64::from(estimate.subsec_nanos() > 0);
        Duration::from_secs(seconds).clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER)
    }

    /// Forms the next batch if a worker is free and some model has a ready batch.
    ///
    /// Fairness: models are scanned round-robin, starting after the model
    /// served last, so while model m has a ready batch at most one batch of
    /// each other model is dispatched before m's. Low-priority lanes are
    /// scanned only while no normal image is queued for any model.
    pub(crate) fn next_batch(
        &mut self,
        workers: usize,
        now: Instant,
        observer: &dyn Observer,
    ) -> Option<Batch<B>> {
        if self.running >= workers {
            return None;
        }
        let batch = self
            .next_batch_in(Priority::Normal, now, observer)
            .or_else(|| {
                if self.normal_queued() == 0 {
                    self.next_batch_in(Priority::Low, now, observer)
                } else {
                    None
                }
            })?;
        self.running += 1;
        Some(batch)
    }

    fn next_batch_in(
        &mut self,
        priority: Priority,
        now: Instant,
        observer: &dyn Observer,
    ) -> Option<Batch<B>> {
        let count = self.models.len();
        let first = match priority {
            Priority::Normal => self.next_normal,
            Priority::Low => self.next_low,
        };

        for offset in 0..count {
            let index = (first + offset) % count;
            let model = ModelId::new(index);
            let flush = self.closed;
            let queue = &mut self.models[index];
            let lane = match priority {
                Priority::Normal => &mut queue.normal,
                Priority::Low => &mut queue.low,
            };

            let removed = lane.pop_dead_front(&queue.name, now);
            let batch = if lane.readiness(&queue.config, now, flush) == Readiness::Ready {
                let (batch, more_removed) =
                    lane.take_batch(model, &queue.name, queue.config.max_batch_size, now);
                self.record_removed(
                    model,
                    Removed {
                        expired: removed.expired + more_removed.expired,
                        abandoned: removed.abandoned + more_removed.abandoned,
                    },
                    observer,
                );
                batch
            } else {
                self.record_removed(model, removed, observer);
                None
            };

            if let Some(batch) = batch {
                observer.queue_depth(model, self.models[index].queued_images());
                match priority {
                    Priority::Normal => self.next_normal = index + 1,
                    Priority::Low => self.next_low = index + 1,
                }
                return Some(batch);
            }
        }
        None
    }

    /// Returns the earliest time a lane waiting on `max_queue_delay` becomes
    /// ready, if a worker is free to take it then.
    pub(crate) fn next_wake(&self, workers: usize, now: Instant) -> Option<Instant> {
        if self.running >= workers {
            return None;
        }
        let low = self.normal_queued() == 0;
        self.models
            .iter()
            .filter_map(|queue| {
                let lane = if low { &queue.low } else { &queue.normal };
                match lane.readiness(&queue.config, now, self.closed) {
                    Readiness::At(due) => Some(due),
                    Readiness::Empty | Readiness::Ready => None,
                }
            })
            .min()
    }

    /// Removes the queued remainder of a request, returning its image count.
    pub(crate) fn remove_request(
        &mut self,
        model: ModelId,
        slot: &Arc<Slot<B::Output>>,
        observer: &dyn Observer,
    ) -> usize {
        let queue = &mut self.models[model.index()];
        let images = queue.normal.remove_request(slot) + queue.low.remove_request(slot);
        if images > 0 {
            observer.queue_depth(model, queue.queued_images());
            self.release(images, observer);
        }
        images
    }

    /// Records a finished backend call of `size` images that took `duration`.
    pub(crate) fn finish_batch(
        &mut self,
        model: ModelId,
        size: usize,
        duration: Duration,
        observer: &dyn Observer,
    ) {
        self.running -= 1;
        let queue = &mut self.models[model.index()];
        queue.batch_duration = Some(match queue.batch_duration {
            None => duration,
            Some(mean) => {
                mean.mul_f64(1.0 - BATCH_DURATION_WEIGHT) + duration.mul_f64(BATCH_DURATION_WEIGHT)
            }
        });
        self.release(size, observer);
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            queue_depth: self.models.iter().map(ModelQueue::queued_images).collect(),
            in_flight: self.in_flight,
            running_batches: self.running,
            closed: self.closed,
        }
    }

    fn record_removed(&mut self, model: ModelId, removed: Removed, observer: &dyn Observer) {
        if removed.expired > 0 {
            observer.expired(model, removed.expired);
            debug!(model = %self.models[model.index()].name, images = removed.expired, "removed expired images");
        }
        let images = removed.expired + removed.abandoned;
        if images > 0 {
            observer.queue_depth(model, self.models[model.index()].queued_images());
            self.release(images, observer);
        }
    }

    fn release(&mut self, images: usize, observer: &dyn Observer) {
        self.in_flight -= images;
        observer.in_flight(self.in_flight);
    }

    fn normal_queued(&self) -> usize {
        self.models.iter().map(|queue| queue.normal.images()).sum()
    }
}

// === impl ModelQueue ===

impl<B: Backend> ModelQueue<B> {
    pub(crate) fn queued_images(&self) -> usize {
        self.normal.images() + self.low.images()
    }

    /// Estimates the time to run this model's queued images as full batches.
    fn drain_estimate(&self) -> Duration {
        let batches = self.queued_images().div_ceil(self.config.max_batch_size);
        let mean = self.batch_duration.unwrap_or(Duration::ZERO);
        mean * u32::try_from(batches).unwrap_or(u32::MAX)
    }
}
