//! ONNX Runtime sessions for the models of a repository.
//!
//! One process-wide ONNX Runtime environment owns a single global intra-op
//! thread pool; every session is created with per-session threads disabled,
//! so ten loaded models share one compute budget instead of spawning ten
//! pools. The number of batches that run at once is the scheduler's business,
//! not this crate's.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use effnet_repository::ModelEntry;
use ort::{
    environment::{Environment, GlobalThreadPoolOptions},
    session::{Session, builder::GraphOptimizationLevel},
    value::Tensor,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to load the ONNX Runtime library {path}: {message}")]
    Library { path: PathBuf, message: String },
    #[error("failed to create the ONNX Runtime environment: {0}")]
    Environment(String),
    #[error("model {model} is unavailable: {reason}")]
    Unavailable { model: String, reason: String },
    #[error("failed to load model {model} from {path}: {message}")]
    Load {
        model: String,
        path: PathBuf,
        message: String,
    },
    #[error("model {model} has {found}, expected {expected}")]
    Signature {
        model: String,
        found: String,
        expected: String,
    },
    #[error("inference on model {model} failed: {message}")]
    Run { model: String, message: String },
    #[error("batch for model {model} has {len} floats, not a multiple of one image ({per_image})")]
    BatchShape {
        model: String,
        len: usize,
        per_image: usize,
    },
}

/// Thread settings of the shared ONNX Runtime environment.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Path of `libonnxruntime.so.*`.
    pub library: PathBuf,
    /// Threads of the global intra-op pool, shared by all sessions.
    pub intra_op_threads: usize,
    /// Whether idle pool threads busy-wait for work. Spinning lowers latency
    /// under constant load but steals CPU from image decoding otherwise.
    pub spinning: bool,
    /// Sessions per model; each runs one batch at a time.
    pub instances_per_model: usize,
}

/// The process-wide ONNX Runtime environment.
pub struct Engine {
    environment: Environment,
    config: EngineConfig,
}

/// One loaded model: its sessions and the tensor names and shapes it expects.
pub struct ModelSession {
    name: String,
    input_name: String,
    output_name: String,
    resolution: usize,
    classes: usize,
    /// Each session runs one batch at a time (`Session::run` takes `&mut`).
    instances: Vec<Mutex<Session>>,
}

// === impl Engine ===

impl Engine {
    /// Loads the ONNX Runtime library and creates the environment with its
    /// global thread pool. Only one engine may exist per process.
    pub fn new(config: EngineConfig) -> Result<Self, Error> {
        let library_error = |message: String| Error::Library {
            path: config.library.clone(),
            message,
        };
        let builder = ort::init_from(&config.library).map_err(|e| library_error(e.to_string()))?;

        let pool = GlobalThreadPoolOptions::default()
            .with_intra_threads(config.intra_op_threads.max(1))
            .and_then(|pool| pool.with_inter_threads(1))
            .and_then(|pool| pool.with_spin_control(config.spinning))
            .map_err(|e| Error::Environment(e.to_string()))?;
        let environment = builder
            .with_name("effnet-serve")
            .with_global_thread_pool(pool)
            .build()
            .map_err(|e| Error::Environment(e.to_string()))?;

        tracing::info!(
            library = %config.library.display(),
            intra_op_threads = config.intra_op_threads,
            spinning = config.spinning,
            "onnx runtime environment created"
        );
        Ok(Self {
            environment,
            config,
        })
    }

