//! Builds what the fake says: the reply text and its chunks, usage numbers and
//! the OpenAI-shaped JSON bodies (completion, chunk, usage chunk, error).
//! Pure functions of the request and scenario so they are easy to test.

use serde_json::{Value, json};

use super::Scenario;
use super::wire::{
    ChunkChoice, CompletionDetails, Delta, Envelope, ErrorBody, ErrorDetail, FunctionDelta,
    Message, MessageChoice, PromptDetails, ToolCallDelta, Usage, to_json,
};

/// Used when the request has no user text to echo.
pub(crate) const DEFAULT_REPLY: &str = "Hello from the fake upstream.";
/// Model reported when neither the scenario nor the request names one.
pub(crate) const DEFAULT_MODEL: &str = "fake-model";

/// The fields every completion object or chunk of one response shares.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) id: String,
    pub(crate) created: u64,
    pub(crate) model: String,
}

/// One tool call the fake "decides" to make.
#[derive(Debug, Clone)]
pub(crate) struct ToolCall {
    pub(crate) id: String,
    pub(crate) name: &'static str,
    /// The arguments JSON, already split into the pieces streamed as deltas.
    pub(crate) argument_pieces: Vec<String>,
}

impl ToolCall {
    pub(crate) fn arguments(&self) -> String {
        self.argument_pieces.concat()
    }
}

/// What the answer consists of.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    Text(Vec<String>),
    ToolCalls(Vec<ToolCall>),
}

/// Everything needed to render one answer, streamed or not.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) meta: Meta,
    pub(crate) reasoning: Vec<String>,
    pub(crate) content: Content,
    pub(crate) finish_reason: &'static str,
    pub(crate) usage: Usage,
}

impl Answer {
    /// Builds the answer for `request` under `scenario`; `n` numbers the id.
    pub(crate) fn build(request: &Value, scenario: &Scenario, n: u64, created: u64) -> Answer {
        let model = scenario
            .model
            .clone()
            .or_else(|| {
                request
                    .get("model")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        let meta = Meta {
            id: format!("chatcmpl-fake-{n}"),
            created,
            model,
        };
        let reasoning = scenario
            .reasoning
            .as_deref()
            .map(split_words)
            .unwrap_or_default();
        let (content, finish_reason) = if scenario.tool_calls {
            (Content::ToolCalls(tool_calls(n)), "tool_calls")
        } else {
            let text = reply_text(request, scenario);
            let chunks = match scenario.chunks {
                Some(k) => split_even(&text, k),
                None => split_words(&text),
            };
            (Content::Text(chunks), "stop")
        };
        let content_chunks = match &content {
            Content::Text(chunks) => chunks.len(),
            Content::ToolCalls(calls) => calls.iter().map(|c| 1 + c.argument_pieces.len()).sum(),
        };
        let prompt = scenario
            .prompt_tokens
            .unwrap_or_else(|| prompt_word_count(request));
        let reasoning_tokens = scenario
            .reasoning_tokens
            .unwrap_or_else(|| to_u32(reasoning.len()));
        let completion = to_u32(content_chunks).saturating_add(reasoning_tokens);
        let usage = Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            prompt_tokens_details: PromptDetails {
                cached_tokens: scenario.cached_tokens.unwrap_or(0),
            },
            completion_tokens_details: CompletionDetails { reasoning_tokens },
        };
        Answer {
            meta,
            reasoning,
            content,
            finish_reason: if scenario.finish_error {
                "error"
            } else {
                finish_reason
            },
            usage,
        }
    }

    fn envelope<C>(
        &self,
        object: &'static str,
        choices: Vec<C>,
        usage: Option<Usage>,
    ) -> Envelope<'_, C> {
        Envelope {
            id: &self.meta.id,
            object,
            created: self.meta.created,
            model: &self.meta.model,
            choices,
            usage,
        }
    }

    /// The non-streaming `chat.completion` object.
    pub(crate) fn completion_json(&self, include_usage: bool) -> String {
        let (content, tool_calls) = match &self.content {
            Content::Text(chunks) => (Some(chunks.concat()), None),
            Content::ToolCalls(calls) => (
                None,
                Some(
                    calls
                        .iter()
                        .map(|c| ToolCallDelta {
                            index: None,
                            id: Some(&c.id),
                            kind: Some("function"),
                            function: FunctionDelta {
                                name: Some(c.name),
                                arguments: c.arguments(),
                            },
                        })
                        .collect(),
                ),
            ),
        };
        let message = Message {
            role: "assistant",
            content,
            reasoning_content: (!self.reasoning.is_empty()).then(|| self.reasoning.concat()),
            tool_calls,
        };
        let choice = MessageChoice {
            index: 0,
            message,
            finish_reason: self.finish_reason,
        };
        to_json(&self.envelope(
            "chat.completion",
            vec![choice],
            include_usage.then_some(self.usage),
        ))
    }

