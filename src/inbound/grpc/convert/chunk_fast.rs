//! The per-chunk path of the gRPC edge: a stream event decoded straight
//! into protobuf, in one pass over its bytes, building a value only for the
//! members that go into a carrier (the shared pieces are in `one_pass.rs`).
//!
//! It handles the shapes providers send (members of the expected types, or
//! `null`); at anything else it gives up and [`super::answer`] converts the
//! event through a full JSON value, with the same result where both apply
//! (a test holds the two to that). Decoding every event into a JSON value
//! first cost several times the rest of a chunk's path: a map and a string
//! per member.

use super::one_pass::{
    Carrier, ChoiceCommon, Counts, Envelope, ListSeed, next_key, reasoning, text, text_value,
    unusual, whole,
};
use crate::model::{ProtoChunk, Usage};
use crate::proto::v1 as pb;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::fmt;

/// The event as protobuf, or `None` when it is not of the usual shape.
/// `usage` is what the stream reader read (in any spelling).
pub fn chunk_to_proto_fast(
    json: &[u8],
    usage: Option<Usage>,
    provider: &str,
) -> Option<pb::ChatChunk> {
    // One UTF-8 check for the whole text, rather than one per string.
    let text = std::str::from_utf8(json).ok()?;
    let unindexed = RefCell::default();
    let seed = ChunkSeed {
        counts: Counts::Given(usage),
        unindexed: &unindexed,
    };
    let (mut chunk, _) = decode(text, seed)?;
    chunk.provider = provider.to_owned();
    Some(*chunk)
}

/// The event read in one pass, for the stream reader to judge (a
/// [`crate::model::ProtoChunkDecoder`]). Gives up (`None`) on an event the
/// reader must see through its JSON view: an in-band `error` member, Groq's
/// `x_groq` (a stream's usage arrives in it), or any unusual shape.
pub fn decode_chunk(text: &str) -> Option<ProtoChunk> {
    let unindexed = RefCell::default();
    let seed = ChunkSeed {
        counts: Counts::Read,
        unindexed: &unindexed,
    };
    let (message, usage) = decode(text, seed)?;
    Some(ProtoChunk {
        message,
        unindexed: unindexed.into_inner(),
        usage,
    })
}

/// `(choice position, tool-call position)` of the pieces without an index.
type Unindexed = RefCell<Vec<(usize, usize)>>;

fn decode(text: &str, seed: ChunkSeed) -> Option<(Box<pb::ChatChunk>, Option<Usage>)> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let decoded = seed.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(decoded)
}

struct ChunkSeed<'u> {
    counts: Counts,
    unindexed: &'u Unindexed,
}

impl<'de> DeserializeSeed<'de> for ChunkSeed<'_> {
    type Value = (Box<pb::ChatChunk>, Option<Usage>);
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChunkSeed<'_> {
    type Value = (Box<pb::ChatChunk>, Option<Usage>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a chat.completion.chunk object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut envelope = Envelope::default();
        let mut choices = Vec::new();
        let reading = matches!(self.counts, Counts::Read);
        let mut usage = match self.counts {
            Counts::Given(usage) => usage,
            Counts::Read => None,
        };
        let unindexed = self.unindexed;
        while let Some(key) = next_key(&mut map)? {
            match key.as_ref() {
                "choices" => {
                    // A list given twice: the last one is the event's.
                    unindexed.borrow_mut().clear();
                    choices = map.next_value_seed(ListSeed::new(|position| ChoiceSeed {
                        position,
                        unindexed,
                    }))?;
                }
                "usage" if reading => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    usage = Usage::from_json_text(raw.get());
                    envelope.read_usage(raw)?;
                }
                "error" | "x_groq" if reading => return Err(unusual()),
                _ => envelope.read(key, &mut map, "chat.completion.chunk")?,
            }
        }
        // Boxed where it is built: the message is large and moves far.
        let chunk = Box::new(pb::ChatChunk {
            usage: envelope.usage(usage),
            id: envelope.id,
            model: envelope.model,
            provider: String::new(),
            created: envelope.created,
            choices,
            system_fingerprint: envelope.system_fingerprint,
            service_tier: envelope.service_tier,
            extra: envelope.extra.into_struct(),
        });
        Ok((chunk, usage))
    }
}

struct ChoiceSeed<'u> {
    position: usize,
    unindexed: &'u Unindexed,
}

