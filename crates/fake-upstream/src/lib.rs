//! A scriptable fake OpenAI-compatible chat-completions server for tests and
//! benchmarks.
//!
//! Tests start it in-process ([`FakeUpstream::start`]) and tell it, per
//! request, how to misbehave: a `"fake"` object in the JSON body, or the
//! `x-fake-scenario` header holding the same JSON (see [`Scenario`]), or to
//! replay a recorded provider body, stream or error verbatim. It
//! records every request, counts accepted TCP connections (to prove connection
//! reuse) and counts responses the client abandoned before they were finished
//! (to prove cancellation propagates upstream).
//!
//! Routes: `POST /v1/chat/completions` (also `/chat/completions` and
//! `/api/v1/chat/completions`) and `GET /v1/models` (also `/models`,
//! `/api/v1/models`). Anything else is recorded and answered with 404/405.
//! Out-of-process tests read and clear the recording through
//! `GET`/`DELETE /_fake/requests` (see `inspect`), which are not recorded.

mod guard;
mod handlers;
mod inspect;
mod listener;
mod prefill;
mod reply;
mod scenario;
mod sse;
mod state;
#[cfg(test)]
mod test_client;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use scenario::{SCENARIO_HEADER, Scenario};

use listener::CountingListener;
use state::Shared;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Header names are lower-case; values are lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The parsed JSON body, or `Null` if it was not JSON.
    pub body: serde_json::Value,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running fake upstream. Dropping it shuts the server down: it stops
/// accepting and aborts every open connection, including hanging ones.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeUpstream {
    /// Binds 127.0.0.1:0 and serves in a background tokio task.
    pub async fn start() -> std::io::Result<FakeUpstream> {
        Self::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), Scenario::default()).await
    }

    /// Binds `addr` and serves with `defaults` for requests that carry no
    /// scenario of their own. Must be called inside a tokio runtime.
    pub async fn start_with(addr: SocketAddr, defaults: Scenario) -> std::io::Result<FakeUpstream> {
        Self::start_with_models(addr, defaults, BTreeMap::new()).await
    }

    /// As [`start_with`](Self::start_with), and a request that scripts
    /// nothing but names a model in `models` gets that model's scenario
    /// instead of `defaults`: one server plays several workloads, each
    /// picked by model name alone (a benchmark's request stays what a
    /// real caller sends).
    pub async fn start_with_models(
        addr: SocketAddr,
        defaults: Scenario,
        models: BTreeMap<String, Scenario>,
    ) -> std::io::Result<FakeUpstream> {
        let tcp = TcpListener::bind(addr).await?;
        let addr = tcp.local_addr()?;
        let shared = Arc::new(Shared::new(defaults, models));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let listener = CountingListener::new(tcp, shared.clone(), shutdown_rx.clone());
        let app = handlers::router(shared.clone());
        let mut stop = shutdown_rx;
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            // Err means the FakeUpstream (the sender) is gone: stop as well.
            let _ = stop.wait_for(|stop| *stop).await;
        });
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::warn!("fake upstream server ended with error: {e}");
            }
        });
        Ok(FakeUpstream {
            addr,
            shared,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/v1`, the base URL an OpenAI client should be given.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Everything received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// How many responses the client abandoned before the fake finished
    /// sending them (streaming bodies dropped early, or handlers dropped while
    /// delaying/hanging because the connection closed). Connections aborted by
    /// dropping the `FakeUpstream` itself count too.
    pub fn client_disconnects(&self) -> usize {
        self.shared.disconnects()
    }

    /// Waits until `client_disconnects() >= n` or `timeout` passes; returns
    /// whether it happened.
    pub async fn wait_for_disconnects(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.disconnect_notify().notified();
            tokio::pin!(notified);
            // Register before checking so a disconnect in between is not missed.
            notified.as_mut().enable();
            if self.client_disconnects() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.client_disconnects() >= n;
            }
        }
    }

    /// Number of TCP connections accepted so far (to show connection reuse).
    pub fn connections_accepted(&self) -> usize {
        self.shared.connections()
    }

    /// Streaming body frames hyper has asked for so far, over all responses.
    /// A stalled count while a client is not reading shows backpressure.
    pub fn frames_sent(&self) -> usize {
        self.shared.frames_sent()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        // Ignored error: no receivers left means the server is already gone.
        let _ = self.shutdown.send(true);
    }
}
