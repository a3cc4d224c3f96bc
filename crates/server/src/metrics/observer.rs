//! The scheduler's events turned into queue, batch and admission metrics
//! and Triton's statistics counters.

use std::{sync::Arc, time::Duration};

use effnet_scheduler::{AdmissionLimit, ModelId, Observer};

use super::Metrics;

/// Forwards [`Observer`] events to [`Metrics`]. Every method only updates
/// atomics behind a label lookup, so it is cheap enough to run under the
/// scheduler's lock.
pub struct SchedulerObserver(pub Arc<Metrics>);

// === impl SchedulerObserver ===

impl Observer for SchedulerObserver {
    fn batch_executed(&self, model: ModelId, size: usize, duration: Duration) {
        let labels = self.0.labels(model.index(), &[]);
        self.0
            .batch_duration
            .with_label_values(&labels)
            .observe(duration.as_secs_f64());
        self.0
            .batch_size
            .with_label_values(&labels)
            .observe(size as f64);
        if let Some(counters) = self.0.counters.get(model.index()) {
            counters.batch_executed(size, duration);
        }
    }

    fn batch_failed(&self, model: ModelId, _size: usize) {
        self.0
            .batch_failures
            .with_label_values(&self.0.labels(model.index(), &[]))
            .inc();
    }

    fn entry_finished(&self, model: ModelId, queue_wait: Duration) {
        self.0
            .queue_wait
            .with_label_values(&self.0.labels(model.index(), &[]))
            .observe(queue_wait.as_secs_f64());
        if let Some(counters) = self.0.counters.get(model.index()) {
            counters.image_dequeued(queue_wait);
        }
    }

    fn rejected(&self, model: ModelId, limit: AdmissionLimit) {
        let limit = match limit {
            AdmissionLimit::ModelQueue => "model_queue",
            AdmissionLimit::InFlight => "in_flight",
        };
        self.0
            .queue_rejections
            .with_label_values(&self.0.labels(model.index(), &[limit]))
            .inc();
    }

    fn expired(&self, model: ModelId, images: usize) {
        self.dropped(model, "expired", images);
    }

    fn cancelled(&self, model: ModelId, images: usize) {
        self.dropped(model, "cancelled", images);
    }

    fn queue_depth(&self, model: ModelId, images: usize) {
        self.0
            .queue_depth
            .with_label_values(&self.0.labels(model.index(), &[]))
            .set(images as i64);
    }

    fn in_flight(&self, images: usize) {
        self.0.images_in_flight.set(images as i64);
    }
}

impl SchedulerObserver {
    fn dropped(&self, model: ModelId, reason: &'static str, images: usize) {
        self.0
            .queue_dropped
            .with_label_values(&self.0.labels(model.index(), &[reason]))
            .inc_by(images as u64);
    }
}
