//! The caller token check of the gRPC TCP listener, as a tower layer in
//! front of tonic's routes: a refused call never reaches a service (and
//! so leaves no ledger row), and an accepted one carries its caller's
//! name in the request's extensions.

use super::{AuthenticatedCaller, Gate, Listener};
use futures::future::{Either, Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Services any caller may use without a token: they spend nothing and
/// show nothing private (health for probes, reflection for grpcurl).
const OPEN_SERVICES: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

/// Layer of [`RequireToken`].
#[derive(Debug, Clone)]
pub struct RequireTokenLayer {
    gate: Arc<Gate>,
}

impl RequireToken<()> {
    /// The layer that asks the gRPC TCP listener's calls for a caller token.
    pub fn layer(gate: Arc<Gate>) -> RequireTokenLayer {
        RequireTokenLayer { gate }
    }
}

impl<S> tower::Layer<S> for RequireTokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> RequireToken<S> {
        RequireToken {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// Answers UNAUTHENTICATED (trailers only) to a call without a known
/// caller token, before any service sees it.
#[derive(Debug, Clone)]
pub struct RequireToken<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S, B, R> tower::Service<http::Request<B>> for RequireToken<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Either<Ready<Result<http::Response<R>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if OPEN_SERVICES.iter().any(|open| path.starts_with(open)) {
            return Either::Right(self.inner.call(request));
        }
        match self.gate.caller(Listener::GrpcTcp, request.headers()) {
            Ok(caller) => {
                if let Some(name) = caller {
                    request.extensions_mut().insert(AuthenticatedCaller(name));
                }
                Either::Right(self.inner.call(request))
            }
            Err(refusal) => {
                let status = tonic::Status::unauthenticated(refusal.message());
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}
