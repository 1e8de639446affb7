//! What the calls a budget counts spent since a moment, read back from
//! the file: a restart starts each budget's window from what this pod had
//! already spent in it (`budget::Budgets::restore`).

use crate::config::budgets::BudgetScope;
use rusqlite::{Connection, params};

/// `(tokens, USD)` of the calls under `scope` started at or after
/// `since_ms` and before `until_ms` (unix milliseconds). Tokens are
/// `total_tokens`, else prompt plus completion; a call without a price
/// adds no dollars.
pub(super) fn spent_between(
    conn: &Connection,
    scope: &BudgetScope,
    since_ms: i64,
    until_ms: i64,
) -> rusqlite::Result<(u64, f64)> {
    const SUMS: &str = "SELECT COALESCE(SUM(COALESCE(total_tokens, \
         COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0))), 0), \
         COALESCE(SUM(cost_usd), 0.0) FROM requests \
         WHERE started_at_ms >= ?1 AND started_at_ms < ?2";
    let row = |row: &rusqlite::Row<'_>| {
        Ok((
            u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
            row.get::<_, f64>(1)?,
        ))
    };
    match scope {
        // `uid:<uid>`: a caller that named itself nothing, by its uid.
        BudgetScope::Caller(name) => match name
            .strip_prefix("uid:")
            .and_then(|uid| uid.parse::<u32>().ok())
        {
            Some(uid) => conn.query_row(
                &format!("{SUMS} AND caller_name IS NULL AND caller_uid = ?3"),
                params![since_ms, until_ms, uid],
                row,
            ),
            None => conn.query_row(
                &format!("{SUMS} AND caller_name = ?3"),
                params![since_ms, until_ms, name],
                row,
            ),
        },
        BudgetScope::Provider(name) => conn.query_row(
            &format!("{SUMS} AND provider = ?3"),
            params![since_ms, until_ms, name],
            row,
        ),
        BudgetScope::Tag { key, value } => conn.query_row(
            &format!(
                "{SUMS} AND EXISTS (SELECT 1 FROM json_each(requests.tags) \
                 WHERE json_each.key = ?3 AND json_each.value = ?4)"
            ),
            params![since_ms, until_ms, key, value],
            row,
        ),
    }
}
