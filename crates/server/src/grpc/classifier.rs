//! `effnet.v1.Classifier`: the REST classify call over gRPC.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use effnet_proto::effnet::v1::{
    ClassScore, ClassifyBatchRequest, ClassifyRequest, ClassifyResponse, ImageResult, Timings,
    classifier_server,
};
use tonic::{Request, Response, Status};

use super::{request_timeout, status_of, with_deadline};
use crate::{
    error::ServiceError,
    service::{self, ClassifyOutcome, InferenceService, Protocol},
};

/// Classes returned when the request sets `top_k` to 0.
const DEFAULT_TOP_K: u32 = 5;

pub struct Classifier {
    service: Arc<InferenceService>,
}

// === impl Classifier ===

impl Classifier {
    pub fn new(service: Arc<InferenceService>) -> Self {
        Self { service }
    }

    /// Classifies `images` under the request's deadline, counting the
    /// request in the metrics however it ends.
    async fn handle(
        &self,
        model: String,
        images: Vec<Bytes>,
        top_k: u32,
        timeout: Option<Duration>,
    ) -> Result<Response<ClassifyResponse>, Status> {
        let request_id = service::new_request_id();
        let mut tracker = self
            .service
            .track(Protocol::GrpcClassify, &request_id, &model);
        tracker.set_images(images.len());

        let classify = self.classify(model, images, top_k, timeout, request_id.clone());
        let result = with_deadline(timeout, classify).await;
        tracker.finish(&result);

        result
            .map(|outcome| Response::new(response(request_id, outcome)))
            .map_err(|error| status_of(&error))
    }

    async fn classify(
        &self,
        model: String,
        images: Vec<Bytes>,
        top_k: u32,
        timeout: Option<Duration>,
        request_id: String,
    ) -> Result<ClassifyOutcome, ServiceError> {
        let top_k = match top_k {
            0 => DEFAULT_TOP_K,
            k @ 1..=1000 => k,
            k => {
                return Err(ServiceError::invalid(
                    "invalid_top_k",
                    format!(
                        "top_k must be from 1 to 1000 (0 for the default of {DEFAULT_TOP_K}), got {k}"
                    ),
                ));
            }
        };
        self.service
            .classify(service::ClassifyRequest {
                model,
                images,
                top_k: top_k as usize,
                timeout,
                request_id,
            })
            .await
    }
}

#[tonic::async_trait]
impl classifier_server::Classifier for Classifier {
    async fn classify(
        &self,
        request: Request<ClassifyRequest>,
    ) -> Result<Response<ClassifyResponse>, Status> {
        let timeout = request_timeout(&request);
        let request = request.into_inner();
        self.handle(request.model, vec![request.image], request.top_k, timeout)
            .await
    }

    async fn classify_batch(
        &self,
        request: Request<ClassifyBatchRequest>,
    ) -> Result<Response<ClassifyResponse>, Status> {
        let timeout = request_timeout(&request);
        let request = request.into_inner();
        self.handle(request.model, request.images, request.top_k, timeout)
            .await
    }
}

fn response(request_id: String, outcome: ClassifyOutcome) -> ClassifyResponse {
    let manifest = &outcome.model.manifest;
    ClassifyResponse {
        request_id,
        model: manifest.name.clone(),
        variant: manifest.variant.clone(),
        precision: manifest.precision.to_string(),
        results: outcome
            .images
            .into_iter()
            .map(|image| ImageResult {
                classes: image
                    .classes
                    .into_iter()
                    .map(|c| ClassScore {
                        index: c.index as u32,
                        wnid: c.wnid,
                        label: c.label,
                        score: c.score,
                    })
                    .collect(),
                timings: Some(Timings {
                    decode_ms: ms(image.timings.decode),
                    preprocess_ms: ms(image.timings.preprocess),
                    queue_ms: ms(image.timings.queue),
                    inference_ms: ms(image.timings.inference),
                    batch_size: image.timings.batch_size as u32,
                }),
            })
            .collect(),
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
