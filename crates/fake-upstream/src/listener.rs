//! A TCP listener for `axum::serve` that counts accepted connections (so tests
//! can prove connection reuse) and hands out streams that fail once the fake is
//! shut down (so hanging or slow responses cannot outlive the `FakeUpstream`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::state::Shared;

pub(crate) struct CountingListener {
    inner: TcpListener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
}

impl CountingListener {
    pub(crate) fn new(
        inner: TcpListener,
        shared: Arc<Shared>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        CountingListener {
            inner,
            shared,
            shutdown,
        }
    }
}

impl axum::serve::Listener for CountingListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    // Small SSE frames must leave immediately, not wait for Nagle.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!("fake upstream: set_nodelay failed: {e}");
                    }
                    self.shared.note_connection();
                    return (KillableStream::new(stream, self.shutdown.clone()), peer);
                }
                Err(e) => {
                    // Same policy as axum's own listener: transient errors such
                    // as EMFILE must not kill the accept loop.
                    tracing::warn!("fake upstream: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

type ShutdownFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A `TcpStream` whose reads and writes fail with `ConnectionAborted` once the
/// shutdown signal fires (or its sender is dropped). Polling the signal inside
/// every I/O poll registers the connection task's waker, so even a connection
/// idle in a hanging handler wakes up and is torn down.
pub(crate) struct KillableStream {
    inner: TcpStream,
    shutdown: ShutdownFuture,
    killed: bool,
}

impl KillableStream {
    fn new(inner: TcpStream, mut rx: watch::Receiver<bool>) -> Self {
        let shutdown = Box::pin(async move {
            // Err means the sender is gone, which also means shutdown.
            let _ = rx.wait_for(|stop| *stop).await;
        });
        KillableStream {
            inner,
            shutdown,
            killed: false,
        }
    }

    fn killed(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.killed && self.shutdown.as_mut().poll(cx).is_ready() {
            self.killed = true;
        }
        self.killed
    }
}

fn aborted<T>() -> Poll<io::Result<T>> {
    Poll::Ready(Err(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "fake upstream shut down",
    )))
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.killed(cx) {
            return aborted();
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.killed(cx) {
            return aborted();
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.killed(cx) {
            return aborted();
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.killed(cx) {
            return aborted();
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.killed(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
