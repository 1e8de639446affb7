//! Every call the facade makes to the pipeline, and nothing else: the one
//! seam where a call begins and ends, so per-call records, overhead and
//! spans can wrap it without touching the HTTP conversions around it.

use crate::error::Error;
use crate::model::{ChatRequest, ChatResponse};
use crate::pipeline::{CallContext, Pipeline, Served};
use crate::upstream::ChunkStream;

/// A whole answer.
pub async fn unary(
    pipeline: &Pipeline,
    request: ChatRequest,
    call: &CallContext,
) -> Result<Served<ChatResponse>, Error> {
    pipeline.complete(request, call).await
}

/// A stream, returned once its first chunk has arrived (so every failure
/// before it is still an HTTP status). Dropping the stream closes the
/// upstream request.
pub async fn stream(
    pipeline: &Pipeline,
    request: ChatRequest,
    call: &CallContext,
) -> Result<Served<ChunkStream>, Error> {
    pipeline.stream(request, call).await
}
