//! The unary path of the gRPC edge: a whole answer decoded straight into
//! protobuf in one pass, as [`super::chunk_fast`] does for stream events,
//! building a JSON value only for what goes into a carrier. Decoding the
//! answer into a JSON value first cost about twenty times reading it.
//!
//! It handles the shapes providers send; at anything else it gives up and
//! [`super::answer`] converts the answer through a JSON value, with the
//! same result where both apply (a test holds the two to that).

use super::answer::usage_proto;
use super::chunk_fast::{Carrier, carrier, text, unusual, whole};
use super::logprobs::logprobs_from_json;
use super::structs::ProtoValueSeed;
use crate::model::Usage;
use crate::proto::v1 as pb;
use prost_types::value::Kind;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// The answer as protobuf, or `None` when it is not of the usual shape.
pub fn response_to_proto_fast(
    json: &[u8],
    usage: Option<Usage>,
    provider: &str,
) -> Option<pb::ChatResponse> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let mut response = ResponseSeed { usage }.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    response.provider = provider.to_owned();
    Some(response)
}

struct ResponseSeed {
    usage: Option<Usage>,
}

impl<'de> DeserializeSeed<'de> for ResponseSeed {
    type Value = pb::ChatResponse;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ResponseSeed {
    type Value = pb::ChatResponse;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a chat.completion object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut response = pb::ChatResponse::default();
        let mut extra = Carrier::default();
        let mut raw_usage = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "id" => response.id = text(&mut map)?,
                "model" => response.model = text(&mut map)?,
                "system_fingerprint" => response.system_fingerprint = text(&mut map)?,
                "service_tier" => response.service_tier = text(&mut map)?,
                "created" => response.created = whole(&mut map)?.unwrap_or(0),
                "object" => match map.next_value::<Value>()? {
                    Value::String(kind) if kind == "chat.completion" => {}
                    other => {
                        extra.put(key.into_owned(), &other);
                    }
                },
                "choices" => response.choices = map.next_value_seed(Choices)?,
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
            response.usage = Some(usage_proto(self.usage, raw_usage));
        }
        response.extra = extra.into_struct();
        Ok(response)
    }
}

/// `choices`: a list of choice objects, or `null`.
struct Choices;

impl<'de> DeserializeSeed<'de> for Choices {
    type Value = Vec<pb::Choice>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Choices {
    type Value = Vec<pb::Choice>;
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
    type Value = pb::Choice;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChoiceSeed {
    type Value = pb::Choice;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a choice object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut choice = pb::Choice::default();
        let mut index = None;
        let mut extra = Carrier::default();
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
                "message" => map.next_value_seed(MessageSeed {
                    choice: &mut choice,
                })?,
                _ => {
                    extra.read(key, &mut map)?;
                }
            }
        }
        choice.index = index.unwrap_or(u32::try_from(self.position).unwrap_or(u32::MAX));
        choice.extra = extra.into_struct();
        Ok(choice)
    }
}

/// `message`: fills the choice's message fields.
struct MessageSeed<'c> {
    choice: &'c mut pb::Choice,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let choice = self.choice;
        let mut extra = Carrier::default();
        let mut reasoning = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "role" => match map.next_value::<Value>()? {
                    Value::String(role) if role == "assistant" => {}
                    other => {
                        extra.put(key.into_owned(), &other);
                    }
                },
                "content" => match map.next_value::<Value>()? {
                    Value::String(content) => choice.content = Some(content),
                    Value::Null => {}
                    _ => return Err(unusual()),
                },
                "refusal" => choice.refusal = text(&mut map)?,
                "reasoning_content" => choice.reasoning_content = text(&mut map)?,
                "reasoning" => match map.next_value::<Value>()? {
                    value @ (Value::String(_) | Value::Null) => reasoning = Some(value),
                    _ => return Err(unusual()),
                },
                "tool_calls" => choice.tool_calls = map.next_value_seed(ToolCalls)?,
                _ => {
                    extra.read(key, &mut map)?;
                }
            }
        }
        // `reasoning_content`, else OpenRouter's `reasoning`; a second
        // spelling stays in the carrier.
        if choice.reasoning_content.is_empty() {
            if let Some(Value::String(text)) = reasoning {
                choice.reasoning_content = text;
            }
        } else if let Some(reasoning) = reasoning {
            extra.put("reasoning", &reasoning);
        }
        choice.message_extra = extra.into_struct();
        Ok(())
    }
}

/// `tool_calls`: a list of calls, or `null`.
struct ToolCalls;

impl<'de> DeserializeSeed<'de> for ToolCalls {
    type Value = Vec<pb::ToolCall>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ToolCalls {
    type Value = Vec<pb::ToolCall>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of tool calls")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut calls = Vec::new();
        while let Some(call) = seq.next_element::<Value>()? {
            let Value::Object(mut fields) = call else {
                return Err(unusual());
            };
            let mut take = |key: &str| match fields.shift_remove(key) {
                Some(Value::String(text)) => Ok(text),
                None | Some(Value::Null) => Ok(String::new()),
                Some(_) => Err(unusual::<A::Error>()),
            };
            let id = take("id")?;
            let kind = take("type")?;
            let mut function = match fields.shift_remove("function") {
                Some(Value::Object(function)) => function,
                None | Some(Value::Null) => Map::new(),
                Some(_) => return Err(unusual()),
            };
            let mut take = |key: &str| match function.shift_remove(key) {
                Some(Value::String(text)) => Ok(text),
                None | Some(Value::Null) => Ok(String::new()),
                Some(_) => Err(unusual::<A::Error>()),
            };
            let name = take("name")?;
            let arguments = take("arguments")?;
            if !function.is_empty() {
                fields.insert("function".to_owned(), Value::Object(function));
            }
            calls.push(pb::ToolCall {
                id,
                r#type: kind,
                function: Some(pb::FunctionCall { name, arguments }),
                extra: carrier(fields),
            });
        }
        Ok(calls)
    }
}
