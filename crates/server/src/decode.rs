//! A bounded pool of blocking threads for image decoding and preprocessing,
//! so that this CPU-heavy work never runs on the async runtime's threads and
//! never takes more cores than configured.

use std::sync::Arc;

use bytes::Bytes;
use effnet_imaging::{Limits, PreprocessSpec, Timings};
use tokio::{sync::Semaphore, time::Instant};

use crate::error::{ErrorKind, ServiceError};

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

    /// Decodes and preprocesses one image on a pool thread, unless
    /// `deadline` has passed by the time a worker is free.
    ///
    /// The permit moves into the blocking task, so a decode keeps its worker
    /// until it finishes even when the caller stops waiting (deadline or
    /// disconnect): the pool never runs more than `workers` decodes at once.
    /// A panic inside the decoder fails only this image, with an internal
    /// error.
    pub async fn preprocess(
        &self,
        image: Bytes,
        spec: PreprocessSpec,
        deadline: Instant,
    ) -> Result<Preprocessed, ServiceError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ServiceError::internal("decode pool is closed"))?;
        let limits = self.limits.clone();

        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // NOTE: a decoder cannot be preempted once it runs; this check is
            // the last point where an expired request costs nothing.
            if Instant::now() >= deadline {
                return Err(None);
            }
            effnet_imaging::decode_and_preprocess(&image, &limits, &spec).map_err(Some)
        })
        .await;

        match result {
            Ok(Ok((tensor, timings))) => Ok(Preprocessed { tensor, timings }),
            Ok(Err(Some(error))) => Err(error.into()),
            Ok(Err(None)) => Err(ServiceError::new(
                ErrorKind::DeadlineExceeded,
                "deadline_exceeded",
                "deadline exceeded before the image was decoded",
            )),
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
        deadline: Instant,
    ) -> Result<Vec<Preprocessed>, ServiceError> {
        let count = images.len();
        let jobs = images
            .into_iter()
            .map(|image| self.preprocess(image, spec.clone(), deadline));
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