    /// Creates the sessions of one available model and checks that its
    /// input and output match the manifest.
    pub fn load(&self, entry: &ModelEntry) -> Result<ModelSession, Error> {
        let manifest = &entry.manifest;
        let Some(path) = &entry.model_path else {
            return Err(Error::Unavailable {
                model: manifest.name.clone(),
                reason: manifest
                    .unavailable_reason
                    .clone()
                    .unwrap_or_else(|| "no model file".into()),
            });
        };

        let instances = (0..self.config.instances_per_model.max(1))
            .map(|_| self.create_session(&manifest.name, path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;

        let model = ModelSession {
            name: manifest.name.clone(),
            input_name: manifest.input.name.clone(),
            output_name: manifest.output.name.clone(),
            resolution: manifest.input.resolution as usize,
            classes: manifest.output.classes,
            instances,
        };
        model.check_signature()?;
        Ok(model)
    }

    fn create_session(&self, model: &str, path: &Path) -> Result<Session, Error> {
        let load_error = |message: String| Error::Load {
            model: model.to_string(),
            path: path.to_path_buf(),
            message,
        };
        Session::builder(&self.environment)
            .and_then(|b| Ok(b.with_optimization_level(GraphOptimizationLevel::All)?))
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| load_error(e.to_string()))
    }
}

// === impl ModelSession ===

impl ModelSession {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Side of the square input in pixels.
    pub fn resolution(&self) -> usize {
        self.resolution
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Floats in one preprocessed image: `3 * resolution * resolution`.
    pub fn image_len(&self) -> usize {
        3 * self.resolution * self.resolution
    }

    /// Runs one batch. `batch` holds `n` images back to back in NCHW order;
    /// the result holds `n * classes` logits in the same order.
    pub fn run(&self, batch: Vec<f32>) -> Result<Vec<f32>, Error> {
        let per_image = self.image_len();
        if batch.is_empty() || !batch.len().is_multiple_of(per_image) {
            return Err(Error::BatchShape {
                model: self.name.clone(),
                len: batch.len(),
                per_image,
            });
        }
        let n = batch.len() / per_image;
        let run_error = |message: String| Error::Run {
            model: self.name.clone(),
            message,
        };

        let shape = [n, 3, self.resolution, self.resolution];
        let input = Tensor::from_array((shape, batch)).map_err(|e| run_error(e.to_string()))?;
        let mut session = self.acquire();
        let outputs = session
            .run(ort::inputs![self.input_name.as_str() => input])
            .map_err(|e| run_error(e.to_string()))?;
        let (shape, logits) = outputs[self.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| run_error(e.to_string()))?;

        if shape.len() != 2 || shape[0] as usize != n || shape[1] as usize != self.classes {
            return Err(run_error(format!(
                "output shape {shape:?}, expected [{n}, {}]",
                self.classes
            )));
        }
        Ok(logits.to_vec())
    }

    /// Runs one batch of zeros of each given size, so that ONNX Runtime
    /// allocates and plans for the shapes it will see before traffic does.
    /// Returns the time each size took.
    pub fn warm_up(&self, batch_sizes: &[usize]) -> Result<Vec<(usize, Duration)>, Error> {
        let mut timings = Vec::with_capacity(batch_sizes.len());
        for &size in batch_sizes {
            for _ in 0..self.instances.len() {
                let start = Instant::now();
                self.run(vec![0.0; size * self.image_len()])?;
                timings.push((size, start.elapsed()));
            }
        }
        Ok(timings)
    }

    /// Takes a free session, or waits for the first one.
    fn acquire(&self) -> MutexGuard<'_, Session> {
        for instance in &self.instances {
            if let Ok(guard) = instance.try_lock() {
                return guard;
            }
        }
        // NOTE: a poisoned session only means an earlier run panicked while
        // holding it; ONNX Runtime sessions keep no state between runs.
        self.instances[0]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_signature(&self) -> Result<(), Error> {
        let session = self.acquire();
        let signature_error = |found: String, expected: String| Error::Signature {
            model: self.name.clone(),
            found,
            expected,
        };

        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        if inputs != [self.input_name.as_str()] {
            return Err(signature_error(
                format!("inputs {inputs:?}"),
                format!("one input {:?}", self.input_name),
            ));
        }
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        if !outputs.contains(&self.output_name.as_str()) {
            return Err(signature_error(
                format!("outputs {outputs:?}"),
                format!("an output {:?}", self.output_name),
            ));
        }
        Ok(())
    }
}
