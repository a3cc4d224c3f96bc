//! The Open Inference Protocol (KServe v2) over HTTP under `/v2`, with
//! Triton's binary tensor data, classification, model configuration,
//! statistics and repository index extensions.
//!
//! Errors use the protocol's body `{"error": "..."}` with the status codes
//! of [`super::status_of`].

use std::{collections::HashMap, fmt, sync::Arc};

use axum::{
    Json, Router,
    body::Body,
    extract::{FromRequest, Path, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, SeqAccess, Visitor},
};
use serde_json::{Value, json};

use super::{RequestId, live, ready, status_of, with_retry_after};
use crate::{
    error::{ErrorKind, ServiceError},
    metrics::StatDuration,
    models::{Model, ModelState},
    oip::{self, InferInput, InferRequest, OutputData, RequestedOutput, TensorData},
    service::{InferenceService, Protocol},
};

/// Length of the JSON header at the start of a body that carries binary
/// tensor data after it.
pub static HEADER_LENGTH: HeaderName = HeaderName::from_static("inference-header-content-length");

/// Builds the `/v2` routes, which `super::router` merges into the HTTP router.
pub fn routes() -> Router<Arc<InferenceService>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/models/stats", get(all_statistics))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready),
        )
        .route("/v2/models/{model}/config", get(model_config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(model_config),
        )
        .route("/v2/models/{model}/stats", get(model_statistics))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(model_statistics),
        )
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer))
}

/// A [`ServiceError`] in the protocol's shape, `{"error": "..."}`.
#[derive(Debug)]
pub struct OipError(pub ServiceError);

impl From<ServiceError> for OipError {
    fn from(error: ServiceError) -> Self {
        Self(error)
    }
}

impl IntoResponse for OipError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        let response = (status, Json(json!({ "error": self.0.message }))).into_response();
        with_retry_after(&self.0, response)
    }
}

/// The model name and the optional version of a `/v2/models/...` path.
#[derive(Debug, Deserialize)]
struct ModelPath {
    model: String,
    #[serde(default)]
    version: String,
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": oip::EXTENSIONS,
    }))
}

async fn model_ready(
    State(service): State<Arc<InferenceService>>,
    Path(path): Path<ModelPath>,
) -> Result<Response, OipError> {
    let model = oip::resolve(&service, &path.model, &path.version)?;
    let ready = model.state() == ModelState::Ready;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        status,
        Json(json!({ "name": model.name(), "ready": ready })),
    )
        .into_response())
}

async fn model_metadata(
    State(service): State<Arc<InferenceService>>,
    Path(path): Path<ModelPath>,
) -> Result<Json<Value>, OipError> {
    let model = oip::resolve(&service, &path.model, &path.version)?;
    let (input, output) = oip::model_tensors(model);
    Ok(Json(json!({
        "name": model.name(),
        "versions": [oip::MODEL_VERSION],
        "platform": oip::PLATFORM,
        "inputs": [{ "name": input.name, "datatype": input.datatype, "shape": input.shape }],
        "outputs": [{ "name": output.name, "datatype": output.datatype, "shape": output.shape }],
    })))
}

/// Triton's model configuration in its JSON form, enough for clients and
/// perf_analyzer to build requests.
async fn model_config(
    State(service): State<Arc<InferenceService>>,
    Path(path): Path<ModelPath>,
) -> Result<Json<Value>, OipError> {
    let model = oip::resolve(&service, &path.model, &path.version)?;
    let (input, output) = oip::model_tensors(model);
    Ok(Json(json!({
        "name": model.name(),
        "platform": oip::PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": model.settings.max_batch_size,
        "input": [{
            "name": input.name,
            "data_type": "TYPE_FP32",
            "format": "FORMAT_NCHW",
            "dims": &input.shape[1..],
        }],
        "output": [{ "name": output.name, "data_type": "TYPE_FP32", "dims": &output.shape[1..] }],
        "dynamic_batching": {
            "max_queue_delay_microseconds": model.settings.max_queue_delay_ms * 1000,
        },
    })))
}

