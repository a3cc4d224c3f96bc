//! `GET /metrics`: every metric in the Prometheus text format, on the HTTP
//! port and, with `--metrics-addr`, on a listener of its own.

use std::sync::Arc;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::service::InferenceService;

/// Content type of the Prometheus text exposition format 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Builds the router of the separate metrics listener, which serves `/metrics` only.
pub fn router(service: Arc<InferenceService>) -> Router {
    let config = service.config();
    let route = match config.metrics_require_token {
        true => get(metrics).route_layer(axum::middleware::from_fn_with_state(
            config.admin_token.clone(),
            super::admin::require_token,
        )),
        false => get(metrics),
    };
    Router::new().route("/metrics", route).with_state(service)
}

pub async fn metrics(State(service): State<Arc<InferenceService>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, TEXT_FORMAT)],
        service.render_metrics(),
    )
}
