//! Bounds a stream by the caller's deadline. tonic does not: a response
//! stream outlives `grpc-timeout` unless someone stops it, and until then
//! the upstream keeps generating tokens we pay for.

use crate::error::Error;
use crate::model::ChatChunk;
use crate::upstream::ChunkStream;
use futures::Stream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

pub struct DeadlineStream {
    inner: Option<ChunkStream>,
    timer: Pin<Box<Sleep>>,
    started: Instant,
}

impl DeadlineStream {
    pub fn new(inner: ChunkStream, deadline: Instant) -> Self {
        DeadlineStream {
            inner: Some(inner),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            started: Instant::now(),
        }
    }
}

impl Stream for DeadlineStream {
    type Item = Result<ChatChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(item) = inner.as_mut().poll_next(cx) {
            if item.is_none() {
                this.inner = None;
            }
            return Poll::Ready(item);
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            // Dropping the upstream stream closes the upstream request now.
            this.inner = None;
            return Poll::Ready(Some(Err(Error::DeadlineExceeded {
                stage: "streaming the answer",
                elapsed: this.started.elapsed(),
            })));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_ends_with_deadline_exceeded() {
        let stalled: ChunkStream = Box::pin(futures::stream::pending());
        let mut stream = DeadlineStream::new(stalled, Instant::now() + Duration::from_secs(5));
        let item = stream.next().await.unwrap();
        assert!(matches!(item, Err(Error::DeadlineExceeded { .. })));
        assert!(stream.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn items_before_the_deadline_pass_through() {
        let items: ChunkStream = Box::pin(futures::stream::iter(vec![Ok(ChatChunk::default())]));
        let mut stream = DeadlineStream::new(items, Instant::now() + Duration::from_secs(5));
        assert!(stream.next().await.unwrap().is_ok());
        assert!(stream.next().await.is_none());
    }
}
