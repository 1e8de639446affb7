//! The admin port (loopback HTTP): `/metrics` for Prometheus, usage and
//! recent requests as JSON, provider health, the ledger's state
//! (`/admin/ledger`), liveness, and the log level.
//! Nothing here shows prompt content or keys.

use super::{Admin, AdminError, RecentQuestion, UsageQuestion, parse_instant};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::time::SystemTime;

pub fn router(admin: Admin) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/admin/usage", get(usage))
        .route("/admin/requests", get(recent))
        // The name the seed proxy used for the same view.
        .route("/admin/logs", get(recent))
        .route("/admin/providers", get(providers))
        .route("/admin/budgets", get(budgets))
        .route("/admin/ledger", get(ledger_status))
        .route("/admin/log-level", get(log_level).put(set_log_level))
        .with_state(admin)
}

fn error_response(error: &AdminError) -> Response {
    let status = match error {
        AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
        AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = serde_json::json!({ "error": error.to_string() });
    (status, Json(body)).into_response()
}

fn instant(text: Option<&str>) -> Result<Option<SystemTime>, AdminError> {
    text.filter(|text| !text.is_empty())
        .map(|text| parse_instant(text, SystemTime::now()))
        .transpose()
        .map_err(AdminError::Invalid)
}

async fn metrics(State(admin): State<Admin>) -> Response {
    match admin.metrics_text() {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are off\n").into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct UsageParams {
    since: Option<String>,
    until: Option<String>,
    group_by: Option<String>,
}

async fn usage(State(admin): State<Admin>, Query(params): Query<UsageParams>) -> Response {
    let question = match (
        instant(params.since.as_deref()),
        instant(params.until.as_deref()),
    ) {
        (Ok(since), Ok(until)) => UsageQuestion {
            since,
            until,
            group_by: params.group_by,
        },
        (Err(error), _) | (_, Err(error)) => return error_response(&error),
    };
    let group_by = question
        .group_by
        .clone()
        .unwrap_or_else(|| "model".to_owned());
    match admin.usage(question).await {
        Ok(groups) => {
            Json(serde_json::json!({ "group_by": group_by, "groups": groups })).into_response()
        }
        Err(error) => error_response(&error),
    }
}

#[derive(Debug, Deserialize)]
struct RecentParams {
    limit: Option<usize>,
    since: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    caller: Option<String>,
    outcome: Option<String>,
}

async fn recent(State(admin): State<Admin>, Query(params): Query<RecentParams>) -> Response {
    let since = match instant(params.since.as_deref()) {
        Ok(since) => since,
        Err(error) => return error_response(&error),
    };
    let question = RecentQuestion {
        limit: params.limit,
        since,
        model: params.model,
        provider: params.provider,
        caller: params.caller,
        outcome: params.outcome,
    };
    match admin.recent(question).await {
        Ok(requests) => Json(serde_json::json!({ "requests": requests })).into_response(),
        Err(error) => error_response(&error),
    }
}

async fn ledger_status(State(admin): State<Admin>) -> Response {
    match admin.ledger_status() {
        Ok(status) => Json(status).into_response(),
        Err(error) => error_response(&error),
    }
}

async fn providers(State(admin): State<Admin>) -> Response {
    Json(serde_json::json!({ "providers": admin.providers() })).into_response()
}

async fn budgets(State(admin): State<Admin>) -> Response {
    Json(serde_json::json!({ "budgets": admin.budgets().await })).into_response()
}

async fn log_level() -> Response {
    match crate::logging::level() {
        Some(level) => Json(serde_json::json!({ "level": level })).into_response(),
        None => error_response(&AdminError::Unavailable(
            "logging is not managed by this process".to_owned(),
        )),
    }
}

/// The body is the new filter, e.g. `debug` or `info,llm_sidecar=debug`.
async fn set_log_level(body: String) -> Response {
    match crate::logging::set_level(body.trim()) {
        Ok(()) => Json(serde_json::json!({ "level": body.trim() })).into_response(),
        Err(error) => error_response(&AdminError::Invalid(error)),
    }
}
