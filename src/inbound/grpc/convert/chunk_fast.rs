//! The per-chunk path of the gRPC edge: a stream event decoded straight
//! into protobuf, in one pass over its bytes, building a value only for the
//! members that go into a carrier (the shared pieces are in `one_pass.rs`).
//! It decodes into a message used before (`recycle.rs`), each string and
//! list written in place, so a usual event allocates nothing.
//!
//! It handles the shapes providers send (members of the expected types, or
//! `null`); at anything else it gives up and [`super::answer`] converts the
//! event through a full JSON value, with the same result where both apply
//! (a test holds the two to that). Decoding every event into a JSON value
//! first cost several times the rest of a chunk's path: a map and a string
//! per member.

use super::one_pass::{
    Carrier, ChoiceCommon, Counts, Envelope, next_key, reasoning_into, text_into, text_value,
    unusual, whole,
};
use crate::inbound::grpc::recycle;
use crate::model::{ProtoChunk, Usage};
use crate::proto::v1 as pb;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
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
    let (mut chunk, _) = decode(text, Counts::Given(usage), &unindexed)?;
    chunk.provider = provider.to_owned();
    Some(*chunk)
}

/// The event read in one pass, for the stream reader to judge (a
/// [`crate::model::ProtoChunkDecoder`]). Gives up (`None`) on an event the
/// reader must see through its JSON view: an in-band `error` member, Groq's
/// `x_groq` (a stream's usage arrives in it), or any unusual shape.
pub fn decode_chunk(text: &str) -> Option<ProtoChunk> {
    let unindexed = RefCell::default();
    let (message, usage) = decode(text, Counts::Read, &unindexed)?;
    Some(ProtoChunk {
        message,
        unindexed: unindexed.into_inner(),
        usage,
    })
}

/// `(choice position, tool-call position)` of the pieces without an index.
type Unindexed = RefCell<Vec<(usize, usize)>>;

fn decode(
    text: &str,
    counts: Counts,
    unindexed: &Unindexed,
) -> Option<(Box<pb::ChatChunk>, Option<Usage>)> {
    let mut message = recycle::message();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = ChunkSeed {
        message: &mut message,
        counts,
        unindexed,
    };
    match seed
        .deserialize(&mut deserializer)
        .and_then(|usage| deserializer.end().map(|()| usage))
    {
        Ok(usage) => Some((message, usage)),
        Err(_) => {
            recycle::give_back_boxed(message);
            None
        }
    }
}

/// Reads the event into `message`; its value is the usage counts.
struct ChunkSeed<'m, 'u> {
    message: &'m mut pb::ChatChunk,
    counts: Counts,
    unindexed: &'u Unindexed,
}

impl<'de> DeserializeSeed<'de> for ChunkSeed<'_, '_> {
    type Value = Option<Usage>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChunkSeed<'_, '_> {
    type Value = Option<Usage>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a chat.completion.chunk object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let message = self.message;
        let mut envelope = Envelope::reusing(
            std::mem::take(&mut message.id),
            std::mem::take(&mut message.model),
            std::mem::take(&mut message.system_fingerprint),
            std::mem::take(&mut message.service_tier),
        );
        let mut choices = 0;
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
                    choices = map.next_value_seed(ChoicesSeed {
                        choices: &mut message.choices,
                        unindexed,
                    })?;
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
        message.choices.truncate(choices);
        message.usage = envelope.usage(usage);
        message.id = envelope.id;
        message.model = envelope.model;
        message.created = envelope.created;
        message.system_fingerprint = envelope.system_fingerprint;
        message.service_tier = envelope.service_tier;
        message.extra = envelope.extra.into_struct();
        Ok(usage)
    }
}

/// The `choices` list (or `null`), read into the message's own list; its
/// value is how many choices were read (the caller truncates to that).
struct ChoicesSeed<'c, 'u> {
    choices: &'c mut Vec<pb::ChoiceDelta>,
    unindexed: &'u Unindexed,
}

impl<'de> DeserializeSeed<'de> for ChoicesSeed<'_, '_> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChoicesSeed<'_, '_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_unit<E: de::Error>(self) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut position = 0;
        while seq
            .next_element_seed(ChoiceSeed {
                choices: &mut *self.choices,
                position,
                unindexed: self.unindexed,
            })?
            .is_some()
        {
            position += 1;
        }
        Ok(position)
    }
}

/// The choice at `position`, read into the list's slot there (taken only
/// once the list has an item there).
struct ChoiceSeed<'c, 'u> {
    choices: &'c mut Vec<pb::ChoiceDelta>,
    position: usize,
    unindexed: &'u Unindexed,
}

