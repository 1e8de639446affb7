//! google.protobuf.Struct ⇄ JSON. Struct numbers are all doubles; integral
//! values go out as JSON integers so schemas such as `"maxItems": 3` reach
//! strict validators upstream as they were meant.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use serde_json::{Map, Number, Value as Json};

/// Largest integer a double represents exactly.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

pub fn struct_to_json(value: Struct) -> Json {
    Json::Object(
        value
            .fields
            .into_iter()
            .map(|(key, value)| (key, value_to_json(value)))
            .collect::<Map<_, _>>(),
    )
}

pub fn value_to_json(value: Value) -> Json {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(flag)) => Json::Bool(flag),
        Some(Kind::StringValue(text)) => Json::String(text),
        Some(Kind::NumberValue(number)) => number_to_json(number),
        Some(Kind::StructValue(inner)) => struct_to_json(inner),
        Some(Kind::ListValue(list)) => {
            Json::Array(list.values.into_iter().map(value_to_json).collect())
        }
    }
}

fn number_to_json(number: f64) -> Json {
    // -0.0 stays a float: as an integer it would lose its sign.
    let negative_zero = number == 0.0 && number.is_sign_negative();
    if number.fract() == 0.0 && number.abs() <= MAX_EXACT_INTEGER && !negative_zero {
        Json::Number(Number::from(number as i64))
    } else {
        Number::from_f64(number).map_or(Json::Null, Json::Number)
    }
}

pub fn json_to_struct(value: &Map<String, Json>) -> Struct {
    Struct {
        fields: value
            .iter()
            .map(|(key, value)| (key.clone(), json_to_value(value)))
            .collect(),
    }
}

pub fn json_to_value(value: &Json) -> Value {
    let kind = match value {
        Json::Null => Kind::NullValue(0),
        Json::Bool(flag) => Kind::BoolValue(*flag),
        Json::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or_default()),
        Json::String(text) => Kind::StringValue(text.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

/// Reads a JSON value straight into a `google.protobuf.Value`, with no
/// JSON value in between (numbers as doubles, as the Struct holds them).
pub struct ProtoValueSeed;

impl<'de> serde::de::DeserializeSeed<'de> for ProtoValueSeed {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ProtoValueVisitor)
    }
}

struct ProtoValueVisitor;

fn proto(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

impl<'de> serde::de::Visitor<'de> for ProtoValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, flag: bool) -> Result<Value, E> {
        Ok(proto(Kind::BoolValue(flag)))
    }
    fn visit_i64<E>(self, number: i64) -> Result<Value, E> {
        Ok(proto(Kind::NumberValue(number as f64)))
    }
    fn visit_u64<E>(self, number: u64) -> Result<Value, E> {
        Ok(proto(Kind::NumberValue(number as f64)))
    }
    fn visit_f64<E>(self, number: f64) -> Result<Value, E> {
        Ok(proto(Kind::NumberValue(number)))
    }
    fn visit_str<E>(self, text: &str) -> Result<Value, E> {
        Ok(proto(Kind::StringValue(text.to_owned())))
    }
    fn visit_string<E>(self, text: String) -> Result<Value, E> {
        Ok(proto(Kind::StringValue(text)))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(proto(Kind::NullValue(0)))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(proto(Kind::NullValue(0)))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::new();
        while let Some(value) = seq.next_element_seed(ProtoValueSeed)? {
            values.push(value);
        }
        Ok(proto(Kind::ListValue(ListValue { values })))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = std::collections::BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ProtoValueSeed)?;
            fields.insert(key, value);
        }
        Ok(proto(Kind::StructValue(Struct { fields })))
    }
}
