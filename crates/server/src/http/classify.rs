//! `/v1`: our REST classification API.
//!
//! `POST /v1/models/{model}/classify` takes the image as the raw body, as
//! `multipart/form-data` (one image per file part), or as JSON
//! (`{"image": "<base64>"}` or `{"images": [...]}`). The format is always
//! detected from the bytes; the Content-Type only chooses among these three
//! request shapes.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{FromRequest, Multipart, Path, Query, Request, State},
    http::{HeaderMap, header},
};
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{REQUEST_TIMEOUT, RequestId, RestError};
use crate::{
    error::{ErrorKind, ServiceError},
    metrics::RequestTracker,
    models::Model,
    service::{ClassifyRequest, InferenceService, Protocol},
    topk::ClassScore,
};

/// Classes returned when the request sets no `top_k`.
const DEFAULT_TOP_K: usize = 5;

#[derive(Debug, Deserialize)]
pub struct ClassifyQuery {
    top_k: Option<String>,
    /// The true class of the images, for online accuracy.
    true_class: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonClassifyBody {
    image: Option<String>,
    images: Option<Vec<String>>,
    top_k: Option<usize>,
    true_class: Option<serde_json::Value>,
}

/// Fields of a JSON body other than the images.
#[derive(Debug, Default)]
struct JsonOptions {
    top_k: Option<usize>,
    true_class: Option<serde_json::Value>,
}

/// The response of a classify call: one result per image, in request order.
#[derive(Debug, Serialize)]
pub struct ClassifyResponse {
    pub request_id: String,
    pub model: String,
    pub variant: String,
    pub precision: String,
    pub results: Vec<ImageResult>,
}

#[derive(Debug, Serialize)]
pub struct ImageResult {
    pub classes: Vec<ClassScore>,
    pub timings_ms: TimingsMs,
}

/// Per-image stage durations in milliseconds.
#[derive(Debug, Serialize)]
pub struct TimingsMs {
    pub decode: f64,
    pub preprocess: f64,
    pub queue: f64,
    pub inference: f64,
    /// Images in the engine batch this image ran in.
    pub batch_size: usize,
}

/// Handles a classify call and counts it in the metrics however it ends,
/// including a client that disconnects before the response.
pub async fn classify(
    State(service): State<Arc<InferenceService>>,
    Path(model): Path<String>,
    Query(query): Query<ClassifyQuery>,
    request: Request,
) -> Result<Json<ClassifyResponse>, RestError> {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    let mut tracker = service.track(Protocol::Rest, &request_id, &model);

    let result = classify_request(&service, &mut tracker, model, query, request_id, request).await;
    tracker.finish(&result);
    Ok(Json(result?))
}

async fn classify_request(
    service: &Arc<InferenceService>,
    tracker: &mut RequestTracker,
    model: String,
    query: ClassifyQuery,
    request_id: String,
    request: Request,
) -> Result<ClassifyResponse, ServiceError> {
    let timeout = parse_timeout(request.headers())?;
    let (images, options) = read_images(service, request).await?;
    tracker.set_images(images.len());

    let top_k = match query.top_k {
        Some(value) => parse_top_k(&value)?,
        None => options
            .top_k
            .map_or(Ok(DEFAULT_TOP_K), |k| parse_top_k(&k.to_string()))?,
    };
    let true_class = match (query.true_class, options.true_class) {
        (Some(_), Some(_)) => {
            return Err(ServiceError::invalid(
                "invalid_true_class",
                "true_class is set both in the query and in the JSON body; set it once",
            ));
        }
        (Some(text), None) => Some(serde_json::Value::String(text)),
        (None, json) => json,
    };
    let true_classes = true_class
        .map(|value| resolve_true_classes(service, &value, images.len()))
        .transpose()?;

    let outcome = service
        .classify(ClassifyRequest {
            model,
            images,
            top_k,
            timeout,
            request_id: request_id.clone(),
        })
        .await?;
    if let Some(classes) = &true_classes {
        service.record_ground_truth(&request_id, &outcome, classes);
    }

    Ok(ClassifyResponse {
        request_id,
        model: outcome.model.name().to_string(),
        variant: outcome.model.manifest.variant.clone(),
        precision: outcome.model.manifest.precision.to_string(),
        results: outcome
            .images
            .into_iter()
            .map(|image| ImageResult {
                classes: image.classes,
                timings_ms: TimingsMs {
                    decode: ms(image.timings.decode),
                    preprocess: ms(image.timings.preprocess),
                    queue: ms(image.timings.queue),
                    inference: ms(image.timings.inference),
                    batch_size: image.timings.batch_size,
                },
            })
            .collect(),
    })
}

/// Resolves the true classes sent with a request: one for every image, or
/// one per image.
fn resolve_true_classes(
    service: &InferenceService,
    value: &serde_json::Value,
    images: usize,
) -> Result<Vec<usize>, ServiceError> {
    let classes = crate::feedback::resolve_classes(value, service.labels())?;
    if classes.len() != 1 && classes.len() != images {
        return Err(ServiceError::invalid(
            "invalid_true_class",
            format!(
                "true_class has {} classes for {images} images; send one class, or one per image",
                classes.len()
            ),
        ));
    }
    Ok(classes)
}

pub async fn list_models(State(service): State<Arc<InferenceService>>) -> Json<serde_json::Value> {
    let models: Vec<_> = service.models().iter().map(|m| describe(m)).collect();
    let aliases: serde_json::Map<String, serde_json::Value> = service
        .models()
        .aliases()
        .into_iter()
        .map(|(alias, target)| (alias, target.into()))
        .collect();
    Json(serde_json::json!({ "models": models, "aliases": aliases }))
}

pub async fn get_model(
    State(service): State<Arc<InferenceService>>,
    Path(model): Path<String>,
) -> Result<Json<serde_json::Value>, RestError> {
    let model = service.models().resolve(&model)?;
    Ok(Json(describe(model)))
}

fn describe(model: &Model) -> serde_json::Value {
    let manifest = &model.manifest;
    let state = model.state();
    serde_json::json!({
        "name": manifest.name,
        "variant": manifest.variant,
        "precision": manifest.precision,
        "resolution": manifest.input.resolution,
        "parameters": manifest.parameters,
        "multiply_adds": manifest.multiply_adds,
        "state": state.as_str(),
        "reason": state.reason(),
        "load_seconds": model.load_duration().map(|d| d.as_secs_f64()),
        "max_batch_size": model.settings.max_batch_size,
        "evaluation": manifest.evaluation,
    })
}

/// Reads the images and the optional JSON `top_k` and `true_class` from any
/// of the three request shapes.
async fn read_images(
    service: &Arc<InferenceService>,
    request: Request,
) -> Result<(Vec<Bytes>, JsonOptions), ServiceError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let max_images = service.config().max_images_per_request;

