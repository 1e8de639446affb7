//! The service side of idle reaping: each request holds its connection
//! open until its response body ends.

use super::{Activity, RequestOpen, Watched};
use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// Makes [`HoldOpen`] services that find the connection in the request's
/// [`Watched<I>`] connect info (tonic's listeners).
#[derive(Debug)]
pub struct HoldOpenLayer<I>(PhantomData<fn() -> I>);

impl<I> HoldOpenLayer<I> {
    pub fn new() -> Self {
        HoldOpenLayer(PhantomData)
    }
}

impl<I> Default for HoldOpenLayer<I> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I> Clone for HoldOpenLayer<I> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<S, I> tower::Layer<S> for HoldOpenLayer<I> {
    type Service = HoldOpen<S, I>;

    fn layer(&self, inner: S) -> Self::Service {
        HoldOpen {
            inner,
            activity: None,
            info: PhantomData,
        }
    }
}

/// `inner`, with each request counted as open on its connection from the
/// call until its response body has ended or been dropped.
#[derive(Debug)]
pub struct HoldOpen<S, I> {
    inner: S,
    /// The connection, when the service is made per connection; otherwise
    /// it comes with each request, in [`Watched<I>`].
    activity: Option<Arc<Activity>>,
    info: PhantomData<fn() -> I>,
}

impl<S: Clone, I> Clone for HoldOpen<S, I> {
    fn clone(&self) -> Self {
        HoldOpen {
            inner: self.inner.clone(),
            activity: self.activity.clone(),
            info: PhantomData,
        }
    }
}

impl<S> HoldOpen<S, ()> {
    /// `inner` serving one connection, whose activity is known.
    pub fn per_connection(inner: S, activity: Arc<Activity>) -> Self {
        HoldOpen {
            inner,
            activity: Some(activity),
            info: PhantomData,
        }
    }
}

impl<S, I, B, R> tower::Service<http::Request<B>> for HoldOpen<S, I>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    I: Clone + Send + Sync + 'static,
{
    type Response = http::Response<Guarded<R>>;
    type Error = S::Error;
    type Future = Opened<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let activity = match request.extensions_mut().remove::<Watched<I>>() {
            Some(watched) => {
                request.extensions_mut().insert(watched.info);
                Some(watched.activity)
            }
            None => self.activity.clone(),
        };
        Opened {
            open: activity.map(RequestOpen::new),
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