async fn model_statistics(
    State(service): State<Arc<InferenceService>>,
    Path(path): Path<ModelPath>,
) -> Result<Json<Value>, OipError> {
    let model = oip::resolve(&service, &path.model, &path.version)?;
    Ok(Json(json!({ "model_stats": [statistics(&service, model)] })))
}

async fn all_statistics(State(service): State<Arc<InferenceService>>) -> Json<Value> {
    let stats: Vec<Value> = service
        .models()
        .iter()
        .map(|m| statistics(&service, m))
        .collect();
    Json(json!({ "model_stats": stats }))
}

/// Triton's per-model statistics of version `1`, in the JSON form of its
/// statistics extension.
fn statistics(service: &InferenceService, model: &Model) -> Value {
    let stats = service.model_statistics(model);
    let duration = |d: StatDuration| json!({ "count": d.count, "ns": d.ns });
    let batch_stats: Vec<Value> = stats
        .batch_stats
        .iter()
        .map(|batch| {
            json!({
                "batch_size": batch.batch_size,
                "compute_input": duration(batch.compute_input),
                "compute_infer": duration(batch.compute_infer),
                "compute_output": duration(batch.compute_output),
            })
        })
        .collect();
    json!({
        "name": model.name(),
        "version": oip::MODEL_VERSION,
        "last_inference": stats.last_inference,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": duration(stats.success),
            "fail": duration(stats.fail),
            "queue": duration(stats.queue),
            "compute_input": duration(stats.compute_input),
            "compute_infer": duration(stats.compute_infer),
            "compute_output": duration(stats.compute_output),
        },
        "batch_stats": batch_stats,
    })
}

async fn repository_index(State(service): State<Arc<InferenceService>>) -> Json<Value> {
    let models: Vec<Value> = service
        .models()
        .iter()
        .map(|model| {
            let state = model.state();
            json!({
                "name": model.name(),
                "version": oip::MODEL_VERSION,
                "state": state.as_str().to_ascii_uppercase(),
                "reason": state.reason().unwrap_or(""),
            })
        })
        .collect();
    Json(Value::Array(models))
}

async fn infer(
    State(service): State<Arc<InferenceService>>,
    Path(path): Path<ModelPath>,
    request: Request,
) -> Result<Response, OipError> {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    let mut tracker = service.track(Protocol::OipHttp, &request_id, &path.model);

    let result = infer_request(&service, path, request).await;
    if let Ok((response, _)) = &result {
        tracker.set_images(response.images);
    }
    tracker.finish(&result);

    let (response, binary_output) = result?;
    Ok(render_response(response, binary_output))
}

async fn infer_request(
    service: &InferenceService,
    path: ModelPath,
    request: Request,
) -> Result<(oip::InferResponse, bool), ServiceError> {
    let timeout = super::classify::parse_timeout(request.headers())?;
    let header_length = header_length(request.headers())?;
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ServiceError::new(
                    ErrorKind::PayloadTooLarge,
                    "body_too_large",
                    "the request body exceeds the configured maximum request size",
                )
            } else {
                ServiceError::invalid(
                    "invalid_body",
                    format!("invalid request body: {}", rejection.body_text()),
                )
            }
        })?;

    let parsed = parse_request(path, body, header_length, timeout)?;
    let response = oip::infer(service, parsed.request).await?;
    Ok((response, parsed.binary_output))
}

/// Reads `Inference-Header-Content-Length`, present when binary tensor data
/// follows the JSON header.
fn header_length(headers: &HeaderMap) -> Result<Option<usize>, ServiceError> {
    let Some(value) = headers.get(&HEADER_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ServiceError::invalid(
                "invalid_header",
                "inference-header-content-length must be a byte count",
            )
        })
}

#[derive(Debug, Deserialize)]
struct JsonInferRequest {
    #[serde(default)]
    id: String,
    #[serde(default)]
    parameters: HashMap<String, Value>,
    inputs: Vec<JsonInput>,
    #[serde(default)]
    outputs: Vec<JsonOutput>,
}

#[derive(Debug, Deserialize)]
struct JsonInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: HashMap<String, Value>,
    #[serde(default)]
    data: Option<FlatData>,
}

#[derive(Debug, Deserialize)]
struct JsonOutput {
    name: String,
    #[serde(default)]
    parameters: HashMap<String, Value>,
}

