//! Serving an axum router (the OpenAI-compatible facade, the admin port)
//! on TCP or a Unix socket, stopping with the rest of the sidecar.

use axum::Router;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

pub async fn serve_tcp(
    listener: TcpListener,
    router: Router,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Streams are written chunk by chunk: Nagle would hold small SSE events.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(super::signalled(stopped))
        .await?;
    Ok(())
}

pub async fn serve_uds(
    listener: UnixListener,
    router: Router,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(super::signalled(stopped))
        .await?;
    Ok(())
}
