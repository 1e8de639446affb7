//! How a provider accepts the text so far of a cut answer (a prefill), for
//! resuming a stream (`resume`, `prefill`, `upstream.resume_max_bytes`).

/// The text kept to resume from, by default: a long answer, at a bounded
/// cost per stream.
pub const DEFAULT_RESUME_MAX_BYTES: usize = 256 * 1024;

/// The ways providers take an assistant message to continue from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefillStyle {
    /// A trailing assistant message is continued (Anthropic-style, and
    /// OpenRouter for the models that allow it).
    TrailingAssistant,
    /// The trailing assistant message carries `"prefix": true` (DeepSeek,
    /// Mistral).
    PrefixFlag,
    /// vLLM's chat template: `continue_final_message: true` and
    /// `add_generation_prompt: false` in the body.
    ContinueFinalMessage,
}

impl PrefillStyle {
    /// The config's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PrefillStyle::TrailingAssistant => "trailing_assistant",
            PrefillStyle::PrefixFlag => "prefix_flag",
            PrefillStyle::ContinueFinalMessage => "continue_final_message",
        }
    }

    /// Reads the config's spelling; `Err` says what is accepted.
    pub fn parse(text: &str) -> Result<PrefillStyle, String> {
        [
            PrefillStyle::TrailingAssistant,
            PrefillStyle::PrefixFlag,
            PrefillStyle::ContinueFinalMessage,
        ]
        .into_iter()
        .find(|style| style.as_str() == text)
        .ok_or_else(|| {
            format!(
                "`{text}` is not a prefill style; use \"trailing_assistant\", \"prefix_flag\" or \"continue_final_message\""
            )
        })
    }
}