struct ParsedRequest {
    request: InferRequest,
    /// Return every output as binary tensor data.
    binary_output: bool,
}

/// Splits the body into the JSON header and the binary tensor data, and
/// assigns each input declaring `binary_data_size` its slice of the data.
fn parse_request(
    path: ModelPath,
    body: Bytes,
    header_length: Option<usize>,
    timeout: Option<std::time::Duration>,
) -> Result<ParsedRequest, ServiceError> {
    let header_length = header_length.unwrap_or(body.len());
    if header_length > body.len() {
        return Err(ServiceError::invalid(
            "invalid_header",
            format!(
                "inference-header-content-length {header_length} exceeds the body of {} bytes",
                body.len()
            ),
        ));
    }
    let mut binary = body.slice(header_length..);
    let parsed: JsonInferRequest = serde_json::from_slice(&body[..header_length]).map_err(|e| {
        ServiceError::invalid(
            "invalid_json",
            format!("invalid inference request JSON: {e}"),
        )
    })?;

    let mut inputs = Vec::with_capacity(parsed.inputs.len());
    for input in parsed.inputs {
        let binary_size = input.parameters.get("binary_data_size");
        let data = match (binary_size, input.data) {
            (Some(size), None) => {
                let size = size.as_u64().ok_or_else(|| {
                    ServiceError::invalid(
                        "invalid_parameter",
                        "binary_data_size must be a byte count",
                    )
                })?;
                if size > binary.len() as u64 {
                    return Err(ServiceError::invalid(
                        "invalid_byte_length",
                        format!(
                            "input {:?} declares {size} bytes of binary data but only {} remain",
                            input.name,
                            binary.len()
                        ),
                    ));
                }
                TensorData::Raw(binary.split_to(size as usize))
            }
            (None, Some(FlatData::Numbers(values))) => TensorData::Fp32(values),
            (None, Some(FlatData::Strings(strings))) => TensorData::Bytes(strings),
            (Some(_), Some(_)) => {
                return Err(ServiceError::invalid(
                    "invalid_input",
                    format!("input {:?} has both data and binary_data_size", input.name),
                ));
            }
            (None, None) => {
                return Err(ServiceError::invalid(
                    "invalid_input",
                    format!(
                        "input {:?} has neither data nor binary_data_size",
                        input.name
                    ),
                ));
            }
        };
        inputs.push(InferInput {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            data,
        });
    }
    if !binary.is_empty() {
        return Err(ServiceError::invalid(
            "invalid_byte_length",
            format!(
                "{} bytes of binary data after the JSON header belong to no input",
                binary.len()
            ),
        ));
    }

    let binary_output = parsed
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        == Some(true);
    let outputs = parsed
        .outputs
        .into_iter()
        .map(|output| {
            let classification = match output.parameters.get("classification") {
                None => None,
                Some(k) => Some(k.as_u64().filter(|&k| k <= 1000).ok_or_else(|| {
                    ServiceError::invalid(
                        "invalid_classification",
                        "classification must be an integer from 1 to 1000",
                    )
                })? as usize),
            };
            let binary_data = output
                .parameters
                .get("binary_data")
                .and_then(Value::as_bool)
                .unwrap_or(binary_output);
            Ok(RequestedOutput {
                name: output.name,
                classification,
                binary_data,
            })
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;

    Ok(ParsedRequest {
        request: InferRequest {
            model: path.model,
            version: path.version,
            id: parsed.id,
            inputs,
            outputs,
            timeout,
        },
        binary_output,
    })
}

/// Renders the response as JSON, or as a JSON header followed by binary
/// tensor data when any output requests it.
fn render_response(response: oip::InferResponse, binary_output: bool) -> Response {
    let mut binary = Vec::new();
    let mut outputs = Vec::with_capacity(response.outputs.len());
    for mut output in response.outputs {
        if binary_output {
            output.binary_data = true;
        }
        let mut entry = json!({
            "name": output.name,
            "datatype": output.datatype.as_str(),
            "shape": output.shape,
        });
        if output.binary_data {
            let raw = output.data.to_raw();
            entry["parameters"] = json!({ "binary_data_size": raw.len() });
            binary.extend_from_slice(&raw);
        } else {
            entry["data"] = match output.data {
                OutputData::Fp32(values) => json!(values),
                OutputData::Bytes(strings) => json!(strings),
            };
        }
        outputs.push(entry);
    }

    let mut header = json!({
        "model_name": response.model.name(),
        "model_version": oip::MODEL_VERSION,
        "outputs": outputs,
    });
    if !response.id.is_empty() {
        header["id"] = json!(response.id);
    }
    let header = header.to_string();

    if binary.is_empty() {
        return ([(header::CONTENT_TYPE, "application/json")], header).into_response();
    }
    let header_length = HeaderValue::from(header.len());
    let mut body = header.into_bytes();
    body.extend_from_slice(&binary);
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(HEADER_LENGTH.clone(), header_length);
    response
}

/// A JSON tensor's `data`: nested or flat arrays of numbers or of strings,
/// flattened in row-major order while parsing, so that no intermediate
/// `serde_json::Value` per element is built.
#[derive(Debug)]
enum FlatData {
    Numbers(Vec<f32>),
    Strings(Vec<Bytes>),
}

impl<'de> Deserialize<'de> for FlatData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut data = None;
        deserializer.deserialize_seq(Flatten { data: &mut data })?;
        Ok(data.unwrap_or(FlatData::Numbers(Vec::new())))
    }
}

