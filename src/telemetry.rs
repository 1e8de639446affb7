//! Telemetry: every call becomes OpenTelemetry spans and metrics following
//! the GenAI semantic conventions (v1.41), exported over OTLP and served as
//! Prometheus text on `/metrics`.
//!
//! It is a side channel and is built to stay one: spans are queued to a
//! batch exporter on a background thread, metrics are pre-aggregated
//! in-process and exported (or scraped) periodically, so no request ever
//! waits on a collector, and a dead collector costs dropped telemetry, not
//! latency. With no endpoint configured nothing is exported and spans are
//! not recorded, yet trace context still flows from caller to upstream.
//!
//! # Layout
//!
//! - [`config`]: [`TelemetryConfig`] from the config file and the `OTEL_*`
//!   variables (through an env seam).
//! - [`init`]: [`Telemetry`], the providers, `/metrics`, bounded shutdown.
//! - [`genai`]: the attribute names and the pure mapping from the chat model
//!   (attributes, captured message JSON). No SDK.
//! - [`spans`]: server / client spans, events, ending with an error.
//! - [`metrics`]: the instruments, recorded from a finished [`CallRecord`].
//! - [`propagation`]: W3C `traceparent` from and into header maps.
//! - `export`: OTLP exporters and the adapter that runs them on tokio.
//!
//! # Use
//!
//! ```no_run
//! # use llm_sidecar::telemetry::{self, spans, Telemetry, TelemetryConfig};
//! # use llm_sidecar::call_record::Edge;
//! # fn demo(telemetry: &Telemetry, headers: &axum::http::HeaderMap,
//! #         request: &llm_sidecar::model::ChatRequest) {
//! let parent = telemetry::extract(headers);
//! let server = spans::server_span(telemetry.tracer(), Edge::Grpc,
//!     "llmsidecar.v1.ChatService/Complete", &parent);
//! let attempt = spans::client_span(telemetry.tracer(), &server, request,
//!     "openai", "api.openai.com", 443);
//! let mut upstream_headers = axum::http::HeaderMap::new();
//! telemetry::inject(&attempt, &mut upstream_headers);
//! spans::end_ok(&attempt);
//! spans::end_ok(&server);
//! # }
//! ```
//!
//! [`CallRecord`]: crate::call_record::CallRecord

pub mod config;
mod export;
pub mod genai;
pub mod init;
pub mod metrics;
pub mod propagation;
pub mod spans;

pub use config::{OtlpHeaders, OtlpTarget, Protocol, TelemetryConfig, TelemetryFileConfig};
pub use init::{SHUTDOWN_TIMEOUT, Telemetry};
pub use metrics::{Metrics, ProviderState};
pub use propagation::{extract, inject};
