//! OpenTelemetry GenAI semantic conventions (v1.41): the attribute names and
//! the pure mapping from our chat model to attributes and to the captured
//! message JSON.
//!
//! The names are our own constants rather than the
//! `opentelemetry-semantic-conventions` crate's: its GenAI constants lag the
//! spec and are marked deprecated, and this file is the one place to change
//! when the conventions move. Nothing here touches the SDK beyond building
//! `KeyValue`s, so every function is tested on plain values.

use crate::model::{ChatRequest, ChatResponse, Usage, message_role, message_texts};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use serde_json::{Map, Value as Json, json};

pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
pub const GEN_AI_REQUEST_TOP_P: &str = "gen_ai.request.top_p";
pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
pub const GEN_AI_REQUEST_SEED: &str = "gen_ai.request.seed";
pub const GEN_AI_REQUEST_STOP_SEQUENCES: &str = "gen_ai.request.stop_sequences";
pub const GEN_AI_REQUEST_FREQUENCY_PENALTY: &str = "gen_ai.request.frequency_penalty";
pub const GEN_AI_REQUEST_PRESENCE_PENALTY: &str = "gen_ai.request.presence_penalty";
pub const GEN_AI_REQUEST_CHOICE_COUNT: &str = "gen_ai.request.choice.count";
pub const GEN_AI_REQUEST_STREAM: &str = "gen_ai.request.stream";
pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
pub const GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: &str =
    "gen_ai.usage.cache_creation.input_tokens";
pub const GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";
pub const ERROR_TYPE: &str = "error.type";
pub const RPC_SYSTEM_NAME: &str = "rpc.system.name";
pub const RPC_METHOD: &str = "rpc.method";
pub const RPC_RESPONSE_STATUS_CODE: &str = "rpc.response.status_code";
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
pub const HTTP_ROUTE: &str = "http.route";
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";

/// `gen_ai.operation.name` for chat completions.
pub const OPERATION_CHAT: &str = "chat";
/// `gen_ai.token.type` values.
pub const TOKEN_TYPE_INPUT: &str = "input";
pub const TOKEN_TYPE_OUTPUT: &str = "output";

/// Appended where captured content was cut at the byte cap. The JSON is no
/// longer valid after the cut; the marker says so to whoever reads it.
pub const TRUNCATION_MARKER: &str = "…[truncated]";

/// The attributes known before the call: what was asked, of whom. Only the
/// sampling parameters the caller set are recorded.
pub fn request_attributes(
    request: &ChatRequest,
    provider: &str,
    server_address: &str,
    server_port: u16,
) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(16);
    attributes.push(KeyValue::new(GEN_AI_OPERATION_NAME, OPERATION_CHAT));
    attributes.push(KeyValue::new(GEN_AI_PROVIDER_NAME, provider.to_owned()));
    attributes.push(KeyValue::new(GEN_AI_REQUEST_MODEL, request.model.clone()));
    if !server_address.is_empty() {
        attributes.push(KeyValue::new(SERVER_ADDRESS, server_address.to_owned()));
        attributes.push(KeyValue::new(SERVER_PORT, i64::from(server_port)));
    }
    attributes.push(KeyValue::new(GEN_AI_REQUEST_STREAM, request.stream));
    for (key, field) in [
        (GEN_AI_REQUEST_TEMPERATURE, "temperature"),
        (GEN_AI_REQUEST_TOP_P, "top_p"),
        (GEN_AI_REQUEST_FREQUENCY_PENALTY, "frequency_penalty"),
        (GEN_AI_REQUEST_PRESENCE_PENALTY, "presence_penalty"),
    ] {
        if let Some(value) = request.number(field) {
            attributes.push(KeyValue::new(key, value));
        }
    }
    if let Some(max_tokens) = request.max_tokens() {
        attributes.push(KeyValue::new(GEN_AI_REQUEST_MAX_TOKENS, max_tokens));
    }
    if let Some(seed) = request.integer("seed") {
        attributes.push(KeyValue::new(GEN_AI_REQUEST_SEED, seed));
    }
    if let Some(n) = request.integer("n").filter(|&n| n != 1) {
        attributes.push(KeyValue::new(GEN_AI_REQUEST_CHOICE_COUNT, n));
    }
    let stop = request.stop_sequences();
    if !stop.is_empty() {
        attributes.push(KeyValue::new(
            GEN_AI_REQUEST_STOP_SEQUENCES,
            string_array(stop.into_iter()),
        ));
    }
    attributes
}

