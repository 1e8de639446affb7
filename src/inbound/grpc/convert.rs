//! Pure conversions between the protobuf API and the internal chat model.
//!
//! Requests (`request.rs`): typed proto fields become their OpenAI JSON,
//! and each level's `extra` Struct is merged in as it is. Answers and
//! stream events (`answer.rs`): the upstream's JSON fills the typed fields
//! it can, and every member left over lands in the `extra` Struct of its
//! level, so nothing the upstream sent is lost. Everything a caller can get
//! wrong in the protobuf shape itself (an unset role, both `content` and
//! `parts`, a carrier that repeats a typed field) is reported here, naming
//! the field.

mod answer;
mod answer_fast;
mod chunk_fast;
mod logprobs;
mod one_pass;
mod request;
mod structs;

pub use answer::{chunk_to_proto, response_to_proto};
pub use answer_fast::decode_answer;
pub use chunk_fast::decode_chunk;
pub use request::request_from_proto;
pub use structs::json_to_struct;
use structs::struct_to_json;

#[cfg(test)]
mod tests;
