//! The latest calls, newest first, optionally filtered.

use super::row::{LedgerRow, SELECT_COLUMNS};
use super::timestamp;
use rusqlite::Connection;
use rusqlite::types::Value;
use std::str::FromStr;
use std::time::SystemTime;

/// The most rows one query returns, whatever `limit` asks for.
pub const RECENT_LIMIT_MAX: usize = 1000;
/// The most one query returns, in bytes of its rows
/// ([`LedgerRow::approximate_size`]): rows past it are left out (the
/// first row always comes), so an answer stays a few MiB whatever the
/// rows hold.
pub const RECENT_BYTES_MAX: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct RecentQuery {
    /// Capped at [`RECENT_LIMIT_MAX`].
    pub limit: usize,
    /// Only calls started at or after this time.
    pub since: Option<SystemTime>,
    /// Matches the served or the requested model.
    pub model: Option<String>,
    pub provider: Option<String>,
    /// Matches the caller's name, or `uid:<uid>` for a peer with none (the
    /// key of `group_by=caller`).
    pub caller: Option<String>,
    pub outcome: Option<OutcomeFilter>,
}

impl Default for RecentQuery {
    fn default() -> Self {
        RecentQuery {
            limit: 50,
            since: None,
            model: None,
            provider: None,
            caller: None,
            outcome: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeFilter {
    Ok,
    /// Anything but `ok`: errors, partial streams and cancellations.
    Error,
    /// One exact outcome label, e.g. `cancelled` or `error:rate_limited`.
    Label(String),
}

impl FromStr for OutcomeFilter {
    type Err = String;

    /// `ok`, `error` (anything not ok), or an exact label.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "" => Err("an outcome filter is `ok`, `error` or an exact outcome label".to_owned()),
            "ok" => Ok(OutcomeFilter::Ok),
            "error" => Ok(OutcomeFilter::Error),
            label => Ok(OutcomeFilter::Label(label.to_owned())),
        }
    }
}

pub(super) fn recent(conn: &Connection, query: &RecentQuery) -> rusqlite::Result<Vec<LedgerRow>> {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    if let Some(since) = query.since {
        conditions.push("started_at_ms >= ?");
        values.push(Value::Integer(timestamp::unix_ms(since)));
    }
    if let Some(model) = &query.model {
        conditions.push("(served_model = ? OR requested_model = ?)");
        values.push(Value::Text(model.clone()));
        values.push(Value::Text(model.clone()));
    }
    if let Some(provider) = &query.provider {
        conditions.push("provider = ?");
        values.push(Value::Text(provider.clone()));
    }
    if let Some(caller) = &query.caller {
        // The same key the usage summary groups by: the name, else
        // `uid:<uid>` of a nameless peer. Written so the caller index serves
        // a name.
        match caller
            .strip_prefix("uid:")
            .and_then(|uid| uid.parse::<u32>().ok())
        {
            Some(uid) => {
                conditions.push("(caller_name = ? OR (caller_name IS NULL AND caller_uid = ?))");
                values.push(Value::Text(caller.clone()));
                values.push(Value::Integer(i64::from(uid)));
            }
            None => {
                conditions.push("caller_name = ?");
                values.push(Value::Text(caller.clone()));
            }
        }
    }
    match &query.outcome {
        None => {}
        Some(OutcomeFilter::Ok) => conditions.push("outcome = 'ok'"),
        Some(OutcomeFilter::Error) => conditions.push("outcome <> 'ok'"),
        Some(OutcomeFilter::Label(label)) => {
            conditions.push("outcome = ?");
            values.push(Value::Text(label.clone()));
        }
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let limit = query.limit.min(RECENT_LIMIT_MAX);
    values.push(Value::Integer(limit as i64));
    let sql = format!(
        "SELECT {SELECT_COLUMNS} FROM requests {filter} ORDER BY started_at_ms DESC, id DESC LIMIT ?"
    );
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map(rusqlite::params_from_iter(values), LedgerRow::from_row)?;
    let mut kept = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let row = row?;
        bytes += row.approximate_size();
        if bytes > RECENT_BYTES_MAX && !kept.is_empty() {
            break;
        }
        kept.push(row);
    }
    Ok(kept)
}