impl<'de> DeserializeSeed<'de> for ChoiceSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChoiceSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a choice object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let choice = recycle::choice_slot(self.choices, self.position);
        let mut common = ChoiceCommon::reusing(std::mem::take(&mut choice.finish_reason));
        let mut delta = DeltaRest::default();
        while let Some(key) = next_key(&mut map)? {
            match key.as_ref() {
                "delta" => {
                    let position = self.position;
                    // A delta given twice: only the last one's pieces count.
                    self.unindexed
                        .borrow_mut()
                        .retain(|&(seen, _)| seen != position);
                    recycle::empty_delta(choice);
                    delta = map.next_value_seed(DeltaSeed {
                        choice: &mut *choice,
                        position,
                        unindexed: self.unindexed,
                    })?;
                }
                _ => common.read(key, &mut map)?,
            }
        }
        // The tool calls past those this choice's delta gave are an earlier
        // event's (or an earlier `delta` member's).
        choice.tool_calls.truncate(delta.tool_calls);
        let mut delta_extra = delta.extra;
        reasoning_into(
            &mut choice.reasoning_content,
            delta.reasoning,
            &mut delta_extra,
        );
        choice.index = common.index(self.position);
        choice.logprobs = common.logprobs.take();
        choice.delta_extra = delta_extra.into_struct();
        choice.extra = std::mem::take(&mut common.extra).into_struct();
        choice.finish_reason = common.finish_reason;
        Ok(())
    }
}

/// What a delta leaves beside the choice's typed fields.
#[derive(Default)]
struct DeltaRest {
    /// OpenRouter's `reasoning` as sent (a string or `null`), since it may
    /// go to the carrier.
    reasoning: Option<Value>,
    /// Tool-call pieces read into the choice's list.
    tool_calls: usize,
    extra: Carrier,
}

/// A choice's delta, read into the choice; its tool-call pieces without an
/// `index` are noted in `unindexed` under the choice's position.
struct DeltaSeed<'c, 'u> {
    choice: &'c mut pb::ChoiceDelta,
    position: usize,
    unindexed: &'u Unindexed,
}

impl<'de> DeserializeSeed<'de> for DeltaSeed<'_, '_> {
    type Value = DeltaRest;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<DeltaRest, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DeltaSeed<'_, '_> {
    type Value = DeltaRest;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a delta object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<DeltaRest, E> {
        Ok(DeltaRest::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DeltaRest, A::Error> {
        let choice = self.choice;
        let mut rest = DeltaRest::default();
        while let Some(key) = next_key(&mut map)? {
            match key.as_ref() {
                "role" => text_into(&mut map, &mut choice.role)?,
                "content" => text_into(&mut map, &mut choice.content)?,
                "refusal" => text_into(&mut map, &mut choice.refusal)?,
                "reasoning_content" => text_into(&mut map, &mut choice.reasoning_content)?,
                "reasoning" => rest.reasoning = Some(text_value(&mut map)?),
                "tool_calls" => {
                    let position = self.position;
                    self.unindexed
                        .borrow_mut()
                        .retain(|&(seen, _)| seen != position);
                    rest.tool_calls = map.next_value_seed(ToolCallsSeed {
                        calls: &mut choice.tool_calls,
                        choice: position,
                        unindexed: self.unindexed,
                    })?;
                }
                _ => rest.extra.read(key, &mut map)?,
            }
        }
        Ok(rest)
    }
}

/// A delta's `tool_calls` (or `null`), read into the choice's own list;
/// its value is how many pieces were read.
struct ToolCallsSeed<'c, 'u> {
    calls: &'c mut Vec<pb::ToolCallDelta>,
    choice: usize,
    unindexed: &'u Unindexed,
}

impl<'de> DeserializeSeed<'de> for ToolCallsSeed<'_, '_> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ToolCallsSeed<'_, '_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_unit<E: de::Error>(self) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut position = 0;
        while seq
            .next_element_seed(ToolCallSeed {
                calls: &mut *self.calls,
                choice: self.choice,
                call: position,
                unindexed: self.unindexed,
            })?
            .is_some()
        {
            position += 1;
        }
        Ok(position)
    }
}

/// A tool-call piece at `(choice, call)`, read into the list's slot there;
/// one without an `index` is noted in `unindexed`.
struct ToolCallSeed<'c, 'u> {
    calls: &'c mut Vec<pb::ToolCallDelta>,
    choice: usize,
    call: usize,
    unindexed: &'u Unindexed,
}

impl<'de> DeserializeSeed<'de> for ToolCallSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ToolCallSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tool call object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let call = recycle::tool_call_slot(self.calls, self.call);
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
                "id" => text_into(&mut map, &mut call.id)?,
                "type" => text_into(&mut map, &mut call.r#type)?,
                "function" => {
                    let rest = map.next_value_seed(FunctionSeed {
                        name: &mut call.name,
                        arguments: &mut call.arguments,
                    })?;
                    if !rest.is_empty() {
                        extra.put(key.into_owned(), &Value::Object(rest));
                    }
                }
                _ => extra.read(key, &mut map)?,
            }
        }
        call.extra = extra.into_struct();
        if !indexed {
            self.unindexed.borrow_mut().push((self.choice, self.call));
        }
        Ok(())
    }
}

/// A tool call's `function` (or `null`): `name` and `arguments` into the
/// call; its value is any other member, for the carrier.
struct FunctionSeed<'c> {
    name: &'c mut String,
    arguments: &'c mut String,
}

impl<'de> DeserializeSeed<'de> for FunctionSeed<'_> {
    type Value = Map<String, Value>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FunctionSeed<'_> {
    type Value = Map<String, Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a function object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Map::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut rest = Map::new();
        while let Some(key) = next_key(&mut map)? {
            match key.as_ref() {
                "name" => text_into(&mut map, self.name)?,
                "arguments" => text_into(&mut map, self.arguments)?,
                _ => {
                    let value = map.next_value::<Value>()?;
                    rest.insert(key.into_owned(), value);
                }
            }
        }
        Ok(rest)
    }
}
