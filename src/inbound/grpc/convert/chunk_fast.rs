//! The per-chunk path of the gRPC edge: a stream event decoded straight
//! into protobuf, in one pass over its bytes, building a JSON value only for
//! the members that go into a carrier.
//!
//! It handles the shapes providers send (members of the expected types, or
//! `null`); at anything else it gives up and [`super::answer`] converts the
//! event through a full JSON value, with the same result where both apply
//! (a test holds the two to that). Decoding every event into a JSON value
//! first cost several times the rest of a chunk's path: a map and a string
//! per member.

use super::answer::usage_proto;
use super::logprobs::logprobs_from_json;
use super::structs::{ProtoValueSeed, json_to_struct, json_to_value};
use crate::model::Usage;
use crate::proto::v1 as pb;
use prost_types::value::Kind;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// The event as protobuf, or `None` when it is not of the usual shape.
pub fn chunk_to_proto_fast(
    json: &[u8],
    usage: Option<Usage>,
    provider: &str,
) -> Option<pb::ChatChunk> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let mut chunk = ChunkSeed { usage }.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    chunk.provider = provider.to_owned();
    Some(chunk)
}

/// Gives up on the fast path (the caller converts the slow way).
pub(super) fn unusual<E: de::Error>() -> E {
    E::custom("an unusual shape")
}

/// A string or `null` (empty); `Err` (give up) for anything else.
pub(super) fn text<'de, A: MapAccess<'de>>(map: &mut A) -> Result<String, A::Error> {
    match map.next_value::<Value>()? {
        Value::String(text) => Ok(text),
        Value::Null => Ok(String::new()),
        _ => Err(unusual()),
    }
}

/// An integer that fits, or `None` for `null`; `Err` for anything else.
pub(super) fn whole<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<i64>, A::Error> {
    match map.next_value::<Value>()? {
        Value::Null => Ok(None),
        Value::Number(number) => number.as_i64().map(Some).ok_or_else(unusual),
        _ => Err(unusual()),
    }
}

pub(super) fn carrier(fields: Map<String, Value>) -> Option<prost_types::Struct> {
    (!fields.is_empty()).then(|| json_to_struct(&fields))
}

/// Members bound for a carrier, converted to protobuf as they are read.
#[derive(Default)]
pub(super) struct Carrier(BTreeMap<String, prost_types::Value>);

impl Carrier {
    /// The map's next value, read straight into the carrier under `key`.
    pub(super) fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: Cow<'de, str>,
        map: &mut A,
    ) -> Result<(), A::Error> {
        let value = map.next_value_seed(ProtoValueSeed)?;
        self.0.insert(key.into_owned(), value);
        Ok(())
    }

    /// A member already read as JSON.
    pub(super) fn put(&mut self, key: impl Into<String>, value: &Value) {
        self.0.insert(key.into(), json_to_value(value));
    }

    pub(super) fn into_struct(self) -> Option<prost_types::Struct> {
        (!self.0.is_empty()).then_some(prost_types::Struct { fields: self.0 })
    }
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
        let mut chunk = pb::ChatChunk::default();
        let mut extra = Carrier::default();
        let mut raw_usage = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "id" => chunk.id = text(&mut map)?,
                "model" => chunk.model = text(&mut map)?,
                "system_fingerprint" => chunk.system_fingerprint = text(&mut map)?,
                "service_tier" => chunk.service_tier = text(&mut map)?,
                "created" => chunk.created = whole(&mut map)?.unwrap_or(0),
                "object" => match map.next_value::<Value>()? {
                    Value::String(kind) if kind == "chat.completion.chunk" => {}
                    other => {
                        extra.put(key.into_owned(), &other);
                    }
                },
                "choices" => chunk.choices = map.next_value_seed(Choices)?,
                "usage" => match map.next_value_seed(ProtoValueSeed)?.kind {
                    Some(Kind::StructValue(raw)) => raw_usage = Some(raw),
                    Some(Kind::NullValue(_)) => {}
                    _ => return Err(unusual()),
                },
                _ => {
                    extra.read(key, &mut map)?;
                }
            }
        }
        if raw_usage.is_some() || self.usage.is_some() {
            chunk.usage = Some(usage_proto(self.usage, raw_usage));
        }
        chunk.extra = extra.into_struct();
        Ok(chunk)
    }
}

