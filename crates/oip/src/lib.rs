//! The Open Inference Protocol (KServe v2) requests of the EfficientNet-Lite
//! models, independent of transport and of the server.
//!
//! Both API edges of `effnet-serve` build the same [`InferInput`]s and
//! [`RequestedOutput`]s: the gRPC edge from protobuf messages, the HTTP edge
//! with [`json::parse_request`], which reads the JSON body and Triton's
//! binary tensor data extension. [`check_input`] and [`check_outputs`] then
//! check them against the model before any work is queued.
//!
//! Every size a client declares (shape, element count, byte length) is
//! checked against the model and the bytes actually received before anything
//! sized by it is allocated. The crate does no I/O, so that fuzz targets can
//! drive the parsers directly.

pub mod json;

mod input;

pub use input::{Images, InputSpec, check_input, check_outputs};

use bytes::Bytes;

/// Name of the one input tensor of every model.
pub const INPUT_NAME: &str = "input";

/// Name of the one output tensor of every model.
pub const OUTPUT_NAME: &str = "logits";

/// Bytes per FP32 element.
pub const FP32_SIZE: usize = 4;

/// Bytes of the little-endian length prefix of each BYTES element in raw
/// (binary) tensor data.
pub const BYTES_LENGTH_PREFIX: usize = 4;

/// The elements of an input tensor as they arrived.
#[derive(Debug)]
pub enum TensorData {
    /// Little-endian elements back to back: FP32 values, or for BYTES each
    /// element as a 4-byte little-endian length and its bytes.
    Raw(Bytes),
    /// FP32 values from a typed field (gRPC `fp32_contents`, JSON numbers).
    Fp32(Vec<f32>),
    /// BYTES elements from a typed field (gRPC `bytes_contents`, JSON strings).
    Bytes(Vec<Bytes>),
}

/// One input tensor of an inference request.
#[derive(Debug)]
pub struct InferInput {
    pub name: String,
    /// The datatype as the client spelled it, such as `FP32` or `BYTES`.
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

/// An output the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedOutput {
    pub name: String,
    /// Triton's classification extension: return the top `k` classes as
    /// `score:index:label` strings instead of the logits.
    pub classification: Option<usize>,
    /// HTTP binary tensor data extension: return the output as raw bytes.
    pub binary_data: bool,
}

/// Whether a rejected request is malformed or merely too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request breaks the protocol or does not fit the model.
    InvalidArgument,
    /// The request has more images than the configured limit.
    TooLarge,
}

/// A rejected request, with a stable machine-readable code and a message
/// that names the offending field or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    /// Stable identifier such as `invalid_shape`, for client code.
    pub code: &'static str,
    pub message: String,
}

// === impl Error ===

impl Error {
    fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidArgument,
            code,
            message: message.into(),
        }
    }

    fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::TooLarge,
            code,
            message: message.into(),
        }
    }
}

/// Shortens a client-supplied name for error messages.
pub(crate) fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}
