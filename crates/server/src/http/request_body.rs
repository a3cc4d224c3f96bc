//! Reading of request bodies: an idle timeout, and a lingering close that
//! reads and discards the unread rest of a body before the response goes out.
//!
//! A client that stops sending in the middle of a body would otherwise hold
//! its connection and the part already buffered for as long as it likes. So
//! the body fails once no data has arrived for the configured body timeout.
//!
//! A handler that responds early, such as with 413 once the body limit is
//! reached, leaves the rest of the body unread. When the connection
//! then closes with data still arriving, the kernel resets it, and a client
//! that is still sending gets a broken pipe instead of the response. Reading
//! the rest first, within bounds, lets the client finish sending and read the
//! status and error body.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use tower_http::timeout::TimeoutBody;

/// Most bytes read and discarded after the handler has responded.
const MAX_DISCARD_BYTES: usize = 64 * 1024 * 1024;

/// Maximum time spent discarding after the handler has responded.
const MAX_DISCARD_TIME: Duration = Duration::from_secs(5);

/// Runs the handler on a shared handle to the request body, which fails
/// after `idle_timeout` without data, then discards whatever the handler
/// left unread, up to [`MAX_DISCARD_BYTES`] and [`MAX_DISCARD_TIME`].
//
// NOTE: past either bound the connection closes with data unread, and a
// client still sending may see a reset instead of the response.
pub async fn guard(State(idle_timeout): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body = Body::new(TimeoutBody::new(idle_timeout, body));
    let shared = SharedBody(Arc::new(Mutex::new(body)));

    let response = next
        .run(Request::from_parts(parts, Body::new(shared.clone())))
        .await;

    let discard = async {
        let mut body = shared;
        let mut discarded = 0;
        while let Some(Ok(frame)) = body.frame().await {
            discarded += frame.data_ref().map_or(0, Bytes::len);
            if discarded >= MAX_DISCARD_BYTES {
                break;
            }
        }
        discarded
    };
    match tokio::time::timeout(MAX_DISCARD_TIME, discard).await {
        Ok(0) => {}
        Ok(bytes) => tracing::debug!(bytes, "discarded unread request body"),
        Err(_) => tracing::debug!("gave up discarding unread request body"),
    }
    response
}

/// A request body that the handler and the middleware take turns reading.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Body>>);

// === impl SharedBody ===

impl http_body::Body for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut body = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Pin::new(&mut *body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        let body = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let body = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        body.size_hint()
    }
}
