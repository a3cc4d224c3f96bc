//! The protocol-neutral request path: resolve the model, decode and
//! preprocess on the blocking pool, queue on the model's batcher, turn
//! logits into classes. Every API edge calls into [`InferenceService`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use effnet_engine::{Engine, ModelSession};
use effnet_imaging::PreprocessSpec;
use effnet_repository::{Labels, Repository};
use effnet_scheduler::{Backend, BackendError, ModelId, Scheduler, SubmitOptions};

use crate::{
    config::Config,
    decode::DecodePool,
    error::{ErrorKind, ServiceError},
    feedback::{self, FeedbackError, FeedbackStore, Score, Top5},
    metrics::{Metrics, ModelStatistics, RequestTracker, SchedulerObserver},
    models::{Model, ModelRegistry},
    shadow::{self, ShadowRun},
    topk::{self, ClassScore},
};

/// The API a request came through, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    OipHttp,
    GrpcClassify,
    OipGrpc,
}

impl Protocol {
    pub const ALL: [Self; 4] = [Self::Rest, Self::OipHttp, Self::GrpcClassify, Self::OipGrpc];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rest => "rest",
            Self::OipHttp => "oip_http",
            Self::GrpcClassify => "grpc_classify",
            Self::OipGrpc => "oip_grpc",
        }
    }
}

/// A classification of encoded images.
pub struct ClassifyRequest {
    /// Model name or alias, as the client sent it.
    pub model: String,
    pub images: Vec<Bytes>,
    pub top_k: usize,
    /// The client's deadline; the configured default applies when `None`.
    pub timeout: Option<Duration>,
    pub request_id: String,
}

pub struct ClassifyOutcome {
    pub model: Arc<Model>,
    pub images: Vec<ClassifiedImage>,
}

pub struct ClassifiedImage {
    pub classes: Vec<ClassScore>,
    /// The five best class indices, whatever `top_k` the client asked for,
    /// for scoring against a true class.
    pub top5: Top5,
    pub logits: Vec<f32>,
    pub timings: StageTimings,
}

/// Time one image spent in each stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimings {
    pub decode: Duration,
    pub preprocess: Duration,
    pub queue: Duration,
    pub inference: Duration,
    pub batch_size: usize,
}

/// One image's logits with the time it queued and ran.
pub struct InferOutput {
    pub logits: Vec<f32>,
    pub queue: Duration,
    pub inference: Duration,
    pub batch_size: usize,
}

pub struct InferenceService {
    config: Config,
    models: Arc<ModelRegistry>,
    labels: Labels,
    decode: DecodePool,
    scheduler: Scheduler<EngineBackend>,
    draining: AtomicBool,
    /// The last value of [`InferenceService::is_ready`], for watchers such
    /// as gRPC health; updated whenever loading finishes or draining starts.
    readiness: tokio::sync::watch::Sender<bool>,
    metrics: Arc<Metrics>,
    feedback: FeedbackStore,
    /// The FP32 model of the same variant, by INT8 model index, for shadow runs.
    shadow_twins: Vec<Option<usize>>,
}

// === impl InferenceService ===

