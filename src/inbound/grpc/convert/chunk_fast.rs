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
    Carrier, ChoiceCommon, Envelope, ListSeed, next_key, reasoning, text, text_value, unusual,
    whole,
};
use crate::model::Usage;
use crate::proto::v1 as pb;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// The event as protobuf, or `None` when it is not of the usual shape.
pub fn chunk_to_proto_fast(
    json: &[u8],
    usage: Option<Usage>,
    provider: &str,
) -> Option<pb::ChatChunk> {
    // One UTF-8 check for the whole text, rather than one per string.
    let text = std::str::from_utf8(json).ok()?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let mut chunk = ChunkSeed { usage }.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    chunk.provider = provider.to_owned();
    Some(chunk)
}

struct ChunkSeed {
    usage: Option<Usage>,
}

impl<'de> DeserializeSeed<'de> for ChunkSeed {
    type Value = pb::ChatChunk;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChunkSeed {
    type Value = pb::ChatChunk;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a chat.completion.chunk object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut envelope = Envelope::default();
        let mut choices = Vec::new();
        while let Some(key) = next_key(&mut map)? {
            match key.as_ref() {
                "choices" => {
                    choices =
                        map.next_value_seed(ListSeed::new(|position| ChoiceSeed { position }))?;
                }
                _ => envelope.read(key, &mut map, "chat.completion.chunk")?,
            }
        }
        Ok(pb::ChatChunk {
            usage: envelope.usage(self.usage),
            id: envelope.id,
            model: envelope.model,
            provider: String::new(),
            created: envelope.created,
            choices,
            system_fingerprint: envelope.system_fingerprint,
            service_tier: envelope.service_tier,
            extra: envelope.extra.into_struct(),
        })
    }
}

struct ChoiceSeed {
    position: usize,
}

impl<'de> DeserializeSeed<'de> for ChoiceSeed {
    type Value = pb::ChoiceDelta;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChoiceSeed {
    type Value = pb::ChoiceDelta;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a choice object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut common = ChoiceCommon::default();
        let mut delta = Delta::default();
        while let Some(key) = next_key(&mut map)? {
            match key.as_ref() {
                "delta" => delta = map.next_value_seed(DeltaSeed)?,
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

struct DeltaSeed;

impl<'de> DeserializeSeed<'de> for DeltaSeed {
    type Value = Delta;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DeltaSeed {
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
                    delta.tool_calls = map.next_value_seed(ListSeed::new(|_| ToolCallSeed))?;
                }
                _ => delta.extra.read(key, &mut map)?,
            }
        }
        Ok(delta)
    }
}

struct ToolCallSeed;

impl<'de> DeserializeSeed<'de> for ToolCallSeed {
    type Value = pb::ToolCallDelta;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ToolCallSeed {
    type Value = pb::ToolCallDelta;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tool call object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut call = pb::ToolCallDelta::default();
        let mut extra = Carrier::default();
        while let Some(key) = next_key(&mut map)? {
            match key.as_ref() {
                "index" => {
                    call.index = whole(&mut map)?
                        .map(|index| u32::try_from(index).map_err(|_| unusual()))
                        .transpose()?
                        .unwrap_or(0);
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
        Ok(call)
    }
}
