//! The local file as the forwarder's spool: which of its rows PostgreSQL
//! already has (the watermark), the file's own random id (with a row's id,
//! the row's key in PostgreSQL), and the rows still to send. Both values
//! live in the file's `ledger_meta` table, so they survive a restart and
//! go with the file: a new or replaced file is a new spool.

use crate::ledger::row::{LedgerRow, SELECT_COLUMNS};
use rusqlite::{Connection, OptionalExtension as _};

/// The key of the highest row id PostgreSQL has committed.
const WATERMARK_KEY: &str = "forwarded_through";
const ORIGIN_KEY: &str = "origin";

/// The file's random id, made on first use. With a row's id it names the
/// row fleet-wide: unique per pod and file, never the caller's request id.
pub(super) fn origin(conn: &Connection) -> rusqlite::Result<String> {
    conn.execute(
        "INSERT OR IGNORE INTO ledger_meta (key, value) VALUES (?1, ?2)",
        (ORIGIN_KEY, uuid::Uuid::new_v4().simple().to_string()),
    )?;
    conn.query_row(
        "SELECT value FROM ledger_meta WHERE key = ?1",
        [ORIGIN_KEY],
        |row| row.get(0),
    )
}

/// Starts the file's numbering afresh: a new origin and nothing forwarded.
/// For a file whose row ids went back below the watermark (every row was
/// deleted while no forwarder guarded them), where old ids would name new
/// rows.
pub(super) fn renumber(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE ledger_meta SET value = ?1 WHERE key = ?2",
        (uuid::Uuid::new_v4().simple().to_string(), ORIGIN_KEY),
    )?;
    set_watermark(conn, 0)
}

/// The highest row id PostgreSQL has; 0 before the first batch.
pub(super) fn watermark(conn: &Connection) -> rusqlite::Result<i64> {
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM ledger_meta WHERE key = ?1",
            [WATERMARK_KEY],
            |row| row.get(0),
        )
        .optional()?;
    Ok(value.and_then(|text| text.parse().ok()).unwrap_or(0))
}

pub(super) fn set_watermark(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO ledger_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (WATERMARK_KEY, id.to_string()),
    )?;
    Ok(())
}

/// The highest row id in the file; 0 when empty.
pub(super) fn max_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM requests", [], |row| {
        row.get(0)
    })
}

/// At most `limit` rows after `after`, oldest first, with their ids.
pub(super) fn read_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<(i64, LedgerRow)>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {SELECT_COLUMNS}, id FROM requests WHERE id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    let rows = statement.query_map((after, limit as i64), |row| {
        Ok((row.get(26)?, LedgerRow::from_row(row)?))
    })?;
    rows.collect()
}
