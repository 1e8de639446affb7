//! Token counts as the sidecar accounts them, read leniently from every
//! provider's spelling of a `usage` object.
//!
//! The caller always sees the usage object exactly as the upstream sent it;
//! this normalized form is only for the ledger, prices, metrics and spans.
//!
//! Spellings read (the first one present wins; spellings of one count are
//! never added together):
//! - prompt: `prompt_tokens` (OpenAI; it *includes* cached tokens, as
//!   DeepSeek's includes its cache hits), else Anthropic-style
//!   `input_tokens`, which *excludes* `cache_read_input_tokens` and
//!   `cache_creation_input_tokens`: those are added to it.
//! - completion: `completion_tokens`, else `output_tokens`.
//! - cache read: `prompt_tokens_details.cached_tokens` (OpenAI, OpenRouter),
//!   `prompt_cache_hit_tokens` (DeepSeek), `cache_read_input_tokens`
//!   (Anthropic-style, as OpenRouter and others pass it on).
//! - cache write: `prompt_tokens_details.cache_write_tokens` (OpenRouter),
//!   `cache_creation_input_tokens` (Anthropic-style).
//! - reasoning: `completion_tokens_details.reasoning_tokens`,
//!   `output_tokens_details.reasoning_tokens`, `reasoning_tokens`.
//! - cost: `cost`, the upstream's own figure in USD (OpenRouter).
//!
//! A count that is missing, `null`, negative or not an integer is absent,
//! never an error: a provider that billed the call has answered.

use super::lenient::{LenientCount, LenientNumber, LenientObject};
use serde::Deserialize;
use serde_json::Value;

/// One call's token counts (tokens) and the upstream's own cost (USD).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Every input token, cached and cache-written ones included.
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    /// Prompt tokens read from the provider's cache (part of
    /// `prompt_tokens`); `None` when the upstream did not say.
    pub cache_read_tokens: Option<u32>,
    /// Prompt tokens written to the provider's cache (part of
    /// `prompt_tokens`, often billed above the input price).
    pub cache_write_tokens: Option<u32>,
    /// Completion tokens spent on reasoning (part of `completion_tokens`).
    pub reasoning_tokens: Option<u32>,
    /// What the upstream says the call cost, in USD, where it says so.
    pub cost_usd: Option<f64>,
}

/// Every spelling read, each leniently (see `lenient.rs`); read from the
/// text without building a JSON value.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UsageView {
    prompt_tokens: LenientCount,
    input_tokens: LenientCount,
    completion_tokens: LenientCount,
    output_tokens: LenientCount,
    total_tokens: LenientCount,
    prompt_tokens_details: LenientObject<DetailsView>,
    input_tokens_details: LenientObject<DetailsView>,
    completion_tokens_details: LenientObject<DetailsView>,
    output_tokens_details: LenientObject<DetailsView>,
    prompt_cache_hit_tokens: LenientCount,
    cache_read_input_tokens: LenientCount,
    cache_creation_input_tokens: LenientCount,
    reasoning_tokens: LenientCount,
    cost: LenientNumber,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DetailsView {
    cached_tokens: LenientCount,
    cache_write_tokens: LenientCount,
    reasoning_tokens: LenientCount,
}

fn detail(
    details: &LenientObject<DetailsView>,
    count: fn(&DetailsView) -> LenientCount,
) -> Option<u32> {
    details.0.as_ref().and_then(|details| count(details).0)
}

