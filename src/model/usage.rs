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

use serde_json::{Map, Value};

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

impl Usage {
    /// Reads a `usage` object in any spelling above; `None` when `value` is
    /// not an object or carries no token count at all.
    pub fn from_json(value: &Value) -> Option<Usage> {
        let usage = value.as_object()?;
        let cache_read = first_count(
            usage,
            &[
                &["prompt_tokens_details", "cached_tokens"],
                &["prompt_cache_hit_tokens"],
                &["cache_read_input_tokens"],
                &["input_tokens_details", "cached_tokens"],
            ],
        );
        let cache_write = first_count(
            usage,
            &[
                &["prompt_tokens_details", "cache_write_tokens"],
                &["cache_creation_input_tokens"],
            ],
        );
        let prompt = count(usage, &["prompt_tokens"]).or_else(|| {
            // Anthropic-style input tokens leave the cache out.
            count(usage, &["input_tokens"]).map(|input| {
                input
                    .saturating_add(count(usage, &["cache_read_input_tokens"]).unwrap_or(0))
                    .saturating_add(count(usage, &["cache_creation_input_tokens"]).unwrap_or(0))
            })
        });
        let completion = first_count(usage, &[&["completion_tokens"], &["output_tokens"]]);
        let total = count(usage, &["total_tokens"]);
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
            reasoning_tokens: first_count(
                usage,
                &[
                    &["completion_tokens_details", "reasoning_tokens"],
                    &["output_tokens_details", "reasoning_tokens"],
                    &["reasoning_tokens"],
                ],
            ),
            cost_usd: usage
                .get("cost")
                .and_then(Value::as_f64)
                .filter(|cost| cost.is_finite() && *cost >= 0.0),
        })
    }

    /// Reads a `usage` object from its JSON text; `None` as for
    /// [`Usage::from_json`], or when the text is not JSON.
    pub fn from_json_text(text: &str) -> Option<Usage> {
        Usage::from_json(&serde_json::from_str(text).ok()?)
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

/// The first of several spellings that holds a count.
fn first_count(usage: &Map<String, Value>, paths: &[&[&str]]) -> Option<u32> {
    paths.iter().find_map(|path| count(usage, path))
}

/// A non-negative integer at `path`; integral floats count (`12.0`).
fn count(usage: &Map<String, Value>, path: &[&str]) -> Option<u32> {
    let (last, parents) = path.split_last()?;
    let mut object = usage;
    for key in parents {
        object = object.get(*key)?.as_object()?;
    }
    let number = object.get(*last)?;
    if let Some(whole) = number.as_u64() {
        return u32::try_from(whole).ok();
    }
    let float = number.as_f64()?;
    (float >= 0.0 && float.fract() == 0.0 && float <= f64::from(u32::MAX)).then_some(float as u32)
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
