//! What the one-pass decoders (`chunk_fast.rs`, `answer_fast.rs`) share:
//! reading a member of an expected type or giving up, the carrier that
//! members land in as they are read, lists, the members an answer and a
//! stream event have in common, and those every choice has.

use super::answer::usage_proto;
use super::logprobs::logprobs_from_json;
use super::structs::{ProtoValueSeed, json_to_struct, json_to_value};
use crate::model::Usage;
use crate::proto::v1 as pb;
use prost_types::value::Kind;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// Gives up on the one-pass path (the caller converts through a value).
pub(super) fn unusual<E: de::Error>() -> E {
    E::custom("an unusual shape")
}

/// The next member name, borrowed from the input unless it has escapes
/// (serde's own `Cow<str>` always copies: an allocation per member).
pub(super) fn next_key<'de, A: MapAccess<'de>>(
    map: &mut A,
) -> Result<Option<Cow<'de, str>>, A::Error> {
    map.next_key_seed(BorrowedStr)
}

/// A string read without a copy where the input allows.
struct BorrowedStr;

impl<'de> DeserializeSeed<'de> for BorrowedStr {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for BorrowedStr {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_owned()))
    }
    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text))
    }
}

/// A string or `null` (empty); `Err` (give up) for anything else.
pub(super) fn text<'de, A: MapAccess<'de>>(map: &mut A) -> Result<String, A::Error> {
    Ok(map
        .next_value::<Option<String>>()
        .map_err(|_: A::Error| unusual::<A::Error>())?
        .unwrap_or_default())
}

/// A string or `null` (empty) written into `target`, which keeps its
/// capacity (a message used again); `Err` (give up) for anything else.
pub(super) fn text_into<'de, A: MapAccess<'de>>(
    map: &mut A,
    target: &mut String,
) -> Result<(), A::Error> {
    target.clear();
    map.next_value_seed(TextInto(target))
        .map_err(|_: A::Error| unusual::<A::Error>())
}

struct TextInto<'t>(&'t mut String);

impl<'de> DeserializeSeed<'de> for TextInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        self.0.push_str(text);
        Ok(())
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

/// A string or `null`, kept as sent (it may go to a carrier).
pub(super) fn text_value<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Value, A::Error> {
    match map.next_value::<Value>()? {
        value @ (Value::String(_) | Value::Null) => Ok(value),
        _ => Err(unusual()),
    }
}

/// `reasoning_content`, else OpenRouter's `reasoning`; a second spelling
/// stays in the carrier. (In place: [`reasoning_into`].)
pub(super) fn reasoning(content: String, reasoning: Option<Value>, extra: &mut Carrier) -> String {
    if content.is_empty() {
        match reasoning {
            Some(Value::String(text)) => text,
            _ => String::new(),
        }
    } else {
        if let Some(reasoning) = reasoning {
            extra.put("reasoning", &reasoning);
        }
        content
    }
}

