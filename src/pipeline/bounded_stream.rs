//! Bounds a stream in time: the idle gap between chunks, and the end of the
//! call (the caller's deadline or our total). tonic does not do this: a
//! response stream outlives `grpc-timeout` unless someone stops it, and a
//! stalled upstream would hold the call open while we pay for nothing.
//! Ending the stream drops the upstream body, which closes the request.

use super::bounds::Bounds;
use super::in_flight::InFlightGuard;
use super::limit::Permit;
use crate::error::{Error, TimeoutKind};
use crate::model::ChatChunk;
use crate::upstream::ChunkStream;
use futures::Stream;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

pub struct BoundedStream {
    inner: Option<ChunkStream>,
    provider: Arc<str>,
    bounds: Bounds,
    end: Pin<Box<Sleep>>,
    idle: Duration,
    /// Fires `idle` after the last chunk, or earlier: it is moved on only
    /// when it fires (to `last_chunk + idle`), not at every chunk, which
    /// cost a timer-wheel removal and insertion per chunk.
    idle_timer: Pin<Box<Sleep>>,
    last_chunk: Instant,
    /// The provider slot this stream occupies and its place in the
    /// in-flight count, both freed when it ends.
    slot: Option<(Permit, InFlightGuard)>,
    /// Fires when the sidecar's shutdown grace is over.
    stop: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl BoundedStream {
    pub fn new(
        inner: ChunkStream,
        provider: Arc<str>,
        bounds: Bounds,
        idle: Duration,
        slot: Option<(Permit, InFlightGuard)>,
    ) -> Self {
        BoundedStream {
            inner: Some(inner),
            provider,
            end: Box::pin(tokio::time::sleep_until(bounds.end())),
            bounds,
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            last_chunk: Instant::now(),
            slot,
            stop: None,
        }
    }

    /// Ends the stream with [`Error::ShuttingDown`] once `stop` fires.
    pub fn stopped_by(mut self, stop: &tokio_util::sync::CancellationToken) -> Self {
        self.stop = Some(Box::pin(stop.clone().cancelled_owned()));
        self
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<ChatChunk, Error>>> {
        self.inner = None;
        self.slot = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Stream for BoundedStream {
    type Item = Result<ChatChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(item) = inner.as_mut().poll_next(cx) {
            match item {
                None => {
                    this.inner = None;
                    this.slot = None;
                }
                Some(_) => this.last_chunk = Instant::now(),
            }
            return Poll::Ready(item);
        }
        if let Some(stop) = this.stop.as_mut()
            && stop.as_mut().poll(cx).is_ready()
        {
            return this.fail(Error::ShuttingDown);
        }
        if this.end.as_mut().poll(cx).is_ready() {
            let error = this.bounds.expired(&this.provider, "streaming the answer");
            return this.fail(error);
        }
        while this.idle_timer.as_mut().poll(cx).is_ready() {
            let gap_ends = this.last_chunk + this.idle;
            if gap_ends > this.idle_timer.deadline() {
                // Chunks came since it was set: the gap starts at the last.
                this.idle_timer.as_mut().reset(gap_ends);
                continue;
            }
            let error = Error::Timeout {
                provider: this.provider.to_string(),
                kind: TimeoutKind::Idle,
                after: this.idle,
            };
            return this.fail(error);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn stalled() -> ChunkStream {
        Box::pin(futures::stream::pending())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_ends_with_an_idle_timeout() {
        let bounds = Bounds::new(Instant::now(), None, Duration::from_secs(100));
        let mut stream =
            BoundedStream::new(stalled(), "p".into(), bounds, Duration::from_secs(5), None);
        let item = stream.next().await.unwrap();
        assert!(
            matches!(
                item,
                Err(Error::Timeout {
                    kind: TimeoutKind::Idle,
                    ..
                })
            ),
            "{item:?}"
        );
        assert!(stream.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_callers_deadline_is_deadline_exceeded_and_ours_is_a_total_timeout() {
        let now = Instant::now();
        let caller_first = Bounds::new(
            now,
            Some(now + Duration::from_secs(2)),
            Duration::from_secs(3),
        );
        let mut stream = BoundedStream::new(
            stalled(),
            "p".into(),
            caller_first,
            Duration::from_secs(60),
            None,
        );
        assert!(matches!(
            stream.next().await.unwrap(),
            Err(Error::DeadlineExceeded { .. })
        ));

        let ours_first = Bounds::new(
            now,
            Some(now + Duration::from_secs(20)),
            Duration::from_secs(3),
        );
        let mut stream = BoundedStream::new(
            stalled(),
            "p".into(),
            ours_first,
            Duration::from_secs(60),
            None,
        );
        assert!(matches!(
            stream.next().await.unwrap(),
            Err(Error::Timeout {
                kind: TimeoutKind::Total,
                ..
            })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_resets_the_idle_timer() {
        let trickle: ChunkStream = Box::pin(futures::stream::iter(0..5).then(|_| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(ChatChunk::default())
        }));
        let bounds = Bounds::new(Instant::now(), None, Duration::from_secs(100));
        let stream = BoundedStream::new(trickle, "p".into(), bounds, Duration::from_secs(5), None);
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items.len(), 5);
        assert!(items.iter().all(Result::is_ok));
    }

    /// The gap is measured from the last chunk, though the timer is moved
    /// only when it fires: chunks for a while, then a stall, ends exactly
    /// `idle` after the last chunk.
    #[tokio::test(start_paused = true)]
    async fn a_stall_after_a_trickle_ends_idle_after_the_last_chunk() {
        let began = Instant::now();
        let trickle = futures::stream::iter(0..4).then(|_| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(ChatChunk::default())
        });
        let stalling: ChunkStream = Box::pin(trickle.chain(futures::stream::pending()));
        let bounds = Bounds::new(began, None, Duration::from_secs(100));
        let mut stream =
            BoundedStream::new(stalling, "p".into(), bounds, Duration::from_secs(5), None);
        for _ in 0..4 {
            assert!(stream.next().await.unwrap().is_ok());
        }
        let error = stream.next().await.unwrap().unwrap_err();
        assert!(
            matches!(
                error,
                Error::Timeout {
                    kind: TimeoutKind::Idle,
                    ..
                }
            ),
            "{error:?}"
        );
        // The last chunk at 12 s, the stall noticed at 17 s.
        assert_eq!(began.elapsed(), Duration::from_secs(17));
    }
}
