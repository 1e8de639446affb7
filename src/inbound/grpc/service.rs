//! `llmsidecar.v1.ChatService` on top of the pipeline.

use super::convert::{
    chunk_to_proto, decode_answer, decode_chunk, request_from_proto, response_to_proto,
};
use super::refusals::HandlerReached;
use super::status::{call_status, to_status, unique_per_call};
use super::timeout::parse_grpc_timeout;
use crate::auth::AuthenticatedCaller;
use crate::call_record::Edge;
use crate::error::{EdgeFault, Error};
use crate::inbound::gather::Gathered;
use crate::inbound::observe::{Arrival, Finished, Observation, Observer};
use crate::pipeline::{CallLimits, PipelineHandle};
use crate::proto::v1 as pb;
use crate::upstream::PassedHeaders;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

/// The server spans' names: the full gRPC method, as the conventions ask.
pub(super) const COMPLETE_METHOD: &str = "llmsidecar.v1.ChatService/Complete";
pub(super) const STREAM_COMPLETE_METHOD: &str = "llmsidecar.v1.ChatService/StreamComplete";

#[derive(Debug, Clone)]
pub struct ChatServiceImpl {
    pipeline: Arc<PipelineHandle>,
    observer: Arc<Observer>,
    /// The server's encoding limit (`server.max_message_bytes`), when set.
    max_message_bytes: Option<usize>,
}

impl ChatServiceImpl {
    pub fn new(pipeline: Arc<PipelineHandle>, observer: Arc<Observer>) -> Self {
        ChatServiceImpl {
            pipeline,
            observer,
            max_message_bytes: None,
        }
    }

    /// The limit the server encodes messages with: an answer or chunk
    /// larger than it fails the call here, recorded, instead of at send
    /// time in tonic, after the call was recorded as delivered.
    pub fn with_max_message_bytes(mut self, limit: usize) -> Self {
        self.max_message_bytes = Some(limit);
        self
    }

    /// Starts watching the call and converts its request; a request that
    /// cannot be converted is recorded as invalid too. From here on the
    /// handler records the call (the refusal layer no longer does).
    fn begin(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        extensions: &tonic::Extensions,
        message: pb::ChatRequest,
        stream: bool,
    ) -> Result<(Observation, crate::model::ChatRequest), Status> {
        if let Some(reached) = extensions.get::<HandlerReached>() {
            reached.mark();
        }
        let arrival = Arrival {
            edge: Edge::Grpc,
            method: if stream {
                STREAM_COMPLETE_METHOD
            } else {
                COMPLETE_METHOD
            },
            headers: metadata.as_ref(),
            peer: peer_of(extensions),
            authenticated: extensions
                .get::<AuthenticatedCaller>()
                .map(|caller| &*caller.0),
            request_id: None,
        };
        let model = message.model.clone();
        match request_from_proto(message) {
            Ok(mut chat) => {
                chat.stream = stream;
                chat.proto = Some(crate::model::ProtoDecoders {
                    chunk: decode_chunk,
                    answer: decode_answer,
                });
                Ok((self.observer.begin(arrival, &chat), chat))
            }
            Err(error) => {
                let shown = crate::model::ChatRequest {
                    model,
                    stream,
                    ..crate::model::ChatRequest::default()
                };
                let finished = self.observer.begin(arrival, &shown).finish_error(&error);
                let scrubber = self.pipeline.current().scrubber().clone();
                Err(call_status(&error, &scrubber, &finished))
            }
        }
    }
}

/// The error for a message the server could not send: larger than its
/// encoding limit. tonic compares the encoded length with that limit
/// (uncompressed: the server sends no compressed messages), which is what
/// `encoded_len` gives.
fn too_large(message: &impl prost::Message, limit: Option<usize>) -> Option<Error> {
    let limit = limit?;
    let size = message.encoded_len();
    (size > limit).then(|| Error::Edge {
        fault: EdgeFault::ResponseTooLarge,
        message: format!(
            "the answer is {size} bytes as protobuf, more than the {limit} bytes the sidecar may \
             send (server.max_message_bytes); the upstream answered, but it cannot be delivered"
        ),
    })
}

/// The calling process on the Unix socket (SO_PEERCRED), for the ledger.
fn peer_of(extensions: &tonic::Extensions) -> Option<(u32, Option<i32>)> {
    let info = extensions.get::<tonic::transport::server::UdsConnectInfo>()?;
    let cred = info.peer_cred?;
    Some((cred.uid(), cred.pid()))
}

/// A converted chunk's size on the wire, for what a burst may hold.
fn message_bytes(item: &Result<pb::ChatChunk, Status>) -> usize {
    item.as_ref().map_or(0, prost::Message::encoded_len)
}

/// The answer as the caller's message: decoded already when the upstream's
/// body was read (the usual case), converted from its JSON otherwise.
fn deliverable_answer(
    answer: &mut crate::model::ChatResponse,
    provider: &str,
) -> Result<pb::ChatResponse, String> {
    match answer.proto.take() {
        Some(proto) => {
            let mut proto = *proto;
            provider.clone_into(&mut proto.provider);
            Ok(proto)
        }
        None => response_to_proto(answer, provider),
    }
}

