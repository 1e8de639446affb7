//! Calls tonic refuses before `ChatService` runs: a request message that
//! is not protobuf of `ChatRequest`, is cut short or missing, is larger
//! than `server.max_message_bytes`, or is compressed in an encoding the
//! sidecar does not accept. tonic answers those itself, so the handler
//! never sees them; this layer around the service does, and gives each
//! the same end as any other call: one ledger row (caller, peer, request
//! id, and the reason), metrics, a span, the log line, and a status from
//! the error table with an `x-request-id` the caller can quote.
//!
//! tonic reports an undecodable message as INTERNAL (gRPC core's table
//! lists "error parsing request proto" so); here it is INVALID_ARGUMENT
//! with prost's words, because the bytes are the caller's to fix and
//! sending them again cannot help. A message over the limit is
//! RESOURCE_EXHAUSTED, as gRPC's table has it (tonic says OUT_OF_RANGE).
//!
//! The handler marks the call ([`HandlerReached`]) as soon as it begins
//! observing it, so every call is recorded once: by the handler from then
//! on, by this layer before.

use super::service::{COMPLETE_METHOD, STREAM_COMPLETE_METHOD};
use super::status::{to_status, with_request_id};
use crate::auth::AuthenticatedCaller;
use crate::call_record::Edge;
use crate::error::{EdgeFault, Error};
use crate::inbound::observe::{Arrival, Observer};
use crate::pipeline::PipelineHandle;
use http::HeaderMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Code, Status};

/// Set by the handler once it observes the call itself.
#[derive(Debug, Clone, Default)]
pub struct HandlerReached(Arc<AtomicBool>);

impl HandlerReached {
    pub(super) fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn reached(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `inner` (the chat service) with its refusals recorded.
#[derive(Debug, Clone)]
pub struct RecordRefusals<S> {
    inner: S,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    observer: Arc<Observer>,
    pipeline: Arc<PipelineHandle>,
    max_message_bytes: usize,
}

impl<S> RecordRefusals<S> {
    /// `max_message_bytes` is the limit `inner` decodes with, named in
    /// the refusal of a larger message.
    pub fn new(
        inner: S,
        observer: Arc<Observer>,
        pipeline: Arc<PipelineHandle>,
        max_message_bytes: usize,
    ) -> Self {
        RecordRefusals {
            inner,
            shared: Arc::new(Shared {
                observer,
                pipeline,
                max_message_bytes,
            }),
        }
    }
}

impl<S: NamedService> NamedService for RecordRefusals<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for RecordRefusals<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Refusals<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // Only chat calls are ledger rows; `ListModels` is not one.
        let watch = chat_method(request.uri().path()).map(|(method, stream)| {
            let reached = HandlerReached::default();
            request.extensions_mut().insert(reached.clone());
            Box::new(Watch {
                method,
                stream,
                reached,
                headers: request.headers().clone(),
                peer: peer_of(&request),
                authenticated: request
                    .extensions()
                    .get::<AuthenticatedCaller>()
                    .map(|caller| Arc::clone(&caller.0)),
                shared: Arc::clone(&self.shared),
            })
        });
        Refusals {
            inner: self.inner.call(request),
            watch,
        }
    }
}

/// The full method name and whether it streams, for a chat call's path.
fn chat_method(path: &str) -> Option<(&'static str, bool)> {
    match path.strip_prefix('/')? {
        COMPLETE_METHOD => Some((COMPLETE_METHOD, false)),
        STREAM_COMPLETE_METHOD => Some((STREAM_COMPLETE_METHOD, true)),
        _ => None,
    }
}

fn peer_of<B>(request: &http::Request<B>) -> Option<(u32, Option<i32>)> {
    let info = request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()?;
    let cred = info.peer_cred?;
    Some((cred.uid(), cred.pid()))
}

/// What a refusal's record needs of the request, kept until the answer.
#[derive(Debug)]
struct Watch {
    method: &'static str,
    stream: bool,
    reached: HandlerReached,
    headers: HeaderMap,
    peer: Option<(u32, Option<i32>)>,
    /// The caller token's name, when the listener asks for one.
    authenticated: Option<Arc<str>>,
    shared: Arc<Shared>,
}

