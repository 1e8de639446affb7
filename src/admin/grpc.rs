//! `llmsidecar.v1.AdminService`: the admin queries over gRPC, for
//! operators' tools that already speak our proto.

use super::{Admin, AdminError, RecentQuestion, UsageQuestion};
use crate::ledger::{LedgerRow, SummaryRow};
use crate::proto::v1 as pb;
use std::time::{Duration, SystemTime};
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct AdminServiceImpl {
    admin: Admin,
}

impl AdminServiceImpl {
    pub fn new(admin: Admin) -> Self {
        AdminServiceImpl { admin }
    }
}

fn to_status(error: &AdminError) -> Status {
    match error {
        AdminError::Invalid(message) => Status::invalid_argument(message.clone()),
        AdminError::Unavailable(message) => Status::failed_precondition(message.clone()),
    }
}

fn from_timestamp(
    field: &str,
    timestamp: Option<prost_types::Timestamp>,
) -> Result<Option<SystemTime>, Status> {
    let Some(timestamp) = timestamp else {
        return Ok(None);
    };
    SystemTime::try_from(timestamp)
        .map(Some)
        .map_err(|error| Status::invalid_argument(format!("`{field}`: {error}")))
}

fn to_timestamp(unix_ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp::from(
        SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0)),
    )
}

fn group_to_proto(row: SummaryRow) -> pb::UsageGroup {
    pb::UsageGroup {
        key: row.key,
        requests: row.requests,
        errors: row.errors,
        cancelled: row.cancelled,
        prompt_tokens: row.prompt_tokens,
        completion_tokens: row.completion_tokens,
        cached_prompt_tokens: row.cached_prompt_tokens,
        reasoning_tokens: row.reasoning_tokens,
        estimated_requests: row.estimated_requests,
        cost_usd: row.cost_usd,
        unpriced_requests: row.unpriced_requests,
        p50_latency_ms: row.p50_latency_ms,
        p95_latency_ms: row.p95_latency_ms,
    }
}

fn row_to_proto(row: LedgerRow) -> pb::RequestRecord {
    let tokens = |count: Option<u32>| u64::from(count.unwrap_or(0));
    pb::RequestRecord {
        request_id: row.request_id,
        started_at: Some(to_timestamp(row.started_at_ms)),
        edge: row.edge,
        stream: row.stream,
        caller_name: row.caller_name.unwrap_or_default(),
        caller_uid: row.caller_uid,
        caller_pid: row.caller_pid,
        tags: row.tags.into_iter().collect(),
        requested_model: row.requested_model,
        served_model: row.served_model.unwrap_or_default(),
        provider: row.provider.unwrap_or_default(),
        outcome: row.outcome,
        attempts: row.attempts,
        queue_wait_ms: row.queue_wait_ms,
        latency_ms: row.latency_ms,
        time_to_first_chunk_ms: row.time_to_first_chunk_ms,
        prompt_tokens: tokens(row.prompt_tokens),
        completion_tokens: tokens(row.completion_tokens),
        cached_prompt_tokens: tokens(row.cached_prompt_tokens),
        reasoning_tokens: tokens(row.reasoning_tokens),
        usage_estimated: row.usage_estimated,
        cost_usd: row.cost_usd,
        pod: row.pod.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminServiceImpl {
    async fn get_usage_summary(
        &self,
        request: Request<pb::GetUsageSummaryRequest>,
    ) -> Result<Response<pb::GetUsageSummaryResponse>, Status> {
        let request = request.into_inner();
        let question = UsageQuestion {
            since: from_timestamp("since", request.since)?,
            until: from_timestamp("until", request.until)?,
            group_by: Some(request.group_by),
        };
        let groups = self
            .admin
            .usage(question)
            .await
            .map_err(|error| to_status(&error))?;
        Ok(Response::new(pb::GetUsageSummaryResponse {
            groups: groups.into_iter().map(group_to_proto).collect(),
        }))
    }

    async fn list_recent_requests(
        &self,
        request: Request<pb::ListRecentRequestsRequest>,
    ) -> Result<Response<pb::ListRecentRequestsResponse>, Status> {
        let request = request.into_inner();
        let question = RecentQuestion {
            limit: (request.limit > 0).then_some(request.limit as usize),
            since: from_timestamp("since", request.since)?,
            model: Some(request.model),
            provider: Some(request.provider),
            caller: Some(request.caller),
            outcome: Some(request.outcome),
        };
        let rows = self
            .admin
            .recent(question)
            .await
            .map_err(|error| to_status(&error))?;
        Ok(Response::new(pb::ListRecentRequestsResponse {
            requests: rows.into_iter().map(row_to_proto).collect(),
        }))
    }

    async fn get_provider_health(
        &self,
        _request: Request<pb::GetProviderHealthRequest>,
    ) -> Result<Response<pb::GetProviderHealthResponse>, Status> {
        let providers = self
            .admin
            .providers()
            .into_iter()
            .map(|provider| pb::ProviderHealth {
                name: provider.name,
                circuit: provider.circuit.to_owned(),
                in_flight: provider.in_flight as u64,
                queued: provider.queued as u64,
            })
            .collect();
        Ok(Response::new(pb::GetProviderHealthResponse { providers }))
    }
}