/// Appends the elements of one (possibly nested) array to `data`.
struct Flatten<'a> {
    data: &'a mut Option<FlatData>,
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers or of strings, flat or nested")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Flatten {
                data: &mut *self.data,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        match self.data.get_or_insert(FlatData::Numbers(Vec::new())) {
            FlatData::Numbers(values) => {
                values.push(value as f32);
                Ok(())
            }
            FlatData::Strings(_) => Err(E::custom("data mixes numbers and strings")),
        }
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.visit_f64(value as f64)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.visit_f64(value as f64)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        match self.data.get_or_insert(FlatData::Strings(Vec::new())) {
            FlatData::Strings(strings) => {
                strings.push(Bytes::copy_from_slice(value.as_bytes()));
                Ok(())
            }
            FlatData::Numbers(_) => Err(E::custom("data mixes numbers and strings")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> ModelPath {
        ModelPath {
            model: "m".into(),
            version: String::new(),
        }
    }

    #[test]
    fn nested_data_is_flattened() {
        let data: FlatData = serde_json::from_str("[[1, 2.5], [3, -4]]").unwrap();

        let FlatData::Numbers(values) = data else {
            panic!("expected numbers")
        };
        assert_eq!(values, vec![1.0, 2.5, 3.0, -4.0]);
    }

    #[test]
    fn mixed_data_is_rejected() {
        assert!(serde_json::from_str::<FlatData>(r#"[1, "a"]"#).is_err());
    }

    #[test]
    fn binary_input_gets_its_slice() {
        let header = r#"{"inputs":[{"name":"input","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":3}}]}"#;
        let body = Bytes::from(format!("{header}abc"));

        let parsed = parse_request(path(), body, Some(header.len()), None).unwrap();

        let TensorData::Raw(raw) = &parsed.request.inputs[0].data else {
            panic!("expected raw data")
        };
        assert_eq!(&raw[..], b"abc");
    }

    #[test]
    fn binary_size_past_end() {
        let header = r#"{"inputs":[{"name":"input","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":9}}]}"#;
        let body = Bytes::from(format!("{header}abc"));

        let error = parse_request(path(), body, Some(header.len()), None)
            .err()
            .unwrap();

        assert_eq!(error.code, "invalid_byte_length");
    }

    #[test]
    fn trailing_binary_is_rejected() {
        let header = r#"{"inputs":[{"name":"input","shape":[1],"datatype":"FP32","data":[1]}]}"#;
        let body = Bytes::from(format!("{header}xyz"));

        let error = parse_request(path(), body, Some(header.len()), None)
            .err()
            .unwrap();

        assert_eq!(error.code, "invalid_byte_length");
    }

    #[test]
    fn header_length_past_body() {
        let error = parse_request(path(), Bytes::from_static(b"{}"), Some(10), None)
            .err()
            .unwrap();

        assert_eq!(error.code, "invalid_header");
    }
}
