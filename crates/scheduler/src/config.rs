//! Model and scheduler settings, and the per-request submit options.

use std::{fmt, time::Duration};

use tokio::time::Instant;

/// Index of a model in the list the [`Scheduler`](crate::Scheduler) was built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(usize);

/// A model's name and batching settings, as passed to [`Scheduler::new`](crate::Scheduler::new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Name used in errors and logs, unique within one scheduler.
    pub name: String,
    pub config: ModelConfig,
}

/// Batching and admission settings of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    /// Maximum images per backend call. A larger request is split across batches.
    pub max_batch_size: usize,
    /// How long the oldest queued image may wait for a fuller batch while a
    /// worker is free. Zero (the default) dispatches whatever is queued at once.
    pub max_queue_delay: Duration,
    /// Maximum images queued (admitted but not yet running) for this model.
    pub queue_limit: usize,
}

/// Settings shared by all models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Batches that may run at once, across all models.
    pub workers: usize,
    /// Maximum images admitted and not yet finished (queued plus running), across all models.
    pub max_in_flight: usize,
}

/// Scheduling class of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    #[default]
    Normal,
    /// Background work such as shadow comparisons. It is admitted only while
    /// the scheduler is nearly idle, and it never runs ahead of normal work.
    Low,
}

/// Per-request options of [`Scheduler::submit`](crate::Scheduler::submit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubmitOptions {
    pub priority: Priority,
    /// Latest time at which the request's images may start running. Images
    /// still queued at the deadline never reach the backend, and the whole
    /// request fails with `DeadlineExceeded`, even when a part of it already
    /// ran. Images already running are not interrupted.
    pub deadline: Option<Instant>,
}

/// Invalid [`SchedulerConfig`] or [`ModelSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid scheduler config: {field} must be at least 1")]
    Zero { field: &'static str },
    #[error("invalid config for model {model:?}: {field} must be at least 1")]
    ModelZero { model: String, field: &'static str },
    #[error("invalid scheduler config: no models given")]
    NoModels,
    #[error("invalid scheduler config: model name {name:?} given twice")]
    DuplicateModel { name: String },
}

// === impl ModelId ===

impl ModelId {
    /// Returns the id of the `index`-th model (from zero) passed to
    /// [`Scheduler::new`](crate::Scheduler::new).
    pub const fn new(index: usize) -> Self {
        Self(index)
    }

    pub const fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

// === impl ModelSpec ===

impl ModelSpec {
    pub fn new(name: impl Into<String>, config: ModelConfig) -> Self {
        Self {
            name: name.into(),
            config,
        }
    }
}

// === impl ModelConfig ===

impl ModelConfig {
    /// Creates a config that dispatches without waiting (`max_queue_delay` zero).
    pub const fn new(max_batch_size: usize, queue_limit: usize) -> Self {
        Self {
            max_batch_size,
            max_queue_delay: Duration::ZERO,
            queue_limit,
        }
    }

    pub const fn with_max_queue_delay(mut self, delay: Duration) -> Self {
        self.max_queue_delay = delay;
        self
    }
}

// === impl SchedulerConfig ===

impl SchedulerConfig {
    pub const fn new(workers: usize, max_in_flight: usize) -> Self {
        Self {
            workers,
            max_in_flight,
        }
    }

    /// Checks the scheduler-wide settings and every model's settings.
    pub(crate) fn validate(&self, models: &[ModelSpec]) -> Result<(), ConfigError> {
        if self.workers == 0 {
            return Err(ConfigError::Zero { field: "workers" });
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::Zero {
                field: "max_in_flight",
            });
        }
        if models.is_empty() {
            return Err(ConfigError::NoModels);
        }

        for (index, spec) in models.iter().enumerate() {
            let zero_field = if spec.config.max_batch_size == 0 {
                Some("max_batch_size")
            } else if spec.config.queue_limit == 0 {
                Some("queue_limit")
            } else {
                None
            };
            if let Some(field) = zero_field {
                return Err(ConfigError::ModelZero {
                    model: spec.name.clone(),
                    field,
                });
            }
            if models[..index].iter().any(|other| other.name == spec.name) {
                return Err(ConfigError::DuplicateModel {
                    name: spec.name.clone(),
                });
            }
        }
        Ok(())
    }
}

// === impl SubmitOptions ===

impl SubmitOptions {
    pub fn low_priority() -> Self {
        Self {
            priority: Priority::Low,
            deadline: None,
        }
    }

    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }
}
