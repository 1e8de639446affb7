//! Borrowed, lenient views of an answer or a stream event: only the fields
//! the sidecar reads (ids, finish reasons per choice, tool-call indexes,
//! text lengths, usage). Everything else is skipped while reading and
//! passes on untouched in the original bytes.

use super::lenient::{
    InlineList, LenientCount, LenientLen, LenientList, LenientObject, LenientStr,
};
use serde::Deserialize;
use serde::de::Deserializer;
use serde_json::value::RawValue;

/// A `chat.completion` or `chat.completion.chunk` object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AnswerView<'a> {
    #[serde(borrow)]
    pub id: LenientStr<'a>,
    #[serde(borrow)]
    pub model: LenientStr<'a>,
    #[serde(borrow)]
    pub choices: InlineList<LenientObject<ChoiceView<'a>>>,
    /// The `usage` member as written, `null` included (absent: `None`).
    #[serde(borrow, deserialize_with = "present")]
    pub usage: Option<&'a RawValue>,
    /// An in-band error object (OpenRouter reports failures this way).
    #[serde(borrow, deserialize_with = "present")]
    pub error: Option<&'a RawValue>,
    /// Groq's extension object: a stream's usage arrives in it.
    #[serde(borrow)]
    pub x_groq: LenientObject<GroqView<'a>>,
}

impl<'a> AnswerView<'a> {
    /// The usage object: `usage`, else Groq's `x_groq.usage`; `None` when
    /// neither is an object.
    pub fn usage_object(&self) -> Option<&'a RawValue> {
        let groq = self.x_groq.0.as_ref().and_then(|groq| groq.usage);
        self.usage
            .filter(|raw| !is_null(raw))
            .or(groq)
            .filter(|raw| !is_null(raw))
    }
}

/// Groq's `x_groq`: only its usage is read.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GroqView<'a> {
    #[serde(borrow, deserialize_with = "present")]
    pub usage: Option<&'a RawValue>,
}

/// One choice: `message` in an answer, `delta` in a stream event.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChoiceView<'a> {
    pub index: LenientCount,
    #[serde(borrow)]
    pub finish_reason: LenientStr<'a>,
    #[serde(borrow)]
    pub delta: LenientObject<MessageView<'a>>,
    #[serde(borrow)]
    pub message: LenientObject<MessageView<'a>>,
}

/// The generated parts of a message or delta, measured: the sidecar counts
/// their bytes (the usage estimate) and passes the text on in the original
/// bytes.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MessageView<'a> {
    pub content: LenientLen,
    pub refusal: LenientLen,
    /// DeepSeek, vLLM and SGLang say `reasoning_content`; OpenRouter and
    /// Ollama say `reasoning`. Read apart, so that both may be present.
    pub reasoning_content: LenientLen,
    pub reasoning: LenientLen,
    #[serde(borrow)]
    pub tool_calls: LenientList<LenientObject<ToolCallView<'a>>>,
}

impl MessageView<'_> {
    /// Bytes of generated text: content, refusal, reasoning (one spelling),
    /// tool-call arguments.
    pub fn output_bytes(&self) -> usize {
        let reasoning = if self.reasoning_content.0 == 0 {
            self.reasoning.0
        } else {
            self.reasoning_content.0
        };
        self.content.0
            + self.refusal.0
            + reasoning
            + self
                .tool_calls
                .0
                .iter()
                .filter_map(|call| call.0.as_ref()?.function.0.as_ref())
                .map(|function| function.arguments.0)
                .sum::<usize>()
    }
}

/// A tool call, whole or a streamed piece of one.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ToolCallView<'a> {
    pub index: LenientCount,
    #[serde(borrow)]
    pub id: LenientStr<'a>,
    #[serde(borrow, rename = "type")]
    pub kind: LenientStr<'a>,
    #[serde(borrow)]
    pub function: LenientObject<FunctionView<'a>>,
}

impl ToolCallView<'_> {
    pub fn name(&self) -> Option<&str> {
        self.function.0.as_ref()?.name.as_deref()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FunctionView<'a> {
    #[serde(borrow)]
    pub name: LenientStr<'a>,
    pub arguments: LenientLen,
}

/// A member as its raw JSON, `null` included, so that a present `null` and
/// an absent member differ.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Whether a raw member is JSON `null`.
pub fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}
