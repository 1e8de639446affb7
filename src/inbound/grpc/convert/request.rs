//! A protobuf `ChatRequest` → the internal request, whose body is the
//! OpenAI JSON the typed fields stand for, with each level's `extra`
//! carrier merged in.

use super::struct_to_json;
use crate::error::Error;
use crate::model::ChatRequest;
use crate::proto::v1 as pb;
use base64::Engine;
use serde_json::{Map, Value, json};

/// Top-level members that are the sidecar's own: a carrier may not set them.
const OWNED: &[&str] = &["model", "stream", "metadata"];

/// `Err(InvalidRequest)` naming the field: an unset role, `content` and
/// `parts` both set, an empty part or tool, image bytes without an image
/// type, or an `extra` key that repeats a typed field set beside it.
pub fn request_from_proto(request: pb::ChatRequest) -> Result<ChatRequest, Error> {
    let mut body = Map::new();
    let messages = request
        .messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            message_json(message)
                .map_err(|problem| Error::invalid(format!("messages[{index}]: {problem}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    body.insert("messages".into(), Value::Array(messages));
    let numbers = [
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("presence_penalty", request.presence_penalty),
        ("frequency_penalty", request.frequency_penalty),
    ];
    for (key, value) in numbers {
        if let Some(value) = value {
            body.insert(key.into(), json!(value));
        }
    }
    let counts = [
        ("max_completion_tokens", request.max_completion_tokens),
        ("n", request.n),
        ("top_logprobs", request.top_logprobs),
    ];
    for (key, value) in counts {
        if let Some(value) = value {
            body.insert(key.into(), json!(value));
        }
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), json!(request.stop));
    }
    if let Some(seed) = request.seed {
        body.insert("seed".into(), json!(seed));
    }
    if let Some(logprobs) = request.logprobs {
        body.insert("logprobs".into(), json!(logprobs));
    }
    for (key, text) in [
        ("reasoning_effort", request.reasoning_effort),
        ("user", request.user),
    ] {
        if !text.is_empty() {
            body.insert(key.into(), Value::String(text));
        }
    }
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .into_iter()
            .enumerate()
            .map(|(index, tool)| {
                tool_json(tool)
                    .map_err(|problem| Error::invalid(format!("tools[{index}]: {problem}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = request.tool_choice.and_then(tool_choice_json) {
        body.insert("tool_choice".into(), choice);
    }
    if let Some(parallel) = request.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), json!(parallel));
    }
    if let Some(format) = request.response_format.and_then(response_format_json) {
        body.insert("response_format".into(), format);
    }
    // The typed cap is written upstream under the provider's spelling; a
    // carried `max_tokens` beside it would say two things.
    let carried_cap = request
        .extra
        .as_ref()
        .is_some_and(|extra| extra.fields.contains_key("max_tokens"));
    if request.max_tokens.is_some() && carried_cap {
        return Err(Error::invalid(
            "`extra.max_tokens` repeats a typed field that is set: set it in one place",
        ));
    }
    merge_extra(&mut body, request.extra, "extra")?;
    for key in OWNED {
        body.shift_remove(*key);
    }
    Ok(ChatRequest {
        model: request.model,
        stream: false,
        body,
        max_output_tokens: request.max_tokens,
        metadata: request.metadata.into_iter().collect(),
        proto: None,
    })
}

/// Merges a carrier into the members built from typed fields. A member
/// that is an object on both sides merges member by member (a carrier may
/// add to a typed `function`); any other member that is already there is a
/// contradiction the caller must resolve.
fn merge_extra(
    fields: &mut Map<String, Value>,
    extra: Option<prost_types::Struct>,
    path: &str,
) -> Result<(), Error> {
    let Some(extra) = extra else {
        return Ok(());
    };
    let incoming: Map<String, Value> = extra
        .fields
        .into_iter()
        .map(|(key, value)| (key, super::structs::value_to_json(value)))
        .collect();
    merge_members(fields, incoming, path)
}

fn merge_members(
    fields: &mut Map<String, Value>,
    incoming: Map<String, Value>,
    path: &str,
) -> Result<(), Error> {
    for (key, value) in incoming {
        let here = format!("{path}.{key}");
        match (fields.get_mut(&key), value) {
            (None, value) => {
                fields.insert(key, value);
            }
            (Some(Value::Object(typed)), Value::Object(more)) => {
                merge_members(typed, more, &here)?;
            }
            (Some(_), _) => {
                return Err(Error::invalid(format!(
                    "`{here}` repeats a typed field that is set: set it in one place"
                )));
            }
        }
    }
    Ok(())
}

/// Like [`merge_extra`], with the problem as text for a nested path.
fn merge(
    fields: &mut Map<String, Value>,
    extra: Option<prost_types::Struct>,
) -> Result<(), String> {
    merge_extra(fields, extra, "extra").map_err(|error| error.to_string())
}

fn role(role: i32) -> Result<&'static str, String> {
    Ok(match pb::Role::try_from(role) {
        Ok(pb::Role::System) => "system",
        Ok(pb::Role::Developer) => "developer",
        Ok(pb::Role::User) => "user",
        Ok(pb::Role::Assistant) => "assistant",
        Ok(pb::Role::Tool) => "tool",
        Ok(pb::Role::Function) => "function",
        Ok(pb::Role::Unspecified) => {
            return Err("`role` is not set; use ROLE_SYSTEM, ROLE_DEVELOPER, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL or ROLE_FUNCTION".to_owned());
        }
        Err(_) => return Err(format!("`role` {role} is not a known role")),
    })
}

fn message_json(message: pb::Message) -> Result<Value, String> {
    let mut fields = Map::new();
    let carried = |key: &str| {
        message
            .extra
            .as_ref()
            .is_some_and(|extra| extra.fields.contains_key(key))
    };
    // A role the enum has no name for may come in the carrier.
    match role(message.role) {
        Ok(role) => {
            fields.insert("role".into(), json!(role));
        }
        Err(_) if message.role == 0 && carried("role") => {}
        Err(problem) => return Err(problem),
    }
    let content = match (message.content, message.parts.is_empty()) {
        (Some(_), false) => return Err("set either `content` or `parts`, not both".to_owned()),
        // An empty text is the caller's: a tool that printed nothing.
        (Some(text), true) => Value::String(text),
        (None, false) => Value::Array(
            message
                .parts
                .into_iter()
                .enumerate()
                .map(|(index, part)| {
                    part_json(part).map_err(|problem| format!("parts[{index}]: {problem}"))
                })
                .collect::<Result<_, _>>()?,
        ),
        // Neither: `"content": null` (an assistant message that only calls
        // tools), unless the carrier says otherwise.
        (None, true) => Value::Null,
    };
    if !(content.is_null() && carried("content")) {
        fields.insert("content".into(), content);
    }
    if !message.name.is_empty() {
        fields.insert("name".into(), Value::String(message.name));
    }
    if !message.tool_calls.is_empty() {
        let calls = message
            .tool_calls
            .into_iter()
            .enumerate()
            .map(|(index, call)| {
                tool_call_json(call).map_err(|problem| format!("tool_calls[{index}]: {problem}"))
            })
            .collect::<Result<_, _>>()?;
        fields.insert("tool_calls".into(), Value::Array(calls));
    }
    if !message.tool_call_id.is_empty() {
        fields.insert("tool_call_id".into(), Value::String(message.tool_call_id));
    }
    if let Some(reasoning) = message.reasoning_content {
        fields.insert("reasoning_content".into(), Value::String(reasoning));
    }
    merge(&mut fields, message.extra)?;
    Ok(Value::Object(fields))
}

fn tool_call_json(call: pb::ToolCall) -> Result<Value, String> {
    let function = call.function.unwrap_or_default();
    let kind = if call.r#type.is_empty() {
        "function".to_owned()
    } else {
        call.r#type
    };
    let mut fields = Map::new();
    fields.insert("id".into(), Value::String(call.id));
    fields.insert("type".into(), Value::String(kind));
    fields.insert(
        "function".into(),
        json!({"name": function.name, "arguments": function.arguments}),
    );
    merge(&mut fields, call.extra)?;
    Ok(Value::Object(fields))
}

