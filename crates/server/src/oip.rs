//! The Open Inference Protocol (KServe v2) independent of its transport:
//! model metadata and configuration, validation of inference requests, and
//! inference through [`InferenceService`]. The HTTP edge (`http::oip`) and
//! the gRPC edge (`grpc::oip`) translate their wire formats into these
//! types and convert [`ServiceError`] into their own status codes.
//!
//! Every size the client declares (shape, element count, byte length) is
//! checked against the model and the actual bytes before anything sized by
//! the request is allocated.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use crate::{
    error::{ErrorKind, ServiceError},
    models::Model,
    service::{self, InferenceService},
    topk,
};

/// Name of the one input tensor of every model.
pub const INPUT_NAME: &str = "input";

/// Name of the one output tensor of every model.
pub const OUTPUT_NAME: &str = "logits";

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

/// Bytes per FP32 element.
const FP32_SIZE: usize = 4;

/// Bytes of the little-endian length prefix of each BYTES element in raw
/// (binary) tensor data.
const BYTES_LENGTH_PREFIX: usize = 4;

/// The tensor datatypes the server accepts or returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    Fp32,
    Bytes,
}

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
#[derive(Debug, Clone)]
pub struct RequestedOutput {
    pub name: String,
    /// Triton's classification extension: return the top `k` classes as
    /// `score:index:label` strings instead of the logits.
    pub classification: Option<usize>,
    /// HTTP binary tensor data extension: return the output as raw bytes.
    pub binary_data: bool,
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
    let outputs = check_outputs(&request.outputs)?;

    let [input]: [InferInput; 1] =
        request
            .inputs
            .try_into()
            .map_err(|inputs: Vec<InferInput>| {
                ServiceError::invalid(
                    "invalid_inputs",
                    format!(
                        "expected exactly one input named {INPUT_NAME:?}, got {}",
                        inputs.len()
                    ),
                )
            })?;
    if input.name != INPUT_NAME {
        return Err(ServiceError::invalid(
            "unknown_input",
            format!(
                "unknown input {:?}; the model's input is {INPUT_NAME:?}",
                truncate(&input.name)
            ),
        ));
    }

