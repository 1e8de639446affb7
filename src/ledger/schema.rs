//! Opening the ledger file: connection settings, and the schema migrated
//! forward one numbered step at a time (`PRAGMA user_version` holds the
//! step reached, so a file from a newer llm-sidecar is recognised and left
//! alone instead of being misread).

use super::LedgerError;
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

/// How long a statement waits for another connection's lock (a second
/// process on the same file, a reader checkpointing) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Step `i` takes the schema from version `i` to `i + 1`. Append only:
/// a released step is never edited, files in the field already ran it.
const MIGRATIONS: &[&str] = &[
    V1_REQUESTS,
    V2_CACHE_WRITE,
    V3_CALLER_CLAIMED,
    V4_RESUMED,
    V5_META,
];

/// The schema version this build writes and understands.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Times are unix milliseconds, durations milliseconds as REAL (sub-ms
/// latencies of local models stay visible). Token columns are NULL when no
/// usage is known at all, `cost_usd` is NULL when the model has no price:
/// unknown is kept apart from zero everywhere.
pub(super) const V1_REQUESTS: &str = "
CREATE TABLE requests (
    id                     INTEGER PRIMARY KEY,
    request_id             TEXT    NOT NULL,
    started_at_ms          INTEGER NOT NULL,
    edge                   TEXT    NOT NULL,
    stream                 INTEGER NOT NULL,
    caller_name            TEXT,
    caller_uid             INTEGER,
    caller_pid             INTEGER,
    tags                   TEXT    NOT NULL,  -- JSON object, string to string
    requested_model        TEXT    NOT NULL,
    served_model           TEXT,
    provider               TEXT,
    outcome                TEXT    NOT NULL,  -- ok | cancelled | error:<code> | partial:<code>
    attempts               INTEGER NOT NULL,
    queue_wait_ms          REAL    NOT NULL,
    latency_ms             REAL    NOT NULL,
    time_to_first_chunk_ms REAL,
    prompt_tokens          INTEGER,
    completion_tokens      INTEGER,
    total_tokens           INTEGER,
    cached_prompt_tokens   INTEGER,
    reasoning_tokens       INTEGER,
    usage_estimated        INTEGER NOT NULL,
    cost_usd               REAL
);
CREATE INDEX requests_started_at ON requests (started_at_ms);
CREATE INDEX requests_provider ON requests (provider, started_at_ms);
CREATE INDEX requests_served_model ON requests (served_model, started_at_ms);
CREATE INDEX requests_caller ON requests (caller_name, started_at_ms);
";

/// Prompt tokens written to the provider's cache (Anthropic-style cache
/// creation), priced apart: NULL in rows written before this step.
const V2_CACHE_WRITE: &str = "ALTER TABLE requests ADD COLUMN cache_write_tokens INTEGER;";

/// What a caller with a token said it was (`x-llm-caller`), beside the
/// token's name in `caller_name`: NULL for callers without a token.
const V3_CALLER_CLAIMED: &str = "ALTER TABLE requests ADD COLUMN caller_claimed TEXT;";

/// 1 when a stream cut mid-answer was continued from its text so far (its
/// `attempts` count the continuation; `outcome` says whether it completed
/// the answer, or the call ended with the cut); 0 otherwise and in rows
/// written before this step.
const V4_RESUMED: &str = "ALTER TABLE requests ADD COLUMN resumed INTEGER NOT NULL DEFAULT 0;";

/// The file's own values, by name: the fleet forwarder's watermark and the
/// file's random id (`ledger/fleet/spool.rs`).
const V5_META: &str = "CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);";

/// The writer's connection: creates the file if needed and brings the
/// schema up to date.
pub(super) fn open_writer(path: &Path) -> Result<Connection, LedgerError> {
    let fail = |error| LedgerError::from_sqlite(path, error);
    create_private(path);
    #[allow(clippy::disallowed_methods)] // the owner
    let mut conn = Connection::open(path).map_err(fail)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    // WAL: the writer appends while the usage queries read a stable
    // snapshot; neither waits for the other.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            "ledger: {} cannot use WAL (journal mode is {mode}); queries may wait for the writer",
            path.display()
        );
    }
    // In WAL mode NORMAL survives a crash of the process and may lose the
    // last commits on power loss: right for a usage ledger, and it saves
    // an fsync per batch.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(fail)?;
    // Appends touch only the right edge of the table and its time-ordered
    // indexes: 256 KiB of page cache serves them, where SQLite's default
    // 2 MiB would stay resident after any burst.
    conn.pragma_update(None, "cache_size", -256).map_err(fail)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Makes a missing ledger file readable by this uid only (SQLite gives its
/// `-wal` and `-shm` files the same mode): it names callers and what they
/// spent, and `[ledger] path` may point into a shared directory. An
/// existing file keeps its mode; a failure here is SQLite's to report.
fn create_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
}

/// A connection for the usage queries, which must never write.
pub(super) fn open_reader(path: &Path) -> Result<Connection, LedgerError> {
    let fail = |error| LedgerError::from_sqlite(path, error);
    #[allow(clippy::disallowed_methods)] // the owner
    let conn = Connection::open(path).map_err(fail)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    conn.pragma_update(None, "query_only", true).map_err(fail)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), LedgerError> {
    let fail = |error| LedgerError::from_sqlite(path, error);
    // IMMEDIATE: two processes opening a new file at once migrate one after
    // the other instead of both creating the table.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(fail)?;
    if found > SCHEMA_VERSION {
        return Err(LedgerError::NewerSchema {
            path: path.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    let done = usize::try_from(found).unwrap_or(0);
    for (version, step) in (1..).zip(MIGRATIONS).skip(done) {
        tx.execute_batch(step).map_err(fail)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(fail)?;
    }
    tx.commit().map_err(fail)
}
