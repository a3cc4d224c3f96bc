//! The gRPC API on its own port: our classification service
//! (`effnet.v1.Classifier`), the Open Inference Protocol
//! (`inference.GRPCInferenceService`), `grpc.health.v1` health and server
//! reflection.
//!
//! Each handler converts [`ServiceError`] once into a [`Status`] with
//! [`status_of`].

use std::{future::Future, sync::Arc, time::Duration};

use effnet_proto::{
    effnet::v1::classifier_server::ClassifierServer,
    inference::grpc_inference_service_server::GrpcInferenceServiceServer,
};
use tokio::net::TcpListener;
use tonic::{
    Code, Request, Status, codegen::http, metadata::MetadataValue, transport::server::TcpIncoming,
};
use tonic_health::ServingStatus;

use crate::{
    error::{ErrorKind, ServiceError},
    service::InferenceService,
};

mod classifier;
mod oip;

/// gRPC service names whose health follows the server's readiness.
const SERVICE_NAMES: &[&str] = &["", "effnet.v1.Classifier", "inference.GRPCInferenceService"];

/// Time kept back from a client's `grpc-timeout`, so that the handler
/// returns `DEADLINE_EXCEEDED` before tonic's own timeout cancels the call,
/// which tonic 0.14 reports as `CANCELLED`: a tenth of the timeout, between
/// 5 and 50 ms.
///
/// NOTE: when the handler's thread is starved for longer than the margin,
/// tonic's timer still wins and the client sees `CANCELLED`.
fn deadline_margin(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(5), Duration::from_millis(50))
}

/// HTTP/2 flow-control window in bytes. With the 64 KiB default, one FP32
/// image of 224 x 224 (602 KB) needs several round trips to arrive.
const FLOW_CONTROL_WINDOW: u32 = 4 << 20;

/// Metadata key carrying the stable error code of a failed call.
const ERROR_CODE_KEY: &str = "effnet-error-code";

/// Serves gRPC on `listener` until `shutdown` completes, then finishes the
/// calls in flight.
pub async fn serve(
    listener: TcpListener,
    service: Arc<InferenceService>,
    tls: Option<tonic::transport::Identity>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let max_message = service.config().max_request_bytes;
    let (reporter, health) = tonic_health::server::health_reporter();
    let health_task = tokio::spawn(track_readiness(reporter, service.clone()));

    let reflection_v1 = reflection()
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");

    let inference = GrpcInferenceServiceServer::new(oip::Inference::new(service.clone()))
        .max_decoding_message_size(max_message);
    let classifier = ClassifierServer::new(classifier::Classifier::new(service))
        .max_decoding_message_size(max_message);

    // Without TCP_NODELAY, Nagle's algorithm holds back the last segment of
    // a response until the client's delayed ACK, adding tens of ms per call.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(identity) = tls {
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let result = builder
        .initial_stream_window_size(FLOW_CONTROL_WINDOW)
        .initial_connection_window_size(FLOW_CONTROL_WINDOW)
        .layer(tower::util::MapResponseLayer::new(
            message_too_large_as_exhausted,
        ))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(inference)
        .add_service(classifier)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    health_task.abort();
    result
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(effnet_proto::EFFNET_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(effnet_proto::INFERENCE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Keeps the health service in step with readiness: `SERVING` when every
/// model is loaded and the server is not draining, `NOT_SERVING` otherwise.
async fn track_readiness(
    reporter: tonic_health::server::HealthReporter,
    service: Arc<InferenceService>,
) {
    let mut readiness = service.watch_readiness();
    loop {
        let status = if *readiness.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in SERVICE_NAMES {
            reporter.set_service_status(name, status).await;
        }
        if readiness.changed().await.is_err() {
            return;
        }
    }
}

/// Rewrites tonic's `OUT_OF_RANGE` for a request message over
/// `max_decoding_message_size` into `RESOURCE_EXHAUSTED`, the code gRPC's
/// reference implementations use for an oversized message.
fn message_too_large_as_exhausted(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v == "11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| {
            m.contains("message%20length%20too%20large") || m.contains("message length too large")
        });
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// Converts a service error into its gRPC status, with the error code and,
/// for overload, `retry-after` in the metadata.
pub fn status_of(error: &ServiceError) -> Status {
    let code = match error.kind {
        ErrorKind::InvalidArgument | ErrorKind::UnsupportedMediaType | ErrorKind::Unprocessable => {
            Code::InvalidArgument
        }
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::PayloadTooLarge | ErrorKind::Overloaded { .. } => Code::ResourceExhausted,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    };
    let mut status = Status::new(code, error.message.clone());
    status
        .metadata_mut()
        .insert(ERROR_CODE_KEY, MetadataValue::from_static(error.code));
    if let ErrorKind::Overloaded { retry_after } = error.kind {
        let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        status
            .metadata_mut()
            .insert("retry-after", MetadataValue::from(seconds));
    }
    status
}

/// Returns the client's deadline from `grpc-timeout`, less [`deadline_margin`].
pub fn request_timeout<T>(request: &Request<T>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(value).map(|timeout| timeout.saturating_sub(deadline_margin(timeout)))
}

/// Parses the gRPC wire format of a timeout: up to 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Runs a handler under the request's deadline, so that a call whose
/// deadline passes while it waits for decoding or a batch fails with
/// `DEADLINE_EXCEEDED`.
pub async fn with_deadline<T>(
    timeout: Option<Duration>,
    handler: impl Future<Output = Result<T, ServiceError>>,
) -> Result<T, ServiceError> {
    match timeout {
        Some(timeout) => match tokio::time::timeout(timeout, handler).await {
            Ok(result) => result,
            Err(_) => Err(ServiceError::new(
                ErrorKind::DeadlineExceeded,
                "deadline_exceeded",
                format!(
                    "the request did not finish within its deadline of {} ms",
                    timeout.as_millis()
                ),
            )),
        },
        None => handler.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_margin_scales_with_timeout() {
        assert_eq!(
            deadline_margin(Duration::from_millis(20)),
            Duration::from_millis(5)
        );
        assert_eq!(
            deadline_margin(Duration::from_millis(300)),
            Duration::from_millis(30)
        );
        assert_eq!(
            deadline_margin(Duration::from_secs(10)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
    }

    #[test]
    fn grpc_timeout_invalid() {
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
    }

    #[test]
    fn overload_maps_to_resource_exhausted() {
        let error = ServiceError::new(
            ErrorKind::Overloaded {
                retry_after: Duration::from_millis(300),
            },
            "overloaded",
            "queue full",
        );

        let status = status_of(&error);

        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
    }
}
