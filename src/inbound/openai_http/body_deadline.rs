//! A bound on how long a request body may take to arrive
//! (`server.body_read_timeout_ms`).
//!
//! hyper bounds the headers but not the body: a client that sends its
//! body a byte at a time held a connection, a request slot and a growing
//! buffer for as long as it liked. The body's clock starts when its
//! headers have been read; once it runs out the body reads fail, and the
//! caller gets 408 with an OpenAI error object (`code`
//! `request_body_timeout`), counted in [`body_timeouts`] and logged.

use super::api_error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use http_body::Frame;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

static BODY_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// How many request bodies this process cut for arriving too slowly.
pub fn body_timeouts() -> u64 {
    BODY_TIMEOUTS.load(Ordering::Relaxed)
}

/// Runs `next` with the request's body bounded to `limit` from its
/// headers: past it, the body's reads fail and the answer is 408.
pub(super) async fn bounded(limit: Duration, request: Request, next: Next) -> Response {
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(Deadline {
            inner: body,
            timer: Box::pin(tokio::time::sleep(limit)),
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if !expired.load(Ordering::Acquire) {
        return response;
    }
    // The handler saw a failed body read; the reason is the clock.
    let total = BODY_TIMEOUTS.fetch_add(1, Ordering::Relaxed) + 1;
    let limit_ms = limit.as_millis() as u64;
    tracing::warn!(
        limit_ms,
        total,
        "request body not received within server.body_read_timeout_ms; answered 408"
    );
    let message = format!("the request body did not arrive within {limit_ms} ms");
    let mut response =
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_body_timeout", message).into_response();
    // The rest of the body may still be on its way: not a connection to reuse.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The body ran out of time (what the handler's read fails with).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// A request body that fails with [`BodyTimedOut`] once `timer` ends.
struct Deadline {
    inner: Body,
    timer: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
