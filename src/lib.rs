//! llm-sidecar: a per-pod gRPC sidecar that forwards chat completions to
//! OpenAI-compatible LLM APIs and streams their answers back.
//!
//! # Layout
//!
//! - [`inbound`]: the edges callers use (gRPC `ChatService`, the
//!   OpenAI-compatible HTTP facade) and [`inbound::observe`], where every
//!   call begins and ends (request id, caller, spans, the one record).
//! - [`auth`]: who may call the TCP and HTTP listeners (caller and admin
//!   tokens, Host and Origin checks), decided before a call begins.
//! - [`pipeline`]: the one path every call takes: validate → route →
//!   targets → attempts, with retries, budgets, circuits, limits and the
//!   caller's deadline.
//! - [`upstream`]: providers (OpenAI-compatible HTTP, built-in mock), the
//!   HTTP clients and their TLS trust, the SSE parser and stream reader.
//! - [`model`]: the internal chat model: the caller's JSON kept whole, with
//!   what the sidecar owns or reads taken out.
//! - [`pipeline::routing`], [`pipeline::validate`], [`error`], [`secret`]:
//!   model → provider, request checks and bounds, the error classification
//!   table, keys and the scrubber.
//! - [`call_record`], [`ledger`], [`telemetry`], [`logging`]: what a call
//!   leaves behind: the SQLite ledger, spans and metrics, one log line.
//! - [`admin`]: usage, recent requests and provider health, as JSON and
//!   as the gRPC `AdminService`.
//! - [`shared`]: provider limits and key cooldowns held fleet-wide in
//!   Redis (`[shared]`), with a local lease and a per-pod fallback.
//! - [`config`]: file → typed, validated configuration (the bottom layer).
//! - [`server`]: listeners (Unix sockets, loopback TCP, the admin and
//!   health ports), their limits and reaping, reload and shutdown.
//! - [`client`], [`cli`]: the `llm-sidecar` command line, including `chat`
//!   and `token`.
//! - [`runtime_dir`], [`heap`]: where the default socket and ledger go;
//!   giving memory back after a burst.
//!
//! Test and benchmark tooling lives in its own crates so none of it ships:
//! `crates/fake-upstream` (the scriptable OpenAI-compatible server the
//! tests, examples and benchmark run against) and `crates/bench`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod budget;
pub mod call_record;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod heap;
pub mod inbound;
pub mod ledger;
pub mod logging;
pub mod model;
pub mod pipeline;
pub mod runtime_dir;
pub mod secret;
pub mod server;
pub mod shared;
pub mod telemetry;
pub mod upstream;

/// The generated protobuf and gRPC code.
pub mod proto {
    #[allow(clippy::all, clippy::pedantic, unused_qualifications)]
    pub mod v1 {
        tonic::include_proto!("llmsidecar.v1");
    }

    /// The encoded descriptors of our protos, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("llmsidecar_descriptor");
}
