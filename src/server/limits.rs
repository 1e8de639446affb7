//! What one connection, and one stream on it, may hold: hyper's connection
//! settings for every listener, from `[server]` (`ConnectionLimits`).
//!
//! An answer is pulled only as the connection can take it: hyper polls a
//! response body for its next frame only while the stream has send
//! capacity, and HTTP/2 grants capacity up to the smaller of the client's
//! window and the stream's send buffer (`max_send_buf_size`). A client
//! that advertises a window of 2 GiB and stops reading therefore makes the
//! sidecar queue one send buffer per stream, not the window; then the
//! answer, the chunk parser and the upstream read all wait. HTTP/1.1 is
//! bounded the same way by the write buffer (`max_buf_size`). The windows
//! the sidecar advertises bound what a client may send before it is read,
//! and the stream limit how many streams one connection may open.

use crate::config::{ConnectionLimits, ConnectionTimeouts};
use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto::Builder;

/// Which protocols a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 and HTTP/2 (the facade, the admin port).
    Both,
    /// HTTP/2 with prior knowledge only (gRPC).
    Http2,
}

/// hyper's builder for a listener's connections: timers and keepalive
/// pings from `timeouts`, windows, stream limit and send buffers from
/// `limits`.
pub fn connection_builder<E: Clone>(
    executor: E,
    protocols: Protocols,
    timeouts: &ConnectionTimeouts,
    limits: &ConnectionLimits,
) -> Builder<E> {
    let mut builder = Builder::new(executor);
    if protocols == Protocols::Http2 {
        builder = builder.http2_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.idle)
        // The write queue of one connection, and the largest request head.
        .max_buf_size(limits.send_buffer_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeouts.keepalive_interval)
        .keep_alive_timeout(timeouts.keepalive_timeout)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_stream_window_size(limits.stream_window_bytes)
        .initial_connection_window_size(limits.connection_window_bytes)
        // A window that grows with the measured bandwidth would let one
        // stream take up to 16 MiB of request data before it is read.
        .adaptive_window(false)
        .max_send_buf_size(limits.send_buffer_bytes);
    builder
}