/// The event as the caller's message: decoded already when the reader
/// read it (the usual case), converted from its JSON otherwise.
fn deliverable(
    chunk: &mut crate::model::ChatChunk,
    provider: &str,
) -> Result<pb::ChatChunk, String> {
    match chunk.proto.take() {
        Some(proto) => {
            let mut proto = super::recycle::unbox(proto);
            provider.clone_into(&mut proto.provider);
            Ok(proto)
        }
        None => chunk_to_proto(chunk, provider),
    }
}

/// The request id, the provider and model that served the call, and the
/// time the sidecar itself added (the rest was upstream, queue or backoff).
fn describe_call(metadata: &mut tonic::metadata::MetadataMap, finished: &Finished) {
    if let Ok(value) = finished.request_id.parse() {
        metadata.insert("x-request-id", unique_per_call(value));
    }
    if let Some(model) = finished
        .model
        .as_deref()
        .and_then(|model| model.parse().ok())
    {
        metadata.insert("x-llm-model", model);
    }
    let overhead_us = u64::try_from(finished.overhead.as_micros()).unwrap_or(u64::MAX);
    metadata.insert("x-llm-overhead-us", unique_per_call(overhead_us.into()));
    // A stream cut and resumed: the cut's reason, as the ledger spells it,
    // and the attempts with the continuation (the initial metadata's count
    // went out before it).
    if let Some(value) = finished
        .resumed
        .and_then(|reason| reason.to_ascii_lowercase().parse().ok())
    {
        metadata.insert("x-llm-resumed", value);
        metadata.insert("x-llm-attempts", finished.attempts.into());
    }
}

/// The caller's own client gives up at its deadline (tonic's reports
/// CANCELLED). We end the call a little earlier so the caller gets
/// DEADLINE_EXCEEDED (and our own record of the call) instead. The
/// caller's clock starts when it sends the request, ours when the handler
/// runs: the margin must also cover that wait, which on a busy 2-core
/// machine has exceeded 20 ms. (At most a tenth of the deadline.)
const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// Attempts the caller allows, from `x-llm-max-attempts` (the request
/// field, when set, wins).
const MAX_ATTEMPTS_HEADER: &str = "x-llm-max-attempts";

