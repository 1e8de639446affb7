//! `llmsidecar.v1.ChatService` on top of the pipeline.

use super::convert::{chunk_to_proto, request_from_proto, response_to_proto};
use super::status::to_status;
use super::timeout::parse_grpc_timeout;
use crate::pipeline::{CallContext, Pipeline};
use crate::proto::v1 as pb;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct ChatServiceImpl {
    pipeline: Arc<Pipeline>,
}

impl ChatServiceImpl {
    pub fn new(pipeline: Arc<Pipeline>) -> Self {
        ChatServiceImpl { pipeline }
    }
}

/// tonic's server also watches `grpc-timeout` until the response headers,
/// and reports CANCELLED when it fires. We end the call a hair earlier so the
/// caller gets DEADLINE_EXCEEDED (and our own record of the call) instead.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// Attempts the caller allows, from `x-llm-max-attempts` (the request
/// field, when set, wins).
const MAX_ATTEMPTS_HEADER: &str = "x-llm-max-attempts";

fn call_context(request: &Request<pb::ChatRequest>) -> Result<CallContext, Status> {
    let header = match request.metadata().get(MAX_ATTEMPTS_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "metadata `{MAX_ATTEMPTS_HEADER}` must be a whole number (0 or 1: no retries)"
                    ))
                })?,
        ),
    };
    let deadline = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|timeout| {
            let margin = DEADLINE_MARGIN.min(timeout / 10);
            tokio::time::Instant::now() + timeout.saturating_sub(margin)
        });
    Ok(CallContext {
        deadline,
        max_attempts: request.get_ref().max_attempts.or(header),
    })
}

/// Tells the caller who served the call and how many attempts it took, so
/// it need not stack its own retries on ours.
fn served_by<T>(response: &mut Response<T>, provider: &str, attempts: u32) {
    let metadata = response.metadata_mut();
    if let Ok(value) = provider.parse() {
        metadata.insert("x-llm-provider", value);
    }
    metadata.insert("x-llm-attempts", attempts.into());
}

/// What a stream delivered before it failed, told in the error's trailers
/// so the caller knows its output is partial and what it cost.
#[derive(Debug, Default)]
struct PartialOutput {
    chunks: u64,
    usage: Option<crate::model::Usage>,
}

impl PartialOutput {
    fn note(&mut self, chunk: &crate::model::ChatChunk) {
        self.chunks += 1;
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
    }

    fn mark(&self, mut status: Status) -> Status {
        let metadata = status.metadata_mut();
        metadata.insert(
            "x-llm-partial",
            if self.chunks > 0 { "true" } else { "false" }
                .parse()
                .expect("ascii"),
        );
        metadata.insert("x-llm-chunks-sent", self.chunks.into());
        if let Some(usage) = self.usage {
            metadata.insert("x-llm-prompt-tokens", usage.prompt_tokens.into());
            metadata.insert("x-llm-completion-tokens", usage.completion_tokens.into());
        }
        status
    }
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ChatChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::chat_service_server::ChatService for ChatServiceImpl {
    async fn complete(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<pb::ChatResponse>, Status> {
        let call = call_context(&request)?;
        let chat = request_from_proto(request.into_inner()).map_err(|error| to_status(&error))?;
        let served = self
            .pipeline
            .complete(chat, &call)
            .await
            .map_err(|error| to_status(&error))?;
        let mut response = Response::new(response_to_proto(served.value, &served.provider));
        served_by(&mut response, &served.provider, served.attempts);
        Ok(response)
    }

    type StreamCompleteStream = ChunkStream;

    async fn stream_complete(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<Self::StreamCompleteStream>, Status> {
        let call = call_context(&request)?;
        let chat = request_from_proto(request.into_inner()).map_err(|error| to_status(&error))?;
        let served = self
            .pipeline
            .stream(chat, &call)
            .await
            .map_err(|error| to_status(&error))?;
        let attempts = served.attempts;
        let provider = served.provider;
        let provider_name = provider.clone();
        // No channel and no task: hyper pulls this stream only as HTTP/2
        // flow control lets it send, so a slow reader slows the upstream
        // read, and a cancelled call drops the whole chain at once.
        let mut seen = PartialOutput::default();
        let stream = served.value.map(move |item| match item {
            Ok(chunk) => {
                seen.note(&chunk);
                Ok(chunk_to_proto(chunk, &provider))
            }
            Err(error) => Err(seen.mark(to_status(&error))),
        });
        let mut response: Response<Self::StreamCompleteStream> = Response::new(Box::pin(stream));
        served_by(&mut response, &provider_name, attempts);
        Ok(response)
    }

    async fn list_models(
        &self,
        _request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let models = self
            .pipeline
            .routes()
            .iter()
            .map(|route| pb::ModelRoute {
                model: route.model.clone(),
                provider: route.provider.clone(),
                r#match: route.kind.as_str().to_owned(),
                target: route.target.clone(),
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }
}
