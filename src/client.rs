//! Connecting to a running sidecar, over its Unix socket or TCP. Used by the
//! `chat` command and by tests; apps use stubs generated from the proto.

use crate::proto::v1::chat_service_client::ChatServiceClient;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint};

pub async fn connect_uds(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.to_owned();
    // The URI is required by the API but unused: the connector decides
    // where to go.
    Endpoint::from_static("http://llm-sidecar.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}

pub async fn connect_tcp(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
}

pub fn chat_client(channel: Channel, max_message_bytes: usize) -> ChatServiceClient<Channel> {
    ChatServiceClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}
