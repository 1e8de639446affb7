//! The service side of idle reaping: each request holds its connection
//! open until its response body ends.

use super::{Activity, RequestOpen};
use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// `inner` serving one connection, with each request counted as open on
/// it from the call until its response body has ended or been dropped.
#[derive(Debug, Clone)]
pub struct HoldOpen<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> HoldOpen<S> {
    /// `inner` serving the connection whose activity this is.
    pub fn per_connection(inner: S, activity: Arc<Activity>) -> Self {
        HoldOpen { inner, activity }
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for HoldOpen<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<Guarded<R>>;
    type Error = S::Error;
    type Future = Opened<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        Opened {
            open: Some(RequestOpen::new(self.activity.clone())),
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// The response future; the request is open while it runs.
    pub struct Opened<F> {
        #[pin]
        inner: F,
        open: Option<RequestOpen>,
    }
}

impl<F, R, E> Future for Opened<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = Result<http::Response<Guarded<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let open = this.open.take();
        Poll::Ready(Ok(response.map(|inner| Guarded { inner, open })))
    }
}

pin_project! {
    /// A response body that keeps its request open until it ends.
    pub struct Guarded<B> {
        #[pin]
        inner: B,
        open: Option<RequestOpen>,
    }
}

impl<B> Body for Guarded<B>
where
    B: Body,
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            this.open.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