    let (images, options) = if content_type.starts_with("multipart/form-data") {
        (
            read_multipart(request, max_images).await?,
            JsonOptions::default(),
        )
    } else if content_type.starts_with("application/json") {
        read_json(request, max_images).await?
    } else {
        let body = Bytes::from_request(request, &())
            .await
            .map_err(|rejection| body_error(rejection.status(), rejection.body_text()))?;
        (vec![body], JsonOptions::default())
    };

    if images.is_empty() {
        return Err(ServiceError::invalid(
            "no_image",
            "the request contains no image",
        ));
    }
    Ok((images, options))
}

async fn read_multipart(request: Request, max_images: usize) -> Result<Vec<Bytes>, ServiceError> {
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|rejection| body_error(rejection.status(), rejection.body_text()))?;

    let mut images = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| body_error(e.status(), e.body_text()))?
    {
        if field.file_name().is_none() && field.name() != Some("image") {
            // Plain form fields other than `image` carry no image.
            continue;
        }
        if images.len() == max_images {
            return Err(too_many_images(max_images));
        }
        let bytes = field
            .bytes()
            .await
            .map_err(|e| body_error(e.status(), e.body_text()))?;
        images.push(bytes);
    }
    Ok(images)
}

async fn read_json(
    request: Request,
    max_images: usize,
) -> Result<(Vec<Bytes>, JsonOptions), ServiceError> {
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| body_error(rejection.status(), rejection.body_text()))?;
    let parsed: JsonClassifyBody = serde_json::from_slice(&body)
        .map_err(|e| ServiceError::invalid("invalid_json", format!("invalid JSON body: {e}")))?;

    let encoded: Vec<(String, String)> = match (parsed.image, parsed.images) {
        (Some(one), None) => vec![("image".to_string(), one)],
        (None, Some(many)) => {
            if many.len() > max_images {
                return Err(too_many_images(max_images));
            }
            many.into_iter()
                .enumerate()
                .map(|(i, s)| (format!("images[{i}]"), s))
                .collect()
        }
        (Some(_), Some(_)) => {
            return Err(ServiceError::invalid(
                "invalid_json",
                "set either \"image\" or \"images\", not both",
            ));
        }
        (None, None) => {
            return Err(ServiceError::invalid(
                "no_image",
                "the JSON body needs an \"image\" (base64 string) or \"images\" (array of base64 strings) field",
            ));
        }
    };

    let images = encoded
        .iter()
        .map(|(field, value)| decode_base64_image(field, value))
        .collect::<Result<Vec<_>, _>>()?;
    let options = JsonOptions {
        top_k: parsed.top_k,
        true_class: parsed.true_class,
    };
    Ok((images, options))
}

