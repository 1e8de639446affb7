//! Model prices: what a call cost in US dollars, from its token counts.
//!
//! A model without a price has an unknown cost (`None`), never a cost of 0,
//! so that a sum over calls can say it is a floor rather than silently
//! under-report.

use crate::model::Usage;
use globset::{Glob, GlobMatcher};
use std::collections::HashMap;

/// One configured price, in USD per million tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceEntry {
    /// An exact model name, or a glob such as `openai/gpt-4o*`.
    pub model: String,
    pub input_per_million: f64,
    pub output_per_million: f64,
    /// For prompt tokens served from the provider's cache; the input price
    /// when not given.
    pub cached_input_per_million: Option<f64>,
    /// For prompt tokens written to the provider's cache (Anthropic-style
    /// cache creation, often above the input price); the input price when
    /// not given.
    pub cache_write_per_million: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct Pricing {
    exact: HashMap<String, Rates>,
    /// In configuration order: the first match wins.
    globs: Vec<(GlobMatcher, Rates)>,
}

/// USD per token.
#[derive(Debug, Clone, Copy)]
struct Rates {
    input: f64,
    cached_input: f64,
    cache_write: f64,
    output: f64,
}

impl Pricing {
    /// Errors name the entry at fault: a bad glob, or a price that is
    /// negative or not a number.
    pub fn new(entries: Vec<PriceEntry>) -> Result<Pricing, String> {
        let mut pricing = Pricing::default();
        for entry in entries {
            let rates = Rates::of(&entry)?;
            if is_glob(&entry.model) {
                let matcher = Glob::new(&entry.model)
                    .map_err(|error| {
                        format!("bad model pattern {:?} in prices: {error}", entry.model)
                    })?
                    .compile_matcher();
                pricing.globs.push((matcher, rates));
            } else {
                // A repeated exact name: the first one wins, as for globs.
                pricing.exact.entry(entry.model).or_insert(rates);
            }
        }
        Ok(pricing)
    }

    /// USD for this usage: exact names win over globs, then the first
    /// matching glob in order. Prompt tokens read from the cache are billed
    /// at the cached price, those written to it at the cache-write price,
    /// the rest of the prompt at the input price (each token once: the
    /// counts are parts of `prompt_tokens`, see [`Usage`]); reasoning
    /// tokens are part of the completion and billed with it. `None` when no
    /// entry matches.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        let rates = self.exact.get(model).or_else(|| {
            self.globs
                .iter()
                .find(|(glob, _)| glob.is_match(model))
                .map(|(_, rates)| rates)
        })?;
        let read = usage.cached_prompt_tokens().min(usage.prompt_tokens);
        let written = usage
            .cache_write_tokens
            .unwrap_or(0)
            .min(usage.prompt_tokens - read);
        let uncached = f64::from(usage.prompt_tokens - read - written);
        let completion = f64::from(usage.completion_tokens);
        Some(
            uncached * rates.input
                + f64::from(read) * rates.cached_input
                + f64::from(written) * rates.cache_write
                + completion * rates.output,
        )
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.globs.is_empty()
    }
}

impl Rates {
    fn of(entry: &PriceEntry) -> Result<Rates, String> {
        let per_token = |per_million: f64, what: &str| {
            if per_million.is_finite() && per_million >= 0.0 {
                Ok(per_million / 1_000_000.0)
            } else {
                Err(format!(
                    "the {what} price of {:?} must be a number of dollars ≥ 0, not {per_million}",
                    entry.model
                ))
            }
        };
        let input = per_token(entry.input_per_million, "input")?;
        Ok(Rates {
            input,
            cached_input: match entry.cached_input_per_million {
                Some(cached) => per_token(cached, "cached input")?,
                None => input,
            },
            cache_write: match entry.cache_write_per_million {
                Some(write) => per_token(write, "cache write")?,
                None => input,
            },
            output: per_token(entry.output_per_million, "output")?,
        })
    }
}

/// Whether globset would read `pattern` as more than a literal name.
fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}
