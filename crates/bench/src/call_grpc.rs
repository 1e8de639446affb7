//! Calls to the sidecar over gRPC, on its Unix socket or loopback TCP, with
//! the crate's own client: a few channels, calls spread over them in turn,
//! as an app that runs more streams than one connection may open
//! (`[server] max_concurrent_streams`, 256 by default) would.

use crate::trace::StreamTrace;
use llm_sidecar::client::{chat_client, connect_tcp, connect_uds};
use llm_sidecar::proto::v1 as pb;
use llm_sidecar::proto::v1::chat_service_client::ChatServiceClient;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::time::{Instant, timeout_at};
use tonic::transport::Channel;

const MAX_MESSAGE_BYTES: usize = 1 << 24;

/// Channels (HTTP/2 connections) per caller: room for 1,024 streams at the
/// sidecar's default of 256 a connection.
const CHANNELS: usize = 4;

#[derive(Debug, Clone)]
pub struct GrpcCaller {
    clients: Vec<ChatServiceClient<Channel>>,
    /// The channel of the next call.
    next: Arc<AtomicUsize>,
    request: pb::ChatRequest,
    /// `authorization: Bearer <caller token>` for loopback TCP.
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
}

impl GrpcCaller {
    pub async fn uds(path: &Path, model: &str) -> anyhow::Result<Self> {
        let mut channels = Vec::new();
        for _ in 0..CHANNELS {
            channels.push(connect_uds(path).await?);
        }
        Ok(Self::new(channels, model, None))
    }

    /// Over loopback TCP, presenting the sidecar's caller `token`.
    pub async fn tcp(addr: &str, model: &str, token: &str) -> anyhow::Result<Self> {
        let authorization = format!("Bearer {token}").parse()?;
        let mut channels = Vec::new();
        for _ in 0..CHANNELS {
            channels.push(connect_tcp(addr).await?);
        }
        Ok(Self::new(channels, model, Some(authorization)))
    }

    fn new(
        channels: Vec<Channel>,
        model: &str,
        authorization: Option<tonic::metadata::AsciiMetadataValue>,
    ) -> Self {
        GrpcCaller {
            authorization,
            clients: channels
                .into_iter()
                .map(|channel| chat_client(channel, MAX_MESSAGE_BYTES))
                .collect(),
            next: Arc::default(),
            request: pb::ChatRequest {
                model: model.to_owned(),
                messages: vec![pb::Message {
                    role: pb::Role::User as i32,
                    content: Some(crate::caller::PROMPT.into()),
                    ..pb::Message::default()
                }],
                ..pb::ChatRequest::default()
            },
        }
    }

    /// The same channels, asking for another model.
    pub fn with_model(&self, model: &str) -> GrpcCaller {
        let mut caller = self.clone();
        model.clone_into(&mut caller.request.model);
        caller
    }

    /// A client on the next channel in turn.
    fn client(&self) -> ChatServiceClient<Channel> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[index].clone()
    }

    fn call_request(&self) -> tonic::Request<pb::ChatRequest> {
        let mut request = tonic::Request::new(self.request.clone());
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }

    pub async fn unary(&self) -> Result<(), String> {
        let mut client = self.client();
        client
            .complete(self.call_request())
            .await
            .map(drop)
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
    }

    /// Lists the models: the cheapest call that proves the sidecar serves.
    pub async fn ping(&self) -> bool {
        let mut client = self.client();
        client.list_models(pb::ListModelsRequest {}).await.is_ok()
    }

    pub async fn stream(&self, deadline: Instant) -> StreamTrace {
        let mut trace = StreamTrace::start();
        let mut client = self.client();
        let call = client.stream_complete(self.call_request());
        let mut stream = match timeout_at(deadline, call).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                trace.fail(format!("{:?}: {}", status.code(), status.message()));
                return trace;
            }
            Err(_) => {
                trace.fail("deadline before the response headers");
                return trace;
            }
        };
        loop {
            match timeout_at(deadline, stream.message()).await {
                Ok(Ok(Some(chunk))) => {
                    for choice in &chunk.choices {
                        trace.content(&choice.content);
                    }
                }
                Ok(Ok(None)) => {
                    trace.finish();
                    return trace;
                }
                Ok(Err(status)) => {
                    trace.fail(format!("{:?}: {}", status.code(), status.message()));
                    return trace;
                }
                Err(_) => {
                    trace.fail("deadline in the middle of the stream");
                    return trace;
                }
            }
        }
    }
}