/// The caller's deadline and attempt cap, from metadata and the request.
/// A malformed `grpc-timeout` is refused, as gRPC servers do, rather than
/// read as no deadline at all.
fn call_limits(request: &Request<pb::ChatRequest>) -> Result<CallLimits, Error> {
    let header = match request.metadata().get(MAX_ATTEMPTS_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "metadata `{MAX_ATTEMPTS_HEADER}` must be a whole number (0 or 1: no retries)"
                    ))
                })?,
        ),
    };
    let deadline = match request.metadata().get("grpc-timeout") {
        None => None,
        Some(value) => {
            let timeout = value
                .to_str()
                .ok()
                .and_then(parse_grpc_timeout)
                .ok_or_else(|| {
                    Error::invalid(
                        "metadata `grpc-timeout` must be 1 to 8 digits and a unit \
                         (H, M, S, m, u or n), e.g. `250m`",
                    )
                })?;
            let margin = DEADLINE_MARGIN.min(timeout / 10);
            Some(tokio::time::Instant::now() + timeout.saturating_sub(margin))
        }
    };
    Ok(CallLimits {
        deadline,
        first_byte_deadline: None,
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

/// The upstream's rate-limit, retry and request-id headers, as metadata.
fn upstream_metadata(metadata: &mut tonic::metadata::MetadataMap, headers: &PassedHeaders) {
    headers.add_to(metadata.as_mut());
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
        self.usage_trailers(metadata);
        status
    }

    fn usage_trailers(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if let Some(usage) = self.usage {
            metadata.insert("x-llm-prompt-tokens", usage.prompt_tokens.into());
            metadata.insert("x-llm-completion-tokens", usage.completion_tokens.into());
        }
    }
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ChatChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::chat_service_server::ChatService for ChatServiceImpl {
    async fn complete(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<pb::ChatResponse>, Status> {
        let limits = call_limits(&request);
        let (metadata, extensions, message) = request.into_parts();
        let (observation, chat) = self.begin(&metadata, &extensions, message, false)?;
        let pipeline = self.pipeline.current();
        let scrubber = pipeline.scrubber();
        let limits = match limits {
            Ok(limits) => limits,
            Err(error) => {
                let finished = observation.finish_error(&error);
                return Err(call_status(&error, scrubber, &finished));
            }
        };
        let call = observation.call_context(limits);
        // Boxed: the pipeline's future is large, and unboxed it would be
        // copied by every layer tonic wraps around this one.
        let mut result = Box::pin(pipeline.complete(chat, &call))
            .instrument(observation.log_span().clone())
            .await;
        // Converted before the call is recorded: an answer the API cannot
        // carry is the call's failure, in the ledger too.
        let converted = match &mut result {
            Ok(served) => Some(deliverable_answer(&mut served.value, &served.provider)),
            Err(_) => None,
        };
        let (served, answer) = match (result, converted) {
            (Ok(served), Some(Ok(answer))) => match too_large(&answer, self.max_message_bytes) {
                None => (served, answer),
                Some(error) => {
                    let finished = observation.finish_undelivered(&served, &error);
                    return Err(call_status(&error, scrubber, &finished));
                }
            },
            (Ok(served), Some(Err(detail))) => {
                let error = Error::MalformedResponse {
                    provider: served.provider.to_string(),
                    detail,
                };
                let finished = observation.finish_undelivered(&served, &error);
                return Err(call_status(&error, scrubber, &finished));
            }
            (result, _) => {
                let finished = observation.finish_unary(&result);
                let error = result
                    .err()
                    .unwrap_or(Error::Internal("no answer".to_owned()));
                return Err(call_status(&error, scrubber, &finished));
            }
        };
        let finished = observation.finish_answered(&served);
        let mut response = Response::new(answer);
        served_by(&mut response, &served.provider, served.attempts);
        upstream_metadata(response.metadata_mut(), &served.upstream_headers);
        crate::inbound::budget_headers::add(response.metadata_mut().as_mut(), &call.progress);
        describe_call(response.metadata_mut(), &finished);
        Ok(response)
    }

    type StreamCompleteStream = ChunkStream;

    async fn stream_complete(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<Self::StreamCompleteStream>, Status> {
        let limits = call_limits(&request);
        let (metadata, extensions, message) = request.into_parts();
        let (observation, chat) = self.begin(&metadata, &extensions, message, true)?;
        let pipeline = self.pipeline.current();
        let scrubber = pipeline.scrubber().clone();
        let limits = match limits {
            Ok(limits) => limits,
            Err(error) => {
                let finished = observation.finish_error(&error);
                return Err(call_status(&error, &scrubber, &finished));
            }
        };
        let call = observation.call_context(limits);
        let mut served = match Box::pin(pipeline.stream(chat, &call))
            .instrument(observation.log_span().clone())
            .await
        {
            Ok(served) => served,
            Err(error) => {
                let finished = observation.finish_error(&error);
                return Err(call_status(&error, &scrubber, &finished));
            }
        };
        let attempts = served.attempts;
        let provider = served.provider.clone();
        let upstream_headers = std::mem::take(&mut served.upstream_headers);
        let mut watched = observation.watch(served);
        let request_id = watched.request_id().to_owned();
        // No channel and no task: hyper pulls this stream only as HTTP/2
        // flow control lets it send, so a slow reader slows the upstream
        // read, and a cancelled call drops the whole chain at once.
        let mut seen = PartialOutput::default();
        let chunk_provider = provider.clone();
        let limit = self.max_message_bytes;
        let stream = futures::stream::poll_fn(move |cx| {
            use std::task::Poll;
            match std::task::ready!(watched.poll_next_unpin(cx)) {
                Some(Ok(mut chunk)) => match deliverable(&mut chunk, &chunk_provider) {
                    Ok(proto) => match too_large(&proto, limit) {
                        None => {
                            seen.note(&chunk);
                            Poll::Ready(Some(Ok(proto)))
                        }
                        Some(error) => {
                            watched.fail(&error);
                            Poll::Ready(Some(Err(seen.mark(to_status(&error, &scrubber)))))
                        }
                    },
                    // Never an empty chunk in its place: the stream ends.
                    Err(detail) => {
                        let error = Error::MalformedResponse {
                            provider: chunk_provider.to_string(),
                            detail,
                        };
                        watched.fail(&error);
                        Poll::Ready(Some(Err(seen.mark(to_status(&error, &scrubber)))))
                    }
                },
                Some(Err(error)) => {
                    let mut status = seen.mark(to_status(&error, &scrubber));
                    // What the call took (attempts, a resume), as on OK.
                    if let Some(finished) = watched.take_end() {
                        describe_call(status.metadata_mut(), &finished);
                        status
                            .metadata_mut()
                            .insert("x-llm-attempts", finished.attempts.into());
                    }
                    Poll::Ready(Some(Err(status)))
                }
                // A well-ended stream closes with trailers that say what
                // it cost: an OK status carrying metadata.
                None => Poll::Ready(watched.take_end().map(|finished| {
                    let mut status = Status::ok("");
                    describe_call(status.metadata_mut(), &finished);
                    seen.usage_trailers(status.metadata_mut());
                    Err(status)
                })),
            }
        });
        // Bursts of converted chunks: each has passed its size check, and
        // a failed one was recorded as the call's failure, before it is
        // held.
        let stream = Gathered::new(Box::pin(stream), message_bytes);
        let mut response: Response<Self::StreamCompleteStream> = Response::new(Box::pin(stream));
        served_by(&mut response, &provider, attempts);
        upstream_metadata(response.metadata_mut(), &upstream_headers);
        crate::inbound::budget_headers::add(response.metadata_mut().as_mut(), &call.progress);
        if let Ok(value) = request_id.parse() {
            response
                .metadata_mut()
                .insert("x-request-id", unique_per_call(value));
        }
        Ok(response)
    }

    async fn list_models(
        &self,
        _request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let models = self
            .pipeline
            .current()
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
