//! The fallback loop: a route's targets in order (the primary, then its
//! fallbacks) until one serves the call or a failure is not worth passing
//! on.

use super::attempt::{Failed, Won};
use super::*;

/// Tries each target in turn (the primary, then its fallbacks) with the
/// request's model set to the target's, until one serves the call or a
/// failure is not worth passing on to the next.
pub(super) async fn serve<C: CallTarget>(
    targets: &[Routed<'_>],
    mut request: ChatRequest,
    call: C,
) -> Result<Served<C::Output>, Error> {
    let mut attempts_before = 0;
    for (index, target) in targets.iter().enumerate() {
        request.model.clone_from(&target.upstream_model);
        match call.call(target, &request).await {
            Ok(Won {
                reply,
                attempts,
                trace,
            }) => {
                return Ok(Served {
                    provider: target.slot.provider.name.clone(),
                    attempts: attempts_before + attempts,
                    value: reply.value,
                    trace,
                    upstream_headers: reply.headers,
                });
            }
            Err(Failed { error, attempts }) if index + 1 < targets.len() && falls_back(&error) => {
                attempts_before += attempts;
                let reason = classify(&error).reason;
                let next = &targets[index + 1].slot.provider;
                tracing::info!(from = %target.slot.provider.name, to = %next.name, reason, "falling back");
                target
                    .trace
                    .fell_back(call.context(), &target.slot.provider, next, &error);
            }
            Err(Failed { error, .. }) => return Err(error),
        }
    }
    Err(Error::Internal("a route without targets".to_owned()))
}

/// One way of calling a target: a unary answer or a stream. (A trait rather
/// than an async closure, whose futures cannot yet be shown to be `Send`.)
pub(super) trait CallTarget {
    type Output;
    fn call<'a>(
        &'a self,
        target: &'a Routed<'a>,
        request: &'a ChatRequest,
    ) -> impl Future<Output = Result<Won<Self::Output>, Failed>> + Send + 'a;
    fn context(&self) -> &CallContext;
}

pub(super) struct Unary<'c>(pub(super) Bounds, pub(super) &'c CallContext);
pub(super) struct Streaming<'c>(pub(super) Bounds, pub(super) &'c CallContext);

impl CallTarget for Unary<'_> {
    type Output = ChatResponse;
    fn call<'a>(
        &'a self,
        target: &'a Routed<'a>,
        request: &'a ChatRequest,
    ) -> impl Future<Output = Result<Won<ChatResponse>, Failed>> + Send + 'a {
        target.complete(request, self.0, self.1)
    }
    fn context(&self) -> &CallContext {
        self.1
    }
}

impl CallTarget for Streaming<'_> {
    type Output = ChunkStream;
    fn call<'a>(
        &'a self,
        target: &'a Routed<'a>,
        request: &'a ChatRequest,
    ) -> impl Future<Output = Result<Won<ChunkStream>, Failed>> + Send + 'a {
        target.stream(request, self.0, self.1)
    }
    fn context(&self) -> &CallContext {
        self.1
    }
}

/// Whether the next target of a route may still succeed where this one
/// failed: the provider is unwell or we are holding it back, not the
/// request being wrong.
fn falls_back(error: &Error) -> bool {
    error.is_provider_failure()
        || matches!(
            error,
            Error::CircuitOpen { .. } | Error::Overloaded { .. } | Error::ProviderNotReady { .. }
        )
}
