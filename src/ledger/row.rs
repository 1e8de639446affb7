//! One ledger row: how a [`CallRecord`] is written, and how a row is read
//! back as a [`LedgerRow`] for `recent`.

use super::timestamp;
use crate::call_record::CallRecord;
use rusqlite::{Row, Statement, params};
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) const INSERT: &str = "
INSERT INTO requests (
    request_id, started_at_ms, edge, stream, caller_name, caller_uid, caller_pid, tags,
    requested_model, served_model, provider, outcome, attempts,
    queue_wait_ms, latency_ms, time_to_first_chunk_ms,
    prompt_tokens, completion_tokens, total_tokens, cached_prompt_tokens, reasoning_tokens,
    usage_estimated, cost_usd, cache_write_tokens, caller_claimed, resumed
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
          ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)";

/// Binds `record` to a prepared [`INSERT`] and runs it.
pub(super) fn insert(statement: &mut Statement<'_>, record: &CallRecord) -> rusqlite::Result<()> {
    let usage = record.usage.as_ref();
    statement.execute(params![
        record.request_id,
        timestamp::unix_ms(record.started_at),
        record.edge.as_str(),
        record.stream,
        record.caller.name,
        record.caller.uid,
        record.caller.pid,
        tags_json(&record.tags),
        record.requested_model,
        record.served_model,
        record.provider,
        record.outcome.label(),
        record.attempts,
        millis(record.queue_wait),
        millis(record.latency),
        record.time_to_first_chunk.map(millis),
        usage.map(|usage| usage.prompt_tokens),
        usage.map(|usage| usage.completion_tokens),
        usage.map(|usage| usage.total_tokens),
        usage.map(|usage| usage.cached_prompt_tokens()),
        usage.map(|usage| usage.reasoning_tokens()),
        record.usage_estimated,
        record.cost_usd,
        usage.map(|usage| usage.cache_write_tokens.unwrap_or(0)),
        record.caller.claimed,
        record.resumed,
    ])?;
    Ok(())
}

/// Via nanoseconds so that whole and half milliseconds stay exact
/// (`as_secs_f64() * 1000.0` turns 1234 ms into 1233.9999…).
fn millis(duration: Duration) -> f64 {
    duration.as_nanos() as f64 / 1_000_000.0
}

fn tags_json(tags: &BTreeMap<String, String>) -> String {
    // A map of strings always serializes; the fallback only keeps the type honest.
    serde_json::to_string(tags).unwrap_or_else(|_| "{}".to_owned())
}

/// Tags as stored. A value that is not a JSON object of strings (a file
/// edited by hand) reads as no tags rather than failing the whole query.
pub(super) fn parse_tags(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// A stored call, every [`CallRecord`] field flattened for display and JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LedgerRow {
    pub request_id: String,
    pub started_at_ms: i64,
    /// The same instant as RFC 3339 in UTC, for people.
    pub started_at: String,
    pub edge: String,
    pub stream: bool,
    pub caller_name: Option<String>,
    pub caller_uid: Option<u32>,
    pub caller_pid: Option<i32>,
    /// What a caller that came with a token said it was (`x-llm-caller`);
    /// `caller_name` is then the token's name.
    pub caller_claimed: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub requested_model: String,
    pub served_model: Option<String>,
    pub provider: Option<String>,
    /// `ok`, `cancelled`, `error:<code>` or `partial:<code>`.
    pub outcome: String,
    pub attempts: u32,
    pub queue_wait_ms: f64,
    pub latency_ms: f64,
    pub time_to_first_chunk_ms: Option<f64>,
    /// The token counts are `None` when no usage is known at all.
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub total_tokens: Option<u32>,
    pub cached_prompt_tokens: Option<u32>,
    pub reasoning_tokens: Option<u32>,
    /// Prompt tokens written to the provider's cache; `None` in rows older
    /// than the column.
    pub cache_write_tokens: Option<u32>,
    pub usage_estimated: bool,
    /// `None` when the model has no price (unknown, not free).
    pub cost_usd: Option<f64>,
    /// A stream cut mid-answer was continued from its text so far.
    pub resumed: bool,
    /// The pod that wrote the row, in answers from the fleet ledger
    /// (PostgreSQL); `None` (and left out of JSON) for the local file's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// The largest stored `tags` JSON a query reads; a larger one (only rows
/// written before the tag limits, see [`crate::pipeline::validate`]) reads as no
/// tags. New rows stay under it: 64 tags of 128 + 1024 bytes, escaped.
pub const MAX_READ_TAGS_BYTES: usize = 512 * 1024;

/// The columns [`LedgerRow::from_row`] reads, in its order. The caller's
/// strings are read cut to the validation limits (by characters, so at
/// most 4 bytes each), so a row written before the limits cannot make one
/// query hold its megabytes.
pub(super) const SELECT_COLUMNS: &str = "
    request_id, started_at_ms, edge, stream, substr(caller_name, 1, 256), caller_uid,
    caller_pid, CASE WHEN octet_length(tags) <= 524288 THEN tags ELSE '{}' END,
    substr(requested_model, 1, 256), substr(served_model, 1, 256), provider, outcome, attempts,
    queue_wait_ms, latency_ms, time_to_first_chunk_ms,
    prompt_tokens, completion_tokens, total_tokens, cached_prompt_tokens, reasoning_tokens,
    usage_estimated, cost_usd, cache_write_tokens, substr(caller_claimed, 1, 256), resumed";

impl LedgerRow {
    /// Roughly the bytes the row takes as JSON: its strings and tags, plus
    /// a fixed allowance for the numbers and names.
    pub fn approximate_size(&self) -> usize {
        let strings = [
            Some(&self.request_id),
            Some(&self.started_at),
            Some(&self.edge),
            self.caller_name.as_ref(),
            self.caller_claimed.as_ref(),
            Some(&self.requested_model),
            self.served_model.as_ref(),
            self.provider.as_ref(),
            Some(&self.outcome),
            self.pod.as_ref(),
        ];
        let tags: usize = self
            .tags
            .iter()
            .map(|(key, value)| key.len() + value.len() + 6)
            .sum();
        strings
            .into_iter()
            .flatten()
            .map(String::len)
            .sum::<usize>()
            + tags
            + 600
    }

    pub(super) fn from_row(row: &Row<'_>) -> rusqlite::Result<LedgerRow> {
        let started_at_ms: i64 = row.get(1)?;
        let tags: String = row.get(7)?;
        Ok(LedgerRow {
            request_id: row.get(0)?,
            started_at_ms,
            started_at: timestamp::rfc3339(started_at_ms),
            edge: row.get(2)?,
            stream: row.get(3)?,
            caller_name: row.get(4)?,
            caller_uid: row.get(5)?,
            caller_pid: row.get(6)?,
            caller_claimed: row.get(24)?,
            tags: parse_tags(&tags),
            requested_model: row.get(8)?,
            served_model: row.get(9)?,
            provider: row.get(10)?,
            outcome: row.get(11)?,
            attempts: row.get(12)?,
            queue_wait_ms: row.get(13)?,
            latency_ms: row.get(14)?,
            time_to_first_chunk_ms: row.get(15)?,
            prompt_tokens: row.get(16)?,
            completion_tokens: row.get(17)?,
            total_tokens: row.get(18)?,
            cached_prompt_tokens: row.get(19)?,
            reasoning_tokens: row.get(20)?,
            usage_estimated: row.get(21)?,
            cost_usd: row.get(22)?,
            cache_write_tokens: row.get(23)?,
            resumed: row.get(25)?,
            pod: None,
        })
    }
}
