//! The HTTP API: our REST classification API under `/v1`, health probes,
//! Prometheus metrics, and (in a sibling module) the Open Inference Protocol
//! under `/v2`.
//!
//! Every request runs in a `request` span with its `request_id` and, once
//! the handler resolves it, its `model`, so that every log line about a
//! request carries both.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;
use tracing::Instrument as _;

use crate::{
    error::{ErrorKind, ServiceError},
    service::InferenceService,
};

mod admin;
mod classify;
mod feedback;
pub mod metrics;
pub mod oip;
mod request_body;

/// Header carrying the request id, read from the client or generated.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Header with a per-request deadline in seconds (decimal, e.g. `2.5`).
pub static REQUEST_TIMEOUT: HeaderName = HeaderName::from_static("x-request-timeout");

/// Builds the router of the HTTP port.
pub fn router(service: Arc<InferenceService>) -> Router {
    let config = service.config();
    let body_limit = config.max_request_bytes;
    let admin = middleware::from_fn_with_state(config.admin_token.clone(), admin::require_token);
    let metrics = match config.metrics_require_token {
        true => get(metrics::metrics).route_layer(admin.clone()),
        false => get(metrics::metrics),
    };
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/v1/models", get(classify::list_models))
        .route("/v1/models/{model}", get(classify::get_model))
        .route("/v1/models/{model}/classify", post(classify::classify))
        .route("/v1/feedback", post(feedback::feedback))
        .route("/v1/config", get(admin::config).route_layer(admin))
        .route("/metrics", metrics)
        .merge(oip::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            config.body_timeout,
            request_body::guard,
        ))
        .layer(middleware::from_fn(request_id))
        .with_state(service)
}

/// Liveness: always 200 while the process serves HTTP, never touching the
/// inference queue. Shared by `/health/live` and `/v2/health/live`.
async fn live() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

/// Reports readiness: 200 only when every available model is loaded and
/// warmed up and the server is not draining, else 503. Shared by
/// `/health/ready` and `/v2/health/ready`.
async fn ready(State(service): State<Arc<InferenceService>>) -> Response {
    let ready = service.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

async fn not_found(request: Request) -> RestError {
    RestError(ServiceError::new(
        ErrorKind::NotFound,
        "route_not_found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    ))
}

/// The request id of the current request, set by the middleware.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Takes the client's `x-request-id` (if it is short printable ASCII) or
/// generates one, stores it as an extension, runs the request in a span with
/// it, and echoes it in the response.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(crate::service::new_request_id);
    request.extensions_mut().insert(RequestId(id.clone()));

    let span = tracing::info_span!("request", request_id = %id, model = tracing::field::Empty);
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    response
}

/// A [`ServiceError`] rendered in the REST API's shape:
/// `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
pub struct RestError(pub ServiceError);

impl From<ServiceError> for RestError {
    fn from(error: ServiceError) -> Self {
        Self(error)
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        let body = json!({ "error": { "code": self.0.code, "message": self.0.message } });
        with_retry_after(&self.0, (status, Json(body)).into_response())
    }
}

/// The HTTP status of an error kind, shared by the REST and OIP edges.
pub fn status_of(error: &ServiceError) -> StatusCode {
    match error.kind {
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Adds `Retry-After` (whole seconds, at least 1) to overload rejections.
pub fn with_retry_after(error: &ServiceError, mut response: Response) -> Response {
    if let ErrorKind::Overloaded { retry_after } = error.kind {
        let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
