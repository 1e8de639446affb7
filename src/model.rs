//! The one internal chat model every edge converts into and out of.
//!
//! It keeps what callers and upstreams send as JSON, whole: a request is the
//! caller's body with the few fields the sidecar owns taken out; an answer
//! or stream event is the upstream's bytes with what the sidecar read from
//! them beside it (ids, finish reasons, usage). Nothing the sidecar does not
//! own is decoded into a type and encoded again, so nothing is lost, and
//! the per-chunk path reads through borrowed, lenient views (`view.rs`,
//! `lenient.rs`) instead of building a full model.

mod chunk;
pub mod lenient;
mod request;
mod response;
pub mod sanitize;
mod usage;
pub mod view;

pub use chunk::{ChatChunk, Identity, ProtoChunk, ProtoChunkDecoder};
pub use request::{ChatRequest, ProtoDecoders, message_role, message_texts};
pub use response::{AnswerProblem, ChatResponse, ProtoAnswer, ProtoAnswerDecoder};
pub use usage::Usage;
