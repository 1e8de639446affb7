//! Checks a request before anything is sent upstream, so a mistake costs
//! the caller nothing and the message says exactly what to fix.

use crate::error::Error;
use crate::model::{ChatRequest, Content, ContentPart, Message, Role, Tool, ToolChoice};

/// Typed fields that `extra` may not repeat: a duplicate key would send
/// ambiguous JSON upstream.
const TYPED_FIELDS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
];

pub fn validate(request: &ChatRequest) -> Result<(), Error> {
    if request.model.trim().is_empty() {
        return Err(Error::invalid(
            "`model` is required, e.g. \"mock/echo\" or \"gpt-4o-mini\"",
        ));
    }
    if request.messages.is_empty() {
        return Err(Error::invalid(
            "`messages` is empty: send at least one message",
        ));
    }
    for (index, message) in request.messages.iter().enumerate() {
        message_is_valid(message)
            .map_err(|problem| Error::invalid(format!("messages[{index}]: {problem}")))?;
    }
    ranges_are_valid(request)?;
    tools_are_valid(request)?;
    if let Some(key) = request
        .extra
        .keys()
        .find(|key| TYPED_FIELDS.contains(&key.as_str()))
    {
        return Err(Error::invalid(format!(
            "`extra.{key}` repeats a typed field: set `{key}` on the request itself"
        )));
    }
    Ok(())
}

fn message_is_valid(message: &Message) -> Result<(), String> {
    let has_content = match &message.content {
        None => false,
        Some(Content::Text(text)) => !text.is_empty(),
        Some(Content::Parts(parts)) => {
            for (index, part) in parts.iter().enumerate() {
                part_is_valid(part).map_err(|problem| format!("parts[{index}]: {problem}"))?;
            }
            !parts.is_empty()
        }
    };
    match message.role {
        Role::Assistant if !has_content && message.tool_calls.is_empty() => {
            Err("an assistant message needs content or tool_calls".to_owned())
        }
        Role::Tool if message.tool_call_id.as_deref().unwrap_or("").is_empty() => {
            Err("a tool message needs `tool_call_id`: the id of the call it answers".to_owned())
        }
        Role::Assistant => Ok(()),
        role if !has_content => Err(format!(
            "a {} message needs non-empty content",
            role.as_str()
        )),
        role if !message.tool_calls.is_empty() => Err(format!(
            "only assistant messages carry tool_calls, not {}",
            role.as_str()
        )),
        _ => Ok(()),
    }
}

fn part_is_valid(part: &ContentPart) -> Result<(), String> {
    match part {
        ContentPart::Text { text } if text.is_empty() => Err("the text part is empty".to_owned()),
        ContentPart::ImageUrl { image_url } => {
            let url = image_url.url.as_str();
            if url.starts_with("https://")
                || url.starts_with("http://")
                || url.starts_with("data:image/")
            {
                Ok(())
            } else {
                Err("an image URL must be https://, http:// or a data:image/... URL".to_owned())
            }
        }
        ContentPart::Text { .. } => Ok(()),
    }
}

fn ranges_are_valid(request: &ChatRequest) -> Result<(), Error> {
    let check = |name: &str, value: Option<f64>, low: f64, high: f64| match value {
        Some(value) if !(low..=high).contains(&value) => Err(Error::invalid(format!(
            "`{name}` is {value}; it must be between {low} and {high}"
        ))),
        _ => Ok(()),
    };
    check("temperature", request.temperature, 0.0, 2.0)?;
    check("top_p", request.top_p, 0.0, 1.0)?;
    check("presence_penalty", request.presence_penalty, -2.0, 2.0)?;
    check("frequency_penalty", request.frequency_penalty, -2.0, 2.0)?;
    if request.n == Some(0) {
        return Err(Error::invalid("`n` is 0; ask for at least one choice"));
    }
    if request.max_tokens == Some(0) {
        return Err(Error::invalid(
            "`max_tokens` is 0; allow at least one token",
        ));
    }
    if request.stop.iter().any(String::is_empty) {
        return Err(Error::invalid("`stop` contains an empty sequence"));
    }
    Ok(())
}

fn tools_are_valid(request: &ChatRequest) -> Result<(), Error> {
    for (index, Tool::Function { function }) in request.tools.iter().enumerate() {
        let name = &function.name;
        let well_formed = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !well_formed {
            return Err(Error::invalid(format!(
                "tools[{index}].name `{name}` must be 1-64 letters, digits, `_` or `-`"
            )));
        }
    }
    if let Some(ToolChoice::Function { function, .. }) = &request.tool_choice {
        let known = request
            .tools
            .iter()
            .any(|Tool::Function { function: tool }| tool.name == function.name);
        if !known {
            return Err(Error::invalid(format!(
                "`tool_choice` names the function `{}`, which is not in `tools`",
                function.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FunctionDefinition, ImageUrl, NamedFunction};

    fn request() -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![Message::text(Role::User, "hi")],
            ..ChatRequest::default()
        }
    }

    fn problem(request: &ChatRequest) -> String {
        validate(request).unwrap_err().to_string()
    }

    #[test]
    fn a_plain_request_is_valid() {
        validate(&request()).unwrap();
    }

    #[test]
    fn model_and_messages_are_required() {
        let mut missing_model = request();
        missing_model.model.clear();
        assert!(problem(&missing_model).contains("`model` is required"));
        let mut no_messages = request();
        no_messages.messages.clear();
        assert!(problem(&no_messages).contains("`messages` is empty"));
    }

    #[test]
    fn empty_user_content_names_the_message() {
        let mut request = request();
        request.messages.push(Message::text(Role::User, ""));
        assert_eq!(
            problem(&request),
            "messages[1]: a user message needs non-empty content"
        );
    }

    #[test]
    fn tool_messages_need_a_call_id() {
        let mut request = request();
        request.messages.push(Message::text(Role::Tool, "42"));
        assert!(problem(&request).contains("tool_call_id"));
    }

    #[test]
    fn ranges_are_checked() {
        let mut request = request();
        request.temperature = Some(3.5);
        assert!(problem(&request).contains("`temperature` is 3.5"));
    }

    #[test]
    fn images_need_a_usable_url() {
        let mut request = request();
        request.messages[0].content = Some(Content::Parts(vec![ContentPart::ImageUrl {
            image_url: ImageUrl {
                url: "file:///etc/passwd".into(),
                detail: None,
            },
        }]));
        assert!(problem(&request).contains("parts[0]"));
    }

    #[test]
    fn tool_choice_must_name_a_known_tool() {
        let mut request = request();
        request.tools.push(Tool::Function {
            function: FunctionDefinition {
                name: "get_weather".into(),
                description: None,
                parameters: None,
                strict: None,
            },
        });
        request.tool_choice = Some(ToolChoice::Function {
            kind: "function".into(),
            function: NamedFunction {
                name: "get_time".into(),
            },
        });
        assert!(problem(&request).contains("get_time"));
    }

    #[test]
    fn extra_may_not_repeat_typed_fields() {
        let mut request = request();
        request
            .extra
            .insert("temperature".into(), serde_json::json!(1));
        assert!(problem(&request).contains("extra.temperature"));
    }
}
