//! Management endpoints and their optional bearer-token protection.
//!
//! With an admin token configured, every management endpoint requires
//! `Authorization: Bearer <token>` and answers 401 with
//! `WWW-Authenticate: Bearer` otherwise. Management endpoints are those that
//! change server state or reveal its configuration: today `GET /v1/config`,
//! and `/metrics` when `metrics_require_token` is set. Classification,
//! feedback, model listing and the health probes stay open. The token is
//! never logged; comparisons take constant time ([`AdminToken::matches`]).

use std::sync::Arc;

use axum::{
    Json,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{config::AdminToken, service::InferenceService};

/// Rejects the request with 401 unless it carries the admin token; passes
/// everything when no token is configured.
pub async fn require_token(
    State(token): State<Option<AdminToken>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| bearer(value.as_bytes()));
    match presented {
        Some(presented) if token.matches(presented) => next.run(request).await,
        Some(_) => unauthorized("the bearer token is not valid"),
        None => unauthorized("this endpoint requires an Authorization: Bearer token"),
    }
}

/// The credentials of an `Authorization: Bearer <token>` header value.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// A 401 in the REST error shape. Authentication failures are not a
/// [`crate::error::ErrorKind`]: they happen only at this HTTP edge.
fn unauthorized(message: &'static str) -> Response {
    tracing::warn!(reason = message, "management request rejected");
    let body = json!({ "error": { "code": "unauthorized", "message": message } });
    let headers = [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))];
    (StatusCode::UNAUTHORIZED, headers, Json(body)).into_response()
}

/// `GET /v1/config`: the effective configuration, without the admin token.
pub async fn config(State(service): State<Arc<InferenceService>>) -> Json<serde_json::Value> {
    let config = service.config();
    let limits = &config.limits;
    let models: serde_json::Map<String, serde_json::Value> = service
        .models()
        .iter()
        .map(|model| {
            let settings = model.settings;
            let value = json!({
                "enabled": settings.enabled,
                "max_batch_size": settings.max_batch_size,
                "max_queue_delay_ms": settings.max_queue_delay_ms,
                "queue_limit": settings.queue_limit,
            });
            (model.name().to_string(), value)
        })
        .collect();

    Json(json!({
        "server": {
            "model_repository": config.model_repository,
            "http_addr": config.http_addr,
            "grpc_addr": config.grpc_addr,
            "metrics_addr": config.metrics_addr,
            "intra_op_threads": config.threads.intra_op_threads,
            "batch_workers": config.threads.batch_workers,
            "decode_workers": config.threads.decode_workers,
            "spinning": config.threads.spinning,
            "cpu_budget": config.threads.cpu_budget,
            "max_in_flight_images": config.admission.max_in_flight_images,
            "default_timeout_ms": config.admission.default_timeout.as_millis() as u64,
            "default_precision": config.default_precision.to_string(),
            "drain_period_ms": config.shutdown.drain_period.as_millis() as u64,
            "shutdown_timeout_ms": config.shutdown.timeout.as_millis() as u64,
            "shadow_fraction": config.shadow_fraction,
            "feedback_ttl_ms": config.feedback.ttl.as_millis() as u64,
            "feedback_capacity": config.feedback.capacity,
            "admin_token_set": config.admin_token.is_some(),
            "metrics_require_token": config.metrics_require_token,
            "tls": config.tls.is_some(),
        },
        "limits": {
            "max_request_bytes": config.max_request_bytes,
            "body_timeout_ms": config.body_timeout.as_millis(),
            "max_images_per_request": config.max_images_per_request,
            "max_image_width": limits.max_width,
            "max_image_height": limits.max_height,
            "max_image_pixels": limits.max_pixels,
            "max_decode_alloc_bytes": limits.max_decode_alloc,
            "max_decode_ms": limits.max_decode_time.map_or(0, |t| t.as_millis()),
        },
        "models": models,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
    }

    #[test]
    fn other_schemes_are_ignored() {
        assert_eq!(bearer(b"Basic YWJj"), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
