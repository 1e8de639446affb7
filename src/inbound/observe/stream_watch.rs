//! A served stream under watch: each chunk is tallied as it passes (no
//! copy of the chunk, no channel), and the call is recorded when the stream
//! ends, fails, or is dropped because the caller went away. For providers
//! configured with `drain_on_cancel`, an abandoned stream is read to its
//! end in the background so the usage recorded is the upstream's own.

use super::tally::Tally;
use super::{Finished, Observation, code_of};
use crate::call_record::Outcome;
use crate::error::Error;
use crate::model::ChatChunk;
use crate::upstream::ChunkStream;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::task::{Context, Poll};

/// How a completed stream went, for the edge's trailers.
pub type StreamEnd = Finished;

pub struct WatchedStream {
    inner: Option<ChunkStream>,
    observation: Option<Observation>,
    tally: Tally,
    drain: bool,
    end: Option<StreamEnd>,
}

impl WatchedStream {
    pub(super) fn new(
        inner: ChunkStream,
        observation: Observation,
        tally: Tally,
        drain: bool,
    ) -> Self {
        WatchedStream {
            inner: Some(inner),
            observation: Some(observation),
            tally,
            drain,
            end: None,
        }
    }

    pub fn request_id(&self) -> &str {
        self.observation
            .as_ref()
            .map_or("", |observation| observation.request_id())
    }

    /// See [`Observation::overhead_so_far`].
    pub fn overhead_so_far(&self) -> std::time::Duration {
        self.observation
            .as_ref()
            .map_or(std::time::Duration::ZERO, Observation::overhead_so_far)
    }

    /// Once the stream has ended, well or with an error: the call's
    /// summary.
    pub fn take_end(&mut self) -> Option<StreamEnd> {
        self.end.take()
    }

    /// Ends the stream with `error` found by the edge (a chunk it cannot
    /// deliver): the upstream request closes and the call is recorded as
    /// failed, with what was seen so far.
    pub fn fail(&mut self, error: &Error) {
        let code = code_of(error);
        let outcome = if self.tally.chunks > 0 {
            Outcome::Partial { code }
        } else {
            Outcome::Error { code }
        };
        self.inner = None;
        self.end = self.finish(outcome, Some(error));
    }

    fn finish(&mut self, outcome: Outcome, error: Option<&Error>) -> Option<Finished> {
        let mut observation = self.observation.take()?;
        Some(observation.finish(outcome, &self.tally, error))
    }
}

impl Stream for WatchedStream {
    type Item = Result<ChatChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let item = std::task::ready!(inner.as_mut().poll_next(cx));
        match &item {
            Some(Ok(chunk)) => {
                if let Some(observation) = &this.observation {
                    this.tally.note(chunk, observation.began.elapsed());
                }
            }
            Some(Err(error)) => this.fail(error),
            None => {
                this.inner = None;
                this.end = this.finish(Outcome::Ok, None);
            }
        }
        Poll::Ready(item)
    }
}

impl Drop for WatchedStream {
    fn drop(&mut self) {
        if self.observation.is_none() {
            return;
        }
        let runtime = tokio::runtime::Handle::try_current();
        match (self.drain, self.inner.take(), runtime) {
            (true, Some(mut rest), Ok(runtime)) => {
                let mut observation = self.observation.take();
                if let Some(observation) = &observation {
                    observation.progress.leave();
                }
                let mut tally = std::mem::take(&mut self.tally);
                // Still bounded by the stream's own deadline and idle
                // timeout, so a stalled upstream cannot keep this alive.
                runtime.spawn(async move {
                    while let Some(Ok(chunk)) = rest.next().await {
                        if let Some(observation) = &observation {
                            tally.note(&chunk, observation.began.elapsed());
                        }
                    }
                    if let Some(observation) = observation.as_mut() {
                        observation.finish(Outcome::Cancelled { partial: true }, &tally, None);
                    }
                });
            }
            _ => {
                self.finish(Outcome::Cancelled { partial: true }, None);
            }
        }
    }
}
