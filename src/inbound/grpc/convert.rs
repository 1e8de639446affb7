//! Pure conversions between the protobuf API and the internal chat model.
//! Everything a caller can get wrong in the protobuf shape itself (an unset
//! role, both `content` and `parts`) is reported here, naming the field.

mod structs;

use crate::error::Error;
use crate::model;
use crate::proto::v1 as pb;
use base64::Engine;
use structs::struct_to_json;

pub use structs::json_to_struct;

pub fn request_from_proto(request: pb::ChatRequest) -> Result<model::ChatRequest, Error> {
    let messages = request
        .messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            message_from_proto(message)
                .map_err(|problem| Error::invalid(format!("messages[{index}]: {problem}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tools = request
        .tools
        .into_iter()
        .enumerate()
        .map(|(index, tool)| {
            tool_from_proto(tool)
                .map_err(|problem| Error::invalid(format!("tools[{index}]: {problem}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let extra = match request.extra {
        Some(extra) => match struct_to_json(extra) {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        },
        None => serde_json::Map::new(),
    };
    Ok(model::ChatRequest {
        model: request.model,
        messages,
        stream: false,
        temperature: request.temperature,
        top_p: request.top_p,
        max_tokens: request.max_tokens,
        stop: request.stop,
        seed: request.seed,
        n: request.n,
        presence_penalty: request.presence_penalty,
        frequency_penalty: request.frequency_penalty,
        reasoning_effort: non_empty(request.reasoning_effort),
        user: non_empty(request.user),
        tools,
        tool_choice: request.tool_choice.and_then(tool_choice_from_proto),
        parallel_tool_calls: request.parallel_tool_calls,
        response_format: request.response_format.and_then(response_format_from_proto),
        metadata: request.metadata.into_iter().collect(),
        extra,
    })
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn role_from_proto(role: i32) -> Result<model::Role, String> {
    Ok(match pb::Role::try_from(role) {
        Ok(pb::Role::System) => model::Role::System,
        Ok(pb::Role::Developer) => model::Role::Developer,
        Ok(pb::Role::User) => model::Role::User,
        Ok(pb::Role::Assistant) => model::Role::Assistant,
        Ok(pb::Role::Tool) => model::Role::Tool,
        Ok(pb::Role::Unspecified) => {
            return Err("`role` is not set; use ROLE_SYSTEM, ROLE_DEVELOPER, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL".to_owned());
        }
        Err(_) => return Err(format!("`role` {role} is not a known role")),
    })
}

fn message_from_proto(message: pb::Message) -> Result<model::Message, String> {
    let role = role_from_proto(message.role)?;
    let content = match (message.content, message.parts.is_empty()) {
        (Some(_), false) => return Err("set either `content` or `parts`, not both".to_owned()),
        (Some(text), true) => Some(model::Content::Text(text)),
        (None, false) => Some(model::Content::Parts(
            message
                .parts
                .into_iter()
                .enumerate()
                .map(|(index, part)| {
                    part_from_proto(part).map_err(|problem| format!("parts[{index}]: {problem}"))
                })
                .collect::<Result<_, _>>()?,
        )),
        (None, true) => None,
    };
    Ok(model::Message {
        role,
        content,
        name: non_empty(message.name),
        tool_calls: message
            .tool_calls
            .into_iter()
            .map(|call| {
                let function = call.function.unwrap_or_default();
                model::ToolCall {
                    id: call.id,
                    kind: "function".to_owned(),
                    function: model::FunctionCall {
                        name: function.name,
                        arguments: function.arguments,
                    },
                }
            })
            .collect(),
        tool_call_id: non_empty(message.tool_call_id),
    })
}

fn part_from_proto(part: pb::ContentPart) -> Result<model::ContentPart, String> {
    use pb::content_part::Part;
    match part.part {
        None => Err("the part is empty; set `text`, `image_url` or `image_data`".to_owned()),
        Some(Part::Text(text)) => Ok(model::ContentPart::Text { text }),
        Some(Part::ImageUrl(image)) => Ok(model::ContentPart::ImageUrl {
            image_url: model::ImageUrl {
                url: image.url,
                detail: non_empty(image.detail),
            },
        }),
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
            Ok(model::ContentPart::ImageUrl {
                image_url: model::ImageUrl {
                    url: format!("data:{};base64,{encoded}", image.mime_type),
                    detail: non_empty(image.detail),
                },
            })
        }
    }
}

fn tool_from_proto(tool: pb::Tool) -> Result<model::Tool, String> {
    match tool.tool {
        None => Err("the tool is empty; set `function`".to_owned()),
        Some(pb::tool::Tool::Function(function)) => Ok(model::Tool::Function {
            function: model::FunctionDefinition {
                name: function.name,
                description: non_empty(function.description),
                parameters: function.parameters.map(struct_to_json),
                strict: function.strict,
            },
        }),
    }
}

fn tool_choice_from_proto(choice: pb::ToolChoice) -> Option<model::ToolChoice> {
    use pb::tool_choice::Choice;
    match choice.choice? {
        Choice::FunctionName(name) => Some(model::ToolChoice::Function {
            kind: "function".to_owned(),
            function: model::NamedFunction { name },
        }),
        Choice::Mode(mode) => {
            let mode = match pb::ToolChoiceMode::try_from(mode).ok()? {
                pb::ToolChoiceMode::Unspecified => return None,
                pb::ToolChoiceMode::None => "none",
                pb::ToolChoiceMode::Auto => "auto",
                pb::ToolChoiceMode::Required => "required",
            };
            Some(model::ToolChoice::Mode(mode.to_owned()))
        }
    }
}

fn response_format_from_proto(format: pb::ResponseFormat) -> Option<model::ResponseFormat> {
    use pb::response_format::Format;
    Some(match format.format? {
        Format::Text(_) => model::ResponseFormat::Text,
        Format::JsonObject(_) => model::ResponseFormat::JsonObject,
        Format::JsonSchema(schema) => model::ResponseFormat::JsonSchema {
            json_schema: model::JsonSchemaFormat {
                name: schema.name,
                description: non_empty(schema.description),
                schema: schema.schema.map(struct_to_json),
                strict: schema.strict,
            },
        },
    })
}

pub fn response_to_proto(response: model::ChatResponse, provider: &str) -> pb::ChatResponse {
    pb::ChatResponse {
        id: response.id,
        model: response.model,
        provider: provider.to_owned(),
        created: response.created,
        choices: response
            .choices
            .into_iter()
            .map(|choice| pb::Choice {
                index: choice.index,
                content: choice.message.content,
                refusal: choice.message.refusal.unwrap_or_default(),
                reasoning_content: choice.message.reasoning_content.unwrap_or_default(),
                tool_calls: choice
                    .message
                    .tool_calls
                    .into_iter()
                    .map(|call| pb::ToolCall {
                        id: call.id,
                        function: Some(pb::FunctionCall {
                            name: call.function.name,
                            arguments: call.function.arguments,
                        }),
                    })
                    .collect(),
                finish_reason: choice.finish_reason.unwrap_or_default(),
            })
            .collect(),
        usage: response.usage.map(usage_to_proto),
    }
}

pub fn chunk_to_proto(chunk: model::ChatChunk, provider: &str) -> pb::ChatChunk {
    pb::ChatChunk {
        id: chunk.id,
        model: chunk.model,
        provider: provider.to_owned(),
        created: chunk.created,
        choices: chunk
            .choices
            .into_iter()
            .map(|choice| {
                let delta = choice.delta;
                pb::ChoiceDelta {
                    index: choice.index,
                    role: delta.role.unwrap_or_default(),
                    content: delta.content.unwrap_or_default(),
                    refusal: delta.refusal.unwrap_or_default(),
                    reasoning_content: delta.reasoning_content.unwrap_or_default(),
                    tool_calls: delta
                        .tool_calls
                        .into_iter()
                        .map(|call| {
                            let function = call.function.unwrap_or_default();
                            pb::ToolCallDelta {
                                index: call.index,
                                id: call.id.unwrap_or_default(),
                                name: function.name.unwrap_or_default(),
                                arguments: function.arguments.unwrap_or_default(),
                            }
                        })
                        .collect(),
                    finish_reason: choice.finish_reason.unwrap_or_default(),
                }
            })
            .collect(),
        usage: chunk.usage.map(usage_to_proto),
    }
}

fn usage_to_proto(usage: model::Usage) -> pb::Usage {
    pb::Usage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.total_tokens,
        cached_prompt_tokens: usage.cached_prompt_tokens(),
        reasoning_tokens: usage.reasoning_tokens(),
    }
}

#[cfg(test)]
mod tests;
