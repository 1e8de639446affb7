//! The one way every call goes, whichever edge it came in by:
//! validate → route → call the provider → bound by the caller's deadline.
//!
//! Later stages (limits, retries, per-attempt timeouts) slot in between
//! route and call; nothing else in the sidecar talks to providers.

mod deadline;

pub use deadline::DeadlineStream;

use crate::config::{Config, Env};
use crate::error::Error;
use crate::model::{ChatRequest, ChatResponse};
use crate::routing::{RouteInfo, Router};
use crate::upstream::{ChunkStream, Provider, build_http_client};
use crate::validate::validate;
use std::future::Future;
use std::sync::Arc;
use tokio::time::Instant;

/// What the edge knows about the call that the pipeline must honour.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// When the caller stops waiting (its `grpc-timeout`).
    pub deadline: Option<Instant>,
}

/// An answer together with the provider that gave it.
#[derive(Debug)]
pub struct Served<T> {
    pub provider: Arc<str>,
    pub value: T,
}

#[derive(Debug)]
pub struct Pipeline {
    router: Router,
    providers: Vec<Provider>,
}

impl Pipeline {
    pub fn new(config: &Config, env: Env<'_>) -> Result<Pipeline, reqwest::Error> {
        let client = build_http_client(&config.upstream)?;
        let providers = config
            .providers
            .iter()
            .map(|provider| Provider::new(provider, &config.upstream, &client, env))
            .collect();
        Ok(Pipeline {
            router: Router::new(config),
            providers,
        })
    }

    pub fn routes(&self) -> &[RouteInfo] {
        self.router.table()
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    pub async fn complete(
        &self,
        request: ChatRequest,
        call: &CallContext,
    ) -> Result<Served<ChatResponse>, Error> {
        let (provider, request) = self.route(request)?;
        let value = within(call, "waiting for the answer", provider.complete(request)).await?;
        Ok(Served {
            provider: provider.name.clone(),
            value,
        })
    }

    /// Returns once the upstream has accepted the stream, so failures before
    /// the first chunk are plain errors the edge can report as a status.
    pub async fn stream(
        &self,
        request: ChatRequest,
        call: &CallContext,
    ) -> Result<Served<ChunkStream>, Error> {
        let (provider, request) = self.route(request)?;
        let stream = within(
            call,
            "waiting for the stream to start",
            provider.stream(request),
        )
        .await?;
        let value: ChunkStream = match call.deadline {
            Some(deadline) => Box::pin(DeadlineStream::new(stream, deadline)),
            None => stream,
        };
        Ok(Served {
            provider: provider.name.clone(),
            value,
        })
    }

    fn route(&self, mut request: ChatRequest) -> Result<(&Provider, ChatRequest), Error> {
        validate(&request)?;
        let route = self.router.resolve(&request.model)?;
        request.model = route.upstream_model;
        Ok((&self.providers[route.provider], request))
    }
}

/// Runs `work` until the caller's deadline; past it the work is dropped,
/// which closes any upstream request it had open.
async fn within<T>(
    call: &CallContext,
    stage: &'static str,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let Some(deadline) = call.deadline else {
        return work.await;
    };
    let started = Instant::now();
    match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::DeadlineExceeded {
            stage,
            elapsed: started.elapsed(),
        }),
    }
}
