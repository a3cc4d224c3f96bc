//! A bounded pool of blocking threads for image decoding and preprocessing,
//! so that this CPU-heavy work never runs on the async runtime's threads and
//! never takes more cores than configured.

use std::sync::Arc;

use bytes::Bytes;
use effnet_imaging::{Limits, PreprocessSpec, Timings};
use tokio::sync::Semaphore;

use crate::error::ServiceError;

/// One image ready for the engine.
pub struct Preprocessed {
    /// CHW floats, `3 * res * res`.
    pub tensor: Vec<f32>,
    pub timings: Timings,
}

#[derive(Clone)]
pub struct DecodePool {
    permits: Arc<Semaphore>,
    limits: Limits,
}

// === impl DecodePool ===

impl DecodePool {
    pub fn new(workers: usize, limits: Limits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(workers.max(1))),
            limits,
        }
    }

    /// Decodes and preprocesses one image on a pool thread.
    ///
    /// A panic inside the decoder fails only this image, with an internal
    /// error.
    pub async fn preprocess(
        &self,
        image: Bytes,
        spec: PreprocessSpec,
    ) -> Result<Preprocessed, ServiceError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ServiceError::internal("decode pool is closed"))?;
        let limits = self.limits.clone();

        let result = tokio::task::spawn_blocking(move || {
            effnet_imaging::decode_and_preprocess(&image, &limits, &spec)
        })
        .await;

        match result {
            Ok(Ok((tensor, timings))) => Ok(Preprocessed { tensor, timings }),
            Ok(Err(error)) => Err(error.into()),
            Err(join_error) => {
                tracing::error!(error = %join_error, "image decoding panicked");
                Err(ServiceError::internal("image decoding failed unexpectedly"))
            }
        }
    }

    /// Decodes several images concurrently, keeping their order. The first
    /// error fails the whole request, naming the image's position.
    pub async fn preprocess_all(
        &self,
        images: Vec<Bytes>,
        spec: PreprocessSpec,
    ) -> Result<Vec<Preprocessed>, ServiceError> {
        let count = images.len();
        let jobs = images
            .into_iter()
            .map(|image| self.preprocess(image, spec.clone()));
        let results = futures::future::join_all(jobs).await;

        results
            .into_iter()
            .enumerate()
            .map(|(position, result)| {
                result.map_err(|mut error| {
                    if count > 1 {
                        error.message = format!("image {position}: {}", error.message);
                    }
                    error
                })
            })
            .collect()
    }
}