/// The attributes known after the call: who answered, why it stopped, what
/// it cost in tokens. Empty ids and models are left out.
pub fn response_attributes<I>(
    id: &str,
    model: &str,
    finish_reasons: I,
    usage: Option<&Usage>,
) -> Vec<KeyValue>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let mut attributes = Vec::with_capacity(7);
    if !id.is_empty() {
        attributes.push(KeyValue::new(GEN_AI_RESPONSE_ID, id.to_owned()));
    }
    if !model.is_empty() {
        attributes.push(KeyValue::new(GEN_AI_RESPONSE_MODEL, model.to_owned()));
    }
    let reasons: Vec<StringValue> = finish_reasons
        .into_iter()
        .map(|reason| StringValue::from(reason.as_ref().to_owned()))
        .collect();
    if !reasons.is_empty() {
        attributes.push(KeyValue::new(
            GEN_AI_RESPONSE_FINISH_REASONS,
            Value::Array(Array::String(reasons)),
        ));
    }
    if let Some(usage) = usage {
        attributes.extend(usage_attributes(usage));
    }
    attributes
}

/// [`response_attributes`] of a whole answer.
pub fn chat_response_attributes(response: &ChatResponse) -> Vec<KeyValue> {
    response_attributes(
        &response.id,
        &response.model,
        &response.finish_reasons,
        response.usage.as_ref(),
    )
}

/// Token counts. The cache and reasoning counts appear only when the
/// upstream reported the detail object: a missing detail is "unknown", not 0.
pub fn usage_attributes(usage: &Usage) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(4);
    attributes.push(KeyValue::new(
        GEN_AI_USAGE_INPUT_TOKENS,
        i64::from(usage.prompt_tokens),
    ));
    attributes.push(KeyValue::new(
        GEN_AI_USAGE_OUTPUT_TOKENS,
        i64::from(usage.completion_tokens),
    ));
    if let Some(cached) = usage.cache_read_tokens {
        attributes.push(KeyValue::new(
            GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
            i64::from(cached),
        ));
    }
    if let Some(written) = usage.cache_write_tokens {
        attributes.push(KeyValue::new(
            GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
            i64::from(written),
        ));
    }
    if let Some(reasoning) = usage.reasoning_tokens {
        attributes.push(KeyValue::new(
            GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
            i64::from(reasoning),
        ));
    }
    attributes
}

fn string_array<'a>(values: impl Iterator<Item = &'a str>) -> Value {
    Value::Array(Array::String(
        values
            .map(|value| StringValue::from(value.to_owned()))
            .collect(),
    ))
}

/// `gen_ai.input.messages`: the request's messages as the conventions'
/// JSON (role + typed parts), cut to `max_bytes`.
pub fn input_messages_json(request: &ChatRequest, max_bytes: usize) -> String {
    let messages: Vec<Json> = request.messages().iter().map(input_message).collect();
    truncate(Json::Array(messages).to_string(), max_bytes)
}

/// `gen_ai.output.messages`: one assistant message per choice, with its
/// finish reason in the conventions' vocabulary, cut to `max_bytes`.
pub fn output_messages_json(response: &ChatResponse, max_bytes: usize) -> String {
    let answer = response.to_value().unwrap_or_default();
    let choices = answer
        .get("choices")
        .and_then(Json::as_array)
        .map_or(&[][..], Vec::as_slice);
    let messages: Vec<Json> = choices
        .iter()
        .map(|choice| {
            let message = choice.get("message").unwrap_or(&Json::Null);
            let text = |key: &str| message.get(key).and_then(Json::as_str);
            let mut parts = Vec::new();
            if let Some(reasoning) = text("reasoning_content").or_else(|| text("reasoning")) {
                parts.push(json!({"type": "reasoning", "content": reasoning}));
            }
            for text in [text("content"), text("refusal")].into_iter().flatten() {
                parts.push(text_part(text));
            }
            parts.extend(tool_calls(message).map(tool_call_part));
            let mut out = Map::new();
            out.insert("role".into(), json!("assistant"));
            out.insert("parts".into(), Json::Array(parts));
            if let Some(reason) = choice.get("finish_reason").and_then(Json::as_str) {
                out.insert("finish_reason".into(), json!(finish_reason(reason)));
            }
            Json::Object(out)
        })
        .collect();
    truncate(Json::Array(messages).to_string(), max_bytes)
}

