//! The endpoints: each reads what it needs, converts, calls (through
//! `call.rs`), and converts back; every failure becomes an [`ApiError`].

use super::Facade;
use super::MAX_BODY_BYTES;
use super::api_error::ApiError;
use super::context::{self, REQUEST_ID_HEADER};
use super::request::{self, Parsed};
use super::sse::SseBody;
use super::{call, models};
use crate::auth::AuthenticatedCaller;
use crate::call_record::Edge;
use crate::error::{EdgeFault, Error};
use crate::inbound::gather::{Gathered, chunk_bytes};
use crate::inbound::observe::{Arrival, Observation};
use crate::model::ChatRequest;
use crate::pipeline::{CallContext, Pipeline};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use std::pin::Pin;
use tokio::time::Instant;

/// The call's request id, in the request's extensions for the handlers.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Gives every response an `x-request-id`, errors and unknown paths too,
/// so a caller can always quote one.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = context::request_id(request.headers());
    let value = HeaderValue::from_str(&id).ok();
    request.extensions_mut().insert(RequestId(id));
    let mut response = next.run(request).await;
    if let Some(value) = value {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    response
}

pub async fn chat_completions(
    State(facade): State<Facade>,
    Extension(RequestId(id)): Extension<RequestId>,
    caller: Option<Extension<AuthenticatedCaller>>,
    unix_peer: Option<Extension<tonic::transport::server::UdsConnectInfo>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    let arrival = Arrival {
        edge: Edge::Http,
        method: "POST /v1/chat/completions",
        headers: &headers,
        // On the facade's Unix socket, the calling process (SO_PEERCRED),
        // as on the gRPC socket.
        peer: unix_peer
            .and_then(|Extension(info)| info.peer_cred)
            .map(|cred| (cred.uid(), cred.pid())),
        authenticated: caller.as_ref().map(|Extension(caller)| &*caller.0),
        request_id: Some(&id),
    };
    // The body is dropped once parsed: a large one (images) is not held
    // for the length of the call.
    let parsed = match body
        .map_err(body_error)
        .and_then(|body| request::parse(&body))
    {
        Ok(parsed) => parsed,
        Err(error) => {
            // Recorded too: one ledger row per caller request.
            let observation = facade.observer.begin(arrival, &ChatRequest::default());
            drop(observation.finish_unary(&Err(recorded(&error))));
            return error.into_response();
        }
    };
    let observation = facade.observer.begin(arrival, &parsed.request);
    let result = match context::call_context(&headers, parsed.request.stream, arrived) {
        Err(error) => {
            drop(observation.finish_unary(&Err(Error::InvalidRequest(error.message.clone()))));
            Err(error)
        }
        Ok(limits) => {
            let call = observation.call_context(limits);
            // The pipeline in force now serves the whole call, even if a
            // reload swaps in another meanwhile.
            let pipeline = facade.pipeline.current();
            if parsed.request.stream {
                stream(&pipeline, observation, parsed, &call).await
            } else {
                unary(&pipeline, observation, parsed, &call).await
            }
        }
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn unary(
    pipeline: &Pipeline,
    observation: Observation,
    parsed: Parsed,
    call: &CallContext,
) -> Result<Response, ApiError> {
    let (result, finished) = call::unary(pipeline, observation, parsed.request, call).await;
    let served =
        result.map_err(|error| ApiError::from_call(&error, pipeline.scrubber(), &finished))?;
    let model = HeaderValue::from_str(&served.value.model).ok();
    // The answer is the upstream's body, byte for byte.
    let body = Body::from(served.value.json);
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    served_by(
        response.headers_mut(),
        &served.provider,
        served.attempts,
        model,
    );
    served.upstream_headers.add_to(response.headers_mut());
    crate::inbound::budget_headers::add(response.headers_mut(), &call.progress);
    overhead(response.headers_mut(), finished.overhead);
    Ok(response)
}

async fn stream(
    pipeline: &std::sync::Arc<Pipeline>,
    observation: Observation,
    parsed: Parsed,
    call: &CallContext,
) -> Result<Response, ApiError> {
    let (served, watched) = call::stream(pipeline, observation, parsed.request, call)
        .await
        .map_err(|(error, finished)| ApiError::from_call(&error, pipeline.scrubber(), &finished))?;
    // The first chunk is in hand: the sidecar has added all it will add
    // before the caller reads (the rest is the upstream's pace).
    let added = watched.overhead_so_far();
    // The pipeline returned with the first chunk in hand: peeking at it
    // (for the served model) does not wait for the upstream.
    let mut chunks = watched.peekable();
    let model = match Pin::new(&mut chunks).peek().await {
        Some(Ok(chunk)) => chunk
            .identity
            .as_ref()
            .and_then(|identity| HeaderValue::from_str(&identity.model).ok()),
        _ => None,
    };
    let body = Body::from_stream(SseBody::new(
        Gathered::new(chunks, chunk_bytes),
        parsed.include_usage,
        pipeline.scrubber().clone(),
    ));
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    served_by(
        response.headers_mut(),
        &served.provider,
        served.attempts,
        model,
    );
    served.upstream_headers.add_to(response.headers_mut());
    crate::inbound::budget_headers::add(response.headers_mut(), &call.progress);
    overhead(response.headers_mut(), added);
    Ok(response)
}

/// The time the sidecar itself added, in microseconds (the rest of the
/// call's time was upstream, queued or backing off).
fn overhead(headers: &mut HeaderMap, added: std::time::Duration) {
    let micros = u64::try_from(added.as_micros()).unwrap_or(u64::MAX);
    headers.insert(HeaderName::from_static("x-llm-overhead-us"), micros.into());
}

/// Who served the call, after how many attempts, with which model: so the
/// caller can see retries happened and need not stack its own.
fn served_by(headers: &mut HeaderMap, provider: &str, attempts: u32, model: Option<HeaderValue>) {
    if let Ok(provider) = HeaderValue::from_str(provider) {
        headers.insert(HeaderName::from_static("x-llm-provider"), provider);
    }
    headers.insert(HeaderName::from_static("x-llm-attempts"), attempts.into());
    if let Some(model) = model {
        headers.insert(HeaderName::from_static("x-llm-model"), model);
    }
}

fn body_error(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            status,
            "request_too_large",
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        );
    }
    if timed_out(&rejection) {
        // What `body_deadline` answers in its place; here for the record.
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_body_timeout",
            "the request body did not arrive in time (server.body_read_timeout_ms)",
        );
    }
    ApiError::new(status, "invalid_body", rejection.body_text())
}

