//! `POST /v1/feedback`: the true class of the images of an earlier classify
//! request, by its request id, for online accuracy.

use std::sync::Arc;

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::RestError;
use crate::{error::ServiceError, feedback::FeedbackError, service::InferenceService};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    request_id: String,
    /// An index, a WordNet id, or an array of them with one per image.
    true_class: serde_json::Value,
}

pub async fn feedback(
    State(service): State<Arc<InferenceService>>,
    body: Result<Json<FeedbackBody>, JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) => {
            let error = ServiceError::invalid(
                "invalid_json",
                format!(
                    "invalid feedback body: {}; expected {{\"request_id\": \"...\", \"true_class\": ...}}",
                    rejection.body_text()
                ),
            );
            return RestError(error).into_response();
        }
    };
    let classes = match crate::feedback::resolve_classes(&body.true_class, service.labels()) {
        Ok(classes) => classes,
        Err(error) => return RestError(error).into_response(),
    };

    match service.record_feedback(&body.request_id, &classes) {
        Ok(score) => Json(json!({
            "request_id": body.request_id,
            "images": score.images,
            "top1_hits": score.top1_hits,
            "top5_hits": score.top5_hits,
        }))
        .into_response(),
        Err(error) => {
            let (status, code) = match &error {
                FeedbackError::NotFound { .. } => (StatusCode::NOT_FOUND, "request_id_not_found"),
                FeedbackError::Expired { .. } => (StatusCode::NOT_FOUND, "request_id_expired"),
                FeedbackError::AlreadyCounted { .. } => {
                    (StatusCode::CONFLICT, "feedback_already_counted")
                }
                FeedbackError::ClassCount { .. } => (StatusCode::BAD_REQUEST, "invalid_true_class"),
            };
            tracing::debug!(request_id = %body.request_id, code, %error, "feedback rejected");
            let body = json!({ "error": { "code": code, "message": error.to_string() } });
            (status, Json(body)).into_response()
        }
    }
}
