//! Prometheus metrics: one [`Metrics`] registry for requests, stages,
//! batching, model state, accuracy and INT8 drift, rendered in the text
//! format on `/metrics`.
//!
//! Label values come only from the configured model set and from fixed
//! lists in this module, never from request input, so the number of series
//! is bounded. Requests for an unknown model are counted under the model
//! label [`UNKNOWN_MODEL`]. Every metric is listed in `docs/metrics.md`.

use std::time::Duration;

use prometheus::{
    Encoder as _, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder, core::Collector,
};

use crate::{
    error::{ErrorKind, ServiceError},
    models::{ModelRegistry, ModelState},
    service::Protocol,
};

mod observer;
mod process;
mod request;
mod statistics;

pub use observer::SchedulerObserver;
pub use request::RequestTracker;
pub use statistics::{ModelStatistics, StatDuration};

/// Model label of requests whose model name matched no configured model.
pub const UNKNOWN_MODEL: &str = "_unknown";

/// Labels that identify a model on every per-model series.
const MODEL_LABELS: [&str; 3] = ["model", "variant", "precision"];

/// Latency buckets in seconds, 1-2-5 per decade from 0.5 ms (about the
/// fastest stage: a small image, or a lite0 INT8 batch of one on a fast
/// core) to 10 s (a 64-image lite4 FP32 request behind a full queue). Both
/// ends are estimates; `docs/metrics.md` explains the choice.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Batch size buckets: the powers of two that `max_batch_size` is usually set to.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// Buckets of |p_int8 - p_fp32| of the top-1 probabilities, in `0..=1`.
const PROBABILITY_DIFF_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// Every model state, for the one-series-per-state gauge.
const MODEL_STATES: [&str; 4] = ["loading", "ready", "unavailable", "disabled"];

/// Outcome of one request, as counted in `effnet_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// 4xx other than 429: the request was malformed or named no model.
    ClientError,
    /// 429, or 503 while shutting down: admission control turned it away.
    Rejected,
    DeadlineExceeded,
    /// The client went away before the response, or the scheduler dropped it.
    Cancelled,
    /// 500, or 503 for a model that cannot serve.
    ServerError,
}

/// Result of comparing one INT8 image with its FP32 shadow run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowResult {
    Agree,
    Disagree,
    /// The scheduler was busy, or the FP32 twin was not ready.
    Skipped,
    Failed,
}

/// Every metric of the server, registered once.
pub struct Metrics {
    registry: Registry,
    /// `[model, variant, precision]` by model index; the last entry is
    /// [`UNKNOWN_MODEL`].
    models: Vec<[String; 3]>,

    requests: IntCounterVec,
    request_images: IntCounterVec,
    request_duration: HistogramVec,
    preprocess_duration: HistogramVec,
    queue_wait: HistogramVec,
    batch_duration: HistogramVec,
    batch_size: HistogramVec,
    batch_failures: IntCounterVec,
    queue_depth: IntGaugeVec,
    images_in_flight: IntGauge,
    queue_rejections: IntCounterVec,
    queue_dropped: IntCounterVec,

    model_state: IntGaugeVec,
    model_load: GaugeVec,

    offline_accuracy: GaugeVec,
    online_accuracy: IntCounterVec,
    feedback: IntCounterVec,
    shadow: IntCounterVec,
    shadow_probability_diff: HistogramVec,

    process: process::ProcessMetrics,

    /// Triton's statistics counters by model index, without [`UNKNOWN_MODEL`].
    counters: Vec<statistics::ModelCounters>,
}

// === impl Outcome ===

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::ClientError => "client_error",
            Self::Rejected => "rejected",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Cancelled => "cancelled",
            Self::ServerError => "server_error",
        }
    }

    pub fn of_error(error: &ServiceError) -> Self {
        match (error.kind, error.code) {
            (_, "cancelled") => Self::Cancelled,
            (_, "shutting_down") | (ErrorKind::Overloaded { .. }, _) => Self::Rejected,
            (ErrorKind::DeadlineExceeded, _) => Self::DeadlineExceeded,
            (ErrorKind::Unavailable | ErrorKind::Internal, _) => Self::ServerError,
            _ => Self::ClientError,
        }
    }
}

// === impl ShadowResult ===

impl ShadowResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agree => "agree",
            Self::Disagree => "disagree",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

// === impl Metrics ===

