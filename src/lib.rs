//! llm-sidecar: a per-pod gRPC sidecar that forwards chat completions to
//! OpenAI-compatible LLM APIs and streams their answers back.
//!
//! # Layout
//!
//! - [`inbound`]: the edges callers use (gRPC `ChatService`); wire format
//!   in, internal model out, errors to status codes.
//! - [`pipeline`]: the one path every call takes: validate → route →
//!   provider, bounded by the caller's deadline.
//! - [`upstream`]: providers (OpenAI-compatible HTTP, built-in mock), the
//!   shared HTTP client, the SSE parser.
//! - [`model`]: the internal chat model (OpenAI-shaped).
//! - [`routing`], [`validate`], [`error`]: model → provider, request checks,
//!   the error classification table.
//! - [`config`]: file → typed, validated configuration.
//! - [`server`]: listeners (Unix socket, loopback TCP), health, reflection.
//! - [`client`], [`cli`]: the `llm-sidecar` command line, including `chat`.
//! - [`runtime_dir`]: where the default socket and ledger go.
//! - [`fake_upstream`]: a scriptable OpenAI-compatible server for tests,
//!   benchmarks and demos.

pub mod admin;
pub mod auth;
pub mod call_record;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod fake_upstream;
pub mod heap;
pub mod inbound;
pub mod ledger;
pub mod logging;
pub mod model;
pub mod pipeline;
pub mod routing;
pub mod runtime_dir;
pub mod secret;
pub mod server;
pub mod telemetry;
pub mod upstream;
pub mod validate;

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
