//! One way to call a target: HTTP (OpenAI wire format) or the sidecar's
//! gRPC. Every target gets the same request.

use crate::call_grpc::GrpcCaller;
use crate::call_http::HttpCaller;
use crate::trace::StreamTrace;
use tokio::time::Instant;

/// The user message of every request (the fake upstream's reply is set by
/// its own defaults, so the prompt only needs to look like one).
pub const PROMPT: &str = "Measure what one call through this proxy costs.";

#[derive(Debug, Clone)]
pub enum Caller {
    Http(HttpCaller),
    // Boxed: the gRPC request and client dwarf the HTTP caller.
    Grpc(Box<GrpcCaller>),
}

impl Caller {
    /// The same target and connections, asking for another model (the
    /// fake upstream plays another workload for it).
    pub fn with_model(&self, model: &str) -> Caller {
        match self {
            Caller::Http(http) => Caller::Http(http.with_model(model)),
            Caller::Grpc(grpc) => Caller::Grpc(Box::new(grpc.with_model(model))),
        }
    }

    pub async fn unary(&self) -> Result<(), String> {
        match self {
            Caller::Http(http) => http.unary().await,
            Caller::Grpc(grpc) => grpc.unary().await,
        }
    }

    pub async fn stream(&self, deadline: Instant) -> StreamTrace {
        match self {
            Caller::Http(http) => http.stream(deadline).await,
            Caller::Grpc(grpc) => grpc.stream(deadline).await,
        }
    }
}