impl Metrics {
    /// Registers every metric and creates the per-model series of `models`,
    /// so that they read zero before the first event.
    pub fn new(models: &ModelRegistry) -> Self {
        let registry = Registry::new();
        let with_model = |extra: &[&'static str]| -> Vec<&'static str> {
            MODEL_LABELS.iter().chain(extra).copied().collect()
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            register(&registry, HistogramVec::new(opts, labels))
        };
        let model_only = with_model(&[]);

        let mut labels: Vec<[String; 3]> = models
            .iter()
            .map(|m| {
                [
                    m.name().to_string(),
                    m.manifest.variant.clone(),
                    m.manifest.precision.to_string(),
                ]
            })
            .collect();
        labels.push([UNKNOWN_MODEL.to_string(), String::new(), String::new()]);

        let metrics = Self {
            requests: counter(
                "effnet_requests_total",
                "Classification requests by API and outcome.",
                &with_model(&["protocol", "outcome"]),
            ),
            request_images: counter(
                "effnet_request_images_total",
                "Images in classification requests by API and outcome.",
                &with_model(&["protocol", "outcome"]),
            ),
            request_duration: histogram(
                "effnet_request_duration_seconds",
                "Time from the start of a request's handler to its response, for requests that finished.",
                &model_only,
                LATENCY_BUCKETS,
            ),
            preprocess_duration: histogram(
                "effnet_preprocess_duration_seconds",
                "Decode and preprocess time of one image on the decode pool.",
                &model_only,
                LATENCY_BUCKETS,
            ),
            queue_wait: histogram(
                "effnet_queue_wait_seconds",
                "Time one image waited in its model's batching queue.",
                &model_only,
                LATENCY_BUCKETS,
            ),
            batch_duration: histogram(
                "effnet_inference_duration_seconds",
                "Wall time of one successful engine batch.",
                &model_only,
                LATENCY_BUCKETS,
            ),
            batch_size: histogram(
                "effnet_batch_size",
                "Images in one successful engine batch.",
                &model_only,
                BATCH_SIZE_BUCKETS,
            ),
            batch_failures: counter(
                "effnet_batch_failures_total",
                "Engine batches that failed, panicked or returned the wrong number of outputs.",
                &model_only,
            ),
            queue_depth: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "effnet_queue_depth",
                        "Images queued for a model, both priorities.",
                    ),
                    &model_only,
                ),
            ),
            images_in_flight: register(
                &registry,
                IntGauge::new(
                    "effnet_images_in_flight",
                    "Images queued or running across all models.",
                ),
            ),
            queue_rejections: counter(
                "effnet_queue_rejections_total",
                "Requests rejected at admission, by the limit that was reached.",
                &with_model(&["limit"]),
            ),
            queue_dropped: counter(
                "effnet_queue_dropped_images_total",
                "Queued images removed before running, by reason.",
                &with_model(&["reason"]),
            ),
            model_state: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "effnet_model_state",
                        "1 for the model's current state, 0 for the others.",
                    ),
                    &with_model(&["state"]),
                ),
            ),
            model_load: register(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "effnet_model_load_duration_seconds",
                        "Time to load and warm up the model; absent until it is ready.",
                    ),
                    &model_only,
                ),
            ),
            offline_accuracy: register(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "effnet_offline_accuracy_ratio",
                        "Accuracy from the model manifest's offline evaluation.",
                    ),
                    &with_model(&["dataset", "images", "rank"]),
                ),
            ),
            online_accuracy: counter(
                "effnet_online_predictions_total",
                "Classified images whose true class a client reported, by rank and hit or miss.",
                &with_model(&["rank", "result"]),
            ),
            feedback: counter(
                "effnet_feedback_requests_total",
                "Feedback calls and true classes sent with classify requests, by result.",
                &["result"],
            ),
            shadow: counter(
                "effnet_int8_shadow_images_total",
                "INT8 images also run on the FP32 model of the same variant, by result.",
                &with_model(&["result"]),
            ),
            shadow_probability_diff: histogram(
                "effnet_int8_shadow_top1_probability_difference",
                "Absolute difference of the INT8 and FP32 top-1 probabilities of one image.",
                &model_only,
                PROBABILITY_DIFF_BUCKETS,
            ),
            process: process::ProcessMetrics::register(&registry),
            counters: models
                .iter()
                .map(|m| statistics::ModelCounters::new(m.settings.max_batch_size))
                .collect(),
            models: labels,
            registry,
        };
        metrics.init_series(models);
        metrics
    }

    /// Creates the series that must read zero before the first event, so
    /// that `rate()` and the dashboard see them from the start.
    fn init_series(&self, models: &ModelRegistry) {
        for model in models.iter() {
            let index = model.index;
            for vec in [
                &self.request_duration,
                &self.preprocess_duration,
                &self.queue_wait,
                &self.batch_duration,
                &self.batch_size,
            ] {
                vec.with_label_values(&self.labels(index, &[]));
            }
            self.batch_failures
                .with_label_values(&self.labels(index, &[]));
            self.queue_depth.with_label_values(&self.labels(index, &[]));

            for evaluation in &model.manifest.evaluation {
                let images = evaluation.images.to_string();
                for (rank, value) in [("top1", evaluation.top1), ("top5", evaluation.top5)] {
                    self.offline_accuracy
                        .with_label_values(
                            &self.labels(index, &[&evaluation.dataset, &images, rank]),
                        )
                        .set(value);
                }
            }
        }

        for protocol in Protocol::ALL {
            let labels = self.labels(
                self.unknown(),
                &[protocol.as_str(), Outcome::ClientError.as_str()],
            );
            self.requests.with_label_values(&labels);
            self.request_images.with_label_values(&labels);
        }
    }

    /// Index of the [`UNKNOWN_MODEL`] labels.
    fn unknown(&self) -> usize {
        self.models.len() - 1
    }

    /// The model labels of `model` (or of [`UNKNOWN_MODEL`] for an index out
    /// of range) followed by `extra`.
    fn labels<'a>(&'a self, model: usize, extra: &[&'a str]) -> Vec<&'a str> {
        let model = self
            .models
            .get(model)
            .unwrap_or(&self.models[self.unknown()]);
        model
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect()
    }

    /// Counts one finished request and, for a known model, its latency.
    pub fn record_request(
        &self,
        model: Option<usize>,
        protocol: Protocol,
        outcome: Outcome,
        images: usize,
        duration: Option<Duration>,
    ) {
        let index = model.unwrap_or(self.unknown());
        let labels = self.labels(index, &[protocol.as_str(), outcome.as_str()]);
        self.requests.with_label_values(&labels).inc();
        self.request_images
            .with_label_values(&labels)
            .inc_by(images as u64);
        if let (Some(model), Some(duration)) = (model, duration) {
            self.request_duration
                .with_label_values(&self.labels(model, &[]))
                .observe(duration.as_secs_f64());
            if let Some(counters) = self.counters.get(model) {
                counters.request_finished(outcome == Outcome::Success, duration);
            }
        }
    }

    /// Returns Triton's statistics of the model at registry index `model`,
    /// or `None` for an index out of range.
    pub fn statistics(&self, model: usize) -> Option<ModelStatistics> {
        self.counters
            .get(model)
            .map(statistics::ModelCounters::snapshot)
    }

    /// Records the decode and preprocess time of one image.
    pub fn record_preprocess(&self, model: usize, duration: Duration) {
        self.preprocess_duration
            .with_label_values(&self.labels(model, &[]))
            .observe(duration.as_secs_f64());
    }

    /// Counts one image scored against the true class a client reported.
    pub fn record_ground_truth(&self, model: usize, top1_hit: bool, top5_hit: bool) {
        for (rank, hit) in [("top1", top1_hit), ("top5", top5_hit)] {
            let result = if hit { "hit" } else { "miss" };
            self.online_accuracy
                .with_label_values(&self.labels(model, &[rank, result]))
                .inc();
        }
    }

    /// Counts one feedback call or true class sent with a request; `result`
    /// is one of a fixed set chosen by the caller.
    pub fn record_feedback(&self, result: &'static str) {
        self.feedback.with_label_values(&[result]).inc();
    }

    /// Counts shadow results of `images` images of the INT8 `model`.
    pub fn record_shadow(&self, model: usize, result: ShadowResult, images: usize) {
        self.shadow
            .with_label_values(&self.labels(model, &[result.as_str()]))
            .inc_by(images as u64);
    }

    /// Records |p_int8 - p_fp32| of one image's top-1 probabilities.
    pub fn record_shadow_difference(&self, model: usize, difference: f32) {
        self.shadow_probability_diff
            .with_label_values(&self.labels(model, &[]))
            .observe(f64::from(difference));
    }

    /// Refreshes the gauges read on demand (model state, load time,
    /// process) and returns every metric in the Prometheus text format.
    pub fn render(&self, models: &ModelRegistry) -> String {
        for model in models.iter() {
            let state = model.state();
            for name in MODEL_STATES {
                let value = i64::from(state.as_str() == name);
                self.model_state
                    .with_label_values(&self.labels(model.index, &[name]))
                    .set(value);
            }
            if let (ModelState::Ready, Some(load)) = (&state, model.load_duration()) {
                self.model_load
                    .with_label_values(&self.labels(model.index, &[]))
                    .set(load.as_secs_f64());
            }
        }
        self.process.refresh();

        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "failed to encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Registers `metric`; an error means two metrics share a name, which is a
/// bug in this module.
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: Result<M, prometheus::Error>,
) -> M {
    let metric = metric.expect("metric options are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn outcome_of_errors() {
        let overloaded = ErrorKind::Overloaded {
            retry_after: Duration::from_secs(1),
        };
        let cases = [
            (
                ServiceError::invalid("invalid_top_k", ""),
                Outcome::ClientError,
            ),
            (
                ServiceError::new(ErrorKind::NotFound, "model_not_found", ""),
                Outcome::ClientError,
            ),
            (
                ServiceError::new(overloaded, "overloaded", ""),
                Outcome::Rejected,
            ),
            (
                ServiceError::new(ErrorKind::Unavailable, "shutting_down", ""),
                Outcome::Rejected,
            ),
            (
                ServiceError::new(ErrorKind::Unavailable, "cancelled", ""),
                Outcome::Cancelled,
            ),
            (
                ServiceError::new(ErrorKind::Unavailable, "model_unavailable", ""),
                Outcome::ServerError,
            ),
            (
                ServiceError::new(ErrorKind::DeadlineExceeded, "deadline_exceeded", ""),
                Outcome::DeadlineExceeded,
            ),
            (ServiceError::internal(""), Outcome::ServerError),
        ];

        for (error, expected) in cases {
            assert_eq!(Outcome::of_error(&error), expected, "{}", error.code);
        }
    }

    #[test]
    fn unknown_model_uses_fixed_label() {
        let registry = ModelRegistry::new(
            [],
            |_| Default::default(),
            effnet_repository::Precision::Int8,
        );
        let metrics = Metrics::new(&registry);

        metrics.record_request(None, Protocol::Rest, Outcome::ClientError, 1, None);
        metrics.record_request(Some(7), Protocol::Rest, Outcome::ClientError, 1, None);
        let text = metrics.render(&registry);

        let line = format!(
            "effnet_requests_total{{model=\"{UNKNOWN_MODEL}\",outcome=\"client_error\",precision=\"\",protocol=\"rest\",variant=\"\"}} 2"
        );
        assert!(text.contains(&line), "{text}");
    }

    #[test]
    fn dropped_tracker_counts_cancelled() {
        let registry = ModelRegistry::new(
            [],
            |_| Default::default(),
            effnet_repository::Precision::Int8,
        );
        let metrics = Arc::new(Metrics::new(&registry));
        let mut tracker = RequestTracker::new(metrics.clone(), Protocol::Rest, None, "abc");
        tracker.set_images(3);

        drop(tracker);
        let text = metrics.render(&registry);

        assert!(text.contains("outcome=\"cancelled\""), "{text}");
        assert!(text.contains("effnet_request_images_total{model=\"_unknown\",outcome=\"cancelled\",precision=\"\",protocol=\"rest\",variant=\"\"} 3"), "{text}");
    }

    #[test]
    fn finished_tracker_counts_once() {
        let registry = ModelRegistry::new(
            [],
            |_| Default::default(),
            effnet_repository::Precision::Int8,
        );
        let metrics = Arc::new(Metrics::new(&registry));
        let tracker = RequestTracker::new(metrics.clone(), Protocol::Rest, None, "abc");

        tracker.finish(&Err::<(), _>(ServiceError::invalid("invalid_top_k", "bad")));
        let text = metrics.render(&registry);

        assert!(!text.contains("outcome=\"cancelled\""), "{text}");
        assert!(
            text.contains(
                "outcome=\"client_error\",precision=\"\",protocol=\"rest\",variant=\"\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn render_has_process_metrics() {
        let registry = ModelRegistry::new(
            [],
            |_| Default::default(),
            effnet_repository::Precision::Int8,
        );
        let metrics = Metrics::new(&registry);

        let text = metrics.render(&registry);

        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_threads "), "{text}");
        assert!(text.contains("process_open_fds "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
    }
}
