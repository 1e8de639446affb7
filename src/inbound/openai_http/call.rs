//! Every call the facade makes to the pipeline, and nothing else: the one
//! seam where a call begins and ends. Each call is watched by an
//! [`Observation`] (ledger row, metrics, log line), exactly as on gRPC.

use crate::error::Error;
use crate::inbound::observe::{Finished, Observation, WatchedStream};
use crate::model::{ChatRequest, ChatResponse};
use crate::pipeline::{CallContext, Pipeline, Served};
use tracing::Instrument as _;

/// A whole answer, and the finished call's summary for the headers.
pub async fn unary(
    pipeline: &Pipeline,
    observation: Observation,
    request: ChatRequest,
    call: &CallContext,
) -> (Result<Served<ChatResponse>, Error>, Finished) {
    // Boxed: the pipeline's future is large, and unboxed it would be copied
    // by every layer axum wraps around this one.
    let result = Box::pin(pipeline.complete(request, call))
        .instrument(observation.log_span().clone())
        .await;
    let finished = observation.finish_unary(&result);
    (result, finished)
}

/// A stream under watch, returned once its first chunk has arrived (so
/// every failure before it is still an HTTP status). Dropping the stream
/// closes the upstream request and records the call as cancelled.
pub async fn stream(
    pipeline: &std::sync::Arc<Pipeline>,
    observation: Observation,
    request: ChatRequest,
    call: &CallContext,
) -> Result<(Served<()>, WatchedStream), (Error, Finished)> {
    let served = Box::pin(pipeline.stream(request, call))
        .instrument(observation.log_span().clone())
        .await;
    match served {
        Ok(mut served) => {
            let summary = Served {
                provider: served.provider.clone(),
                attempts: served.attempts,
                value: (),
                // The span travels with the stream, in the observation.
                trace: opentelemetry::Context::new(),
                upstream_headers: std::mem::take(&mut served.upstream_headers),
            };
            Ok((summary, observation.watch(served)))
        }
        Err(error) => {
            let finished = observation.finish_error(&error);
            Err((error, finished))
        }
    }
}
