//! The protocol-neutral error of the request path.
//!
//! Every failure a client can cause or see is a [`ServiceError`] with a
//! [`ErrorKind`]; each API edge (REST, Open Inference Protocol over HTTP,
//! gRPC) converts it once into its own status code and body.

use std::time::Duration;

/// What went wrong, in the terms the protocols map to status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed: HTTP 400, gRPC `INVALID_ARGUMENT`.
    InvalidArgument,
    /// Unknown model or version: HTTP 404, gRPC `NOT_FOUND`.
    NotFound,
    /// The body or an image is larger than a configured limit: HTTP 413,
    /// gRPC `RESOURCE_EXHAUSTED`.
    PayloadTooLarge,
    /// The bytes are not an image format the server decodes: HTTP 415,
    /// gRPC `INVALID_ARGUMENT`.
    UnsupportedMediaType,
    /// The image could not be decoded or exceeds a dimension limit: HTTP 422,
    /// gRPC `INVALID_ARGUMENT`.
    Unprocessable,
    /// Admission control rejected the request: HTTP 429 with `Retry-After`,
    /// gRPC `RESOURCE_EXHAUSTED`.
    Overloaded { retry_after: Duration },
    /// The request's deadline passed before it finished: HTTP 504, gRPC
    /// `DEADLINE_EXCEEDED`.
    DeadlineExceeded,
    /// The model exists but cannot serve, or the server is shutting down:
    /// HTTP 503, gRPC `UNAVAILABLE`.
    Unavailable,
    /// A bug or an engine failure: HTTP 500, gRPC `INTERNAL`.
    Internal,
}

/// An error with a stable machine-readable code and a message for people.
///
/// Messages name the offending value and never contain file paths or other
/// internals.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    /// Stable identifier such as `model_not_found`, for client code.
    pub code: &'static str,
    pub message: String,
}

// === impl ServiceError ===

impl ServiceError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", message)
    }
}

impl From<effnet_imaging::ImageError> for ServiceError {
    fn from(error: effnet_imaging::ImageError) -> Self {
        use effnet_imaging::ImageErrorKind as Kind;

        let kind = match error.kind() {
            Kind::Empty => ErrorKind::InvalidArgument,
            Kind::UnknownFormat | Kind::UnsupportedFormat => ErrorKind::UnsupportedMediaType,
            Kind::Invalid => ErrorKind::Unprocessable,
            Kind::TooLarge if error.code() == "image_input_too_large" => ErrorKind::PayloadTooLarge,
            Kind::TooLarge => ErrorKind::Unprocessable,
            Kind::Internal => ErrorKind::Internal,
        };
        Self::new(kind, error.code(), error.to_string())
    }
}

impl From<effnet_oip::Error> for ServiceError {
    fn from(error: effnet_oip::Error) -> Self {
        let kind = match error.kind {
            effnet_oip::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            effnet_oip::ErrorKind::TooLarge => ErrorKind::PayloadTooLarge,
        };
        Self::new(kind, error.code, error.message)
    }
}
