//! One write to the caller per burst of upstream chunks, not one per chunk.
//!
//! An upstream's body reaches a served stream through its HTTP connection's
//! task one HTTP chunk at a time, and the edges (hyper's HTTP/1.1 writer on
//! the facade, tonic and h2 on gRPC) write out what they have as soon as the
//! served stream has nothing ready. Fast providers send many events per
//! read, so a stream would otherwise write to its caller once per upstream
//! HTTP chunk (about fifty system calls for a 200-chunk answer that arrived
//! in two reads). [`Gathered`] holds what is ready and gives the runtime a
//! couple of turns to pass on the rest of what that task has already read,
//! then releases it all at once, so the edge writes it in one go.
//!
//! Turns are given only where they pay: when a burst already holds two
//! chunks (the upstream sends several per HTTP chunk), or when turns
//! brought more in the burst before. A paced stream (one chunk per read)
//! gives none, so it pays nothing: each turn is a poll of the whole chain
//! of streams, about 1,800 instructions, and finds nothing there.

use crate::error::Error;
use crate::model::ChatChunk;
use futures::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Runtime turns given to the upstream connection's task before what is
/// held goes out. One was measured not to be enough for hyper's client to
/// pass on its next chunk; two were.
const TURNS: u8 = 2;

/// The most chunks held before they are released anyway.
const MAX_HELD: usize = 16;

/// The most bytes of chunks held before they are released anyway (as the
/// edge weighs them: the facade the upstream's JSON, gRPC the protobuf
/// message): with the count above, what a stream may hold beyond the
/// edge's own buffers (ARCHITECTURE.md, "Memory per call"). A single
/// event may be larger (up to the SSE line cap); it is then released
/// alone.
const MAX_HELD_BYTES: usize = 32 * 1024;

/// A served stream's item weighed for [`Gathered`]: the chunk's JSON, as
/// the upstream sent it (an error weighs nothing).
pub fn chunk_bytes(item: &Result<ChatChunk, Error>) -> usize {
    item.as_ref().map_or(0, |chunk| chunk.json.len())
}

/// A stream that passes on its inner stream's items in bursts: items that
/// come within [`TURNS`] runtime turns of each other are released back to
/// back. Order, items and end are the inner stream's.
pub struct Gathered<S: Stream> {
    inner: S,
    /// An item's size in bytes, for [`MAX_HELD_BYTES`].
    weigh: fn(&S::Item) -> usize,
    held: VecDeque<S::Item>,
    held_bytes: usize,
    /// Releasing what is held: no polling of the inner stream until it is
    /// all out.
    releasing: bool,
    /// Turns given since the inner stream last had something.
    turns: u8,
    /// A turn brought something in this burst.
    turns_paid: bool,
    /// Turns brought something in the last burst: worth giving again.
    turns_pay: bool,
    /// The inner stream ended: what is held is the rest.
    ended: bool,
}

impl<S: Stream> Gathered<S> {
    /// `weigh` gives an item's size in bytes.
    pub fn new(inner: S, weigh: fn(&S::Item) -> usize) -> Self {
        Gathered {
            inner,
            weigh,
            held: VecDeque::new(),
            held_bytes: 0,
            releasing: false,
            turns: 0,
            turns_paid: false,
            turns_pay: false,
            ended: false,
        }
    }
}

