//! The Open Inference Protocol (KServe v2) over HTTP under `/v2`, with
//! Triton's binary tensor data, classification, model configuration,
//! statistics and repository index extensions.
//!
//! Errors use the protocol's body `{"error": "..."}` with the status codes
//! of [`super::status_of`].

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Body,
    extract::{FromRequest, Path, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{RequestId, live, ready, status_of, with_retry_after};
use crate::{
    error::{ErrorKind, ServiceError},
    metrics::StatDuration,
    models::{Model, ModelState},
    oip::{self, InferRequest, OutputData},
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
    Ok(Json(
        json!({ "model_stats": [statistics(&service, model)] }),
    ))
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

    let parsed = effnet_oip::json::parse_request(body, header_length)?;
    let request = InferRequest {
        model: path.model,
        version: path.version,
        id: parsed.id,
        inputs: parsed.inputs,
        outputs: parsed.outputs,
        timeout,
    };
    let response = oip::infer(service, request).await?;
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