/// [`reasoning`] for a `content` already in the message.
pub(super) fn reasoning_into(content: &mut String, reasoning: Option<Value>, extra: &mut Carrier) {
    if content.is_empty() {
        if let Some(Value::String(text)) = reasoning {
            *content = text;
        }
    } else if let Some(reasoning) = reasoning {
        extra.put("reasoning", &reasoning);
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

/// A list, or `null` (empty), each item read by the seed `make` gives for
/// its position.
pub(super) struct ListSeed<F, S> {
    make: F,
    item: PhantomData<S>,
}

impl<F, S> ListSeed<F, S> {
    pub(super) fn new(make: F) -> Self {
        ListSeed {
            make,
            item: PhantomData,
        }
    }
}

impl<'de, F, S> DeserializeSeed<'de> for ListSeed<F, S>
where
    F: FnMut(usize) -> S,
    S: DeserializeSeed<'de>,
{
    type Value = Vec<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, F, S> Visitor<'de> for ListSeed<F, S>
where
    F: FnMut(usize) -> S,
    S: DeserializeSeed<'de>,
{
    type Value = Vec<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Most lists here hold one item (a choice, a tool call).
        let mut items = Vec::with_capacity(1);
        while let Some(item) = seq.next_element_seed((self.make)(items.len()))? {
            items.push(item);
        }
        Ok(items)
    }
}

/// Where the typed token counts come from.
pub(super) enum Counts {
    /// The sidecar's JSON view read them, in any spelling (Groq's
    /// `x_groq.usage` included).
    Given(Option<Usage>),
    /// Read here from `usage`; a message with `x_groq` or `error` is left
    /// to the view.
    Read,
}

/// The members an answer and a stream event share; the rest of the top
/// level goes to `extra`.
#[derive(Default)]
pub(super) struct Envelope {
    pub id: String,
    pub model: String,
    pub system_fingerprint: String,
    pub service_tier: String,
    pub created: i64,
    raw_usage: Option<prost_types::Struct>,
    pub extra: Carrier,
}

impl Envelope {
    /// An envelope that reads into these strings (a message's, used again),
    /// emptied here; [`Envelope::id`] and its siblings hand them back.
    pub(super) fn reusing(
        mut id: String,
        mut model: String,
        mut system_fingerprint: String,
        mut service_tier: String,
    ) -> Envelope {
        for text in [
            &mut id,
            &mut model,
            &mut system_fingerprint,
            &mut service_tier,
        ] {
            text.clear();
        }
        Envelope {
            id,
            model,
            system_fingerprint,
            service_tier,
            ..Envelope::default()
        }
    }

    /// Reads one top-level member; `object` is the value the message type
    /// implies (any other stays in `extra`).
    pub(super) fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: Cow<'de, str>,
        map: &mut A,
        object: &str,
    ) -> Result<(), A::Error> {
        match key.as_ref() {
            "id" => text_into(map, &mut self.id)?,
            "model" => text_into(map, &mut self.model)?,
            "system_fingerprint" => text_into(map, &mut self.system_fingerprint)?,
            "service_tier" => text_into(map, &mut self.service_tier)?,
            "created" => self.created = whole(map)?.unwrap_or(0),
            // Compared as written: the usual value costs no allocation.
            "object" => {
                let raw = map.next_value::<&'de RawValue>()?;
                let implied = raw
                    .get()
                    .strip_prefix('"')
                    .and_then(|rest| rest.strip_suffix('"'));
                if implied != Some(object) {
                    let other = serde_json::from_str::<Value>(raw.get())
                        .map_err(|_| unusual::<A::Error>())?;
                    if other.as_str() != Some(object) {
                        self.extra.put(key.into_owned(), &other);
                    }
                }
            }
            "usage" => match map.next_value_seed(ProtoValueSeed)?.kind {
                Some(Kind::StructValue(raw)) => self.raw_usage = Some(raw),
                Some(Kind::NullValue(_)) => self.raw_usage = None,
                _ => return Err(unusual()),
            },
            _ => self.extra.read(key, map)?,
        }
        Ok(())
    }

    /// Keeps a `usage` member read as raw JSON (`null`: none), as sent.
    pub(super) fn read_usage<E: de::Error>(&mut self, raw: &RawValue) -> Result<(), E> {
        let mut deserializer = serde_json::Deserializer::from_str(raw.get());
        match ProtoValueSeed
            .deserialize(&mut deserializer)
            .map_err(|_| unusual::<E>())?
            .kind
        {
            Some(Kind::StructValue(raw)) => self.raw_usage = Some(raw),
            Some(Kind::NullValue(_)) => self.raw_usage = None,
            _ => return Err(unusual()),
        }
        Ok(())
    }

    /// The typed usage (`usage` is what the stream reader read, in any
    /// spelling), with the object as sent.
    pub(super) fn usage(&mut self, usage: Option<Usage>) -> Option<pb::Usage> {
        let raw = self.raw_usage.take();
        (raw.is_some() || usage.is_some()).then(|| usage_proto(usage, raw))
    }
}

/// The members every choice has; the rest of it goes to `extra`.
#[derive(Default)]
pub(super) struct ChoiceCommon {
    index: Option<u32>,
    pub finish_reason: String,
    pub logprobs: Option<pb::Logprobs>,
    pub extra: Carrier,
}

impl ChoiceCommon {
    /// Reads the finish reason into `finish_reason` (a message's, used
    /// again), emptied here.
    pub(super) fn reusing(mut finish_reason: String) -> ChoiceCommon {
        finish_reason.clear();
        ChoiceCommon {
            finish_reason,
            ..ChoiceCommon::default()
        }
    }

    pub(super) fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: Cow<'de, str>,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match key.as_ref() {
            "index" => {
                self.index = whole(map)?
                    .map(|index| u32::try_from(index).map_err(|_| unusual()))
                    .transpose()?;
            }
            "finish_reason" => text_into(map, &mut self.finish_reason)?,
            "logprobs" => match map.next_value::<Value>()? {
                Value::Null => {}
                value => match logprobs_from_json(&value) {
                    Some(logprobs) => self.logprobs = Some(logprobs),
                    None => self.extra.put(key.into_owned(), &value),
                },
            },
            _ => self.extra.read(key, map)?,
        }
        Ok(())
    }

    /// The choice's `index`, or its place in the list when it has none.
    pub(super) fn index(&self, position: usize) -> u32 {
        self.index
            .unwrap_or(u32::try_from(position).unwrap_or(u32::MAX))
    }
}