/// Whether the body read failed because its time ran out.
fn timed_out(rejection: &BytesRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = cause {
        if error.is::<super::body_deadline::BodyTimedOut>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// How a request the facade could not take is recorded: the reason names
/// what was wrong with the body (not JSON, too large, too slow), or it is
/// an invalid request like any the pipeline refuses.
fn recorded(error: &ApiError) -> Error {
    let fault = match error.reason {
        "invalid_json" | "invalid_body" => EdgeFault::UndecodableRequest,
        "request_too_large" => EdgeFault::RequestTooLarge,
        "request_body_timeout" => EdgeFault::RequestBodyTimeout,
        _ => return Error::InvalidRequest(error.message.clone()),
    };
    Error::Edge {
        fault,
        message: error.message.clone(),
    }
}

pub async fn list_models(State(facade): State<Facade>) -> Response {
    let pipeline = facade.pipeline.current();
    Json(models::list(pipeline.routes(), &pipeline.known_models())).into_response()
}

pub async fn retrieve_model(State(facade): State<Facade>, Path(id): Path<String>) -> Response {
    let pipeline = facade.pipeline.current();
    match pipeline.served_by(&id) {
        Some((provider, kind)) => Json(models::ModelObject::new(&id, provider, kind)).into_response(),
        None => ApiError {
            param: Some("model".to_owned()),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!(
                    "no route serves the model `{id}`; GET /v1/models lists the names and patterns that do"
                ),
            )
        }
        .into_response(),
    }
}

pub async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_url",
        format!(
            "no endpoint {method} {}: this is an OpenAI-compatible API serving \
             POST /v1/chat/completions and GET /v1/models",
            uri.path()
        ),
    )
    .into_response()
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
    .into_response()
}