impl<'de> DeserializeSeed<'de> for ChoiceSeed<'_> {
    type Value = pb::ChoiceDelta;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChoiceSeed<'_> {
    type Value = pb::ChoiceDelta;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a choice object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut common = ChoiceCommon::default();
        let mut delta = Delta::default();
        while let Some(key) = next_key(&mut map)? {
            match key.as_ref() {
                "delta" => {
                    let choice = self.position;
                    // A delta given twice: only the last one's pieces count.
                    self.unindexed
                        .borrow_mut()
                        .retain(|&(seen, _)| seen != choice);
                    delta = map.next_value_seed(DeltaSeed {
                        choice,
                        unindexed: self.unindexed,
                    })?;
                }
                _ => common.read(key, &mut map)?,
            }
        }
        let mut delta_extra = delta.extra;
        Ok(pb::ChoiceDelta {
            index: common.index(self.position),
            role: delta.role,
            content: delta.content,
            refusal: delta.refusal,
            reasoning_content: reasoning(
                delta.reasoning_content,
                delta.reasoning,
                &mut delta_extra,
            ),
            tool_calls: delta.tool_calls,
            finish_reason: common.finish_reason,
            logprobs: common.logprobs,
            delta_extra: delta_extra.into_struct(),
            extra: common.extra.into_struct(),
        })
    }
}

#[derive(Default)]
struct Delta {
    role: String,
    content: String,
    refusal: String,
    reasoning_content: String,
    /// As sent (a string or `null`), since it may go to the carrier.
    reasoning: Option<Value>,
    tool_calls: Vec<pb::ToolCallDelta>,
    extra: Carrier,
}

/// A choice's delta; its tool-call pieces without an `index` are noted in
/// `unindexed` under the choice's position.
struct DeltaSeed<'u> {
    choice: usize,
    unindexed: &'u Unindexed,
}

impl<'de> DeserializeSeed<'de> for DeltaSeed<'_> {
    type Value = Delta;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DeltaSeed<'_> {
    type Value = Delta;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a delta object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Delta::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut delta = Delta::default();
        while let Some(key) = next_key(&mut map)? {
            match key.as_ref() {
                "role" => delta.role = text(&mut map)?,
                "content" => delta.content = text(&mut map)?,
                "refusal" => delta.refusal = text(&mut map)?,
                "reasoning_content" => delta.reasoning_content = text(&mut map)?,
                "reasoning" => delta.reasoning = Some(text_value(&mut map)?),
                "tool_calls" => {
                    let (choice, unindexed) = (self.choice, self.unindexed);
                    unindexed.borrow_mut().retain(|&(seen, _)| seen != choice);
                    delta.tool_calls = map.next_value_seed(ListSeed::new(|call| ToolCallSeed {
                        choice,
                        call,
                        unindexed,
                    }))?;
                }
                _ => delta.extra.read(key, &mut map)?,
            }
        }
        Ok(delta)
    }
}

/// A tool-call piece at `(choice, call)`; one without an `index` is noted
/// in `unindexed`.
struct ToolCallSeed<'u> {
    choice: usize,
    call: usize,
    unindexed: &'u Unindexed,
}

impl<'de> DeserializeSeed<'de> for ToolCallSeed<'_> {
    type Value = pb::ToolCallDelta;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ToolCallSeed<'_> {
    type Value = pb::ToolCallDelta;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tool call object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut call = pb::ToolCallDelta::default();
        let mut indexed = false;
        let mut extra = Carrier::default();
        while let Some(key) = next_key(&mut map)? {
            match key.as_ref() {
                "index" => {
                    let index = whole(&mut map)?
                        .map(|index| u32::try_from(index).map_err(|_| unusual()))
                        .transpose()?;
                    indexed = index.is_some();
                    call.index = index.unwrap_or(0);
                }
                "id" => call.id = text(&mut map)?,
                "type" => call.r#type = text(&mut map)?,
                "function" => match map.next_value::<Value>()? {
                    Value::Object(mut function) => {
                        for (name, field) in
                            [("name", &mut call.name), ("arguments", &mut call.arguments)]
                        {
                            match function.shift_remove(name) {
                                Some(Value::String(text)) => *field = text,
                                None | Some(Value::Null) => {}
                                Some(_) => return Err(unusual()),
                            }
                        }
                        if !function.is_empty() {
                            extra.put(key.into_owned(), &Value::Object(function));
                        }
                    }
                    Value::Null => {}
                    _ => return Err(unusual()),
                },
                _ => extra.read(key, &mut map)?,
            }
        }
        call.extra = extra.into_struct();
        if !indexed {
            self.unindexed.borrow_mut().push((self.choice, self.call));
        }
        Ok(call)
    }
}
