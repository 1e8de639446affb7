//! Calls to the sidecar over gRPC, on its Unix socket or loopback TCP, with
//! the crate's own client (one channel: HTTP/2 multiplexes every call).

use crate::trace::StreamTrace;
use llm_sidecar::client::{chat_client, connect_tcp, connect_uds};
use llm_sidecar::proto::v1 as pb;
use llm_sidecar::proto::v1::chat_service_client::ChatServiceClient;
use std::path::Path;
use tokio::time::{Instant, timeout_at};
use tonic::transport::Channel;

const MAX_MESSAGE_BYTES: usize = 1 << 24;

#[derive(Debug, Clone)]
pub struct GrpcCaller {
    client: ChatServiceClient<Channel>,
    request: pb::ChatRequest,
    /// `authorization: Bearer <caller token>` for loopback TCP.
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
}

impl GrpcCaller {
    pub async fn uds(path: &Path, model: &str) -> anyhow::Result<Self> {
        Ok(Self::new(connect_uds(path).await?, model, None))
    }

    /// Over loopback TCP, presenting the sidecar's caller `token`.
    pub async fn tcp(addr: &str, model: &str, token: &str) -> anyhow::Result<Self> {
        let authorization = format!("Bearer {token}").parse()?;
        Ok(Self::new(
            connect_tcp(addr).await?,
            model,
            Some(authorization),
        ))
    }

    fn new(
        channel: Channel,
        model: &str,
        authorization: Option<tonic::metadata::AsciiMetadataValue>,
    ) -> Self {
        GrpcCaller {
            authorization,
            client: chat_client(channel, MAX_MESSAGE_BYTES),
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
        let mut client = self.client.clone();
        client
            .complete(self.call_request())
            .await
            .map(drop)
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
    }

    /// Lists the models: the cheapest call that proves the sidecar serves.
    pub async fn ping(&self) -> bool {
        let mut client = self.client.clone();
        client.list_models(pb::ListModelsRequest {}).await.is_ok()
    }

    pub async fn stream(&self, deadline: Instant) -> StreamTrace {
        let mut trace = StreamTrace::start();
        let mut client = self.client.clone();
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
                    trace.complete = true;
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