pin_project_lite::pin_project! {
    /// The service's answer, recorded and restated when tonic refused the
    /// call.
    pub struct Refusals<F> {
        #[pin]
        inner: F,
        watch: Option<Box<Watch>>,
    }
}

impl<F> Future for Refusals<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>>,
{
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let response = match this.watch.take() {
            Some(watch) if !watch.reached.reached() => watch.refused(response),
            _ => response,
        };
        Poll::Ready(Ok(response))
    }
}

impl Watch {
    /// A call the handler never saw: tonic answered with a status alone.
    fn refused(self, response: http::Response<Body>) -> http::Response<Body> {
        let Some(status) = Status::from_header_map(response.headers()) else {
            return response;
        };
        if status.code() == Code::Ok {
            return response;
        }
        let (error, restate) = match edge_fault(&status) {
            Some(fault) => (
                Error::Edge {
                    fault,
                    message: explain(fault, &status, self.shared.max_message_bytes),
                },
                true,
            ),
            // A refusal not listed here (a broken compressed frame, the
            // connection failing mid-request): recorded in tonic's words,
            // answered as tonic answered.
            None => (
                Error::Internal(format!(
                    "the request could not be read ({:?}): {}",
                    status.code(),
                    status.message()
                )),
                false,
            ),
        };
        let arrival = Arrival {
            edge: Edge::Grpc,
            method: self.method,
            headers: &self.headers,
            peer: self.peer,
            authenticated: self.authenticated.as_deref(),
            request_id: None,
        };
        let shown = crate::model::ChatRequest {
            stream: self.stream,
            ..crate::model::ChatRequest::default()
        };
        let finished = self
            .shared
            .observer
            .begin(arrival, &shown)
            .finish_error(&error);
        let mut answer = if restate {
            let scrubber = self.shared.pipeline.current().scrubber().clone();
            to_status(&error, &scrubber)
        } else {
            status.clone()
        };
        // What tonic says it accepts, for a caller to compress with next.
        if let Some(accepted) = status.metadata().get("grpc-accept-encoding") {
            answer
                .metadata_mut()
                .insert("grpc-accept-encoding", accepted.clone());
        }
        with_request_id(answer, &finished).into_http()
    }
}

/// Which of tonic's refusals a status is. tonic names them only in its
/// messages; a change there fails `tests/record_truth.rs` rather than
/// passing unseen.
fn edge_fault(status: &Status) -> Option<EdgeFault> {
    let message = status.message();
    match status.code() {
        // prost's `DecodeError`, the body ending inside a message, or no
        // message at all.
        Code::Internal
            if message.starts_with("failed to decode Protobuf message")
                || message.starts_with("Unexpected EOF decoding stream")
                || message.starts_with("Missing request message") =>
        {
            Some(EdgeFault::UndecodableRequest)
        }
        Code::OutOfRange if message.contains("message length too large") => {
            Some(EdgeFault::RequestTooLarge)
        }
        Code::Unimplemented if message.starts_with("Content is compressed with") => {
            Some(EdgeFault::UnsupportedEncoding)
        }
        _ => None,
    }
}

fn explain(fault: EdgeFault, status: &Status, max_message_bytes: usize) -> String {
    let detail = status.message();
    match fault {
        EdgeFault::UndecodableRequest => format!(
            "the request message is not a valid llmsidecar.v1.ChatRequest (protobuf): {detail}"
        ),
        EdgeFault::RequestTooLarge => format!(
            "the request message is larger than the {max_message_bytes} bytes the sidecar \
             accepts (server.max_message_bytes): {detail}"
        ),
        EdgeFault::UnsupportedEncoding => format!(
            "the request message is compressed in an encoding the sidecar does not accept \
             (see grpc-accept-encoding; send it uncompressed): {detail}"
        ),
        EdgeFault::RequestBodyTimeout | EdgeFault::ResponseTooLarge => detail.to_owned(),
    }
}
