//! Closing connections that have no request open for too long.
//!
//! Neither hyper nor tonic bounds a connection that sends nothing: a client
//! that connects and stays silent (not even the HTTP/2 preface, or the first
//! byte hyper's version detection waits for), or one that keeps an HTTP/2
//! connection with no stream on it, held its socket and buffers for good.
//! gRPC calls this bound `MAX_CONNECTION_IDLE`; tonic's builder has no such
//! setting, so it is done here, around the accepted connection:
//!
//! - [`IdleClose`] wraps the connection's IO. When the connection has had
//!   no request open for the timeout, its next read reports the end of the
//!   stream, and hyper closes the connection as if the client had.
//! - [`HoldOpen`] wraps the connection's service: a request holds the
//!   connection open from its headers to the end of its response body (a
//!   stream's last chunk).
//!
//! A peer that vanished while a request is open is the HTTP/2 keepalive
//! ping's job, set on each listener's builder.

mod hold_open;
#[cfg(test)]
mod tests;

pub use hold_open::HoldOpen;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What one connection is doing: how many requests are open on it, and
/// since when none has been.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    /// When the connection may be closed, or `None` while a request is open.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        Some(since + timeout)
    }
}

/// Held by a request from its headers to the end of its response.
#[derive(Debug)]
pub struct RequestOpen(Arc<Activity>);

impl RequestOpen {
    pub fn new(activity: Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::AcqRel);
        RequestOpen(activity)
    }
}

impl Drop for RequestOpen {
    fn drop(&mut self) {
        // The clock is set before the count falls, so a reader that sees
        // zero sees this request's end, not an older one.
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted connection that ends (reads as closed by the peer) once it
/// has had no request open for `timeout`.
#[derive(Debug)]
pub struct IdleClose<S> {
    inner: S,
    activity: Arc<Activity>,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    closed: bool,
}

impl<S> IdleClose<S> {
    /// Wraps a freshly accepted connection; its idle clock starts now.
    pub fn new(inner: S, timeout: Duration) -> Self {
        IdleClose {
            inner,
            activity: Activity::new(),
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            closed: false,
        }
    }

    /// The activity that [`HoldOpen`] counts requests in.
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// Whether the connection has been idle too long; re-arms the timer
    /// otherwise (registering `cx` to be woken when it runs out).
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match self.activity.idle_deadline(self.timeout) {
                Some(deadline) if deadline <= now => return true,
                Some(deadline) => self.timer.as_mut().reset(deadline),
                None => self.timer.as_mut().reset(now + self.timeout),
            }
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleClose<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed || this.idle_too_long(cx) {
            this.closed = true;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

super::write_through::write_through!(IdleClose);
