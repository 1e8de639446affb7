//! The providers behind the sidecar. Each kind turns the internal chat model
//! into its own wire protocol and back; the rest of the sidecar sees only
//! [`Provider::complete`] and [`Provider::stream`].
//!
//! [`Provider`] is also where an upstream's failure becomes the sidecar's
//! [`Error`]: every error it returns is scrubbed of the provider's secrets
//! here (a stream's errors in their one way out, `UpstreamChunks::fail`;
//! response headers as they are read, `PassedHeaders::from_upstream`), so
//! no field of an error can reach a caller, a log or a span without it.

mod http_client;
mod keys;
mod mock;
pub mod openai;
mod passed_headers;
#[cfg(test)]
pub mod scripted;
pub mod sse;
pub mod stream_reader;
pub(crate) mod tls;
mod trace_header;

pub use http_client::{ClientError, UpstreamClients, build_http_client};
pub use keys::KeyRing;
pub use passed_headers::{PassedHeaders, UPSTREAM_REQUEST_ID};
pub use tls::env_paths as tls_env_paths;

use crate::config::{Env, ProviderConfig, ProviderKind, UpstreamConfig};
use crate::error::Error;
use crate::model::{ChatChunk, ChatRequest, ChatResponse};
use crate::secret::Scrubber;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;

/// A streamed answer. Dropping it closes the upstream request at once.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, Error>> + Send>>;

/// What a provider answered, with the response headers a caller should see.
#[derive(Debug)]
pub struct Reply<T> {
    pub value: T,
    pub headers: PassedHeaders,
}

/// One configured provider.
#[derive(Debug)]
pub struct Provider {
    pub name: Arc<str>,
    /// Host and port of the base URL, for `server.address`/`server.port`
    /// on the attempt spans; empty for the offline mock.
    pub address: String,
    pub port: u16,
    upstream: Upstream,
    /// Its keys and secret header values.
    scrubber: Arc<Scrubber>,
}

#[derive(Debug)]
enum Upstream {
    // Boxed: built once per provider, and it keeps the enum small.
    OpenAi(Box<openai::OpenAiUpstream>),
    Mock(mock::MockUpstream),
    #[cfg(test)]
    Scripted(Arc<scripted::ScriptedUpstream>),
}

impl Provider {
    pub fn new(
        config: &ProviderConfig,
        upstream: &UpstreamConfig,
        client: &reqwest::Client,
        env: Env<'_>,
    ) -> Provider {
        let name: Arc<str> = config.name.as_str().into();
        let kind = match config.kind {
            ProviderKind::OpenAi => Upstream::OpenAi(Box::new(openai::OpenAiUpstream::new(
                name.clone(),
                config,
                upstream,
                client.clone(),
                env,
            ))),
            ProviderKind::Mock => Upstream::Mock(mock::MockUpstream::new(name.clone())),
        };
        let scrubber = match &kind {
            Upstream::OpenAi(openai) => openai.scrubber().clone(),
            _ => Arc::default(),
        };
        let (address, port) = reqwest::Url::parse(&config.base_url)
            .ok()
            .and_then(|url| Some((url.host_str()?.to_owned(), url.port_or_known_default()?)))
            .unwrap_or_default();
        Provider {
            name,
            address,
            port,
            upstream: kind,
            scrubber,
        }
    }

    /// A provider named `name` whose exchanges follow `script`.
    #[cfg(test)]
    pub fn scripted(name: &str, script: Arc<scripted::ScriptedUpstream>) -> Provider {
        Provider {
            name: name.into(),
            address: String::new(),
            port: 0,
            upstream: Upstream::Scripted(script),
            scrubber: Arc::default(),
        }
    }

    /// The provider's secrets, to scrub what reaches a caller or an
    /// operator.
    pub fn scrubber(&self) -> &Arc<Scrubber> {
        &self.scrubber
    }

    /// Its API keys (an OpenAI-compatible provider that has them).
    pub fn key_ring(&self) -> Option<&KeyRing> {
        match &self.upstream {
            Upstream::OpenAi(openai) => openai.key_ring(),
            _ => None,
        }
    }

    /// The models it serves when it knows them all (the built-in mock);
    /// `None` for an API that serves whatever its upstream does.
    pub fn catalog(&self) -> Option<&'static [&'static str]> {
        match &self.upstream {
            Upstream::Mock(_) => Some(&[mock::ECHO_MODEL]),
            _ => None,
        }
    }

    /// A problem that makes every call fail (e.g. a missing API key), for
    /// start-up warnings and `check-config`.
    pub fn readiness_problem(&self) -> Option<String> {
        match &self.upstream {
            Upstream::OpenAi(openai) => openai.key_problem(),
            Upstream::Mock(_) => None,
            #[cfg(test)]
            Upstream::Scripted(_) => None,
        }
    }

    /// `trace` is the attempt's span, sent upstream as `traceparent`.
    pub async fn complete(
        &self,
        request: &ChatRequest,
        trace: &opentelemetry::Context,
    ) -> Result<Reply<ChatResponse>, Error> {
        let reply = match &self.upstream {
            Upstream::OpenAi(openai) => openai.complete(request, trace).await,
            Upstream::Mock(mock) => mock.complete(request),
            #[cfg(test)]
            Upstream::Scripted(script) => script.complete(request).await,
        };
        self.scrubbed(reply)
    }

    /// `headers_timeout` bounds the wait for the response headers.
    pub async fn stream(
        &self,
        request: &ChatRequest,
        headers_timeout: std::time::Duration,
        trace: &opentelemetry::Context,
    ) -> Result<Reply<ChunkStream>, Error> {
        let reply = match &self.upstream {
            Upstream::OpenAi(openai) => openai.stream(request, headers_timeout, trace).await,
            Upstream::Mock(mock) => mock.stream(request),
            #[cfg(test)]
            Upstream::Scripted(script) => script.stream(request).await,
        };
        self.scrubbed(reply)
    }

    /// The error scrubbed of the provider's secrets. (A reply's headers
    /// are scrubbed as they are read, `PassedHeaders::from_upstream`; its
    /// value is the upstream's answer and is not touched.)
    fn scrubbed<T>(&self, reply: Result<Reply<T>, Error>) -> Result<Reply<T>, Error> {
        reply.map_err(|error| error.scrubbed(&self.scrubber))
    }
}
