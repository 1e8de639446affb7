//! The per-request script: what the fake upstream should do for one request,
//! and how a request picks it (body `"fake"` object, `x-fake-scenario` header,
//! or the server defaults).

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use serde::Deserialize;

/// Header that may carry a scenario as JSON when the body cannot (e.g. when the
/// request body is produced by the code under test and must stay untouched).
pub const SCENARIO_HEADER: &str = "x-fake-scenario";

/// What the fake does for one request.
///
/// Chosen per request: the JSON body's `"fake"` object, else the
/// `x-fake-scenario` header holding the same JSON, else the server defaults
/// (those for the request's model, when the server was given some).
/// A chosen scenario replaces the defaults wholesale (no field-wise merge), so a
/// test always sees exactly what it asked for. Unknown keys are rejected with a
/// 400 naming the key, so a typo cannot silently turn into "no misbehaviour".
///
/// The `raw_*` and `error_body` fields replay recorded provider bodies
/// verbatim, for tests that check what passes through the sidecar unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Reply with this HTTP status and an OpenAI error body. Statuses below 400
    /// are ignored (the request succeeds normally).
    pub status: Option<u16>,
    /// `error.type` in the error body (default derived from the status).
    pub error_type: Option<String>,
    /// `error.code` in the error body (default derived from the status).
    pub error_code: Option<String>,
    /// `error.message` in the error body.
    pub error_message: Option<String>,
    /// Sent verbatim as the `Retry-After` header.
    pub retry_after: Option<String>,
    /// Sent as the `retry-after-ms` header.
    pub retry_after_ms: Option<u64>,
    /// Apply `status` only to the first N requests sharing the same `key`,
    /// then succeed. Requests without a key share one anonymous counter.
    pub fail_times: Option<u32>,
    /// Groups requests for `fail_times` counting.
    pub key: Option<String>,
    /// Delay before the response headers.
    pub latency_ms: u64,
    /// Never send response headers; the handler waits until the client goes
    /// away (which is counted as a client disconnect) or the server shuts down.
    pub hang: bool,
    /// Assistant text. Default: echo of the last user message's text.
    pub reply: Option<String>,
    /// Repeat the reply text this many times (large answers for
    /// backpressure tests without a large request).
    pub repeat: Option<usize>,
    /// Number of content chunks to split the reply into (default: one per word).
    pub chunks: Option<usize>,
    /// Delay between consecutive chunk frames when streaming.
    pub chunk_delay_ms: u64,
    /// Delay after the response headers before the first frame when streaming.
    pub first_chunk_delay_ms: u64,
    /// Streaming: each text chunk's content is the Unix time in nanoseconds
    /// at which its frame was handed to the server (instead of the reply
    /// text), so a benchmark on the same machine can measure each chunk's
    /// transit through a proxy apart from the upstream's own pacing jitter.
    pub stamp: bool,
    /// Answer with two tool calls (`get_weather`, `get_time`) instead of text.
    pub tool_calls: bool,
    /// Emitted as `reasoning_content` before the content.
    pub reasoning: Option<String>,
    /// Streaming: end the body cleanly after N content chunks (no finish, no `[DONE]`).
    pub cut_after: Option<usize>,
    /// Streaming: after N content chunks send `data: {not json`, then continue.
    pub malformed_after: Option<usize>,
    /// Streaming: after N content chunks send an `{"error":...}` frame and end.
    pub error_frame_after: Option<usize>,
    /// Streaming: after N content chunks stop sending (no finish, no
    /// `[DONE]`) and hold the response open until the client goes away.
    pub stall_after: Option<usize>,
    /// A request whose last message is the assistant's (a prefill: plain,
    /// with `"prefix": true`, or with `continue_final_message`) is
    /// answered with the rest of the reply after that text; one whose text
    /// is not a prefix of the reply is refused with 400. A continuation is
    /// played without the content-chunk misbehaviours (`cut_after`,
    /// `stall_after`, `malformed_after`, `error_frame_after`).
    pub continue_prefill: bool,
    /// A request with a prefill (as for `continue_prefill`) is refused
    /// with 400, as by a provider that does not accept one.
    pub reject_prefill: bool,
    /// Streaming: the finishing chunk has `finish_reason: "error"`.
    pub finish_error: bool,
    /// Streaming: omit the final `data: [DONE]`.
    pub no_done: bool,
    /// Never include usage.
    pub no_usage: bool,
    /// Interleave `: OPENROUTER PROCESSING` and empty keep-alive comments.
    pub comments: bool,
    /// Use `\r\n` line ends in the SSE body.
    pub crlf: bool,
    /// Write the SSE body in body frames of at most this many bytes; a
    /// unary answer too, then with no `Content-Length` (chunked).
    pub split_bytes: Option<usize>,
    /// Streaming: up to this many SSE frames go out in one body frame (one
    /// write) when no pause separates them, as a fast provider delivers
    /// several events per read (default 1: one frame per write). Frames
    /// after a pause start a new write; `split_bytes` still cuts each one.
    pub events_per_write: Option<usize>,
    /// `usage.prompt_tokens` (default: word count of all messages).
    pub prompt_tokens: Option<u32>,
    /// `usage.prompt_tokens_details.cached_tokens` (default 0).
    pub cached_tokens: Option<u32>,
    /// `usage.completion_tokens_details.reasoning_tokens` (default: reasoning chunk count).
    pub reasoning_tokens: Option<u32>,
    /// Model name in responses (default: the requested model).
    pub model: Option<String>,
    /// Non-streaming: answer 200 with exactly this JSON (compact) instead of
    /// the generated completion; the answer-shaping fields above are ignored.
    pub raw_body: Option<serde_json::Value>,
    /// Streaming: send one SSE event per element instead of the generated
    /// stream. A JSON string is sent as the event data verbatim (so `"[DONE]"`
    /// or `"{not json"` can be scripted), any other value as its compact JSON.
    /// Nothing is added (no `[DONE]`, no usage chunk, no comments): the list is
    /// exactly what is sent. `first_chunk_delay_ms`, `chunk_delay_ms`, `crlf`
    /// and `split_bytes` still apply.
    pub raw_events: Option<Vec<serde_json::Value>>,
    /// With an error `status`: the error response body is exactly this JSON
    /// instead of the generated OpenAI error object.
    pub error_body: Option<serde_json::Value>,
    /// With an error `status`: the error response body is exactly this
    /// text, as `text/html` (a proxy's error page); wins over `error_body`.
    pub error_html: Option<String>,
    /// Extra response headers sent on every response to this request
    /// (success or error, unary or stream), e.g. `x-request-id` or
    /// `x-ratelimit-remaining-requests`. Invalid names or values are skipped
    /// with a warning.
    pub headers: BTreeMap<String, String>,
}

/// Why a request's scenario could not be read; becomes a 400 for the client.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("invalid \"fake\" scenario in body: {0}")]
    Body(serde_json::Error),
    #[error("invalid {SCENARIO_HEADER} header: {0}")]
    Header(String),
}

impl Scenario {
    /// Picks the scenario for one request: body `"fake"` object first, then the
    /// header, then `defaults`.
    pub fn select(
        body: &serde_json::Value,
        headers: &HeaderMap,
        defaults: &Scenario,
    ) -> Result<Scenario, ScenarioError> {
        if let Some(fake) = body.get("fake") {
            return Scenario::deserialize(fake).map_err(ScenarioError::Body);
        }
        if let Some(raw) = headers.get(SCENARIO_HEADER) {
            let text = raw
                .to_str()
                .map_err(|e| ScenarioError::Header(e.to_string()))?;
            return serde_json::from_str(text).map_err(|e| ScenarioError::Header(e.to_string()));
        }
        Ok(defaults.clone())
    }

    /// The error status to apply, if any (ignores non-error statuses).
    pub fn error_status(&self) -> Option<u16> {
        self.status.filter(|s| *s >= 400)
    }
}