/// `choices`: a list of choice objects, or `null`.
struct Choices;

impl<'de> DeserializeSeed<'de> for Choices {
    type Value = Vec<pb::ChoiceDelta>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Choices {
    type Value = Vec<pb::ChoiceDelta>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of choices")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut choices = Vec::new();
        while let Some(choice) = seq.next_element_seed(ChoiceSeed {
            position: choices.len(),
        })? {
            choices.push(choice);
        }
        Ok(choices)
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
        let mut choice = pb::ChoiceDelta::default();
        let mut index = None;
        let mut extra = Carrier::default();
        let mut delta = Delta::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "index" => {
                    index = whole(&mut map)?
                        .map(|index| u32::try_from(index).map_err(|_| unusual()))
                        .transpose()?;
                }
                "finish_reason" => choice.finish_reason = text(&mut map)?,
                "logprobs" => match map.next_value::<Value>()? {
                    Value::Null => {}
                    value => match logprobs_from_json(&value) {
                        Some(logprobs) => choice.logprobs = Some(logprobs),
                        None => {
                            extra.put(key.into_owned(), &value);
                        }
                    },
                },
                "delta" => delta = map.next_value_seed(DeltaSeed)?,
                _ => {
                    extra.read(key, &mut map)?;
                }
            }
        }
        choice.index = index.unwrap_or(u32::try_from(self.position).unwrap_or(u32::MAX));
        choice.role = delta.role;
        choice.content = delta.content;
        choice.refusal = delta.refusal;
        let mut delta_extra = delta.extra;
        // `reasoning_content`, else OpenRouter's `reasoning`; a second
        // spelling stays in the carrier.
        choice.reasoning_content = if delta.reasoning_content.is_empty() {
            match delta.reasoning {
                Some(Value::String(text)) => text,
                _ => String::new(),
            }
        } else {
            if let Some(reasoning) = delta.reasoning {
                delta_extra.put("reasoning", &reasoning);
            }
            delta.reasoning_content
        };
        choice.tool_calls = delta.tool_calls;
        choice.delta_extra = delta_extra.into_struct();
        choice.extra = extra.into_struct();
        Ok(choice)
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
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "role" => delta.role = text(&mut map)?,
                "content" => delta.content = text(&mut map)?,
                "refusal" => delta.refusal = text(&mut map)?,
                "reasoning_content" => delta.reasoning_content = text(&mut map)?,
                "reasoning" => match map.next_value::<Value>()? {
                    value @ (Value::String(_) | Value::Null) => delta.reasoning = Some(value),
                    _ => return Err(unusual()),
                },
                "tool_calls" => delta.tool_calls = map.next_value_seed(ToolCalls)?,
                _ => {
                    delta.extra.read(key, &mut map)?;
                }
            }
        }
        Ok(delta)
    }
}

/// `tool_calls`: a list of pieces, or `null`.
struct ToolCalls;

impl<'de> DeserializeSeed<'de> for ToolCalls {
    type Value = Vec<pb::ToolCallDelta>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ToolCalls {
    type Value = Vec<pb::ToolCallDelta>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of tool calls")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut calls = Vec::new();
        while let Some(call) = seq.next_element_seed(ToolCallSeed)? {
            calls.push(call);
        }
        Ok(calls)
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
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
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
                _ => {
                    extra.read(key, &mut map)?;
                }
            }
        }
        call.extra = extra.into_struct();
        Ok(call)
    }
}
