//! Answers and stream events (the upstream's JSON) → protobuf. Typed fields
//! take the members they stand for; every other member, and any member of
//! an unexpected shape, lands in the `extra` carrier of its level, so a
//! gRPC caller receives everything the upstream sent.

use super::answer_fast::response_to_proto_fast;
use super::chunk_fast::chunk_to_proto_fast;
use super::logprobs::logprobs_from_json;
use super::structs::json_to_struct;
use crate::model::{ChatChunk, ChatResponse, Usage};
use crate::proto::v1 as pb;
use serde_json::{Map, Value};

/// `Err` when the answer's JSON cannot be decoded at all (nested deeper
/// than serde_json reads): the caller must get an error, not an empty
/// answer. Answers of the usual shape take the one-pass path
/// ([`super::answer_fast`]); the rest go through a JSON value.
pub fn response_to_proto(
    response: &ChatResponse,
    provider: &str,
) -> Result<pb::ChatResponse, String> {
    match response_to_proto_fast(&response.json, response.usage, provider) {
        Some(proto) => Ok(proto),
        None => response_via_value(response, provider),
    }
}

/// [`response_to_proto`] through a JSON value: any shape.
pub(super) fn response_via_value(
    response: &ChatResponse,
    provider: &str,
) -> Result<pb::ChatResponse, String> {
    let mut fields = object(response.to_value()?);
    drop_implied(&mut fields, "object", "chat.completion");
    let choices = take_list(&mut fields, "choices", choice);
    let usage = take_usage(&mut fields, response.usage);
    Ok(pb::ChatResponse {
        id: take_string(&mut fields, "id"),
        model: take_string(&mut fields, "model"),
        provider: provider.to_owned(),
        created: take_i64(&mut fields, "created"),
        choices,
        usage,
        system_fingerprint: take_string(&mut fields, "system_fingerprint"),
        service_tier: take_string(&mut fields, "service_tier"),
        extra: carrier(&fields),
    })
}

/// `Err` as for [`response_to_proto`]. Events of the usual shape take the
/// one-pass path ([`super::chunk_fast`]); the rest go through a JSON value.
pub fn chunk_to_proto(chunk: &ChatChunk, provider: &str) -> Result<pb::ChatChunk, String> {
    match chunk_to_proto_fast(&chunk.json, chunk.usage, provider) {
        Some(proto) => Ok(proto),
        None => chunk_via_value(chunk, provider),
    }
}

/// [`chunk_to_proto`] through a JSON value: any shape.
pub(super) fn chunk_via_value(chunk: &ChatChunk, provider: &str) -> Result<pb::ChatChunk, String> {
    let mut fields = object(chunk.to_value()?);
    drop_implied(&mut fields, "object", "chat.completion.chunk");
    let choices = take_list(&mut fields, "choices", choice_delta);
    let usage = take_usage(&mut fields, chunk.usage);
    Ok(pb::ChatChunk {
        id: take_string(&mut fields, "id"),
        model: take_string(&mut fields, "model"),
        provider: provider.to_owned(),
        created: take_i64(&mut fields, "created"),
        choices,
        usage,
        system_fingerprint: take_string(&mut fields, "system_fingerprint"),
        service_tier: take_string(&mut fields, "service_tier"),
        extra: carrier(&fields),
    })
}

fn choice(position: usize, mut fields: Map<String, Value>) -> pb::Choice {
    let mut message = take_object(&mut fields, "message");
    drop_implied(&mut message, "role", "assistant");
    let choice = pb::Choice {
        index: take_index(&mut fields, position),
        content: take_optional_string(&mut message, "content"),
        refusal: take_string(&mut message, "refusal"),
        reasoning_content: take_reasoning(&mut message),
        tool_calls: take_list(&mut message, "tool_calls", tool_call),
        finish_reason: take_string(&mut fields, "finish_reason"),
        logprobs: take_logprobs(&mut fields),
        message_extra: carrier(&message),
        extra: None,
    };
    pb::Choice {
        extra: carrier(&fields),
        ..choice
    }
}

fn choice_delta(position: usize, mut fields: Map<String, Value>) -> pb::ChoiceDelta {
    let mut delta = take_object(&mut fields, "delta");
    let choice = pb::ChoiceDelta {
        index: take_index(&mut fields, position),
        role: take_string(&mut delta, "role"),
        content: take_string(&mut delta, "content"),
        refusal: take_string(&mut delta, "refusal"),
        reasoning_content: take_reasoning(&mut delta),
        tool_calls: take_list(&mut delta, "tool_calls", tool_call_delta),
        finish_reason: take_string(&mut fields, "finish_reason"),
        logprobs: take_logprobs(&mut fields),
        delta_extra: carrier(&delta),
        extra: None,
    };
    pb::ChoiceDelta {
        extra: carrier(&fields),
        ..choice
    }
}

fn tool_call(_: usize, mut fields: Map<String, Value>) -> pb::ToolCall {
    let mut function = take_object(&mut fields, "function");
    let call = pb::ToolCall {
        id: take_string(&mut fields, "id"),
        r#type: take_string(&mut fields, "type"),
        function: Some(pb::FunctionCall {
            name: take_string(&mut function, "name"),
            arguments: take_string(&mut function, "arguments"),
        }),
        extra: None,
    };
    keep_leftovers(&mut fields, "function", function);
    pb::ToolCall {
        extra: carrier(&fields),
        ..call
    }
}

fn tool_call_delta(_: usize, mut fields: Map<String, Value>) -> pb::ToolCallDelta {
    let mut function = take_object(&mut fields, "function");
    let call = pb::ToolCallDelta {
        index: take_u32(&mut fields, "index"),
        id: take_string(&mut fields, "id"),
        r#type: take_string(&mut fields, "type"),
        name: take_string(&mut function, "name"),
        arguments: take_string(&mut function, "arguments"),
        extra: None,
    };
    keep_leftovers(&mut fields, "function", function);
    pb::ToolCallDelta {
        extra: carrier(&fields),
        ..call
    }
}

