//! Stock gRPC clients over the Unix socket, as they are.
//!
//! grpc-core (Python, C++, Ruby ...), grpc-java and grpcurl send the socket
//! path as the HTTP/2 `:authority` of every request, raw (`/run/x.sock`) or
//! percent-encoded (`%2Frun%2Fx.sock`, grpc-core 1.57 and later). Neither is
//! an authority by RFC 3986, so h2 (under tonic) resets each such stream
//! with PROTOCOL_ERROR and the client sees an opaque failure. The sidecar
//! does not route by authority, so on the Unix socket it reads the client's
//! side of the connection through [`AuthorityFix`], which hands h2 the same
//! frames with an `:authority` h2 would refuse replaced by `localhost`.
//!
//! Only the client-to-server direction is read, and only HEADERS frames
//! (with their CONTINUATION frames) are rewritten ([`frames`], [`block`]);
//! every other frame is handed on without a copy, in the reader's own
//! buffer. The server-to-client direction is not touched.

mod block;
mod frames;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, ReadBuf};
use tonic::transport::server::Connected;

pub use frames::RewriteError;

/// A server-side HTTP/2 connection whose incoming header blocks carry an
/// `:authority` h2 accepts. Writes pass through untouched; the connection
/// info (peer credentials on a Unix socket) is the wrapped stream's.
///
/// A header block that cannot be read (malformed frames or HPACK, over
/// [`frames::MAX_HEADER_BLOCK`] bytes) ends the connection with an
/// [`io::ErrorKind::InvalidData`] error whose source is a [`RewriteError`],
/// as h2 would have ended it with a connection error.
#[derive(Debug)]
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: frames::Rewriter,
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted connection (before the client preface).
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            rewriter: frames::Rewriter::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            // Bytes already rewritten or held back go first, in order.
            if this.rewriter.drain_into(buf) {
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.has_pending() {
                if this.rewriter.process().map_err(invalid_data)? {
                    continue;
                }
                let read = ready!(tokio_util::io::poll_read_buf(
                    Pin::new(&mut this.inner),
                    cx,
                    this.rewriter.pending_mut(),
                ))?;
                if read == 0 {
                    // The client closed mid-frame: h2 gets what there is
                    // and reports the cut itself.
                    this.rewriter.give_up_pending();
                    this.rewriter.drain_into(buf);
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // The common case: read straight into the caller's buffer and
            // hand on every byte before the next HEADERS frame.
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let fresh = &buf.filled()[start..];
            if fresh.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let passed = this.rewriter.scan(fresh);
            buf.set_filled(start + passed);
            if passed > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

fn invalid_data(error: RewriteError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

super::write_through::write_through!(AuthorityFix);

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