impl<S: Stream + Unpin> Stream for Gathered<S>
where
    S::Item: Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        while !this.releasing && !this.ended {
            if this.held.len() >= MAX_HELD || this.held_bytes >= MAX_HELD_BYTES {
                this.releasing = true;
                break;
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    this.held_bytes += (this.weigh)(&item);
                    this.held.push_back(item);
                    this.turns_paid |= this.turns > 0;
                    this.turns = 0;
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending if this.held.is_empty() => return Poll::Pending,
                Poll::Pending if this.turns < TURNS && (this.held.len() > 1 || this.turns_pay) => {
                    this.turns += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => this.releasing = true,
            }
        }
        match this.held.pop_front() {
            Some(item) => {
                if this.held.is_empty() {
                    this.held_bytes = 0;
                    this.releasing = false;
                    this.turns = 0;
                    this.turns_pay = std::mem::take(&mut this.turns_paid);
                }
                Poll::Ready(Some(item))
            }
            None => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    /// A stream that has nothing ready where the script says `None` (and
    /// wakes its task at once, as a connection with more data would), and
    /// counts how often it is polled.
    struct Scripted {
        script: VecDeque<Option<u32>>,
    }

    impl Stream for Scripted {
        type Item = u32;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            match self.script.pop_front() {
                Some(Some(item)) => Poll::Ready(Some(item)),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                None => Poll::Ready(None),
            }
        }
    }

    /// What the gathered stream gives, poll by poll: an item, or `P` for
    /// `Pending` (a turn given, or nothing to give).
    async fn polls(script: Vec<Option<u32>>) -> String {
        let mut gathered = Gathered::new(
            Scripted {
                script: script.into(),
            },
            |_| 1,
        );
        let mut seen = Vec::new();
        std::future::poll_fn(|cx| {
            loop {
                match gathered.poll_next_unpin(cx) {
                    Poll::Ready(Some(item)) => seen.push(item.to_string()),
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => {
                        seen.push("P".to_owned());
                        return Poll::Pending;
                    }
                }
            }
        })
        .await;
        seen.join(" ")
    }

    #[tokio::test]
    async fn a_lone_chunk_goes_out_at_once() {
        // One chunk per read, as a paced stream: no turn is given.
        let script = vec![Some(1), None, Some(2), None, Some(3)];
        assert_eq!(polls(script).await, "1 2 3");
    }

    #[tokio::test]
    async fn chunks_that_come_within_two_turns_go_out_together() {
        let script = vec![
            Some(1),
            Some(2),
            None, // a turn: it brings 3
            Some(3),
            None, // a turn
            None, // a second turn: it brings 4
            Some(4),
            None,
            None, // two turns bring nothing
            None, // 1 to 4 go out
            None, // nothing held: the stream waits
            Some(5),
            None, // turns brought 3 and 4: 5 is given them too
            Some(6),
        ];
        assert_eq!(polls(script).await, "P P P P P 1 2 3 4 P P 5 6");
    }

    #[tokio::test]
    async fn turns_that_bring_nothing_are_not_given_to_a_lone_chunk() {
        let script = vec![
            Some(1),
            Some(2),
            None,
            None,
            None,
            None,
            Some(3),
            None,
            Some(4),
        ];
        assert_eq!(polls(script).await, "P P 1 2 P 3 4");
    }

    #[test]
    fn a_long_burst_is_released_at_the_bound() {
        let script = (0..150).map(Some).collect();
        let mut gathered = Gathered::new(Scripted { script }, |_| 1);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut items = Vec::new();
        while let Poll::Ready(Some(item)) = gathered.poll_next_unpin(&mut cx) {
            assert!(gathered.held.len() < MAX_HELD);
            items.push(item);
        }
        assert_eq!(items, (0..150).collect::<Vec<_>>());
    }

    #[test]
    fn large_chunks_are_released_at_the_byte_bound() {
        let script = (0..10).map(Some).collect();
        let mut gathered = Gathered::new(Scripted { script }, |_| MAX_HELD_BYTES / 2);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut items = Vec::new();
        while let Poll::Ready(Some(item)) = gathered.poll_next_unpin(&mut cx) {
            assert!(gathered.held.len() < 2, "{} held", gathered.held.len());
            items.push(item);
        }
        assert_eq!(items, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn an_idle_stream_is_not_woken() {
        // Nothing held: a Pending is passed on as it is, without a wake-up
        // of its own (the inner stream's waker registration stands).
        let mut gathered = Gathered::new(futures::stream::pending::<u32>(), |_| 1);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(gathered.poll_next_unpin(&mut cx).is_pending());
        assert_eq!(gathered.turns, 0);
    }
}