fn part_json(part: pb::ContentPart) -> Result<Value, String> {
    use pb::content_part::Part;
    let mut fields = match part.part {
        None if part.extra.is_some() => Map::new(),
        None => {
            return Err("the part is empty; set `text`, `image_url`, `image_data`, `file`, `input_audio`, `refusal` or `other`".to_owned());
        }
        Some(Part::Text(text)) => object(json!({"type": "text", "text": text})),
        Some(Part::ImageUrl(image)) => image_part(image.url, image.detail),
        Some(Part::ImageData(image)) => {
            if !image.mime_type.starts_with("image/") {
                return Err(format!(
                    "`image_data.mime_type` is `{}`; give the image type, e.g. \"image/png\"",
                    image.mime_type
                ));
            }
            if image.data.is_empty() {
                return Err("`image_data.data` is empty".to_owned());
            }
            let encoded = base64::engine::general_purpose::STANDARD.encode(&image.data);
            image_part(
                format!("data:{};base64,{encoded}", image.mime_type),
                image.detail,
            )
        }
        Some(Part::File(file)) => {
            let mut inner = Map::new();
            for (key, value) in [
                ("file_data", file.file_data),
                ("file_id", file.file_id),
                ("filename", file.filename),
            ] {
                if !value.is_empty() {
                    inner.insert(key.into(), Value::String(value));
                }
            }
            object(json!({"type": "file", "file": inner}))
        }
        Some(Part::InputAudio(audio)) => object(json!({
            "type": "input_audio",
            "input_audio": {"data": audio.data, "format": audio.format},
        })),
        Some(Part::Refusal(text)) => object(json!({"type": "refusal", "refusal": text})),
        Some(Part::Other(other)) => object(struct_to_json(other)),
    };
    merge(&mut fields, part.extra)?;
    Ok(Value::Object(fields))
}

