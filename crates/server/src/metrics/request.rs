//! [`RequestTracker`]: counts one request once, however it ends, and logs
//! its failure.

use std::{sync::Arc, time::Instant};

use super::{Metrics, Outcome};
use crate::{
    error::{ErrorKind, ServiceError},
    service::Protocol,
};

/// Follows one classification request from its handler's start to its
/// response. Exactly one of these happens:
///
/// - [`finish`](Self::finish) counts the outcome and, for a known model,
///   the latency, and logs a failure;
/// - the tracker is dropped unfinished, because the client disconnected and
///   the server dropped the handler's future, and the request is counted as
///   cancelled.
pub struct RequestTracker {
    metrics: Arc<Metrics>,
    protocol: Protocol,
    /// Registry index of the requested model, `None` for an unknown name.
    model: Option<usize>,
    /// Model name for logs: the resolved name, or `-` for an unknown one.
    model_name: String,
    request_id: String,
    images: usize,
    started: Instant,
    finished: bool,
}

// === impl RequestTracker ===

impl RequestTracker {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        protocol: Protocol,
        model: Option<(usize, String)>,
        request_id: &str,
    ) -> Self {
        let (model, model_name) = match model {
            Some((index, name)) => (Some(index), name),
            None => (None, "-".to_string()),
        };
        Self {
            metrics,
            protocol,
            model,
            model_name,
            request_id: request_id.to_string(),
            images: 0,
            started: Instant::now(),
            finished: false,
        }
    }

    /// Returns the resolved model name, or `-` when the request named no known model.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// Sets the number of images, once the request's body has been read.
    pub fn set_images(&mut self, images: usize) {
        self.images = images;
    }

    /// Counts the request's outcome and logs a failure: server-side
    /// failures (HTTP 5xx) at error level, client errors and rejections at
    /// debug level, because clients can cause any number of them.
    pub fn finish<T>(mut self, result: &Result<T, ServiceError>) {
        self.finished = true;
        let outcome = match result {
            Ok(_) => Outcome::Success,
            Err(error) => Outcome::of_error(error),
        };
        self.metrics.record_request(
            self.model,
            self.protocol,
            outcome,
            self.images,
            Some(self.started.elapsed()),
        );

        let Err(error) = result else { return };
        let server_side = matches!(
            error.kind,
            ErrorKind::Internal | ErrorKind::Unavailable | ErrorKind::DeadlineExceeded
        );
        if server_side {
            tracing::error!(
                request_id = %self.request_id,
                model = %self.model_name,
                protocol = self.protocol.as_str(),
                code = error.code,
                error = %error.message,
                "request failed"
            );
        } else {
            tracing::debug!(
                request_id = %self.request_id,
                model = %self.model_name,
                protocol = self.protocol.as_str(),
                code = error.code,
                error = %error.message,
                "request rejected"
            );
        }
    }
}

impl Drop for RequestTracker {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.metrics.record_request(
            self.model,
            self.protocol,
            Outcome::Cancelled,
            self.images,
            None,
        );
        tracing::info!(
            request_id = %self.request_id,
            model = %self.model_name,
            protocol = self.protocol.as_str(),
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "client disconnected before the response"
        );
    }
}
