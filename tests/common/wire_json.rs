//! The protobuf API seen as OpenAI JSON, for tests that check that nothing
//! is lost on the gRPC edge: a gRPC answer folded back into the JSON the
//! upstream sent (typed fields plus `extra` carriers), an OpenAI request
//! body spelled as a protobuf request (typed fields where they exist, the
//! rest in carriers), and comparisons that ignore what protobuf cannot say
//! (`null` against absent, `1` against `1.0`).

use llm_sidecar::inbound::grpc::json_to_struct;
use llm_sidecar::proto::v1 as pb;
use prost_types::value::Kind;
use serde_json::{Map, Value, json};

/// A `google.protobuf.Struct` as JSON.
pub fn struct_json(value: &prost_types::Struct) -> Map<String, Value> {
    value
        .fields
        .iter()
        .map(|(key, value)| (key.clone(), value_json(value)))
        .collect()
}

fn value_json(value: &prost_types::Value) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(flag)) => json!(flag),
        Some(Kind::NumberValue(number)) => json!(number),
        Some(Kind::StringValue(text)) => json!(text),
        Some(Kind::StructValue(inner)) => Value::Object(struct_json(inner)),
        Some(Kind::ListValue(list)) => Value::Array(list.values.iter().map(value_json).collect()),
    }
}

/// Merges a carrier into an object, objects into objects (a carrier may
/// hold the leftovers of a typed member, e.g. `function`).
fn merge(target: &mut Map<String, Value>, extra: &Option<prost_types::Struct>) {
    if let Some(extra) = extra {
        for (key, value) in struct_json(extra) {
            match (target.get_mut(&key), value) {
                (Some(Value::Object(inner)), Value::Object(more)) => inner.extend(more),
                (_, value) => {
                    target.insert(key, value);
                }
            }
        }
    }
}

fn put_string(target: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        target.insert(key.to_owned(), json!(value));
    }
}

/// A unary gRPC answer as the OpenAI JSON it stands for.
pub fn response_json(response: &pb::ChatResponse) -> Value {
    let mut out = Map::new();
    put_string(&mut out, "id", &response.id);
    out.insert("object".into(), json!("chat.completion"));
    out.insert("created".into(), json!(response.created));
    put_string(&mut out, "model", &response.model);
    put_string(&mut out, "system_fingerprint", &response.system_fingerprint);
    put_string(&mut out, "service_tier", &response.service_tier);
    let choices: Vec<Value> = response.choices.iter().map(choice_json).collect();
    out.insert("choices".into(), Value::Array(choices));
    if let Some(usage) = &response.usage {
        out.insert("usage".into(), usage_json(usage));
    }
    merge(&mut out, &response.extra);
    Value::Object(out)
}

