//! The unary path of the gRPC edge: a whole answer decoded straight into
//! protobuf in one pass, as [`super::chunk_fast`] does for stream events
//! (the shared pieces are in `one_pass.rs`), building a value only for what
//! goes into a carrier. Decoding the answer into a JSON value first cost
//! about twenty times reading it.
//!
//! It handles the shapes providers send; at anything else it gives up and
//! [`super::answer`] converts the answer through a JSON value, with the
//! same result where both apply (a test holds the two to that).

use super::one_pass::{
    Carrier, ChoiceCommon, Counts, Envelope, ListSeed, carrier, next_key, reasoning, text,
    text_value, unusual,
};
use crate::model::{ProtoAnswer, Usage};
use crate::proto::v1 as pb;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;
use std::marker::PhantomData;

/// The answer as protobuf, or `None` when it is not of the usual shape.
/// `usage` is what the sidecar's view read (in any spelling).
pub fn response_to_proto_fast(
    json: &[u8],
    usage: Option<Usage>,
    provider: &str,
) -> Option<pb::ChatResponse> {
    // One UTF-8 check for the whole text, rather than one per string.
    let text = std::str::from_utf8(json).ok()?;
    let (mut response, _) = decode(text, Counts::Given(usage))?;
    response.provider = provider.to_owned();
    Some(*response)
}

/// The answer read in one pass, for the sidecar to take its facts from (a
/// [`crate::model::ProtoAnswerDecoder`]). Gives up (`None`) on an answer
/// the sidecar must see through its JSON view: an in-band `error` member,
/// Groq's `x_groq` (usage may arrive in it), or any unusual shape.
pub fn decode_answer(text: &str) -> Option<ProtoAnswer> {
    let (message, usage) = decode(text, Counts::Read)?;
    Some(ProtoAnswer { message, usage })
}

fn decode(text: &str, counts: Counts) -> Option<(Box<pb::ChatResponse>, Option<Usage>)> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let decoded = ResponseSeed { counts }
        .deserialize(&mut deserializer)
        .ok()?;
    deserializer.end().ok()?;
    Some(decoded)
}

struct ResponseSeed {
    counts: Counts,
}

impl<'de> DeserializeSeed<'de> for ResponseSeed {
    type Value = (Box<pb::ChatResponse>, Option<Usage>);
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ResponseSeed {
    type Value = (Box<pb::ChatResponse>, Option<Usage>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a chat.completion object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut envelope = Envelope::default();
        let mut choices = Vec::new();
        let reading = matches!(self.counts, Counts::Read);
        let mut usage = match self.counts {
            Counts::Given(usage) => usage,
            Counts::Read => None,
        };
        while let Some(key) = next_key(&mut map)? {
            match key.as_ref() {
                "choices" => {
                    choices =
                        map.next_value_seed(ListSeed::new(|position| ChoiceSeed { position }))?;
                }
                "usage" if reading => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    usage = Usage::from_json_text(raw.get());
                    envelope.read_usage(raw)?;
                }
                "error" | "x_groq" if reading => return Err(unusual()),
                _ => envelope.read(key, &mut map, "chat.completion")?,
            }
        }
        // Boxed where it is built: the message is large and moves far.
        let response = Box::new(pb::ChatResponse {
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
        Ok((response, usage))
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
        let mut common = ChoiceCommon::default();
        let mut choice = pb::Choice::default();
        while let Some(key) = next_key(&mut map)? {
            match key.as_ref() {
                "message" => {
                    // A message given twice: only the last one counts, as
                    // when the answer is read as a JSON value.
                    choice.content = None;
                    choice.refusal.clear();
                    choice.reasoning_content.clear();
                    choice.tool_calls.clear();
                    choice.message_extra = None;
                    map.next_value_seed(MessageSeed {
                        choice: &mut choice,
                    })?;
                }
                _ => common.read(key, &mut map)?,
            }
        }
        choice.index = common.index(self.position);
        choice.finish_reason = common.finish_reason;
        choice.logprobs = common.logprobs;
        choice.extra = common.extra.into_struct();
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
        let mut reasoning_sent = None;
        let mut reasoning_content = String::new();
        while let Some(key) = next_key(&mut map)? {
            match key.as_ref() {
                "role" => match map.next_value::<Value>()? {
                    Value::String(role) if role == "assistant" => {}
                    other => extra.put(key.into_owned(), &other),
                },
                "content" => match map.next_value::<Value>()? {
                    Value::String(content) => choice.content = Some(content),
                    Value::Null => choice.content = None,
                    _ => return Err(unusual()),
                },
                "refusal" => choice.refusal = text(&mut map)?,
                "reasoning_content" => reasoning_content = text(&mut map)?,
                "reasoning" => reasoning_sent = Some(text_value(&mut map)?),
                "tool_calls" => {
                    let calls = map.next_value_seed(ListSeed::new(|_| PhantomData::<Value>))?;
                    choice.tool_calls = calls
                        .into_iter()
                        .map(tool_call)
                        .collect::<Option<_>>()
                        .ok_or_else(unusual)?;
                }
                _ => extra.read(key, &mut map)?,
            }
        }
        choice.reasoning_content = reasoning(reasoning_content, reasoning_sent, &mut extra);
        choice.message_extra = extra.into_struct();
        Ok(())
    }
}

/// A whole tool call, or `None` for an unusual shape.
fn tool_call(call: Value) -> Option<pb::ToolCall> {
    let Value::Object(mut fields) = call else {
        return None;
    };
    fn take(fields: &mut Map<String, Value>, key: &str) -> Option<String> {
        match fields.shift_remove(key) {
            Some(Value::String(text)) => Some(text),
            None | Some(Value::Null) => Some(String::new()),
            Some(_) => None,
        }
    }
    let id = take(&mut fields, "id")?;
    let kind = take(&mut fields, "type")?;
    let mut function = match fields.shift_remove("function") {
        Some(Value::Object(function)) => function,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return None,
    };
    let name = take(&mut function, "name")?;
    let arguments = take(&mut function, "arguments")?;
    if !function.is_empty() {
        fields.insert("function".to_owned(), Value::Object(function));
    }
    Some(pb::ToolCall {
        id,
        r#type: kind,
        function: Some(pb::FunctionCall { name, arguments }),
        extra: carrier(fields),
    })
}