/// A message's tool calls, none when `tool_calls` is missing or `null`.
fn tool_calls(message: &Json) -> impl Iterator<Item = &Json> {
    message
        .get("tool_calls")
        .and_then(Json::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
}

/// OpenAI's finish reasons in the conventions' words (`tool_calls` is
/// `tool_call` there); others pass through.
fn finish_reason(reason: &str) -> &str {
    match reason {
        "tool_calls" | "function_call" => "tool_call",
        other => other,
    }
}

fn input_message(message: &Json) -> Json {
    let role = message_role(message).unwrap_or_default();
    let mut parts = Vec::new();
    if role == "tool" {
        let mut part = Map::new();
        part.insert("type".into(), json!("tool_call_response"));
        if let Some(id) = message.get("tool_call_id").and_then(Json::as_str) {
            part.insert("id".into(), json!(id));
        }
        let response: Vec<&str> = message_texts(message).collect();
        part.insert("response".into(), json!(response.join(" ")));
        parts.push(Json::Object(part));
    } else {
        match message.get("content") {
            Some(Json::String(text)) => parts.push(text_part(text)),
            Some(Json::Array(content)) => parts.extend(content.iter().map(content_part)),
            _ => {}
        }
        parts.extend(tool_calls(message).map(tool_call_part));
    }
    let mut out = Map::new();
    out.insert("role".into(), json!(role));
    out.insert("parts".into(), Json::Array(parts));
    if let Some(name) = message.get("name").and_then(Json::as_str) {
        out.insert("name".into(), json!(name));
    }
    Json::Object(out)
}

fn text_part(text: &str) -> Json {
    json!({"type": "text", "content": text})
}

/// Images by reference are `uri` parts; inline `data:` URLs are `blob`
/// parts, as the conventions ask (a data URL is not a URI to fetch). Parts
/// of other types are named by their type only.
fn content_part(part: &Json) -> Json {
    let kind = part.get("type").and_then(Json::as_str).unwrap_or_default();
    if let Some(text) = part.get("text").and_then(Json::as_str) {
        return text_part(text);
    }
    let url = part
        .get("image_url")
        .and_then(|image| image.get("url").or(Some(image)))
        .and_then(Json::as_str);
    match (kind, url) {
        ("image_url", Some(url)) => match parse_data_url(url) {
            Some((mime_type, data)) => json!({
                "type": "blob",
                "modality": "image",
                "mime_type": mime_type,
                "content": data,
            }),
            None => json!({"type": "uri", "modality": "image", "uri": url}),
        },
        _ => json!({"type": kind}),
    }
}

/// `data:<mime>;base64,<data>` → `(mime, data)`.
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (header, data) = rest.split_once(',')?;
    let mime_type = header.strip_suffix(";base64")?;
    Some((mime_type, data))
}

/// Tool arguments are JSON text from the model; recorded as JSON when they
/// parse, as the raw string when they do not (models do emit broken JSON).
fn tool_call_part(call: &Json) -> Json {
    let function = call.get("function").unwrap_or(&Json::Null);
    let arguments = function
        .get("arguments")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let arguments = serde_json::from_str::<Json>(arguments)
        .unwrap_or_else(|_| Json::String(arguments.to_owned()));
    json!({
        "type": "tool_call",
        "id": call.get("id").unwrap_or(&Json::Null),
        "name": function.get("name").unwrap_or(&Json::Null),
        "arguments": arguments,
    })
}

/// Cuts `text` to at most `max_bytes` (marker included) on a char boundary.
fn truncate(mut text: String, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text;
    }
    // A cap too small for the marker gets the bare cut.
    let marker = if max_bytes >= TRUNCATION_MARKER.len() {
        TRUNCATION_MARKER
    } else {
        ""
    };
    let mut end = max_bytes - marker.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(marker);
    text
}

#[cfg(test)]
mod tests;
