//! HTTP routes of the fake upstream and the per-request flow:
//! record → pick scenario → delay/hang → error or answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::guard::DisconnectGuard;
use super::inspect;
use super::reply::{self, Answer};
use super::state::Shared;
use super::{RecordedRequest, Scenario, prefill, sse};

/// All routes; every path, including unknown ones, records the request
/// first, except the fake's own inspection routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(inspect::routes())
        .route(
            "/v1/chat/completions",
            post(chat_completions).fallback(wrong_method),
        )
        .route(
            "/chat/completions",
            post(chat_completions).fallback(wrong_method),
        )
        .route(
            "/api/v1/chat/completions",
            post(chat_completions).fallback(wrong_method),
        )
        .route("/v1/models", get(models).fallback(wrong_method))
        .route("/models", get(models).fallback(wrong_method))
        .route("/api/v1/models", get(models).fallback(wrong_method))
        .fallback(not_found)
        // Benchmarks may send large prompts; the fake must never refuse them.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

fn record(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Value {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    shared.record(RecordedRequest {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
    });
    body
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body = record(&shared, &method, &uri, &headers, &raw);
    if !body.is_object() {
        let msg = "request body must be a JSON object";
        return json_response(StatusCode::BAD_REQUEST, reply::invalid_request_json(msg));
    }
    let defaults = shared.defaults_for(body.get("model").and_then(Value::as_str));
    let scenario = match Scenario::select(&body, &headers, defaults) {
        Ok(s) => s,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                reply::invalid_request_json(&e.to_string()),
            );
        }
    };
    let scenario = match prefill::of(&body) {
        Some(_) if scenario.reject_prefill => {
            let msg = "this upstream does not continue an assistant prefill";
            return json_response(StatusCode::BAD_REQUEST, reply::invalid_request_json(msg));
        }
        Some(text) if scenario.continue_prefill => {
            match prefill::continuation(&body, &scenario, &text) {
                Ok(rest) => rest,
                Err(msg) => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        reply::invalid_request_json(&msg),
                    );
                }
            }
        }
        _ => scenario,
    };
    // Decided on arrival so retries are counted in arrival order, not in the
    // order their latencies happen to expire.
    let fail = scenario
        .error_status()
        .filter(|_| match scenario.fail_times {
            Some(times) => shared.should_fail(scenario.key.as_deref().unwrap_or(""), times),
            None => true,
        });

    let guard = DisconnectGuard::new(shared.clone());
    if scenario.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(scenario.latency_ms)).await;
    }
    if scenario.hang {
        // Dropped by hyper when the client closes the connection (the guard
        // then counts a disconnect), or when the FakeUpstream shuts down.
        std::future::pending::<()>().await;
    }

    let mut response = match fail {
        Some(status) => {
            guard.disarm();
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            match (&scenario.error_html, &scenario.error_body) {
                (Some(page), _) => (
                    code,
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    page.clone(),
                )
                    .into_response(),
                (None, Some(raw)) => json_response(code, raw.to_string()),
                (None, None) => json_response(code, reply::error_json(status, &scenario)),
            }
        }
        None => respond(&shared, &body, &scenario, guard),
    };
    add_retry_headers(response.headers_mut(), &scenario);
    add_scenario_headers(response.headers_mut(), &scenario);
    response
}

/// The successful reply, as one JSON object or as an SSE stream.
fn respond(
    shared: &Arc<Shared>,
    body: &Value,
    scenario: &Scenario,
    guard: DisconnectGuard,
) -> Response {
    let streaming = body.get("stream").and_then(Value::as_bool) == Some(true);
    if !streaming {
        if let Some(raw) = &scenario.raw_body {
            guard.disarm();
            return json_response(StatusCode::OK, raw.to_string());
        }
        let answer = Answer::build(body, scenario, shared.next_id(), unix_now());
        let json = answer.completion_json(!scenario.no_usage);
        return match scenario.split_bytes {
            None => {
                guard.disarm();
                json_response(StatusCode::OK, json)
            }
            // In pieces, with no Content-Length (chunked).
            Some(piece) => {
                let steps = vec![sse::Step::Frame(json)];
                let writes = sse::Writes {
                    split_bytes: Some(piece),
                    ..sse::Writes::default()
                };
                let stream = sse::body_stream(steps, writes, guard);
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    Body::from_stream(stream),
                )
                    .into_response()
            }
        };
    }
    let steps = match &scenario.raw_events {
        Some(events) => sse::raw_script(events, scenario),
        None => {
            let answer = Answer::build(body, scenario, shared.next_id(), unix_now());
            let include_usage = body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true);
            sse::script(&answer, scenario, include_usage)
        }
    };
    let writes = sse::Writes {
        split_bytes: scenario.split_bytes,
        events_per_write: scenario.events_per_write.unwrap_or(1),
        stamp: scenario.stamp,
    };
    let stream = sse::body_stream(steps, writes, guard);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

fn add_retry_headers(headers: &mut HeaderMap, scenario: &Scenario) {
    if let Some(v) = &scenario.retry_after {
        match HeaderValue::from_str(v) {
            Ok(v) => {
                headers.insert(header::RETRY_AFTER, v);
            }
            Err(e) => tracing::warn!("fake upstream: bad retry_after {v:?}: {e}"),
        }
    }
    if let Some(ms) = scenario.retry_after_ms {
        headers.insert(
            HeaderName::from_static("retry-after-ms"),
            HeaderValue::from(ms),
        );
    }
}

/// The scenario's extra headers; they override generated ones of the same
/// name so a test can script e.g. its own `content-type`.
fn add_scenario_headers(headers: &mut HeaderMap, scenario: &Scenario) {
    for (name, value) in &scenario.headers {
        let parsed = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        );
        match parsed {
            (Ok(name), Ok(value)) => {
                headers.insert(name, value);
            }
            (Err(e), _) => tracing::warn!("fake upstream: bad header name {name:?}: {e}"),
            (_, Err(e)) => tracing::warn!("fake upstream: bad value for header {name}: {e}"),
        }
    }
}

async fn models(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    record(&shared, &method, &uri, &headers, &raw);
    let mut names = vec![reply::DEFAULT_MODEL.to_owned()];
    for m in shared.models_seen() {
        if !names.contains(&m) {
            names.push(m);
        }
    }
    let data: Vec<Value> = names
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "fake-upstream"}))
        .collect();
    json_response(
        StatusCode::OK,
        json!({"object": "list", "data": data}).to_string(),
    )
}

async fn not_found(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    record(&shared, &method, &uri, &headers, &raw);
    let msg = format!("fake upstream has no route {method} {}", uri.path());
    json_response(StatusCode::NOT_FOUND, reply::invalid_request_json(&msg))
}

async fn wrong_method(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    record(&shared, &method, &uri, &headers, &raw);
    let msg = format!(
        "fake upstream: method {method} not allowed on {}",
        uri.path()
    );
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        reply::invalid_request_json(&msg),
    )
}