fn choice_json(choice: &pb::Choice) -> Value {
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    if let Some(content) = &choice.content {
        message.insert("content".into(), json!(content));
    }
    put_string(&mut message, "refusal", &choice.refusal);
    put_string(&mut message, "reasoning_content", &choice.reasoning_content);
    if !choice.tool_calls.is_empty() {
        let calls: Vec<Value> = choice.tool_calls.iter().map(tool_call_json).collect();
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    merge(&mut message, &choice.message_extra);
    let mut out = Map::new();
    out.insert("index".into(), json!(choice.index));
    out.insert("message".into(), Value::Object(message));
    put_string(&mut out, "finish_reason", &choice.finish_reason);
    if let Some(logprobs) = &choice.logprobs {
        out.insert("logprobs".into(), logprobs_json(logprobs));
    }
    merge(&mut out, &choice.extra);
    Value::Object(out)
}

fn tool_call_json(call: &pb::ToolCall) -> Value {
    let function = call.function.clone().unwrap_or_default();
    let mut out = Map::new();
    put_string(&mut out, "id", &call.id);
    put_string(&mut out, "type", &call.r#type);
    out.insert(
        "function".into(),
        json!({"name": function.name, "arguments": function.arguments}),
    );
    merge(&mut out, &call.extra);
    Value::Object(out)
}

/// A streamed gRPC chunk as the OpenAI JSON it stands for.
pub fn chunk_json(chunk: &pb::ChatChunk) -> Value {
    let mut out = Map::new();
    put_string(&mut out, "id", &chunk.id);
    out.insert("object".into(), json!("chat.completion.chunk"));
    out.insert("created".into(), json!(chunk.created));
    put_string(&mut out, "model", &chunk.model);
    put_string(&mut out, "system_fingerprint", &chunk.system_fingerprint);
    put_string(&mut out, "service_tier", &chunk.service_tier);
    let choices: Vec<Value> = chunk.choices.iter().map(delta_json).collect();
    out.insert("choices".into(), Value::Array(choices));
    if let Some(usage) = &chunk.usage {
        out.insert("usage".into(), usage_json(usage));
    }
    merge(&mut out, &chunk.extra);
    Value::Object(out)
}

fn delta_json(choice: &pb::ChoiceDelta) -> Value {
    let mut delta = Map::new();
    put_string(&mut delta, "role", &choice.role);
    put_string(&mut delta, "content", &choice.content);
    put_string(&mut delta, "refusal", &choice.refusal);
    put_string(&mut delta, "reasoning_content", &choice.reasoning_content);
    if !choice.tool_calls.is_empty() {
        let calls: Vec<Value> = choice
            .tool_calls
            .iter()
            .map(|call| {
                let mut out = Map::new();
                out.insert("index".into(), json!(call.index));
                put_string(&mut out, "id", &call.id);
                put_string(&mut out, "type", &call.r#type);
                let mut function = Map::new();
                put_string(&mut function, "name", &call.name);
                put_string(&mut function, "arguments", &call.arguments);
                out.insert("function".into(), Value::Object(function));
                merge(&mut out, &call.extra);
                Value::Object(out)
            })
            .collect();
        delta.insert("tool_calls".into(), Value::Array(calls));
    }
    merge(&mut delta, &choice.delta_extra);
    let mut out = Map::new();
    out.insert("index".into(), json!(choice.index));
    out.insert("delta".into(), Value::Object(delta));
    put_string(&mut out, "finish_reason", &choice.finish_reason);
    if let Some(logprobs) = &choice.logprobs {
        out.insert("logprobs".into(), logprobs_json(logprobs));
    }
    merge(&mut out, &choice.extra);
    Value::Object(out)
}

fn usage_json(usage: &pb::Usage) -> Value {
    Value::Object(usage.raw.as_ref().map(struct_json).unwrap_or_default())
}

fn logprobs_json(logprobs: &pb::Logprobs) -> Value {
    let token = |token: &str, logprob: f64, bytes: &[u8]| json!({"token": token, "logprob": logprob, "bytes": bytes});
    let tokens = |items: &[pb::TokenLogprob]| -> Vec<Value> {
        items
            .iter()
            .map(|item| {
                let mut out = token(&item.token, item.logprob, &item.bytes);
                let top: Vec<Value> = item
                    .top_logprobs
                    .iter()
                    .map(|top| token(&top.token, top.logprob, &top.bytes))
                    .collect();
                out["top_logprobs"] = Value::Array(top);
                out
            })
            .collect()
    };
    json!({"content": tokens(&logprobs.content), "refusal": tokens(&logprobs.refusal)})
}

/// Every leaf of `value` (null, empty strings and empty lists left out, as
/// protobuf cannot tell them from absent) as `(path, leaf)`, numbers as f64.
pub fn leaves(value: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

fn walk(value: &Value, path: String, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Null => {}
        Value::String(text) if text.is_empty() => {}
        Value::Object(fields) => {
            for (key, inner) in fields {
                walk(inner, format!("{path}.{key}"), out);
            }
        }
        Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                walk(inner, format!("{path}[{index}]"), out);
            }
        }
        Value::Number(number) => out.push((path, json!(number.as_f64()))),
        leaf => out.push((path, leaf.clone())),
    }
}

/// The leaves of `sent` missing or different in `received`; `renames`
/// maps a path segment the typed field reads under another spelling
/// (`.reasoning` → `.reasoning_content`).
pub fn lost(sent: &Value, received: &Value, renames: &[(&str, &str)]) -> Vec<String> {
    let have: std::collections::HashMap<String, Value> = leaves(received).into_iter().collect();
    leaves(sent)
        .into_iter()
        .filter(|(path, leaf)| {
            let found = have.get(path).or_else(|| {
                renames.iter().find_map(|(from, to)| {
                    have.get(&path.replace(from, to))
                        .filter(|_| path.contains(from))
                })
            });
            found != Some(leaf)
        })
        .map(|(path, leaf)| format!("{path} = {leaf}"))
        .collect()
}

/// Numbers as f64 everywhere, for JSON-equality across a Struct's doubles.
pub fn normalized(value: &Value) -> Value {
    match value {
        Value::Number(number) => json!(number.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| (key.clone(), normalized(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// An OpenAI request body spelled as a gRPC request: typed fields where the
/// API has them, everything else in the `extra` carrier of its level.
pub fn request_proto(body: &Value) -> pb::ChatRequest {
    let mut fields = body.as_object().cloned().unwrap_or_default();
    let take = |fields: &mut Map<String, Value>, key: &str| fields.shift_remove(key);
    let model = take(&mut fields, "model")
        .and_then(|model| model.as_str().map(str::to_owned))
        .unwrap_or_default();
    take(&mut fields, "stream");
    let messages = match take(&mut fields, "messages") {
        Some(Value::Array(messages)) => messages.into_iter().map(message_proto).collect(),
        _ => Vec::new(),
    };
    let number = |fields: &mut Map<String, Value>, key: &str| match fields.get(key) {
        Some(Value::Number(number)) => {
            let value = number.as_f64();
            fields.shift_remove(key);
            value
        }
        _ => None,
    };
    let count = |fields: &mut Map<String, Value>, key: &str| match fields.get(key) {
        Some(Value::Number(number)) if number.is_u64() => {
            let value = number.as_u64().map(|n| n as u32);
            fields.shift_remove(key);
            value
        }
        _ => None,
    };
    let text = |fields: &mut Map<String, Value>, key: &str| match fields.get(key) {
        Some(Value::String(_)) => take(fields, key)
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let tools = match fields.get("tools") {
        Some(Value::Array(_)) => match take(&mut fields, "tools") {
            Some(Value::Array(tools)) => tools.into_iter().map(tool_proto).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let tool_choice = match take(&mut fields, "tool_choice") {
        None => None,
        Some(Value::String(mode)) => Some(pb::ToolChoice {
            choice: Some(pb::tool_choice::Choice::Mode(match mode.as_str() {
                "none" => pb::ToolChoiceMode::None,
                "required" => pb::ToolChoiceMode::Required,
                _ => pb::ToolChoiceMode::Auto,
            } as i32)),
        }),
        Some(other) => Some(pb::ToolChoice {
            choice: Some(pb::tool_choice::Choice::Other(json_to_struct(
                other.as_object().expect("a tool choice object"),
            ))),
        }),
    };
    let response_format = take(&mut fields, "response_format").map(|format| pb::ResponseFormat {
        format: Some(pb::response_format::Format::Other(json_to_struct(
            format.as_object().expect("a response format object"),
        ))),
    });
    let stop = match fields.get("stop") {
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            match take(&mut fields, "stop") {
                Some(Value::Array(items)) => items
                    .into_iter()
                    .filter_map(|item| item.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    };
    let flag = |fields: &mut Map<String, Value>, key: &str| match fields.get(key) {
        Some(Value::Bool(flag)) => {
            let flag = *flag;
            fields.shift_remove(key);
            Some(flag)
        }
        _ => None,
    };
    pb::ChatRequest {
        model,
        messages,
        temperature: number(&mut fields, "temperature"),
        top_p: number(&mut fields, "top_p"),
        max_completion_tokens: count(&mut fields, "max_completion_tokens"),
        n: count(&mut fields, "n"),
        top_logprobs: count(&mut fields, "top_logprobs"),
        seed: match fields.get("seed").and_then(Value::as_i64) {
            Some(seed) => {
                fields.shift_remove("seed");
                Some(seed)
            }
            None => None,
        },
        logprobs: flag(&mut fields, "logprobs"),
        parallel_tool_calls: flag(&mut fields, "parallel_tool_calls"),
        presence_penalty: number(&mut fields, "presence_penalty"),
        frequency_penalty: number(&mut fields, "frequency_penalty"),
        reasoning_effort: text(&mut fields, "reasoning_effort"),
        user: text(&mut fields, "user"),
        stop,
        tools,
        tool_choice,
        response_format,
        extra: carrier(&fields),
        ..pb::ChatRequest::default()
    }
}

fn carrier(fields: &Map<String, Value>) -> Option<prost_types::Struct> {
    (!fields.is_empty()).then(|| json_to_struct(fields))
}

fn message_proto(message: Value) -> pb::Message {
    let mut fields = message.as_object().cloned().unwrap_or_default();
    let role = match fields.shift_remove("role").as_ref().and_then(Value::as_str) {
        Some("system") => pb::Role::System,
        Some("developer") => pb::Role::Developer,
        Some("user") => pb::Role::User,
        Some("assistant") => pb::Role::Assistant,
        Some("tool") => pb::Role::Tool,
        Some("function") => pb::Role::Function,
        _ => pb::Role::Unspecified,
    };
    let (content, parts) = match fields.shift_remove("content") {
        Some(Value::String(text)) => (Some(text), Vec::new()),
        Some(Value::Array(parts)) => (None, parts.into_iter().map(part_proto).collect()),
        _ => (None, Vec::new()),
    };
    let mut text = |key: &str| match fields.get(key) {
        Some(Value::String(_)) => fields
            .shift_remove(key)
            .and_then(|value| value.as_str().map(str::to_owned)),
        _ => None,
    };
    let name = text("name").unwrap_or_default();
    let tool_call_id = text("tool_call_id").unwrap_or_default();
    let reasoning_content = text("reasoning_content");
    let tool_calls = match fields.shift_remove("tool_calls") {
        Some(Value::Array(calls)) => calls.into_iter().map(tool_call_proto).collect(),
        Some(other) => {
            fields.insert("tool_calls".into(), other);
            Vec::new()
        }
        None => Vec::new(),
    };
    pb::Message {
        role: role as i32,
        content,
        parts,
        name,
        tool_calls,
        tool_call_id,
        reasoning_content,
        extra: carrier(&fields),
    }
}

fn tool_call_proto(call: Value) -> pb::ToolCall {
    let mut fields = call.as_object().cloned().unwrap_or_default();
    let mut function = match fields.shift_remove("function") {
        Some(Value::Object(function)) => function,
        _ => Map::new(),
    };
    let text = |fields: &mut Map<String, Value>, key: &str| {
        fields
            .shift_remove(key)
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let call = pb::ToolCall {
        id: text(&mut fields, "id"),
        r#type: text(&mut fields, "type"),
        function: Some(pb::FunctionCall {
            name: text(&mut function, "name"),
            arguments: text(&mut function, "arguments"),
        }),
        extra: None,
    };
    pb::ToolCall {
        extra: carrier(&fields),
        ..call
    }
}

fn part_proto(part: Value) -> pb::ContentPart {
    use pb::content_part::Part;
    let mut fields = part.as_object().cloned().unwrap_or_default();
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let typed = match kind {
        "text" | "refusal" => fields.get(kind).and_then(Value::as_str).map(|text| {
            if kind == "text" {
                Part::Text(text.to_owned())
            } else {
                Part::Refusal(text.to_owned())
            }
        }),
        "image_url" => strings(&fields, "image_url", &["url", "detail"]).map(|image| {
            Part::ImageUrl(pb::ImageUrl {
                url: image["url"].clone(),
                detail: image["detail"].clone(),
            })
        }),
        "file" => strings(&fields, "file", &["file_data", "file_id", "filename"]).map(|file| {
            Part::File(pb::FilePart {
                file_data: file["file_data"].clone(),
                file_id: file["file_id"].clone(),
                filename: file["filename"].clone(),
            })
        }),
        "input_audio" => strings(&fields, "input_audio", &["data", "format"]).map(|audio| {
            Part::InputAudio(pb::InputAudio {
                data: audio["data"].clone(),
                format: audio["format"].clone(),
            })
        }),
        _ => None,
    };
    match typed {
        Some(part) => {
            let key = kind.to_owned();
            fields.shift_remove("type");
            fields.shift_remove(&key);
            pb::ContentPart {
                part: Some(part),
                extra: carrier(&fields),
            }
        }
        // Every other part whole, as the API's `other` part.
        None => pb::ContentPart {
            part: Some(Part::Other(json_to_struct(&fields))),
            extra: None,
        },
    }
}

/// The object at `key` when it holds only non-empty strings among `known`
/// (so the typed form says exactly the same), as a map with "" for absent.
fn strings(
    fields: &Map<String, Value>,
    key: &str,
    known: &[&str],
) -> Option<std::collections::HashMap<String, String>> {
    let inner = fields.get(key)?.as_object()?;
    if inner.iter().any(|(name, value)| {
        !known.contains(&name.as_str()) || value.as_str().is_none_or(str::is_empty)
    }) {
        return None;
    }
    Some(
        known
            .iter()
            .map(|name| {
                let value = inner.get(*name).and_then(Value::as_str).unwrap_or_default();
                ((*name).to_owned(), value.to_owned())
            })
            .collect(),
    )
}

/// A function tool with only the typed members becomes a typed tool, its
/// other members (e.g. `cache_control`) in the tool's carrier; any other
/// tool goes whole as the API's `other` tool.
fn tool_proto(tool: Value) -> pb::Tool {
    let mut fields = tool.as_object().cloned().unwrap_or_default();
    let function = fields
        .get("function")
        .and_then(Value::as_object)
        .filter(|function| {
            function
                .keys()
                .all(|key| ["name", "description", "parameters", "strict"].contains(&key.as_str()))
                && function.get("parameters").is_none_or(Value::is_object)
                && function
                    .get("description")
                    .is_none_or(|d| d.as_str().is_some_and(|d| !d.is_empty()))
                && function.get("strict").is_none_or(Value::is_boolean)
        });
    match (
        fields.get("type").and_then(Value::as_str),
        function.cloned(),
    ) {
        (Some("function"), Some(function)) => {
            fields.shift_remove("type");
            fields.shift_remove("function");
            pb::Tool {
                tool: Some(pb::tool::Tool::Function(pb::FunctionTool {
                    name: function["name"].as_str().unwrap_or_default().to_owned(),
                    description: function
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    parameters: function
                        .get("parameters")
                        .and_then(Value::as_object)
                        .map(json_to_struct),
                    strict: function.get("strict").and_then(Value::as_bool),
                })),
                extra: carrier(&fields),
            }
        }
        _ => pb::Tool {
            tool: Some(pb::tool::Tool::Other(json_to_struct(&fields))),
            extra: None,
        },
    }
}
