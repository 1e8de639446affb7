//! One streamed event of an answer: the upstream's bytes, and what the
//! sidecar read from them. Built by the upstream's stream reader
//! (`upstream::stream_reader`), which also judges completion and repairs
//! tool-call indexes.
//!
//! For a gRPC caller the event is also decoded into protobuf in the same
//! pass that reads it ([`ProtoChunkDecoder`], supplied by the gRPC edge with
//! the request): reading the JSON twice, once for the sidecar and once for
//! the caller, cost more than the rest of a chunk's path together.

use super::usage::Usage;
use crate::proto::v1 as pb;
use bytes::Bytes;
use serde_json::Value;
use std::ops::Range;

/// A `chat.completion.chunk` event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatChunk {
    /// The event's JSON object as the upstream sent it, apart from the
    /// documented repairs (a tool-call `index` or `type` it left out).
    pub json: Bytes,
    /// Where a top-level `"usage": null` member sits in `json`, with the
    /// comma that separates it: OpenAI adds one to every chunk once usage
    /// is asked for, and the sidecar always asks, so it is cut out again
    /// for a caller that did not.
    pub null_usage: Option<Range<usize>>,
    /// Token counts, on the chunk that reports them.
    pub usage: Option<Usage>,
    /// The chunk has no choices (`choices` is empty or missing): with
    /// usage, it is the usage-only chunk that ends a stream.
    pub no_choices: bool,
    /// `(choice index, finish reason)` for each choice this chunk ends.
    pub finish_reasons: Vec<(u32, String)>,
    /// Bytes of generated text (content, refusal, reasoning, arguments).
    pub output_bytes: usize,
    /// The response id and served model, on the first chunk that names a
    /// model (the rest of the stream repeats them).
    pub identity: Option<Box<Identity>>,
    /// The event as the gRPC edge's message (`provider` left empty), when
    /// the request asked for it and the event has the usual shape; the
    /// edge converts `json` otherwise.
    pub proto: Option<Box<pb::ChatChunk>>,
    /// Set on the first chunk of a resumed stream's continuation: the
    /// reason the stream was cut (the error table's), for the edge to mark
    /// the seam (`pipeline/resume.rs`).
    pub resumed_after: Option<&'static str>,
}

/// Decodes one stream event's JSON straight into protobuf, in one pass;
/// `None` when the event is not of the usual shape (an `error` member, a
/// member of an unexpected type ...), and the reader then reads it through
/// its JSON view.
pub type ProtoChunkDecoder = fn(&str) -> Option<ProtoChunk>;

/// A stream event decoded by a [`ProtoChunkDecoder`], before the stream
/// reader has judged it.
#[derive(Debug)]
pub struct ProtoChunk {
    /// The event; each choice's `index` is its place in the list when the
    /// upstream sent none.
    pub message: Box<pb::ChatChunk>,
    /// `(choice position, tool-call position)` of each tool-call piece that
    /// came without an `index` (its `index` reads 0 until the reader
    /// places it).
    pub unindexed: Vec<(usize, usize)>,
    /// The `usage` object's counts, in any spelling.
    pub usage: Option<Usage>,
}

/// Who answered, as the stream's first chunk says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub model: String,
}

impl ChatChunk {
    /// The usage-only chunk: no choices, and a usage object.
    pub fn is_usage_only(&self) -> bool {
        self.no_choices && self.usage.is_some()
    }

    /// The event as a JSON value, for the gRPC edge and opt-in capture
    /// (a lone surrogate read as U+FFFD); `Err` says why it cannot be one.
    pub fn to_value(&self) -> Result<Value, String> {
        super::response::decode(&self.json)
    }

    /// The event's text for a caller that did not ask for usage: `json`
    /// without its `"usage": null` member.
    pub fn json_without_null_usage(&self) -> Option<(&[u8], &[u8])> {
        let range = self.null_usage.clone()?;
        Some((&self.json[..range.start], &self.json[range.end..]))
    }
}