    /// One `chat.completion.chunk` with a single choice.
    pub(crate) fn chunk_json(&self, delta: Delta<'_>, finish_reason: Option<&str>) -> String {
        let choice = ChunkChoice {
            index: 0,
            delta,
            finish_reason,
        };
        to_json(&self.envelope("chat.completion.chunk", vec![choice], None))
    }

    /// The trailing usage chunk sent when `stream_options.include_usage` is set.
    pub(crate) fn usage_chunk_json(&self) -> String {
        let none: Vec<ChunkChoice<'_>> = Vec::new();
        to_json(&self.envelope("chat.completion.chunk", none, Some(self.usage)))
    }
}

/// The whole reply text: the scenario's `reply` (or the echo), repeated.
pub(crate) fn reply_text(request: &Value, scenario: &Scenario) -> String {
    let text = scenario.reply.clone().unwrap_or_else(|| echo_text(request));
    match scenario.repeat {
        Some(times) => text.repeat(times),
        None => text,
    }
}

/// OpenAI-style error body for `status`, with scenario overrides.
pub(crate) fn error_json(status: u16, scenario: &Scenario) -> String {
    let (default_type, default_code) = match status {
        400 => ("invalid_request_error", None),
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("permission_error", None),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("rate_limit_error", Some("rate_limit_exceeded")),
        s if s >= 500 => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    let message = scenario
        .error_message
        .clone()
        .unwrap_or_else(|| format!("fake upstream error (status {status})"));
    to_json(&ErrorBody {
        error: ErrorDetail {
            message: &message,
            kind: scenario.error_type.as_deref().unwrap_or(default_type),
            code: scenario.error_code.as_deref().or(default_code),
        },
    })
}

/// An error body for problems with the request itself (bad JSON, bad scenario).
pub(crate) fn invalid_request_json(message: &str) -> String {
    to_json(&ErrorBody {
        error: ErrorDetail {
            message,
            kind: "invalid_request_error",
            code: None,
        },
    })
}

/// The text of the last user message: string content, or its text parts
/// joined with single spaces; [`DEFAULT_REPLY`] if there is none.
pub(crate) fn echo_text(request: &Value) -> String {
    let last_user = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|msgs| {
            msgs.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        });
    let text = last_user
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default();
    if text.is_empty() {
        DEFAULT_REPLY.to_owned()
    } else {
        text
    }
}

/// Text of a message `content`: a string, or the `text` of its text parts.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Rough prompt size: whitespace-separated words across all messages' text.
pub(crate) fn prompt_word_count(request: &Value) -> u32 {
    let words = request
        .get("messages")
        .and_then(Value::as_array)
        .map(|msgs| {
            msgs.iter()
                .filter_map(|m| m.get("content"))
                .map(|c| content_text(c).split_whitespace().count())
                .sum()
        })
        .unwrap_or(0);
    to_u32(words)
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One chunk per word; each word keeps the whitespace that follows it (leading
/// whitespace stays with the first word). Never empty: "" gives one "" chunk.
pub(crate) fn split_words(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut after_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            after_space = !current.trim().is_empty() || after_space;
        } else if after_space {
            chunks.push(std::mem::take(&mut current));
            after_space = false;
        }
        current.push(c);
    }
    if !current.is_empty() || chunks.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// `k` pieces of nearly equal length in chars (never splitting a char); fewer
/// if the text is shorter than `k` chars. Never empty.
pub(crate) fn split_even(text: &str, k: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let k = k.clamp(1, chars.len().max(1));
    let base = chars.len() / k;
    let extra = chars.len() % k;
    let mut out = Vec::with_capacity(k);
    let mut start = 0;
    for i in 0..k {
        let len = base + usize::from(i < extra);
        out.push(chars[start..start + len].iter().collect());
        start += len;
    }
    out
}

/// The two canned tool calls, arguments pre-split into several deltas.
fn tool_calls(n: u64) -> Vec<ToolCall> {
    let calls = [
        (
            "get_weather",
            json!({"location": "Paris, France", "unit": "celsius"}),
        ),
        ("get_time", json!({"timezone": "Europe/Paris"})),
    ];
    calls
        .into_iter()
        .enumerate()
        .map(|(i, (name, args))| ToolCall {
            id: format!("call_fake_{n}_{i}"),
            name,
            argument_pieces: split_even(&args.to_string(), 4),
        })
        .collect()
}
