//! The Open Inference Protocol (KServe v2) independent of its transport:
//! model metadata and configuration, and inference through
//! [`InferenceService`]. The HTTP edge (`http::oip`) and the gRPC edge
//! (`grpc::oip`) translate their wire formats into these types and convert
//! [`ServiceError`] into their own status codes.
//!
//! `effnet-oip` checks every size the client declares against the model and
//! the bytes received before anything sized by the request is allocated.

use std::{sync::Arc, time::Duration};

use effnet_oip::{BYTES_LENGTH_PREFIX, INPUT_NAME, Images, InputSpec, OUTPUT_NAME};

use crate::{
    error::{ErrorKind, ServiceError},
    models::Model,
    service::{self, InferenceService},
    topk,
};

pub use effnet_oip::{InferInput, RequestedOutput, TensorData};

/// The only version every model has.
pub const MODEL_VERSION: &str = "1";

/// The platform reported in model metadata and configuration.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// Protocol extensions the server implements, for server metadata.
pub const EXTENSIONS: &[&str] = &[
    "classification",
    "binary_tensor_data",
    "model_configuration",
    "statistics",
];

/// The tensor datatypes the server returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    Fp32,
    Bytes,
}

/// An inference request in protocol-neutral form.
#[derive(Debug)]
pub struct InferRequest {
    pub model: String,
    /// Empty or `"1"`.
    pub version: String,
    pub id: String,
    pub inputs: Vec<InferInput>,
    /// Empty means every output (only `logits`), as the protocol specifies.
    pub outputs: Vec<RequestedOutput>,
    pub timeout: Option<Duration>,
}

/// One output tensor of an inference response.
#[derive(Debug)]
pub struct InferOutputTensor {
    pub name: String,
    pub datatype: Datatype,
    pub shape: Vec<i64>,
    pub data: OutputData,
    pub binary_data: bool,
}

#[derive(Debug)]
pub enum OutputData {
    Fp32(Vec<f32>),
    Bytes(Vec<String>),
}

pub struct InferResponse {
    pub model: Arc<Model>,
    pub id: String,
    /// Images in the batch, the first dimension of every output.
    pub images: usize,
    pub outputs: Vec<InferOutputTensor>,
}

/// A tensor description for model metadata.
#[derive(Debug, Clone)]
pub struct TensorMetadata {
    pub name: &'static str,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

// === impl Datatype ===

impl Datatype {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fp32 => "FP32",
            Self::Bytes => "BYTES",
        }
    }
}

// === impl OutputData ===

impl OutputData {
    /// Encodes the data as raw (binary) tensor data: little-endian FP32
    /// values, or length-prefixed BYTES elements.
    pub fn to_raw(&self) -> Vec<u8> {
        match self {
            Self::Fp32(values) => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Self::Bytes(strings) => {
                let mut raw =
                    Vec::with_capacity(strings.iter().map(|s| s.len() + BYTES_LENGTH_PREFIX).sum());
                for s in strings {
                    raw.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    raw.extend_from_slice(s.as_bytes());
                }
                raw
            }
        }
    }
}

/// Checks a requested model version: empty or `"1"`; others are not found.
pub fn check_version(model: &Model, version: &str) -> Result<(), ServiceError> {
    if version.is_empty() || version == MODEL_VERSION {
        return Ok(());
    }
    let shown: String = version.chars().take(32).collect();
    Err(ServiceError::new(
        ErrorKind::NotFound,
        "version_not_found",
        format!(
            "model {} has no version {shown:?}; the only version is {MODEL_VERSION}",
            model.name()
        ),
    ))
}

/// Resolves a model name and version for the metadata, readiness and
/// configuration endpoints.
pub fn resolve<'a>(
    service: &'a InferenceService,
    name: &str,
    version: &str,
) -> Result<&'a Arc<Model>, ServiceError> {
    let model = service.models().resolve(name)?;
    check_version(model, version)?;
    Ok(model)
}

/// Describes the input and output tensors of a model, with -1 for the batch
/// dimension.
pub fn model_tensors(model: &Model) -> (TensorMetadata, TensorMetadata) {
    let resolution = i64::from(model.manifest.input.resolution);
    let input = TensorMetadata {
        name: INPUT_NAME,
        datatype: "FP32",
        shape: vec![-1, 3, resolution, resolution],
    };
    let output = TensorMetadata {
        name: OUTPUT_NAME,
        datatype: "FP32",
        shape: vec![-1, model.manifest.output.classes as i64],
    };
    (input, output)
}

/// Runs an inference request: validates every input against the model,
/// decodes BYTES images like the REST API, and queues the tensors on the
/// model's batcher.
pub async fn infer(
    service: &InferenceService,
    request: InferRequest,
) -> Result<InferResponse, ServiceError> {
    let deadline = service.deadline(request.timeout);
    let (model, session) = service.models().ready(&request.model)?;
    check_version(&model, &request.version)?;
    let outputs = effnet_oip::check_outputs(&request.outputs)?;
    let spec = InputSpec {
        resolution: session.resolution(),
        max_images: service.config().max_images_per_request,
    };

    let tensors = match effnet_oip::check_input(request.inputs, spec)? {
        Images::Tensors(tensors) => tensors,
        Images::Encoded(images) => {
            tokio::time::timeout_at(deadline, service.preprocess(&model, images))
                .await
                .map_err(|_| service::deadline_exceeded(model.name()))??
                .into_iter()
                .map(|p| p.tensor)
                .collect()
        }
    };

    let results = service.infer(&model, &session, tensors, deadline).await?;
    let count = results.len();
    let classes = session.classes();
    let logits: Vec<Vec<f32>> = results.into_iter().map(|r| r.logits).collect();

    let outputs = outputs
        .into_iter()
        .map(|requested| match requested.classification {
            Some(k) => {
                let k = k.min(classes);
                let strings = logits
                    .iter()
                    .flat_map(|l| {
                        topk::classify(l, k, service.labels())
                            .into_iter()
                            .map(|c| format!("{}:{}:{}", c.score, c.index, c.label))
                    })
                    .collect();
                InferOutputTensor {
                    name: requested.name,
                    datatype: Datatype::Bytes,
                    shape: vec![count as i64, k as i64],
                    data: OutputData::Bytes(strings),
                    binary_data: requested.binary_data,
                }
            }
            None => InferOutputTensor {
                name: requested.name,
                datatype: Datatype::Fp32,
                shape: vec![count as i64, classes as i64],
                data: OutputData::Fp32(logits.concat()),
                binary_data: requested.binary_data,
            },
        })
        .collect();

    Ok(InferResponse {
        model,
        id: request.id,
        images: count,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_output_bytes_prefixed() {
        let raw = OutputData::Bytes(vec!["ab".into()]).to_raw();

        assert_eq!(raw, vec![2, 0, 0, 0, b'a', b'b']);
    }
}
