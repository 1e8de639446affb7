//! Serving an axum router (the OpenAI-compatible facade, the admin port)
//! on TCP or a Unix socket, stopping with the rest of the sidecar.
//!
//! Our own accept loop rather than `axum::serve`, which gives hyper no
//! timer: with it, a connection idle between requests, or one sending its
//! headers a byte at a time, stayed open (and held its buffers) for good.
//! Its accept errors are waited out (`server::accept`), and connections
//! with no request open are closed (`server::reaping`).

use super::accept::resilient;
use super::reaping::{HoldOpen, IdleClose};
use crate::config::ConnectionTimeouts;
use axum::Router;
use futures::{Stream, StreamExt as _};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

pub async fn serve_tcp(
    listener: TcpListener,
    router: Router,
    stopped: watch::Receiver<bool>,
    timeouts: ConnectionTimeouts,
    name: &'static str,
) -> anyhow::Result<()> {
    // Streams are written chunk by chunk: Nagle would hold small SSE events.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });
    serve(resilient(incoming, name), router, stopped, timeouts).await
}

pub async fn serve_uds(
    listener: UnixListener,
    router: Router,
    stopped: watch::Receiver<bool>,
    timeouts: ConnectionTimeouts,
    name: &'static str,
) -> anyhow::Result<()> {
    let incoming = UnixListenerStream::new(listener);
    serve(resilient(incoming, name), router, stopped, timeouts).await
}

/// Accepts until `stopped`, then lets the open connections finish their
/// requests (the pipeline's shutdown grace bounds how long) and returns.
/// A connection with no request open for `timeouts.idle` is closed
/// (`server::reaping`), which also bounds a client slow to send its
/// headers; HTTP/2 connections are pinged to find peers that are gone.
async fn serve<S, IO>(
    incoming: S,
    router: Router,
    mut stopped: watch::Receiver<bool>,
    timeouts: ConnectionTimeouts,
) -> anyhow::Result<()>
where
    S: Stream<Item = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Boxed so that dropping it closes the listener before the drain.
    let mut incoming = Box::pin(incoming);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.idle);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeouts.keepalive_interval)
        .keep_alive_timeout(timeouts.keepalive_timeout);
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
        let io = IdleClose::new(io, timeouts.idle);
        let service = HoldOpen::per_connection(router.clone(), io.activity());
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
        tokio::spawn(serve_tcp(listener, router, stopped, timeouts, "test"));
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
        let timeouts = ConnectionTimeouts::default();
        let server = tokio::spawn(serve_tcp(listener, router, stopped, timeouts, "test"));
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