    let max_images = service.config().max_images_per_request;
    let tensors = match input.datatype.as_str() {
        "FP32" => {
            let image_len = session.image_len();
            let resolution = session.resolution() as i64;
            let count = check_fp32_shape(&input.shape, resolution, max_images)?;
            fp32_images(input.data, count, image_len)?
        }
        "BYTES" => {
            let count = check_bytes_shape(&input.shape, max_images)?;
            let images = bytes_elements(input.data, count)?;
            tokio::time::timeout_at(deadline, service.preprocess(&model, images))
                .await
                .map_err(|_| service::deadline_exceeded(model.name()))??
                .into_iter()
                .map(|p| p.tensor)
                .collect()
        }
        other => {
            return Err(ServiceError::invalid(
                "invalid_datatype",
                format!(
                    "input {INPUT_NAME:?} must be FP32 or BYTES, got {:?}",
                    truncate(other)
                ),
            ));
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

/// Checks the requested outputs and returns them, or `logits` when the
/// client named none.
fn check_outputs(requested: &[RequestedOutput]) -> Result<Vec<RequestedOutput>, ServiceError> {
    if requested.is_empty() {
        return Ok(vec![RequestedOutput {
            name: OUTPUT_NAME.to_string(),
            classification: None,
            binary_data: false,
        }]);
    }
    for output in requested {
        if output.name != OUTPUT_NAME {
            return Err(ServiceError::invalid(
                "unknown_output",
                format!(
                    "unknown output {:?}; the model's output is {OUTPUT_NAME:?}",
                    truncate(&output.name)
                ),
            ));
        }
        if output.classification == Some(0) {
            return Err(ServiceError::invalid(
                "invalid_classification",
                "classification must be at least 1",
            ));
        }
    }
    Ok(requested.to_vec())
}

/// Checks an FP32 shape against `[N, 3, R, R]` and returns N.
fn check_fp32_shape(
    shape: &[i64],
    resolution: i64,
    max_images: usize,
) -> Result<usize, ServiceError> {
    let expected = [3, resolution, resolution];
    if shape.len() != 4 || shape[1..] != expected {
        return Err(ServiceError::invalid(
            "invalid_shape",
            format!("FP32 input shape must be [N, 3, {resolution}, {resolution}], got {shape:?}"),
        ));
    }
    check_batch(shape[0], max_images)
}

/// Checks a BYTES shape, `[N]` or `[N, 1]`, and returns N.
fn check_bytes_shape(shape: &[i64], max_images: usize) -> Result<usize, ServiceError> {
    match shape {
        [n] | [n, 1] => check_batch(*n, max_images),
        _ => Err(ServiceError::invalid(
            "invalid_shape",
            format!("BYTES input shape must be [N] or [N, 1], got {shape:?}"),
        )),
    }
}

fn check_batch(n: i64, max_images: usize) -> Result<usize, ServiceError> {
    if n < 0 {
        return Err(ServiceError::invalid(
            "invalid_shape",
            format!("negative batch dimension {n}"),
        ));
    }
    if n == 0 {
        return Err(ServiceError::invalid(
            "no_image",
            "the batch dimension is 0",
        ));
    }
    if n as u64 > max_images as u64 {
        return Err(ServiceError::new(
            ErrorKind::PayloadTooLarge,
            "too_many_images",
            format!("the request has {n} images; the limit is {max_images}"),
        ));
    }
    Ok(n as usize)
}

/// Splits FP32 data into `count` images of `image_len` values each, after
/// checking that the data contains exactly that many elements.
fn fp32_images(
    data: TensorData,
    count: usize,
    image_len: usize,
) -> Result<Vec<Vec<f32>>, ServiceError> {
    let elements = count * image_len;
    match data {
        TensorData::Raw(raw) => {
            if raw.len() != elements * FP32_SIZE {
                return Err(byte_length_mismatch(elements * FP32_SIZE, raw.len()));
            }
            Ok(raw
                .chunks_exact(image_len * FP32_SIZE)
                .map(|image| {
                    image
                        .chunks_exact(FP32_SIZE)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect()
                })
                .collect())
        }
        TensorData::Fp32(values) => {
            if values.len() != elements {
                return Err(element_count_mismatch(elements, values.len()));
            }
            Ok(values
                .chunks_exact(image_len)
                .map(<[f32]>::to_vec)
                .collect())
        }
        TensorData::Bytes(_) => Err(ServiceError::invalid(
            "invalid_datatype",
            "input declared FP32 but carries BYTES contents",
        )),
    }
}

/// Returns the `count` encoded images of BYTES data, after checking that the
/// data holds exactly that many elements.
fn bytes_elements(data: TensorData, count: usize) -> Result<Vec<Bytes>, ServiceError> {
    match data {
        TensorData::Raw(raw) => {
            let mut images = Vec::with_capacity(count);
            let mut rest = raw;
            while !rest.is_empty() {
                if rest.len() < BYTES_LENGTH_PREFIX {
                    return Err(ServiceError::invalid(
                        "invalid_byte_length",
                        "BYTES data ends inside an element's 4-byte length prefix",
                    ));
                }
                let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let available = rest.len() - BYTES_LENGTH_PREFIX;
                if length > available {
                    return Err(ServiceError::invalid(
                        "invalid_byte_length",
                        format!(
                            "BYTES element {} declares {length} bytes but only {available} remain",
                            images.len()
                        ),
                    ));
                }
                if images.len() == count {
                    return Err(ServiceError::invalid(
                        "invalid_element_count",
                        format!("BYTES data holds more than the {count} elements of the shape"),
                    ));
                }
                let _ = rest.split_to(BYTES_LENGTH_PREFIX);
                images.push(rest.split_to(length));
            }
            if images.len() != count {
                return Err(element_count_mismatch(count, images.len()));
            }
            Ok(images)
        }
        TensorData::Bytes(elements) => {
            if elements.len() != count {
                return Err(element_count_mismatch(count, elements.len()));
            }
            Ok(elements)
        }
        TensorData::Fp32(_) => Err(ServiceError::invalid(
            "invalid_datatype",
            "input declared BYTES but carries FP32 contents",
        )),
    }
}

fn byte_length_mismatch(expected: usize, actual: usize) -> ServiceError {
    ServiceError::invalid(
        "invalid_byte_length",
        format!("input data is {actual} bytes; the shape and datatype need {expected}"),
    )
}

fn element_count_mismatch(expected: usize, actual: usize) -> ServiceError {
    ServiceError::invalid(
        "invalid_element_count",
        format!("input has {actual} elements; the shape needs {expected}"),
    )
}

/// Shortens a client-supplied name for error messages.
fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_bytes(elements: &[&[u8]]) -> Bytes {
        let mut raw = Vec::new();
        for e in elements {
            raw.extend_from_slice(&(e.len() as u32).to_le_bytes());
            raw.extend_from_slice(e);
        }
        Bytes::from(raw)
    }

    #[test]
    fn fp32_shape_valid() {
        assert_eq!(check_fp32_shape(&[2, 3, 224, 224], 224, 64).unwrap(), 2);
    }

    #[test]
    fn fp32_shape_wrong_resolution() {
        let error = check_fp32_shape(&[1, 3, 240, 240], 224, 64).unwrap_err();

        assert_eq!(error.code, "invalid_shape");
    }

    #[test]
    fn batch_over_limit() {
        let error = check_fp32_shape(&[65, 3, 224, 224], 224, 64).unwrap_err();

        assert_eq!(error.kind, ErrorKind::PayloadTooLarge);
    }

    #[test]
    fn batch_huge_does_not_overflow() {
        let error = check_bytes_shape(&[i64::MAX], 64).unwrap_err();

        assert_eq!(error.kind, ErrorKind::PayloadTooLarge);
    }

    #[test]
    fn batch_zero() {
        let error = check_bytes_shape(&[0], 64).unwrap_err();

        assert_eq!(error.code, "no_image");
    }

    #[test]
    fn bytes_shape_column() {
        assert_eq!(check_bytes_shape(&[3, 1], 64).unwrap(), 3);
        assert!(check_bytes_shape(&[3, 2], 64).is_err());
    }

    #[test]
    fn fp32_raw_length_mismatch() {
        let error = fp32_images(TensorData::Raw(Bytes::from(vec![0u8; 11])), 1, 3).unwrap_err();

        assert_eq!(error.code, "invalid_byte_length");
    }

    #[test]
    fn fp32_raw_splits_images() {
        let raw: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();

        let images = fp32_images(TensorData::Raw(Bytes::from(raw)), 2, 2).unwrap();

        assert_eq!(images, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
    }

    #[test]
    fn bytes_raw_parses_elements() {
        let images = bytes_elements(TensorData::Raw(raw_bytes(&[b"ab", b"cde"])), 2).unwrap();

        assert_eq!(
            images,
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")]
        );
    }

    #[test]
    fn bytes_raw_length_past_end() {
        let mut raw = raw_bytes(&[b"ab"]).to_vec();
        raw[0] = 200;

        let error = bytes_elements(TensorData::Raw(Bytes::from(raw)), 1).unwrap_err();

        assert_eq!(error.code, "invalid_byte_length");
    }

    #[test]
    fn bytes_raw_too_many_elements() {
        let error = bytes_elements(TensorData::Raw(raw_bytes(&[b"a", b"b"])), 1).unwrap_err();

        assert_eq!(error.code, "invalid_element_count");
    }

    #[test]
    fn bytes_raw_too_few_elements() {
        let error = bytes_elements(TensorData::Raw(raw_bytes(&[b"a"])), 2).unwrap_err();

        assert_eq!(error.code, "invalid_element_count");
    }

    #[test]
    fn raw_output_bytes_prefixed() {
        let raw = OutputData::Bytes(vec!["ab".into()]).to_raw();

        assert_eq!(raw, vec![2, 0, 0, 0, b'a', b'b']);
    }
}
