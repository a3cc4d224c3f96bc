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
    models::{Model, ModelRegistry},
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
    pub protocol: Protocol,
}

pub struct ClassifyOutcome {
    pub model: Arc<Model>,
    pub images: Vec<ClassifiedImage>,
}

pub struct ClassifiedImage {
    pub classes: Vec<ClassScore>,
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
                    effnet_scheduler::ModelConfig::new(settings.max_batch_size, settings.queue_limit)
                        .with_max_queue_delay(Duration::from_millis(settings.max_queue_delay_ms)),
                )
            })
            .collect();
        let scheduler = Scheduler::new(
            EngineBackend {
                models: models.clone(),
            },
            effnet_scheduler::SchedulerConfig::new(
                config.threads.batch_workers,
                config.admission.max_in_flight_images,
            ),
            specs,
        )
        .map_err(|e| ServiceError::internal(e.to_string()))?;

        Ok(Self {
            decode: DecodePool::new(config.threads.decode_workers, config.limits.clone()),
            labels: repository.labels,
            models,
            scheduler,
            config,
            draining: AtomicBool::new(false),
        })
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
                    model.set_unavailable(format!("failed to load: {error}"));
                }
            }
        }
    }

    /// Classifies encoded images: decode and preprocess in parallel on the
    /// blocking pool, batch on the model's queue, then softmax and top-k.
    pub async fn classify(&self, request: ClassifyRequest) -> Result<ClassifyOutcome, ServiceError> {
        let deadline = self.deadline(request.timeout);
        let (model, session) = self.models.ready(&request.model)?;
        self.check_image_count(request.images.len())?;

        let spec = preprocess_spec(&model);
        let preprocessed = tokio::time::timeout_at(
            deadline,
            self.decode.preprocess_all(request.images, spec),
        )
        .await
        .map_err(|_| deadline_exceeded(model.name()))??;
        let (tensors, decode_timings): (Vec<_>, Vec<_>) = preprocessed
            .into_iter()
            .map(|p| (p.tensor, p.timings))
            .unzip();

        let outputs = self.infer(&model, &session, tensors, deadline).await?;

        let images = outputs
            .into_iter()
            .zip(decode_timings)
            .map(|(output, decoded)| ClassifiedImage {
                classes: topk::classify(&output.logits, request.top_k, &self.labels),
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
        Ok(ClassifyOutcome { model, images })
    }

    /// Decodes and preprocesses encoded images for a model, for callers that
    /// need the tensors themselves (the Open Inference Protocol's BYTES input).
    pub async fn preprocess(
        &self,
        model: &Model,
        images: Vec<Bytes>,
    ) -> Result<Vec<crate::decode::Preprocessed>, ServiceError> {
        self.check_image_count(images.len())?;
        self.decode.preprocess_all(images, preprocess_spec(model)).await
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
        // The scheduler drops expired images when it next forms a batch for
        // this model; the timeout answers the client exactly at the deadline,
        // and dropping `pending` removes the request's queued images at once.
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

    /// The deadline of a request: its own timeout, or the configured default.
    pub fn deadline(&self, timeout: Option<Duration>) -> tokio::time::Instant {
        tokio::time::Instant::now() + timeout.unwrap_or(self.config.admission.default_timeout)
    }

    fn check_image_count(&self, count: usize) -> Result<(), ServiceError> {
        let max = self.config.max_images_per_request;
        if count == 0 {
            return Err(ServiceError::invalid("no_image", "the request contains no image"));
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

    let start = Instant::now();
    let mut sizes: Vec<usize> = [1, 2, 4, 8, 16, 32, 64]
        .into_iter()
        .filter(|&size| size < model.settings.max_batch_size)
        .collect();
    sizes.push(model.settings.max_batch_size);
    session.warm_up(&sizes)?;
    Ok((session, start.elapsed()))
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

fn deadline_exceeded(model: &str) -> ServiceError {
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

/// The single conversion of scheduler outcomes into service errors.
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
        E::TooLarge { .. } => {
            ServiceError::new(ErrorKind::PayloadTooLarge, "too_many_images", error.to_string())
        }
        E::DeadlineExceeded { .. } => {
            ServiceError::new(ErrorKind::DeadlineExceeded, "deadline_exceeded", error.to_string())
        }
        E::ShuttingDown => shutting_down(),
        E::Cancelled { .. } | E::Skipped { .. } => {
            ServiceError::new(ErrorKind::Unavailable, "cancelled", error.to_string())
        }
        E::UnknownModel { .. } | E::Backend { .. } | E::Panicked { .. } => {
            tracing::error!(%error, "inference failed");
            ServiceError::internal(error.to_string())
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

impl Backend for EngineBackend {
    type Input = Vec<f32>;
    type Output = Vec<f32>;

    fn run_batch(&self, model: ModelId, inputs: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, BackendError> {
        let Some(model) = self.models.get(model.index()) else {
            return Err(BackendError::new(format!("unknown model {model}")));
        };
        let session = model.session().map_err(|e| BackendError::new(e.message))?;

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
