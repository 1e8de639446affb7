//! Serving a router on TCP or a Unix socket, stopping with the rest of the
//! sidecar: the OpenAI-compatible facade and the admin port (HTTP/1.1 and
//! HTTP/2), and the gRPC listeners (HTTP/2 only, tonic's routes as a
//! router).
//!
//! Our own accept loop rather than `axum::serve` or tonic's server: the
//! first gives hyper no timer, so a connection idle between requests, or
//! one sending its headers a byte at a time, stayed open (and held its
//! buffers) for good; the second cannot bound what hyper queues for a
//! stream whose client does not read (`server::limits`). Accept errors are
//! waited out (`server::accept`), and connections with no request open are
//! closed (`server::reaping`).

use super::accept::resilient;
use super::limits::{Protocols, connection_builder};
use super::reaping::{HoldOpen, IdleClose};
use crate::config::{ConnectionLimits, ConnectionTimeouts};
use axum::Router;
use futures::{Stream, StreamExt as _};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::server::Connected;
use tower::ServiceExt as _;

/// How one listener serves its connections.
#[derive(Debug, Clone, Copy)]
pub struct Serving {
    /// HTTP/1.1 and HTTP/2, or HTTP/2 alone (gRPC).
    pub protocols: Protocols,
    /// A connection with no request open this long is closed.
    pub idle: Duration,
    pub timeouts: ConnectionTimeouts,
    pub limits: ConnectionLimits,
}

impl Serving {
    /// The facade and the admin port: both protocols, `timeouts.idle`.
    pub fn http(timeouts: ConnectionTimeouts, limits: ConnectionLimits) -> Self {
        Serving {
            protocols: Protocols::Both,
            idle: timeouts.idle,
            timeouts,
            limits,
        }
    }

    /// A gRPC listener: HTTP/2 only, `timeouts.grpc_idle`.
    pub fn grpc(timeouts: ConnectionTimeouts, limits: ConnectionLimits) -> Self {
        Serving {
            protocols: Protocols::Http2,
            idle: timeouts.grpc_idle,
            timeouts,
            limits,
        }
    }
}

pub async fn serve_tcp(
    listener: TcpListener,
    router: Router,
    stopped: watch::Receiver<bool>,
    serving: Serving,
    name: &'static str,
) -> anyhow::Result<()> {
    // Streams are written chunk by chunk: Nagle would hold small SSE events.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });
    serve(resilient(incoming, name), router, stopped, serving).await
}

pub async fn serve_uds(
    listener: UnixListener,
    router: Router,
    stopped: watch::Receiver<bool>,
    serving: Serving,
    name: &'static str,
) -> anyhow::Result<()> {
    let incoming = UnixListenerStream::new(listener);
    serve(resilient(incoming, name), router, stopped, serving).await
}

/// Accepts until `stopped`, then lets the open connections finish their
/// requests (the pipeline's shutdown grace bounds how long) and returns.
/// A connection with no request open for `serving.idle` is closed
/// (`server::reaping`), which also bounds a client slow to send its
/// headers; HTTP/2 connections are pinged to find peers that are gone.
/// Each request carries its connection's info (tonic's `UdsConnectInfo`
/// with the peer's credentials, or `TcpConnectInfo`), as tonic's own
/// server gives it.
pub async fn serve<S, IO>(
    incoming: S,
    router: Router,
    mut stopped: watch::Receiver<bool>,
    serving: Serving,
) -> anyhow::Result<()>
where
    S: Stream<Item = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
{
    // Boxed so that dropping it closes the listener before the drain.
    let mut incoming = Box::pin(incoming);
    let builder = connection_builder(
        TokioExecutor::new(),
        serving.protocols,
        &serving.timeouts,
        &serving.limits,
    );
    let connections = GracefulShutdown::new();
    loop {
        let io = tokio::select! {
            accepted = incoming.next() => match accepted {
                Some(Ok(io)) => io,
                // `resilient` waits errors out and yields none.
                Some(Err(_)) => continue,
                None => break,
            },
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let info = io.connect_info();
        let io = IdleClose::new(io, serving.idle);
        let service =
            router
                .clone()
                .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(info.clone());
                    request
                });
        let service = HoldOpen::per_connection(service, io.activity());
        let service = TowerToHyperService::new(service);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            // A connection's error (a reset, a timeout) ends that
            // connection only; there is no one else to tell.
            let _ = connection.await;
        });
    }
    drop(incoming);
    connections.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn started(idle: Duration) -> (std::net::SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (stop, stopped) = watch::channel(false);
        let timeouts = ConnectionTimeouts {
            idle,
            ..ConnectionTimeouts::default()
        };
        let serving = Serving::http(timeouts, ConnectionLimits::default());
        tokio::spawn(serve_tcp(listener, router, stopped, serving, "test"));
        (address, stop)
    }

    /// Reads until the server closes the connection; what it sent.
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut seen = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut seen));
        read.await.expect("the server closes the connection").ok();
        String::from_utf8_lossy(&seen).into_owned()
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let (address, _stop) = started(Duration::from_millis(200)).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let began = Instant::now();
        let seen = until_closed(&mut stream).await;
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
        assert!(seen.ends_with("ok"), "answered before closing: {seen}");
        assert!(began.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn a_connection_that_never_sends_a_byte_is_closed() {
        let (address, _stop) = started(Duration::from_millis(200)).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        let began = Instant::now();
        let seen = until_closed(&mut stream).await;
        assert_eq!(seen, "");
        assert!(began.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn headers_that_never_finish_close_the_connection() {
        let (address, _stop) = started(Duration::from_millis(200)).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nhost").await.unwrap();
        let seen = until_closed(&mut stream).await;
        assert!(!seen.contains("200"), "{seen}");
    }

    #[tokio::test]
    async fn stopping_lets_a_request_in_flight_finish() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "finished"
            }),
        );
        let (stop, stopped) = watch::channel(false);
        let serving = Serving::http(ConnectionTimeouts::default(), ConnectionLimits::default());
        let server = tokio::spawn(serve_tcp(listener, router, stopped, serving, "test"));
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(true).unwrap();
        let seen = until_closed(&mut stream).await;
        assert!(seen.ends_with("finished"), "{seen}");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server returns once its connections are done")
            .unwrap()
            .unwrap();
        assert!(
            TcpStream::connect(address).await.is_err(),
            "no longer accepting"
        );
    }
}
