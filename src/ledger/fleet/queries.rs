//! The admin queries over the whole fleet: the same answers as the local
//! `summary` and `recent`, computed by PostgreSQL over every pod's rows.

use super::rows::{SELECT_COLUMNS, from_row};
use crate::ledger::recent::{OutcomeFilter, RECENT_BYTES_MAX, RECENT_LIMIT_MAX, RecentQuery};
use crate::ledger::row::LedgerRow;
use crate::ledger::summary::{GroupBy, SummaryQuery, SummaryRow};
use crate::ledger::timestamp;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

/// Usage totals per group, busiest first. Percentiles are nearest-rank
/// (`percentile_disc`), as the local summary computes them.
pub(super) async fn summary(
    client: &Client,
    query: &SummaryQuery,
) -> Result<Vec<SummaryRow>, tokio_postgres::Error> {
    let key = match &query.group_by {
        GroupBy::Model => "COALESCE(served_model, requested_model)",
        GroupBy::Provider => "COALESCE(provider, '')",
        GroupBy::Caller => "COALESCE(caller_name, 'uid:' || caller_uid, '')",
        GroupBy::Tag(_) => "COALESCE(tags ->> $3::text, '')",
    };
    let sql = format!(
        "SELECT {key} AS key, count(*),
                count(*) FILTER (WHERE outcome LIKE 'error:%' OR outcome LIKE 'partial:%'),
                count(*) FILTER (WHERE outcome = 'cancelled'),
                COALESCE(sum(prompt_tokens), 0)::bigint,
                COALESCE(sum(completion_tokens), 0)::bigint,
                COALESCE(sum(cached_prompt_tokens), 0)::bigint,
                COALESCE(sum(reasoning_tokens), 0)::bigint,
                count(*) FILTER (WHERE usage_estimated),
                COALESCE(sum(cost_usd), 0)::float8,
                count(*) FILTER (WHERE cost_usd IS NULL AND prompt_tokens IS NOT NULL),
                percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms),
                percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms)
         FROM llm_sidecar_requests
         WHERE started_at_ms >= $1 AND started_at_ms < $2
         GROUP BY 1"
    );
    let since = timestamp::unix_ms(query.since);
    let until = timestamp::unix_ms(query.until);
    let rows = match &query.group_by {
        GroupBy::Tag(tag) => client.query(&sql, &[&since, &until, tag]).await?,
        _ => client.query(&sql, &[&since, &until]).await?,
    };
    let count = |row: &tokio_postgres::Row, index| -> Result<u64, tokio_postgres::Error> {
        Ok(u64::try_from(row.try_get::<_, i64>(index)?).unwrap_or(0))
    };
    let mut summary = rows
        .iter()
        .map(|row| {
            Ok(SummaryRow {
                key: row.try_get(0)?,
                requests: count(row, 1)?,
                errors: count(row, 2)?,
                cancelled: count(row, 3)?,
                prompt_tokens: count(row, 4)?,
                completion_tokens: count(row, 5)?,
                cached_prompt_tokens: count(row, 6)?,
                reasoning_tokens: count(row, 7)?,
                estimated_requests: count(row, 8)?,
                cost_usd: row.try_get(9)?,
                unpriced_requests: count(row, 10)?,
                p50_latency_ms: row.try_get(11)?,
                p95_latency_ms: row.try_get(12)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    summary.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.key.cmp(&b.key)));
    Ok(summary)
}

/// The newest calls of every pod, filtered as the local query filters.
pub(super) async fn recent(
    client: &Client,
    query: &RecentQuery,
) -> Result<Vec<LedgerRow>, tokio_postgres::Error> {
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let bind = |values: &mut Vec<Box<dyn ToSql + Sync + Send>>,
                value: Box<dyn ToSql + Sync + Send>| {
        values.push(value);
        format!("${}", values.len())
    };
    if let Some(since) = query.since {
        let at = bind(&mut values, Box::new(timestamp::unix_ms(since)));
        conditions.push(format!("started_at_ms >= {at}"));
    }
    if let Some(model) = &query.model {
        let at = bind(&mut values, Box::new(model.clone()));
        conditions.push(format!("(served_model = {at} OR requested_model = {at})"));
    }
    if let Some(provider) = &query.provider {
        let at = bind(&mut values, Box::new(provider.clone()));
        conditions.push(format!("provider = {at}"));
    }
    if let Some(caller) = &query.caller {
        let name = bind(&mut values, Box::new(caller.clone()));
        match caller
            .strip_prefix("uid:")
            .and_then(|uid| uid.parse::<u32>().ok())
        {
            Some(uid) => {
                let uid = bind(&mut values, Box::new(i64::from(uid)));
                conditions.push(format!(
                    "(caller_name = {name} OR (caller_name IS NULL AND caller_uid = {uid}))"
                ));
            }
            None => conditions.push(format!("caller_name = {name}")),
        }
    }
    match &query.outcome {
        None => {}
        Some(OutcomeFilter::Ok) => conditions.push("outcome = 'ok'".to_owned()),
        Some(OutcomeFilter::Error) => conditions.push("outcome <> 'ok'".to_owned()),
        Some(OutcomeFilter::Label(label)) => {
            let at = bind(&mut values, Box::new(label.clone()));
            conditions.push(format!("outcome = {at}"));
        }
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let limit = bind(
        &mut values,
        Box::new(query.limit.min(RECENT_LIMIT_MAX) as i64),
    );
    let sql = format!(
        "SELECT {SELECT_COLUMNS} FROM llm_sidecar_requests {filter}
         ORDER BY started_at_ms DESC, record_id DESC LIMIT {limit}"
    );
    let params: Vec<&(dyn ToSql + Sync)> = values
        .iter()
        .map(|value| &**value as &(dyn ToSql + Sync))
        .collect();
    let rows = client.query(&sql, &params).await?;
    let mut kept = Vec::new();
    let mut bytes = 0;
    for row in &rows {
        let row = from_row(row)?;
        bytes += row.approximate_size();
        if bytes > RECENT_BYTES_MAX && !kept.is_empty() {
            break;
        }
        kept.push(row);
    }
    Ok(kept)
}
