//! Usage totals over a time window, grouped by model, provider, caller or
//! a tag: what was spent, on what, for whom, and how fast it was.

use super::row::parse_tags;
use super::timestamp;
use rusqlite::Connection;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq)]
pub struct SummaryQuery {
    /// Calls started at or after this time…
    pub since: SystemTime,
    /// …and before this one.
    pub until: SystemTime,
    pub group_by: GroupBy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// The served model, or the requested one when none answered.
    Model,
    Provider,
    /// The caller's name, else `uid:<uid>` of the peer process.
    Caller,
    /// The value of one attribution tag.
    Tag(String),
}

impl FromStr for GroupBy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "model" => Ok(GroupBy::Model),
            "provider" => Ok(GroupBy::Provider),
            "caller" => Ok(GroupBy::Caller),
            _ => match text.strip_prefix("tag:") {
                Some(key) if !key.is_empty() => Ok(GroupBy::Tag(key.to_owned())),
                _ => Err(format!(
                    "cannot group by {text:?}: choose model, provider, caller or tag:<key>"
                )),
            },
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupBy::Model => f.write_str("model"),
            GroupBy::Provider => f.write_str("provider"),
            GroupBy::Caller => f.write_str("caller"),
            GroupBy::Tag(key) => write!(f, "tag:{key}"),
        }
    }
}

/// One group's totals. Latency percentiles are nearest-rank over the
/// group's calls in the window.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SummaryRow {
    /// Empty when the calls have no value for the grouping (no provider,
    /// no caller, no such tag); see [`SummaryRow::display_key`].
    pub key: String,
    pub requests: u64,
    /// Calls that failed: `error:*` and `partial:*` outcomes.
    pub errors: u64,
    /// Calls the caller gave up on; not counted in `errors`.
    pub cancelled: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_prompt_tokens: u64,
    pub reasoning_tokens: u64,
    /// Calls whose token counts are our estimate.
    pub estimated_requests: u64,
    /// The sum of known costs: a floor when `unpriced_requests` > 0.
    pub cost_usd: f64,
    /// Calls with token counts but no known price.
    pub unpriced_requests: u64,
    pub p50_latency_ms: f64,
    pub p95_latency_ms: f64,
}

impl SummaryRow {
    /// The key as shown to people: `(none)` for the empty key.
    pub fn display_key(&self) -> &str {
        if self.key.is_empty() {
            "(none)"
        } else {
            &self.key
        }
    }
}

/// The SQL for the group key. For tags it is the JSON column, whose value
/// is picked out in Rust: any key works, whatever characters it holds.
fn key_column(group_by: &GroupBy) -> &'static str {
    match group_by {
        GroupBy::Model => "COALESCE(served_model, requested_model)",
        GroupBy::Provider => "COALESCE(provider, '')",
        GroupBy::Caller => "COALESCE(caller_name, 'uid:' || caller_uid, '')",
        GroupBy::Tag(_) => "tags",
    }
}

pub(super) fn summarize(
    conn: &Connection,
    query: &SummaryQuery,
) -> rusqlite::Result<Vec<SummaryRow>> {
    let sql = format!(
        "SELECT {}, outcome, prompt_tokens, completion_tokens, cached_prompt_tokens,
                reasoning_tokens, usage_estimated, cost_usd, latency_ms
         FROM requests WHERE started_at_ms >= ?1 AND started_at_ms < ?2",
        key_column(&query.group_by)
    );
    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query((
        timestamp::unix_ms(query.since),
        timestamp::unix_ms(query.until),
    ))?;
    let mut groups: HashMap<String, Group> = HashMap::new();
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        let key = match &query.group_by {
            GroupBy::Tag(tag) => parse_tags(&key).remove(tag).unwrap_or_default(),
            _ => key,
        };
        let call = Call {
            outcome: row.get(1)?,
            prompt_tokens: row.get(2)?,
            completion_tokens: row.get(3)?,
            cached_prompt_tokens: row.get(4)?,
            reasoning_tokens: row.get(5)?,
            usage_estimated: row.get(6)?,
            cost_usd: row.get(7)?,
            latency_ms: row.get(8)?,
        };
        groups.entry(key).or_default().add(&call);
    }
    let mut summary: Vec<SummaryRow> = groups
        .into_iter()
        .map(|(key, group)| group.finish(key))
        .collect();
    // Busiest first; ties in key order so the output is stable.
    summary.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.key.cmp(&b.key)));
    Ok(summary)
}

/// The columns of one call that the totals need.
struct Call {
    outcome: String,
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    cached_prompt_tokens: Option<u32>,
    reasoning_tokens: Option<u32>,
    usage_estimated: bool,
    cost_usd: Option<f64>,
    latency_ms: f64,
}

#[derive(Default)]
struct Group {
    totals: SummaryRow,
    latencies_ms: Vec<f64>,
}

impl Group {
    fn add(&mut self, call: &Call) {
        let totals = &mut self.totals;
        totals.requests += 1;
        if call.outcome.starts_with("error:") || call.outcome.starts_with("partial:") {
            totals.errors += 1;
        } else if call.outcome == "cancelled" {
            totals.cancelled += 1;
        }
        totals.prompt_tokens += u64::from(call.prompt_tokens.unwrap_or(0));
        totals.completion_tokens += u64::from(call.completion_tokens.unwrap_or(0));
        totals.cached_prompt_tokens += u64::from(call.cached_prompt_tokens.unwrap_or(0));
        totals.reasoning_tokens += u64::from(call.reasoning_tokens.unwrap_or(0));
        totals.estimated_requests += u64::from(call.usage_estimated);
        match call.cost_usd {
            Some(cost) => totals.cost_usd += cost,
            None if call.prompt_tokens.is_some() => totals.unpriced_requests += 1,
            None => {}
        }
        self.latencies_ms.push(call.latency_ms);
    }

    fn finish(mut self, key: String) -> SummaryRow {
        self.latencies_ms.sort_by(f64::total_cmp);
        SummaryRow {
            key,
            p50_latency_ms: nearest_rank(&self.latencies_ms, 50),
            p95_latency_ms: nearest_rank(&self.latencies_ms, 95),
            ..self.totals
        }
    }
}

/// The smallest value with at least `percent`% of `sorted` at or below it;
/// 0 for no values. Integer arithmetic on the rank, so that 95% of 20 is
/// exactly the 19th value.
pub(super) fn nearest_rank(sorted: &[f64], percent: usize) -> f64 {
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}
