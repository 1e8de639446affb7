//! The gRPC edge: `llmsidecar.v1.ChatService`.

mod convert;
mod service;
mod status;
mod timeout;

pub use convert::{chunk_to_proto, json_to_struct, request_from_proto, response_to_proto};
pub use service::ChatServiceImpl;
pub use status::to_status;
pub use timeout::parse_grpc_timeout;
