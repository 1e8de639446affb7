//! The OpenAI-compatible HTTP edge: teams that already use an OpenAI SDK
//! point its `base_url` at the sidecar and get the same pipeline (routing,
//! retries, limits, keys held here) with no code change.
//!
//! # Endpoints
//!
//! - `POST /v1/chat/completions`: the request body is the internal
//!   [`ChatRequest`](crate::model::ChatRequest) as it is (its serde form is
//!   OpenAI's), unknown fields pass through upstream in `extra`. Unary
//!   answers are OpenAI `chat.completion` objects; `"stream": true` answers
//!   are `text/event-stream` in OpenAI's wire format, ending with
//!   `data: [DONE]` only when the stream really completed.
//! - `GET /v1/models`, `GET /v1/models/{id}`: the routing table as OpenAI
//!   model objects (see `models.rs`).
//! - Anything else: 404 (405 for a known path with the wrong method), as an
//!   OpenAI error object.
//!
//! # Headers
//!
//! In: `x-llm-max-attempts` (as on gRPC), `x-llm-timeout-ms` (the caller's
//! deadline), the OpenAI SDKs' `x-stainless-timeout` (unary calls only),
//! `x-request-id`. Out: `x-request-id` (the caller's when it is a sane
//! token, else a fresh UUID), and on answers `x-llm-provider`,
//! `x-llm-attempts`, `x-llm-model`, for streams with the first bytes.
//!
//! # Errors
//!
//! Classified once by [`crate::error::classify`]; [`api_error`] turns the
//! class into the HTTP status and an OpenAI error object whose `type` follows
//! the status and whose `code` is the classification's reason in lower case.
//! A stream that fails after its first chunk cannot change its status any
//! more: it ends with an OpenAI-style `data: {"error": ...}` event and no
//! `[DONE]`, which the OpenAI SDKs raise as an error.
//!
//! # Layout
//!
//! `call.rs` is the only place that calls the pipeline (the seam for
//! per-call records and telemetry). The rest is conversion, each pure and
//! unit-tested: `request.rs` (body → request), `context.rs` (headers → call
//! context, request id), `api_error.rs` (error → status + body),
//! `wire.rs` (answers → OpenAI JSON), `sse.rs` (chunks → events),
//! `models.rs`; `handlers.rs` strings them together; `body_deadline.rs`
//! bounds how long a request body may take to arrive (408).

mod api_error;
mod body_deadline;
mod call;
mod context;
mod handlers;
mod models;
mod request;
mod sse;

pub use body_deadline::body_timeouts;
pub use handlers::RequestId;

use crate::inbound::observe::Observer;
use crate::pipeline::PipelineHandle;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use std::sync::Arc;

/// The largest request body: room for image parts, as `server.max_message_bytes`
/// defaults to for gRPC. A constant because the router is built from the
/// pipeline alone.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// What every facade handler shares: the pipeline, and the observer that
/// records each call.
#[derive(Debug, Clone)]
pub struct Facade {
    pub pipeline: Arc<PipelineHandle>,
    pub observer: Arc<Observer>,
}

/// The facade's routes over the shared pipeline, each request bounded in
/// how long its body may take to arrive (`body_read`), given its request
/// id and held to [`MAX_BODY_BYTES`].
///
/// The layers wrap the routes once, as one service, rather than each route
/// (`Router::layer`): axum boxes a route per layer, and each request then
/// cloned the whole boxed chain, some 35 heap allocations a call.
pub fn router(
    pipeline: Arc<PipelineHandle>,
    observer: Arc<Observer>,
    body_read: std::time::Duration,
) -> Router {
    let routes = Router::new()
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/models", get(handlers::list_models))
        .route("/v1/models/{*id}", get(handlers::retrieve_model))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(Facade { pipeline, observer });
    let layered = tower::ServiceBuilder::new()
        .layer(axum::middleware::from_fn(move |request, next| {
            body_deadline::bounded(body_read, request, next)
        }))
        .layer(axum::middleware::from_fn(handlers::request_id))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .service(routes);
    Router::new().fallback_service(layered)
}