/// Decodes base64 in the standard or URL-safe alphabet, padded or not,
/// optionally inside a `data:` URI (`data:image/jpeg;base64,...`).
pub fn decode_base64_image(field: &str, value: &str) -> Result<Bytes, ServiceError> {
    use base64::{
        alphabet,
        engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    };

    let invalid = |reason: &str| {
        ServiceError::invalid("invalid_base64", format!("field {field:?}: {reason}"))
    };

    let mut payload = value.trim();
    if let Some(rest) = payload.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(invalid("data URI has no comma before its payload"));
        };
        if !meta.ends_with(";base64") {
            return Err(invalid("data URI is not base64-encoded (missing ;base64)"));
        }
        payload = data;
    }

    // The two alphabets differ only in the symbols for 62 and 63.
    let alphabet = if payload.contains(['-', '_']) {
        &alphabet::URL_SAFE
    } else {
        &alphabet::STANDARD
    };
    let padding =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(alphabet, padding)
        .decode(payload)
        .map(Bytes::from)
        .map_err(|e| invalid(&format!("invalid base64: {e}")))
}

fn parse_top_k(value: &str) -> Result<usize, ServiceError> {
    match value.parse::<usize>() {
        Ok(k) if (1..=1000).contains(&k) => Ok(k),
        _ => Err(ServiceError::invalid(
            "invalid_top_k",
            format!("top_k must be an integer from 1 to 1000, got {value:?}"),
        )),
    }
}

/// Reads the `X-Request-Timeout` header: seconds as a positive decimal.
pub fn parse_timeout(headers: &HeaderMap) -> Result<Option<Duration>, ServiceError> {
    let Some(value) = headers.get(&REQUEST_TIMEOUT) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 3600.0 => {
            Ok(Some(Duration::from_secs_f64(seconds)))
        }
        _ => Err(ServiceError::invalid(
            "invalid_timeout",
            format!("x-request-timeout must be seconds in (0, 3600], got {text:?}"),
        )),
    }
}

fn too_many_images(max_images: usize) -> ServiceError {
    ServiceError::new(
        ErrorKind::PayloadTooLarge,
        "too_many_images",
        format!("the request has more than {max_images} images"),
    )
}

/// Maps axum's body rejections (size limit, broken multipart) to our shape.
fn body_error(status: axum::http::StatusCode, text: String) -> ServiceError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return ServiceError::new(
            ErrorKind::PayloadTooLarge,
            "body_too_large",
            "the request body exceeds the configured maximum request size",
        );
    }
    ServiceError::invalid("invalid_body", format!("invalid request body: {text}"))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

    #[test]
    fn base64_standard_padded() {
        let decoded = decode_base64_image("image", "iVBORw0KGgo=").unwrap();

        assert_eq!(&decoded[..], PNG_MAGIC);
    }

    #[test]
    fn base64_unpadded() {
        let decoded = decode_base64_image("image", "iVBORw0KGgo").unwrap();

        assert_eq!(&decoded[..], PNG_MAGIC);
    }

    #[test]
    fn base64_url_safe() {
        let decoded = decode_base64_image("image", "-_8").unwrap();

        assert_eq!(&decoded[..], &[0xfb, 0xff]);
    }

    #[test]
    fn base64_data_uri() {
        let decoded = decode_base64_image("image", "data:image/png;base64,iVBORw0KGgo=").unwrap();

        assert_eq!(&decoded[..], PNG_MAGIC);
    }

    #[test]
    fn base64_invalid_names_field() {
        let error = decode_base64_image("images[2]", "not base64!").unwrap_err();

        assert_eq!(error.code, "invalid_base64");
        assert!(error.message.contains("images[2]"), "{}", error.message);
    }

    #[test]
    fn data_uri_without_base64_is_rejected() {
        let error = decode_base64_image("image", "data:image/png,abc").unwrap_err();

        assert!(error.message.contains(";base64"), "{}", error.message);
    }

    #[test]
    fn top_k_bounds() {
        assert_eq!(parse_top_k("1").unwrap(), 1);
        assert_eq!(parse_top_k("1000").unwrap(), 1000);
        assert!(parse_top_k("0").is_err());
        assert!(parse_top_k("1001").is_err());
        assert!(parse_top_k("five").is_err());
    }
}