impl Usage {
    /// Reads a `usage` object's text in any spelling above; `None` when it
    /// is not an object or carries no token count at all.
    pub fn from_json_text(text: &str) -> Option<Usage> {
        if !text.trim_start().starts_with('{') {
            return None;
        }
        let view: UsageView = serde_json::from_str(text).ok()?;
        let cache_read = detail(&view.prompt_tokens_details, |d| d.cached_tokens)
            .or(view.prompt_cache_hit_tokens.0)
            .or(view.cache_read_input_tokens.0)
            .or_else(|| detail(&view.input_tokens_details, |d| d.cached_tokens));
        let cache_write = detail(&view.prompt_tokens_details, |d| d.cache_write_tokens)
            .or(view.cache_creation_input_tokens.0);
        let prompt = view.prompt_tokens.0.or_else(|| {
            // Anthropic-style input tokens leave the cache out.
            view.input_tokens.0.map(|input| {
                input
                    .saturating_add(view.cache_read_input_tokens.0.unwrap_or(0))
                    .saturating_add(view.cache_creation_input_tokens.0.unwrap_or(0))
            })
        });
        let completion = view.completion_tokens.0.or(view.output_tokens.0);
        let total = view.total_tokens.0;
        if prompt.is_none() && completion.is_none() && total.is_none() {
            return None;
        }
        let prompt_tokens = prompt.unwrap_or(0);
        let completion_tokens = completion.unwrap_or(0);
        Some(Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: total.unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            reasoning_tokens: detail(&view.completion_tokens_details, |d| d.reasoning_tokens)
                .or_else(|| detail(&view.output_tokens_details, |d| d.reasoning_tokens))
                .or(view.reasoning_tokens.0),
            cost_usd: view.cost.0.filter(|cost| cost.is_finite() && *cost >= 0.0),
        })
    }

    /// [`Usage::from_json_text`] of a JSON value.
    pub fn from_json(value: &Value) -> Option<Usage> {
        Usage::from_json_text(&value.to_string())
    }

    /// Cached prompt tokens, 0 when not reported.
    pub fn cached_prompt_tokens(&self) -> u32 {
        self.cache_read_tokens.unwrap_or(0)
    }

    /// Reasoning tokens, 0 when not reported.
    pub fn reasoning_tokens(&self) -> u32 {
        self.reasoning_tokens.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(value: Value) -> Usage {
        Usage::from_json(&value).expect("a usage object")
    }

    #[test]
    fn openai_details() {
        let usage = read(json!({
            "prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
            "prompt_tokens_details": {"cached_tokens": 900, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 30},
        }));
        assert_eq!(usage.prompt_tokens, 1000);
        assert_eq!(usage.cache_read_tokens, Some(900));
        assert_eq!(usage.reasoning_tokens, Some(30));
        assert_eq!(usage.total_tokens, 1050);
    }

    #[test]
    fn deepseek_cache_hits_are_inside_the_prompt() {
        let usage = read(json!({
            "prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010,
            "prompt_cache_hit_tokens": 900, "prompt_cache_miss_tokens": 100,
        }));
        assert_eq!(usage.prompt_tokens, 1000);
        assert_eq!(usage.cache_read_tokens, Some(900));
    }

    #[test]
    fn anthropic_style_input_excludes_the_cache() {
        let usage = read(json!({
            "input_tokens": 100, "output_tokens": 20,
            "cache_read_input_tokens": 800, "cache_creation_input_tokens": 50,
        }));
        assert_eq!(usage.prompt_tokens, 950);
        assert_eq!(usage.completion_tokens, 20);
        assert_eq!(usage.total_tokens, 970);
        assert_eq!(usage.cache_read_tokens, Some(800));
        assert_eq!(usage.cache_write_tokens, Some(50));
    }

    #[test]
    fn two_spellings_of_one_count_are_not_added() {
        let usage = read(json!({
            "prompt_tokens": 1000, "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 900},
            "prompt_cache_hit_tokens": 900,
        }));
        assert_eq!(usage.cache_read_tokens, Some(900));
    }

    #[test]
    fn odd_numbers_and_nulls_are_absent_not_errors() {
        let usage = read(json!({
            "prompt_tokens": 12.0, "completion_tokens": null, "total_tokens": "14",
            "prompt_tokens_details": null,
            "completion_tokens_details": {"reasoning_tokens": -1},
            "cost": 0.0012,
        }));
        assert_eq!(usage.prompt_tokens, 12);
        assert_eq!(usage.completion_tokens, 0);
        assert_eq!(usage.total_tokens, 12);
        assert_eq!(usage.cache_read_tokens, None);
        assert_eq!(usage.reasoning_tokens, None);
        assert_eq!(usage.cost_usd, Some(0.0012));
        assert_eq!(Usage::from_json(&json!({"prompt_tokens": 1.5})), None);
        assert_eq!(Usage::from_json(&json!(null)), None);
        assert_eq!(Usage::from_json(&json!({})), None);
    }
}
