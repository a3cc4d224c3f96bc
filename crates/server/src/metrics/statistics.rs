//! Triton's per-model inference statistics, kept as atomic counters next to
//! the Prometheus families and updated by the same two sources: the
//! [`RequestTracker`](super::RequestTracker) for request outcomes and the
//! [`SchedulerObserver`](super::SchedulerObserver) for queue and batch
//! events.
//!
//! NOTE: Triton counts queue and compute time per request. The scheduler
//! reports them per image, so `queue` and `compute_infer` count images: the
//! same as Triton for requests of one image, larger for requests of several.
//! The engine reports only the wall time of a whole batch, so all of it is
//! `compute_infer`: `compute_input` and `compute_output` repeat its count
//! with 0 ns, because perf_analyzer (2.51) aborts unless the three counts
//! match.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A count and the total time of the counted events.
#[derive(Debug, Default)]
struct DurationCounter {
    count: AtomicU64,
    ns: AtomicU64,
}

/// Counters of one model; every field only grows.
#[derive(Debug)]
pub(super) struct ModelCounters {
    success: DurationCounter,
    fail: DurationCounter,
    queue: DurationCounter,
    compute_infer: DurationCounter,
    /// Images in successful batches.
    inference_count: AtomicU64,
    /// Successful batches.
    execution_count: AtomicU64,
    /// Milliseconds since the Unix epoch of the last successful batch, 0 before it.
    last_inference_ms: AtomicU64,
    /// Successful batches and their total time, by batch size; index 0 is
    /// unused and sizes past the end are not counted.
    batches: Vec<DurationCounter>,
}

/// A count and a total duration in nanoseconds, as Triton reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatDuration {
    pub count: u64,
    pub ns: u64,
}

/// Executions of one batch size; the counts are batches, not images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStatistics {
    pub batch_size: u64,
    pub compute_input: StatDuration,
    pub compute_infer: StatDuration,
    pub compute_output: StatDuration,
}

/// A copy of one model's counters, in the fields of Triton's
/// `ModelStatistics` for version `1`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelStatistics {
    /// Milliseconds since the Unix epoch of the last successful batch, 0 before it.
    pub last_inference: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    /// Finished requests with a result, timed from handler start to response.
    pub success: StatDuration,
    /// Finished requests with an error, timed the same way.
    pub fail: StatDuration,
    pub queue: StatDuration,
    pub compute_input: StatDuration,
    pub compute_infer: StatDuration,
    pub compute_output: StatDuration,
    /// Batch sizes that ran at least once, in increasing order.
    pub batch_stats: Vec<BatchStatistics>,
}

// === impl DurationCounter ===

impl DurationCounter {
    fn add(&self, count: u64, duration: Duration) {
        self.count.fetch_add(count, Ordering::Relaxed);
        self.ns.fetch_add(nanos(duration), Ordering::Relaxed);
    }

    fn load(&self) -> StatDuration {
        StatDuration {
            count: self.count.load(Ordering::Relaxed),
            ns: self.ns.load(Ordering::Relaxed),
        }
    }
}

// === impl ModelCounters ===

impl ModelCounters {
    /// Counters for a model whose batches hold at most `max_batch_size` images.
    pub(super) fn new(max_batch_size: usize) -> Self {
        Self {
            success: DurationCounter::default(),
            fail: DurationCounter::default(),
            queue: DurationCounter::default(),
            compute_infer: DurationCounter::default(),
            inference_count: AtomicU64::new(0),
            execution_count: AtomicU64::new(0),
            last_inference_ms: AtomicU64::new(0),
            batches: (0..=max_batch_size)
                .map(|_| DurationCounter::default())
                .collect(),
        }
    }

    pub(super) fn request_finished(&self, success: bool, duration: Duration) {
        let counter = if success { &self.success } else { &self.fail };
        counter.add(1, duration);
    }

    pub(super) fn image_dequeued(&self, queue_wait: Duration) {
        self.queue.add(1, queue_wait);
    }

    /// Counts one successful batch of `size` images that took `duration`.
    /// Each image is charged the whole batch time, as Triton charges each
    /// request of a batch.
    pub(super) fn batch_executed(&self, size: usize, duration: Duration) {
        let images = size as u64;
        self.inference_count.fetch_add(images, Ordering::Relaxed);
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.compute_infer
            .count
            .fetch_add(images, Ordering::Relaxed);
        self.compute_infer
            .ns
            .fetch_add(nanos(duration).saturating_mul(images), Ordering::Relaxed);
        if let Some(batch) = self.batches.get(size) {
            batch.add(1, duration);
        }

        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        self.last_inference_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// Copies the counters. Each one is read on its own, so a copy taken
    /// during traffic may mix counts from before and after one event.
    pub(super) fn snapshot(&self) -> ModelStatistics {
        let batch_stats = self
            .batches
            .iter()
            .enumerate()
            .map(|(size, counter)| {
                let compute_infer = counter.load();
                BatchStatistics {
                    batch_size: size as u64,
                    compute_input: untimed(compute_infer),
                    compute_infer,
                    compute_output: untimed(compute_infer),
                }
            })
            .filter(|batch| batch.compute_infer.count > 0)
            .collect();
        let compute_infer = self.compute_infer.load();
        ModelStatistics {
            last_inference: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            success: self.success.load(),
            fail: self.fail.load(),
            queue: self.queue.load(),
            compute_input: untimed(compute_infer),
            compute_infer,
            compute_output: untimed(compute_infer),
            batch_stats,
        }
    }
}

/// Returns the count of `compute_infer` with 0 ns, for the untimed compute phases.
fn untimed(compute_infer: StatDuration) -> StatDuration {
    StatDuration {
        count: compute_infer.count,
        ns: 0,
    }
}

/// Nanoseconds of `duration`, saturating at `u64::MAX` (584 years).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_counts_images_and_executions() {
        let counters = ModelCounters::new(4);

        counters.batch_executed(3, Duration::from_micros(10));
        counters.batch_executed(1, Duration::from_micros(4));
        let stats = counters.snapshot();

        assert_eq!(stats.inference_count, 4);
        assert_eq!(stats.execution_count, 2);
        assert_eq!(
            stats.compute_infer,
            StatDuration {
                count: 4,
                ns: 34_000
            }
        );
        assert_eq!(stats.compute_input, StatDuration { count: 4, ns: 0 });
        assert_eq!(stats.compute_output, StatDuration { count: 4, ns: 0 });
        assert!(stats.last_inference > 0);
    }

    #[test]
    fn batch_stats_by_size() {
        let counters = ModelCounters::new(4);

        counters.batch_executed(3, Duration::from_micros(10));
        counters.batch_executed(3, Duration::from_micros(20));
        counters.batch_executed(9, Duration::from_micros(1));
        let stats = counters.snapshot();

        assert_eq!(stats.batch_stats.len(), 1);
        assert_eq!(stats.batch_stats[0].batch_size, 3);
        assert_eq!(
            stats.batch_stats[0].compute_infer,
            StatDuration {
                count: 2,
                ns: 30_000
            }
        );
    }

    #[test]
    fn requests_split_by_outcome() {
        let counters = ModelCounters::new(1);

        counters.request_finished(true, Duration::from_nanos(5));
        counters.request_finished(false, Duration::from_nanos(7));
        counters.request_finished(true, Duration::from_nanos(1));
        let stats = counters.snapshot();

        assert_eq!(stats.success, StatDuration { count: 2, ns: 6 });
        assert_eq!(stats.fail, StatDuration { count: 1, ns: 7 });
        assert_eq!(stats.last_inference, 0);
    }
}
