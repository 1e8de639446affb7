//! A raw HTTP/2 gRPC client that behaves like the worst callers: it
//! chooses the flow-control windows it advertises, never reads its
//! streams' data, and can stop reading its socket for good (so nothing
//! more the sidecar sends is taken off the wire).

use bytes::{BufMut, Bytes, BytesMut};
use llm_sidecar::proto::v1 as pb;
use prost::Message as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The windows a connection advertises, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub stream: u32,
    pub connection: u32,
}

/// The largest window HTTP/2 allows (2^31 - 1).
pub const HUGE: u32 = u32::MAX >> 1;

/// One HTTP/2 connection to the sidecar.
pub struct Connection {
    send: h2::client::SendRequest<Bytes>,
    stopped: Arc<AtomicBool>,
}

impl Connection {
    /// An HTTP/2 connection over `io` advertising `windows`, driven in the
    /// background; returned once the server's SETTINGS are in (a ping
    /// has come back after them).
    pub async fn open<T>(io: T, windows: Windows) -> Connection
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let stopped = Arc::new(AtomicBool::new(false));
        let io = Pausable {
            inner: io,
            stopped: stopped.clone(),
        };
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(windows.stream)
            .initial_connection_window_size(windows.connection)
            .handshake::<_, Bytes>(io)
            .await
            .expect("the HTTP/2 handshake");
        let mut ping = connection.ping_pong().expect("the ping handle");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        ping.ping(h2::Ping::opaque())
            .await
            .expect("the server answers a ping");
        Connection { send, stopped }
    }

    /// The most streams the server lets this connection open at once.
    pub fn max_streams(&self) -> usize {
        self.send.current_max_send_streams()
    }

    /// Sends `StreamComplete(request)`; the answer's head and body arrive
    /// through the returned future (while the socket is read).
    pub async fn stream_complete(
        &mut self,
        request: &pb::ChatRequest,
    ) -> h2::client::ResponseFuture {
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .expect("the connection takes a stream");
        let head = http::Request::post("http://localhost/llmsidecar.v1.ChatService/StreamComplete")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("a valid request head");
        let (response, mut body) = send.send_request(head, false).expect("the stream opens");
        body.send_data(grpc_frame(request), true)
            .expect("the request is sent");
        response
    }

    /// From now on nothing more is read from the socket: what the sidecar
    /// sends piles up in the kernel's buffers, then in the sidecar.
    pub fn stop_reading(&self) {
        self.stopped.store(true, Ordering::Release);
    }
}

/// A gRPC message frame: uncompressed, its length, the protobuf.
fn grpc_frame(request: &pb::ChatRequest) -> Bytes {
    let encoded = request.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + encoded.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(encoded.len()).expect("a small request"));
    frame.put_slice(&encoded);
    frame.freeze()
}

/// The connection's IO, whose reads can be stopped for good.
struct Pausable<T> {
    inner: T,
    stopped: Arc<AtomicBool>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Pausable<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stopped.load(Ordering::Acquire) {
            // Never woken: the connection's writes go on, its reads do not.
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Pausable<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
