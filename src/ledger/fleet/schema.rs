//! The fleet ledger's schema in PostgreSQL, owned and migrated by the
//! sidecar. Many pods start at once, so a migration runs in one
//! transaction under a transaction-level advisory lock: the first pod
//! migrates, the others wait for it and then find nothing to do. Steps are
//! additive (new tables, new nullable columns), so a sidecar of the
//! previous version keeps inserting while a newer one migrates; a database
//! migrated past what this build knows is used as it is.

use tokio_postgres::Client;

/// The advisory lock every migration takes (`pg_advisory_xact_lock`):
/// "llmsidec" in ASCII, so it is unlikely to meet another application's.
const MIGRATION_LOCK: i64 = 0x6c6c_6d73_6964_6563;

/// The table of calls, one row per record the pods forwarded.
pub const REQUESTS_TABLE: &str = "llm_sidecar_requests";

/// Step `i` takes the schema from version `i` to `i + 1`. Append only: a
/// released step is never edited, databases in the field already ran it.
pub const MIGRATIONS: &[&str] = &[V1_REQUESTS, V2_WRITER_VERSION];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The SQLite row, plus `record_id` (the pod's file and its row: the key
/// that makes forwarding idempotent) and `pod`. Times are unix
/// milliseconds; token columns NULL when no usage is known; `cost_usd`
/// NULL when the model has no price.
const V1_REQUESTS: &str = "
CREATE TABLE llm_sidecar_requests (
    record_id              TEXT PRIMARY KEY,
    pod                    TEXT NOT NULL,
    request_id             TEXT NOT NULL,
    started_at_ms          BIGINT NOT NULL,
    edge                   TEXT NOT NULL,
    stream                 BOOLEAN NOT NULL,
    caller_name            TEXT,
    caller_uid             BIGINT,
    caller_pid             INTEGER,
    caller_claimed         TEXT,
    tags                   JSONB NOT NULL,
    requested_model        TEXT NOT NULL,
    served_model           TEXT,
    provider               TEXT,
    outcome                TEXT NOT NULL,
    attempts               BIGINT NOT NULL,
    queue_wait_ms          DOUBLE PRECISION NOT NULL,
    latency_ms             DOUBLE PRECISION NOT NULL,
    time_to_first_chunk_ms DOUBLE PRECISION,
    prompt_tokens          BIGINT,
    completion_tokens      BIGINT,
    total_tokens           BIGINT,
    cached_prompt_tokens   BIGINT,
    reasoning_tokens       BIGINT,
    cache_write_tokens     BIGINT,
    usage_estimated        BOOLEAN NOT NULL,
    cost_usd               DOUBLE PRECISION,
    resumed                BOOLEAN NOT NULL,
    forwarded_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX llm_sidecar_requests_started_at ON llm_sidecar_requests (started_at_ms);
CREATE INDEX llm_sidecar_requests_provider ON llm_sidecar_requests (provider, started_at_ms);
CREATE INDEX llm_sidecar_requests_served_model
    ON llm_sidecar_requests (served_model, started_at_ms);
CREATE INDEX llm_sidecar_requests_caller ON llm_sidecar_requests (caller_name, started_at_ms);
CREATE INDEX llm_sidecar_requests_pod ON llm_sidecar_requests (pod, started_at_ms);
";

/// The version of the sidecar that forwarded the row: NULL in rows of
/// sidecars from before this step. Nullable with no default, so adding it
/// rewrites nothing and holds the table's lock only for a moment.
const V2_WRITER_VERSION: &str = "ALTER TABLE llm_sidecar_requests ADD COLUMN writer_version TEXT;";

/// Brings the schema up to [`SCHEMA_VERSION`]; returns the version found
/// before. Safe to run from many connections at once.
///
/// # Errors
/// What PostgreSQL said: no permission to create tables, the database
/// gone mid-way. Nothing is half-applied: the steps run in one transaction.
pub async fn migrate(client: &mut Client) -> Result<i32, tokio_postgres::Error> {
    migrate_to(client, SCHEMA_VERSION).await
}

/// Brings the schema up to `target` (at most [`SCHEMA_VERSION`]); returns
/// the version found before. A schema at or past `target` is left alone.
/// For rolling upgrades and their tests: a sidecar itself migrates with
/// [`migrate`].
///
/// # Errors
/// As [`migrate`].
pub async fn migrate_to(client: &mut Client, target: i32) -> Result<i32, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS llm_sidecar_schema (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM llm_sidecar_schema",
            &[],
        )
        .await?
        .get(0);
    let target = target.min(SCHEMA_VERSION);
    for (version, step) in (1..=target).zip(MIGRATIONS).skip(found.max(0) as usize) {
        tx.batch_execute(step).await?;
        tx.execute(
            "INSERT INTO llm_sidecar_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(found)
}
