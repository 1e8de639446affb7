//! The fake's inspection endpoints, for tests that run it as a separate
//! process and so cannot call [`FakeUpstream::requests`](super::FakeUpstream::requests):
//!
//! - `GET /_fake/requests`: every recorded request, in arrival order, as a
//!   JSON list of `{"method", "path", "headers", "body"}`.
//! - `DELETE /_fake/requests`: forgets them (answers 204).
//!
//! These routes are not recorded themselves, so what a test reads is only
//! what the code under test sent.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::RecordedRequest;
use super::state::Shared;

const REQUESTS_PATH: &str = "/_fake/requests";

/// The inspection routes, to be merged into the fake's router.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route(REQUESTS_PATH, get(list).delete(clear))
}

async fn list(State(shared): State<Arc<Shared>>) -> Response {
    let requests: Vec<Value> = shared.requests().iter().map(to_json).collect();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Value::Array(requests).to_string(),
    )
        .into_response()
}

async fn clear(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.clear_requests();
    StatusCode::NO_CONTENT
}

/// One request as JSON. Headers become an object (names are already
/// lower-case; repeated ones are joined with ", " as HTTP allows). The
/// `authorization` header is left out: the caller's key has no business in a
/// test's output or logs.
pub(super) fn to_json(request: &RecordedRequest) -> Value {
    let mut headers = Map::new();
    for (name, value) in &request.headers {
        if name.eq_ignore_ascii_case("authorization") {
            continue;
        }
        match headers.get_mut(name) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    json!({
        "method": request.method,
        "path": request.path,
        "headers": headers,
        "body": request.body,
    })
}
