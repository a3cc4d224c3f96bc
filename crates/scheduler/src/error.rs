//! Errors returned to callers of the scheduler and by backends.

use std::{fmt, sync::Arc, time::Duration};

use crate::ModelId;

/// Admission limit that rejected a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdmissionLimit {
    /// The model's `queue_limit`: images queued for that model.
    ModelQueue,
    /// The scheduler's `max_in_flight`: images queued or running across all models.
    InFlight,
}

/// Failure of a request submitted to the scheduler.
///
/// `model` fields carry the model's name. `Rejected`, `TooLarge`,
/// `ShuttingDown`, `Skipped` and `UnknownModel` come from `submit` itself.
/// The others come from awaiting the response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "request for model {model} rejected: {limit} of {max} images reached, retry after {} s",
        retry_after.as_secs()
    )]
    Rejected {
        model: Arc<str>,
        limit: AdmissionLimit,
        max: usize,
        /// Whole seconds, at least 1 s. See [`Scheduler`](crate::Scheduler) for the estimate.
        retry_after: Duration,
    },
    /// The request alone exceeds a limit, so retrying cannot succeed.
    #[error("request of {images} images for model {model} exceeds the {limit} of {max} images")]
    TooLarge {
        model: Arc<str>,
        limit: AdmissionLimit,
        images: usize,
        max: usize,
    },
    #[error("deadline exceeded while queued for model {model}")]
    DeadlineExceeded { model: Arc<str> },
    /// The scheduler was dropped while the request was still queued.
    #[error("request for model {model} cancelled because the scheduler was dropped")]
    Cancelled { model: Arc<str> },
    #[error("scheduler is shutting down and accepts no new requests")]
    ShuttingDown,
    /// A low-priority request was not admitted because the scheduler was busy.
    #[error("low-priority request for model {model} skipped because the scheduler is busy")]
    Skipped { model: Arc<str> },
    #[error("unknown model id {model}: the scheduler has {models} models")]
    UnknownModel { model: ModelId, models: usize },
    #[error("inference failed for model {model}: {message}")]
    Backend { model: Arc<str>, message: String },
    #[error("inference panicked for model {model}: {message}")]
    Panicked { model: Arc<str>, message: String },
}

/// Failure of one [`Backend::run_batch`](crate::Backend::run_batch) call; it
/// fails every request in that batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    message: String,
}

// === impl AdmissionLimit ===

impl fmt::Display for AdmissionLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ModelQueue => "model queue limit",
            Self::InFlight => "max in-flight",
        })
    }
}

// === impl ScheduleError ===

impl ScheduleError {
    /// Returns the suggested wait before retrying, for `Rejected` only.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Rejected { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

// === impl BackendError ===

impl BackendError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// Creates an error from `error` and its chain of sources, joined by ": ".
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self { message }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}
