//! Rows in PostgreSQL: a spooled row inserted under its fleet-wide key,
//! and rows read back as [`LedgerRow`] for the admin queries.

use crate::ledger::row::{LedgerRow, parse_tags};
use crate::ledger::timestamp;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, Statement};

/// Idempotent on `record_id`: a batch sent again after a commit whose
/// answer was lost inserts nothing twice.
pub(super) const INSERT: &str = "
INSERT INTO llm_sidecar_requests (
    record_id, pod, request_id, started_at_ms, edge, stream, caller_name, caller_uid,
    caller_pid, caller_claimed, tags, requested_model, served_model, provider, outcome,
    attempts, queue_wait_ms, latency_ms, time_to_first_chunk_ms, prompt_tokens,
    completion_tokens, total_tokens, cached_prompt_tokens, reasoning_tokens,
    cache_write_tokens, usage_estimated, cost_usd, resumed, writer_version
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, ($11::text)::jsonb, $12, $13, $14, $15,
          $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29)
ON CONFLICT (record_id) DO NOTHING";

/// Inserts one row; `Ok(false)` when PostgreSQL had it already.
pub(super) async fn insert(
    client: &impl GenericClient,
    statement: &Statement,
    record_id: &str,
    pod: &str,
    row: &LedgerRow,
) -> Result<bool, tokio_postgres::Error> {
    let tokens = |count: Option<u32>| count.map(i64::from);
    let tags = serde_json::to_string(&row.tags).unwrap_or_else(|_| "{}".to_owned());
    let params: [&(dyn ToSql + Sync); 29] = [
        &record_id,
        &pod,
        &row.request_id,
        &row.started_at_ms,
        &row.edge,
        &row.stream,
        &row.caller_name,
        &row.caller_uid.map(i64::from),
        &row.caller_pid,
        &row.caller_claimed,
        &tags,
        &row.requested_model,
        &row.served_model,
        &row.provider,
        &row.outcome,
        &i64::from(row.attempts),
        &row.queue_wait_ms,
        &row.latency_ms,
        &row.time_to_first_chunk_ms,
        &tokens(row.prompt_tokens),
        &tokens(row.completion_tokens),
        &tokens(row.total_tokens),
        &tokens(row.cached_prompt_tokens),
        &tokens(row.reasoning_tokens),
        &tokens(row.cache_write_tokens),
        &row.usage_estimated,
        &row.cost_usd,
        &row.resumed,
        &env!("CARGO_PKG_VERSION"),
    ];
    Ok(client.execute(statement, &params).await? == 1)
}

/// The columns [`from_row`] reads, in its order; strings cut as the local
/// queries cut them.
pub(super) const SELECT_COLUMNS: &str = "
    request_id, started_at_ms, edge, stream, left(caller_name, 256), caller_uid, caller_pid,
    CASE WHEN octet_length(tags::text) <= 524288 THEN tags::text ELSE '{}' END,
    left(requested_model, 256), left(served_model, 256), provider, outcome, attempts,
    queue_wait_ms, latency_ms, time_to_first_chunk_ms, prompt_tokens, completion_tokens,
    total_tokens, cached_prompt_tokens, reasoning_tokens, usage_estimated, cost_usd,
    cache_write_tokens, left(caller_claimed, 256), resumed, pod";

pub(super) fn from_row(row: &Row) -> Result<LedgerRow, tokio_postgres::Error> {
    let count = |index: usize| -> Result<Option<u32>, tokio_postgres::Error> {
        Ok(row
            .try_get::<_, Option<i64>>(index)?
            .and_then(|value| u32::try_from(value).ok()))
    };
    let started_at_ms: i64 = row.try_get(1)?;
    let tags: String = row.try_get(7)?;
    Ok(LedgerRow {
        request_id: row.try_get(0)?,
        started_at_ms,
        started_at: timestamp::rfc3339(started_at_ms),
        edge: row.try_get(2)?,
        stream: row.try_get(3)?,
        caller_name: row.try_get(4)?,
        caller_uid: count(5)?,
        caller_pid: row.try_get(6)?,
        caller_claimed: row.try_get(24)?,
        tags: parse_tags(&tags),
        requested_model: row.try_get(8)?,
        served_model: row.try_get(9)?,
        provider: row.try_get(10)?,
        outcome: row.try_get(11)?,
        attempts: u32::try_from(row.try_get::<_, i64>(12)?).unwrap_or(u32::MAX),
        queue_wait_ms: row.try_get(13)?,
        latency_ms: row.try_get(14)?,
        time_to_first_chunk_ms: row.try_get(15)?,
        prompt_tokens: count(16)?,
        completion_tokens: count(17)?,
        total_tokens: count(18)?,
        cached_prompt_tokens: count(19)?,
        reasoning_tokens: count(20)?,
        usage_estimated: row.try_get(21)?,
        cost_usd: row.try_get(22)?,
        cache_write_tokens: count(23)?,
        resumed: row.try_get(25)?,
        pod: row.try_get(26)?,
    })
}
