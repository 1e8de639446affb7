//! What is left of a call's tightest budget, on its answer at both edges:
//! `x-llm-budget` (its name), `x-llm-budget-remaining-tokens` and
//! `x-llm-budget-remaining-usd` (after this call's reservation, before it
//! is settled to its real usage). Absent when no budget counted the call.

use crate::pipeline::CallProgress;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Adds the headers to an answer's headers (or gRPC initial metadata).
pub fn add(headers: &mut HeaderMap, progress: &CallProgress) {
    let Some(remaining) = progress.budget_remaining() else {
        return;
    };
    if let Ok(name) = HeaderValue::from_str(&remaining.budget) {
        headers.insert(HeaderName::from_static("x-llm-budget"), name);
    }
    if let Some(tokens) = remaining.tokens {
        headers.insert(
            HeaderName::from_static("x-llm-budget-remaining-tokens"),
            tokens.into(),
        );
    }
    if let Some(usd) = remaining.usd
        && let Ok(value) = HeaderValue::from_str(&format!("{usd:.6}"))
    {
        headers.insert(HeaderName::from_static("x-llm-budget-remaining-usd"), value);
    }
}