fn image_part(url: String, detail: String) -> Map<String, Value> {
    let mut image = Map::new();
    image.insert("url".into(), Value::String(url));
    if !detail.is_empty() {
        image.insert("detail".into(), Value::String(detail));
    }
    object(json!({"type": "image_url", "image_url": image}))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(fields) => fields,
        _ => Map::new(),
    }
}

fn tool_json(tool: pb::Tool) -> Result<Value, String> {
    let mut fields = match tool.tool {
        None if tool.extra.is_some() => Map::new(),
        None => return Err("the tool is empty; set `function` or `other`".to_owned()),
        Some(pb::tool::Tool::Function(function)) => {
            let mut definition = Map::new();
            definition.insert("name".into(), Value::String(function.name));
            if !function.description.is_empty() {
                definition.insert("description".into(), Value::String(function.description));
            }
            if let Some(parameters) = function.parameters {
                definition.insert("parameters".into(), struct_to_json(parameters));
            }
            if let Some(strict) = function.strict {
                definition.insert("strict".into(), Value::Bool(strict));
            }
            object(json!({"type": "function", "function": definition}))
        }
        Some(pb::tool::Tool::Other(other)) => object(struct_to_json(other)),
    };
    merge(&mut fields, tool.extra)?;
    Ok(Value::Object(fields))
}

fn tool_choice_json(choice: pb::ToolChoice) -> Option<Value> {
    use pb::tool_choice::Choice;
    match choice.choice? {
        Choice::FunctionName(name) => Some(json!({"type": "function", "function": {"name": name}})),
        Choice::Mode(mode) => {
            let mode = match pb::ToolChoiceMode::try_from(mode).ok()? {
                pb::ToolChoiceMode::Unspecified => return None,
                pb::ToolChoiceMode::None => "none",
                pb::ToolChoiceMode::Auto => "auto",
                pb::ToolChoiceMode::Required => "required",
            };
            Some(json!(mode))
        }
        Choice::Other(other) => Some(struct_to_json(other)),
    }
}

fn response_format_json(format: pb::ResponseFormat) -> Option<Value> {
    use pb::response_format::Format;
    Some(match format.format? {
        Format::Text(_) => json!({"type": "text"}),
        Format::JsonObject(_) => json!({"type": "json_object"}),
        Format::JsonSchema(schema) => {
            let mut inner = Map::new();
            inner.insert("name".into(), Value::String(schema.name));
            if !schema.description.is_empty() {
                inner.insert("description".into(), Value::String(schema.description));
            }
            if let Some(body) = schema.schema {
                inner.insert("schema".into(), struct_to_json(body));
            }
            if let Some(strict) = schema.strict {
                inner.insert("strict".into(), Value::Bool(strict));
            }
            json!({"type": "json_schema", "json_schema": inner})
        }
        Format::Other(other) => struct_to_json(other),
    })
}
