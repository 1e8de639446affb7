//! The gRPC edge: `llmsidecar.v1.ChatService`.

pub(crate) mod codec;
mod convert;
pub(crate) mod recycle;
mod refusals;
mod service;
mod status;
mod timeout;

pub use convert::{chunk_to_proto, json_to_struct, request_from_proto, response_to_proto};
pub use refusals::RecordRefusals;
pub use service::ChatServiceImpl;
pub use status::to_status;
pub use timeout::parse_grpc_timeout;

use crate::inbound::observe::Observer;
use crate::pipeline::PipelineHandle;
use crate::proto::v1::chat_service_server::ChatServiceServer;
use std::sync::Arc;

/// The chat service as the listeners serve it: messages bounded to
/// `max_message_bytes` both ways, and the calls tonic refuses before the
/// handler recorded like any other.
pub fn chat_service(
    pipeline: Arc<PipelineHandle>,
    observer: Arc<Observer>,
    max_message_bytes: usize,
) -> RecordRefusals<ChatServiceServer<ChatServiceImpl>> {
    let service = ChatServiceImpl::new(pipeline.clone(), observer.clone())
        .with_max_message_bytes(max_message_bytes);
    let server = ChatServiceServer::new(service)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    RecordRefusals::new(server, observer, pipeline, max_message_bytes)
}