impl InferenceService {
    /// Creates the service for every model of the repository. Models start
    /// as loading; call [`InferenceService::load_models`] to load them.
    pub fn new(config: Config, repository: Repository) -> Result<Self, ServiceError> {
        let manifests = repository.models.into_values().map(|entry| entry.manifest);
        let models = Arc::new(ModelRegistry::new(
            manifests,
            |name| config.models.for_model(name),
            config.default_precision,
        ));

        let specs = models
            .iter()
            .map(|model| {
                let settings = model.settings;
                effnet_scheduler::ModelSpec::new(
                    model.name(),
                    effnet_scheduler::ModelConfig::new(
                        settings.max_batch_size,
                        settings.queue_limit,
                    )
                    .with_max_queue_delay(Duration::from_millis(settings.max_queue_delay_ms)),
                )
            })
            .collect();
        let metrics = Arc::new(Metrics::new(&models));
        let scheduler = Scheduler::with_observer(
            EngineBackend {
                models: models.clone(),
            },
            effnet_scheduler::SchedulerConfig::new(
                config.threads.batch_workers,
                config.admission.max_in_flight_images,
            ),
            specs,
            Arc::new(SchedulerObserver(metrics.clone())),
        )
        .map_err(|e| ServiceError::internal(e.to_string()))?;

        Ok(Self {
            decode: DecodePool::new(config.threads.decode_workers, config.limits.clone()),
            labels: repository.labels,
            shadow_twins: shadow::twins(&models),
            feedback: FeedbackStore::new(config.feedback),
            metrics,
            models,
            scheduler,
            config,
            draining: AtomicBool::new(false),
            readiness: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Starts following one request for metrics and logs, and records the
    /// resolved model name in the current span. `requested_model` is the
    /// client's name or alias; an unknown one is counted under a fixed label.
    pub fn track(
        &self,
        protocol: Protocol,
        request_id: &str,
        requested_model: &str,
    ) -> RequestTracker {
        let model = self
            .models
            .resolve(requested_model)
            .ok()
            .map(|model| (model.index, model.name().to_string()));
        let tracker = RequestTracker::new(self.metrics.clone(), protocol, model, request_id);
        tracing::Span::current().record("model", tracker.model_name());
        tracker
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(&self.models)
    }

    /// Returns Triton's inference statistics of `model`.
    pub fn model_statistics(&self, model: &Model) -> ModelStatistics {
        self.metrics.statistics(model.index).unwrap_or_default()
    }

    /// Scores the stored result of an earlier request against the true
    /// classes a client sent, once per request id.
    pub fn record_feedback(
        &self,
        request_id: &str,
        classes: &[usize],
    ) -> Result<Score, FeedbackError> {
        let stored = self.feedback.take(request_id, classes.len());
        let result = match &stored {
            Ok(_) => "counted",
            Err(FeedbackError::NotFound { .. } | FeedbackError::Expired { .. }) => "not_found",
            Err(FeedbackError::AlreadyCounted { .. }) => "duplicate",
            Err(FeedbackError::ClassCount { .. }) => "invalid",
        };
        self.metrics.record_feedback(result);
        let stored = stored?;
        Ok(self.score(stored.model, &stored.top5, classes))
    }

    /// Scores a classify outcome against the true classes sent with the
    /// request, and marks its request id scored so that later feedback for
    /// it is not counted again.
    pub fn record_ground_truth(
        &self,
        request_id: &str,
        outcome: &ClassifyOutcome,
        classes: &[usize],
    ) -> Score {
        self.feedback.mark_scored(request_id);
        self.metrics.record_feedback("counted");
        let top5: Vec<Top5> = outcome.images.iter().map(|image| image.top5).collect();
        self.score(outcome.model.index, &top5, classes)
    }

    fn score(&self, model: usize, top5: &[Top5], classes: &[usize]) -> Score {
        let mut score = Score {
            images: top5.len(),
            top1_hits: 0,
            top5_hits: 0,
        };
        for (top1_hit, top5_hit) in feedback::score(top5, classes) {
            self.metrics.record_ground_truth(model, top1_hit, top5_hit);
            score.top1_hits += usize::from(top1_hit);
            score.top5_hits += usize::from(top5_hit);
        }
        score
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn models(&self) -> &ModelRegistry {
        &self.models
    }

    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Ready when no model is still loading and the server is not draining.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && self.models.all_loaded()
    }

    /// Turns readiness off for the drain period before shutdown.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.publish_readiness();
    }

    /// Returns a receiver that sees every change of readiness.
    pub fn watch_readiness(&self) -> tokio::sync::watch::Receiver<bool> {
        self.readiness.subscribe()
    }

    fn publish_readiness(&self) {
        self.readiness.send_replace(self.is_ready());
    }

    pub fn scheduler(&self) -> &Scheduler<EngineBackend> {
        &self.scheduler
    }

    /// Loads and warms up every loadable model in parallel, each on its own
    /// blocking thread. A model that fails is marked unavailable with the
    /// reason; the others still serve.
    pub async fn load_models(&self, engine: Arc<Engine>, repository_root: &std::path::Path) {
        let mut tasks = Vec::new();
        for model in self.models.iter() {
            let state = model.state();
            if state != crate::models::ModelState::Loading {
                tracing::info!(
                    model = model.name(),
                    state = state.as_str(),
                    reason = state.reason().unwrap_or(""),
                    "model not loaded"
                );
                continue;
            }
            let model = model.clone();
            let engine = engine.clone();
            let dir = repository_root.join(model.name());
            tasks.push(tokio::task::spawn_blocking(move || {
                let start = Instant::now();
                let result = load_one(&engine, &model, &dir);
                (model, result, start.elapsed())
            }));
        }

        for task in tasks {
            let Ok((model, result, elapsed)) = task.await else {
                tracing::error!("model loading task panicked");
                continue;
            };
            match result {
                Ok((session, warm_up)) => {
                    tracing::info!(
                        model = model.name(),
                        load_ms = elapsed.as_millis() as u64,
                        warm_up_ms = warm_up.as_millis() as u64,
                        "model ready"
                    );
                    model.set_ready(Arc::new(session), elapsed);
                }
                Err(error) => {
                    tracing::error!(model = model.name(), %error, "model failed to load");
                    model.set_unavailable(format!(
                        "failed to load: {}",
                        load_failure_reason(&error)
                    ));
                }
            }
        }
        self.publish_readiness();
    }

    /// Classifies encoded images: decode and preprocess in parallel on the
    /// blocking pool, batch on the model's queue, then softmax and top-k.
    ///
    /// A successful result is remembered for `POST /v1/feedback`. A sampled
    /// INT8 request is also queued on its FP32 twin at low priority (see
    /// [`shadow`]). Neither delays the response.
    pub async fn classify(
        &self,
        request: ClassifyRequest,
    ) -> Result<ClassifyOutcome, ServiceError> {
        let deadline = self.deadline(request.timeout);
        let (model, session) = self.models.ready(&request.model)?;

        let preprocessed = self.preprocess_until(&model, request.images, deadline);
        let preprocessed = tokio::time::timeout_at(deadline, preprocessed)
            .await
            .map_err(|_| deadline_exceeded(model.name()))??;
        #[cfg_attr(not(feature = "fault-injection"), expect(unused_mut))]
        let (mut tensors, decode_timings): (Vec<_>, Vec<_>) = preprocessed
            .into_iter()
            .map(|p| (p.tensor, p.timings))
            .unzip();
        #[cfg(feature = "fault-injection")]
        fault::poison(&request.request_id, &mut tensors);

        let shadow_inputs = self
            .sample_shadow(&model)
            .map(|twin| (twin, tensors.clone()));
        let outputs = self.infer(&model, &session, tensors, deadline).await?;

        let images: Vec<ClassifiedImage> = outputs
            .into_iter()
            .zip(decode_timings)
            .map(|(output, decoded)| ClassifiedImage {
                classes: topk::classify(&output.logits, request.top_k, &self.labels),
                top5: top5_of(&output.logits),
                timings: StageTimings {
                    decode: decoded.decode,
                    preprocess: decoded.preprocess,
                    queue: output.queue,
                    inference: output.inference,
                    batch_size: output.batch_size,
                },
                logits: output.logits,
            })
            .collect();

        if let Some((twin, inputs)) = shadow_inputs {
            let run = ShadowRun::new(model.index, twin, &images, inputs);
            run.spawn(&self.scheduler, self.metrics.clone(), self.deadline(None));
        }
        self.feedback.insert(
            &request.request_id,
            model.index,
            images.iter().map(|image| image.top5).collect(),
        );
        Ok(ClassifyOutcome { model, images })
    }

    /// Decodes and preprocesses encoded images for a model, and records the
    /// time of each image. The Open Inference Protocol's BYTES input calls
    /// this directly because it needs the tensors themselves.
    ///
    /// Images still waiting for a decode worker when the default deadline
    /// passes are not decoded; [`Self::preprocess_until`] takes the
    /// request's own deadline.
    pub async fn preprocess(
        &self,
        model: &Model,
        images: Vec<Bytes>,
    ) -> Result<Vec<crate::decode::Preprocessed>, ServiceError> {
        self.preprocess_until(model, images, self.deadline(None))
            .await
    }

    /// [`Self::preprocess`] with the request's deadline: an image whose
    /// decode would start after it fails with `deadline_exceeded` instead.
    pub async fn preprocess_until(
        &self,
        model: &Model,
        images: Vec<Bytes>,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<crate::decode::Preprocessed>, ServiceError> {
        self.check_image_count(images.len())?;
        let spec = preprocess_spec(model);
        let preprocessed = self.decode.preprocess_all(images, spec, deadline).await?;
        for image in &preprocessed {
            let duration = image.timings.decode + image.timings.preprocess;
            self.metrics.record_preprocess(model.index, duration);
        }
        Ok(preprocessed)
    }

    /// Samples a request at `shadow_fraction` and returns the FP32 twin to
    /// shadow it on, for INT8 models that have one.
    fn sample_shadow(&self, model: &Model) -> Option<usize> {
        let twin = self.shadow_twins.get(model.index).copied().flatten()?;
        let fraction = self.config.shadow_fraction;
        (fraction > 0.0 && rand::random::<f64>() < fraction).then_some(twin)
    }

    /// Runs preprocessed images through the model's batching queue.
    ///
    /// Each tensor must already have the model's input length; callers
    /// validate shapes before they allocate anything sized by the request.
    pub async fn infer(
        &self,
        model: &Model,
        session: &ModelSession,
        tensors: Vec<Vec<f32>>,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<InferOutput>, ServiceError> {
        debug_assert!(tensors.iter().all(|t| t.len() == session.image_len()));
        let options = SubmitOptions::default().with_deadline(deadline);
        let pending = self
            .scheduler
            .submit(ModelId::new(model.index), tensors, options)
            .map_err(schedule_error)?;
        // The scheduler drops expired images only when it next forms a batch
        // for this model. The timeout returns 504 exactly at the deadline, and
        // dropping `pending` removes the request's queued images at once.
        let completed = tokio::time::timeout_at(deadline, pending)
            .await
            .map_err(|_| deadline_exceeded(model.name()))?
            .map_err(schedule_error)?;

        Ok(completed
            .into_iter()
            .map(|done| InferOutput {
                logits: done.value,
                queue: done.timings.queue_wait,
                inference: done.timings.inference,
                batch_size: done.timings.batch_size,
            })
            .collect())
    }

    /// Computes a request's deadline from its own timeout or the configured default.
    pub fn deadline(&self, timeout: Option<Duration>) -> tokio::time::Instant {
        tokio::time::Instant::now() + timeout.unwrap_or(self.config.admission.default_timeout)
    }

    fn check_image_count(&self, count: usize) -> Result<(), ServiceError> {
        let max = self.config.max_images_per_request;
        if count == 0 {
            return Err(ServiceError::invalid(
                "no_image",
                "the request contains no image",
            ));
        }
        if count > max {
            return Err(ServiceError::new(
                ErrorKind::PayloadTooLarge,
                "too_many_images",
                format!("the request has {count} images; the limit is {max}"),
            ));
        }
        Ok(())
    }
}

fn load_one(
    engine: &Engine,
    model: &Model,
    dir: &std::path::Path,
) -> Result<(ModelSession, Duration), effnet_engine::Error> {
    let entry = effnet_repository::ModelEntry {
        manifest: model.manifest.clone(),
        dir: dir.to_path_buf(),
        model_path: model.manifest.file.as_ref().map(|file| dir.join(file)),
    };
    let session = engine.load(&entry)?;

    // ONNX Runtime plans memory per input shape, so the first batch of each
    // size is slow. Every size the batcher can form is run once before the
    // model reports ready.
    let start = Instant::now();
    let sizes: Vec<usize> = (1..=model.settings.max_batch_size).collect();
    session.warm_up(&sizes)?;
    Ok((session, start.elapsed()))
}

/// Returns the five best class indices of one image's logits. Softmax keeps
/// the order of logits, so ranking the logits directly is enough.
fn top5_of(logits: &[f32]) -> Top5 {
    let mut top5 = [0u16; 5];
    for (slot, index) in top5.iter_mut().zip(topk::top_k_indices(logits, 5)) {
        *slot = index as u16;
    }
    top5
}

fn preprocess_spec(model: &Model) -> PreprocessSpec {
    let manifest = &model.manifest;
    PreprocessSpec {
        resolution: manifest.input.resolution,
        crop_padding: manifest.preprocessing.crop_padding,
        mean: manifest.preprocessing.mean,
        std: manifest.preprocessing.std,
    }
}

pub fn deadline_exceeded(model: &str) -> ServiceError {
    ServiceError::new(
        ErrorKind::DeadlineExceeded,
        "deadline_exceeded",
        format!("deadline exceeded before model {model} answered"),
    )
}

fn shutting_down() -> ServiceError {
    ServiceError::new(
        ErrorKind::Unavailable,
        "shutting_down",
        "the server is shutting down; retry on another replica",
    )
}

/// Converts a scheduler outcome into a service error; the only place that does.
fn schedule_error(error: effnet_scheduler::ScheduleError) -> ServiceError {
    use effnet_scheduler::ScheduleError as E;

    match &error {
        E::Rejected { retry_after, .. } => ServiceError::new(
            ErrorKind::Overloaded {
                retry_after: *retry_after,
            },
            "overloaded",
            error.to_string(),
        ),
        E::TooLarge { .. } => ServiceError::new(
            ErrorKind::PayloadTooLarge,
            "too_many_images",
            error.to_string(),
        ),
        E::DeadlineExceeded { .. } => ServiceError::new(
            ErrorKind::DeadlineExceeded,
            "deadline_exceeded",
            error.to_string(),
        ),
        E::ShuttingDown => shutting_down(),
        E::Cancelled { .. } | E::Skipped { .. } => {
            ServiceError::new(ErrorKind::Unavailable, "cancelled", error.to_string())
        }
        E::UnknownModel { .. } | E::Backend { .. } | E::Panicked { .. } => {
            // The details (ONNX Runtime messages, panic payloads) may name
            // files or code; they go to the log, which carries the request id.
            tracing::error!(%error, "inference failed");
            ServiceError::internal(
                "inference failed; the server logged the cause under this request id",
            )
        }
    }
}

/// Why a model failed to load, in words fit for clients: ONNX Runtime's own
/// messages name the model file's path, so they stay in the log.
fn load_failure_reason(error: &effnet_engine::Error) -> String {
    use effnet_engine::Error as E;

    match error {
        E::Load { .. } => {
            "ONNX Runtime could not read the model file (see the server log)".to_string()
        }
        E::Signature {
            found, expected, ..
        } => format!("the model has {found}, expected {expected}"),
        E::Unavailable { reason, .. } => reason.clone(),
        E::Run { .. } | E::BatchShape { .. } => {
            "the warm-up inference failed (see the server log)".to_string()
        }
        E::Library { .. } | E::Environment(_) => {
            "ONNX Runtime is not usable (see the server log)".to_string()
        }
    }
}

/// Generates a request id: 16 random hex digits.
pub fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The engine seen through the scheduler's backend interface.
pub struct EngineBackend {
    models: Arc<ModelRegistry>,
}

// === impl EngineBackend ===

impl EngineBackend {
    pub fn models(&self) -> &ModelRegistry {
        &self.models
    }
}

impl Backend for EngineBackend {
    type Input = Vec<f32>;
    type Output = Vec<f32>;

    fn run_batch(
        &self,
        model: ModelId,
        inputs: Vec<Vec<f32>>,
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let Some(model) = self.models.get(model.index()) else {
            return Err(BackendError::new(format!("unknown model {model}")));
        };
        let session = model.session().map_err(|e| BackendError::new(e.message))?;

        #[cfg(feature = "fault-injection")]
        fault::check_batch(&inputs);

        let count = inputs.len();
        let mut batch = Vec::with_capacity(count * session.image_len());
        for input in inputs {
            batch.extend_from_slice(&input);
        }
        let logits = session
            .run(batch)
            .map_err(|e| BackendError::from_error(&e))?;

        Ok(logits
            .chunks_exact(session.classes())
            .map(<[f32]>::to_vec)
            .collect())
    }
}

/// Deterministic failures for the panic-containment tests, compiled only with
/// the `fault-injection` feature (never in release builds of `scripts/run.sh`).
///
/// A batch whose first image tensor is all NaN makes the backend panic. REST
/// clients cannot send tensors, so a request whose id starts with
/// [`fault::PANIC_REQUEST_PREFIX`] has its tensors replaced by NaN first.
#[cfg(feature = "fault-injection")]
pub mod fault {
    /// Request ids with this prefix poison their tensors.
    pub const PANIC_REQUEST_PREFIX: &str = "fault-injection-panic";

    pub fn poison(request_id: &str, tensors: &mut [Vec<f32>]) {
        if request_id.starts_with(PANIC_REQUEST_PREFIX) {
            for tensor in tensors {
                tensor.fill(f32::NAN);
            }
        }
    }

    /// Panics on a batch whose first image tensor is all NaN.
    pub fn check_batch(inputs: &[Vec<f32>]) {
        if inputs
            .first()
            .is_some_and(|first| first.iter().all(|v| v.is_nan()))
        {
            panic!(
                "fault injection: batch of {} images starts with an all-NaN tensor",
                inputs.len()
            );
        }
    }
}