/// The typed usage read from any spelling, and the `usage` object as it was
/// sent (`raw`; unset when the counts came from elsewhere, such as Groq's
/// `x_groq.usage`, which stays in `extra` as sent).
fn take_usage(fields: &mut Map<String, Value>, usage: Option<Usage>) -> Option<pb::Usage> {
    let raw = match fields.get("usage") {
        Some(Value::Object(raw)) => Some(json_to_struct(raw)),
        _ => None,
    };
    if raw.is_some() || fields.get("usage").is_some_and(Value::is_null) {
        fields.shift_remove("usage");
    }
    if raw.is_none() && usage.is_none() {
        return None;
    }
    Some(usage_proto(usage, raw))
}

/// The typed counts read from any spelling, with the object as sent.
pub(super) fn usage_proto(usage: Option<Usage>, raw: Option<prost_types::Struct>) -> pb::Usage {
    let usage = usage.unwrap_or_default();
    pb::Usage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.total_tokens,
        cached_prompt_tokens: usage.cached_prompt_tokens(),
        reasoning_tokens: usage.reasoning_tokens(),
        cache_write_tokens: usage.cache_write_tokens.unwrap_or(0),
        raw,
    }
}

/// `reasoning_content`, or OpenRouter's `reasoning` when that is the only
/// spelling; a second spelling stays in `extra`.
fn take_reasoning(fields: &mut Map<String, Value>) -> String {
    let reasoning = take_string(fields, "reasoning_content");
    if reasoning.is_empty() {
        take_string(fields, "reasoning")
    } else {
        reasoning
    }
}

fn take_logprobs(fields: &mut Map<String, Value>) -> Option<pb::Logprobs> {
    let typed = match fields.get("logprobs")? {
        Value::Null => None,
        value => Some(logprobs_from_json(value)?),
    };
    fields.shift_remove("logprobs");
    typed
}

/// Members of `inner` that the typed fields did not take go back under
/// `key`, so they reach the caller in `extra`.
fn keep_leftovers(fields: &mut Map<String, Value>, key: &str, inner: Map<String, Value>) {
    if !inner.is_empty() {
        fields.insert(key.to_owned(), Value::Object(inner));
    }
}

/// A choice's `index`, or its place in the list when it has none (as the
/// stream reader counts it).
fn take_index(fields: &mut Map<String, Value>, position: usize) -> u32 {
    if fields.get("index").is_none_or(Value::is_null) {
        fields.shift_remove("index");
        return u32::try_from(position).unwrap_or(u32::MAX);
    }
    take_u32(fields, "index")
}

/// A `null` or absent list is empty; a list of other things stays in
/// `extra`, as sent. `convert` gets each item's position too.
fn take_list<T>(
    fields: &mut Map<String, Value>,
    key: &str,
    convert: impl Fn(usize, Map<String, Value>) -> T,
) -> Vec<T> {
    match fields.get(key) {
        Some(Value::Array(items)) if items.iter().all(Value::is_object) => {}
        Some(Value::Null) => {
            fields.shift_remove(key);
            return Vec::new();
        }
        _ => return Vec::new(),
    }
    match fields.shift_remove(key) {
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(position, item)| convert(position, object(item)))
            .collect(),
        _ => Vec::new(),
    }
}

fn take_object(fields: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match fields.get(key) {
        Some(Value::Object(_)) | Some(Value::Null) => {
            object(fields.shift_remove(key).unwrap_or_default())
        }
        _ => Map::new(),
    }
}

/// A string member; `null` counts as empty; another shape stays.
fn take_string(fields: &mut Map<String, Value>, key: &str) -> String {
    take_optional_string(fields, key).unwrap_or_default()
}

fn take_optional_string(fields: &mut Map<String, Value>, key: &str) -> Option<String> {
    match fields.get(key)? {
        Value::String(_) | Value::Null => match fields.shift_remove(key)? {
            Value::String(text) => Some(text),
            _ => None,
        },
        _ => None,
    }
}

fn take_u32(fields: &mut Map<String, Value>, key: &str) -> u32 {
    take_whole(fields, key)
        .and_then(|number| u32::try_from(number).ok())
        .unwrap_or(0)
}

fn take_i64(fields: &mut Map<String, Value>, key: &str) -> i64 {
    take_whole(fields, key).unwrap_or(0)
}

/// An integer member (integral floats count); another shape stays.
fn take_whole(fields: &mut Map<String, Value>, key: &str) -> Option<i64> {
    let number = match fields.get(key)? {
        Value::Null => None,
        Value::Number(number) => match number.as_i64() {
            Some(whole) => Some(whole),
            None => number
                .as_f64()
                .filter(|float| float.fract() == 0.0 && float.abs() < 9.0e15)
                .map(|float| float as i64),
        },
        _ => return None,
    };
    if number.is_some() || fields.get(key).is_some_and(Value::is_null) {
        fields.shift_remove(key);
    }
    number
}

/// `object: "chat.completion"` and its like say what the message type
/// already says; any other value stays.
fn drop_implied(fields: &mut Map<String, Value>, key: &str, implied: &str) {
    if fields.get(key).and_then(Value::as_str) == Some(implied) {
        fields.shift_remove(key);
    }
}

fn carrier(fields: &Map<String, Value>) -> Option<prost_types::Struct> {
    (!fields.is_empty()).then(|| json_to_struct(fields))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(fields) => fields,
        _ => Map::new(),
    }
}
