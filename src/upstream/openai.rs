//! Any OpenAI-compatible chat-completions API: OpenAI, OpenRouter,
//! TheRouter, Taotoken, DeepSeek, vLLM, Ollama ...

mod body;
mod chunks;
mod error_body;
mod retry_after;

pub use body::{BodyRules, UpstreamBody};

pub use chunks::UpstreamChunks;
pub use error_body::{ErrorBody, parse_error_body};
pub use retry_after::retry_after;

use crate::config::{Env, HeaderValueSource, ProviderConfig, UpstreamConfig};
use crate::error::{Error, TimeoutKind, UpstreamError};
use crate::model::{AnswerProblem, ChatRequest, ChatResponse};
use crate::secret::{ApiKey, Scrubber, header_secret_forms, load_key};
use crate::upstream::trace_header::trace_headers;
use crate::upstream::{ChunkStream, KeyRing, PassedHeaders, Reply};
use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Largest error body we read: enough for any real error object.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct OpenAiUpstream {
    provider: Arc<str>,
    client: reqwest::Client,
    /// Parsed once: reqwest would parse (and IDNA-check) a string per call.
    url: Result<reqwest::Url, String>,
    /// The provider's keys, or why it has none it needs.
    keys: Result<KeyRing, String>,
    /// The configured headers, or why one has no value.
    headers: Result<HeaderMap, String>,
    /// Every key and secret header value, for the errors of its streams
    /// (the [`crate::upstream::Provider`] scrubs the rest).
    scrubber: Arc<Scrubber>,
    rules: BodyRules,
    max_sse_line_bytes: usize,
    max_response_bytes: usize,
    /// For the error message; the shared client enforces it.
    connect_timeout: Duration,
}

impl OpenAiUpstream {
    pub fn new(
        provider: Arc<str>,
        config: &ProviderConfig,
        upstream: &UpstreamConfig,
        client: reqwest::Client,
        env: Env<'_>,
    ) -> OpenAiUpstream {
        let keys = load_keys(config, env).map(|keys| KeyRing::new(keys, config.key_cooldown));
        let headers = load_headers(config, env);
        let scrubber = Arc::new(Scrubber::new(
            keys.iter()
                .flat_map(KeyRing::all)
                .map(ApiKey::expose)
                .chain(headers.as_ref().map_or(Vec::new(), |(_, secrets)| {
                    secrets
                        .iter()
                        .flat_map(|value| header_secret_forms(value))
                        .collect()
                })),
        ));
        OpenAiUpstream {
            scrubber,
            provider,
            client,
            url: reqwest::Url::parse(&format!("{}/chat/completions", config.base_url))
                .map_err(|error| format!("base_url `{}` is not a URL: {error}", config.base_url)),
            keys,
            headers: headers.map(|(headers, _)| headers),
            rules: BodyRules {
                include_usage: config.stream_options,
                max_tokens_field: config.max_tokens_field,
                forward_metadata: config.forward_metadata,
            },
            max_sse_line_bytes: upstream.max_sse_line_bytes,
            max_response_bytes: upstream.max_response_bytes,
            connect_timeout: upstream.connect_timeout,
        }
    }

    /// Why calls cannot be made: no key, or a header without its value.
    pub fn key_problem(&self) -> Option<String> {
        self.keys
            .as_ref()
            .err()
            .or(self.headers.as_ref().err())
            .cloned()
    }

    /// Its keys, when it has the ones it needs.
    pub fn key_ring(&self) -> Option<&KeyRing> {
        self.keys.as_ref().ok()
    }

    /// The provider's secrets: its keys and secret header values.
    pub fn scrubber(&self) -> &Arc<Scrubber> {
        &self.scrubber
    }

    /// `request.stream` must be false (the pipeline sets it once, so that
    /// retries send the same request without copying it). The answer is
    /// the upstream's body as it is, read leniently.
    pub async fn complete(
        &self,
        request: &ChatRequest,
        trace: &opentelemetry::Context,
    ) -> Result<Reply<ChatResponse>, Error> {
        // A unary answer's headers come only when it is whole: the call's
        // total time bounds this wait, not a headers timeout.
        let response = self.send(request, None, trace).await?;
        let headers = PassedHeaders::from_upstream(response.headers(), &self.scrubber);
        let body = self.read_answer(response).await?;
        let proto = request.proto.map(|decoders| decoders.answer);
        match ChatResponse::read_for(Bytes::from(body), proto) {
            Ok(value) => Ok(Reply { value, headers }),
            Err(AnswerProblem::InBand(error)) => Err(self.in_band(&error, headers).into()),
            Err(AnswerProblem::Malformed(detail)) => Err(self.malformed(detail)),
        }
    }

    /// A unary answer's body, at most `max_response_bytes` (what a caller
    /// can receive): a larger `Content-Length` is refused before a byte is
    /// read, a body without one as soon as the read passes the limit.
    /// Either way the connection is closed, not drained.
    async fn read_answer(&self, mut response: reqwest::Response) -> Result<Vec<u8>, Error> {
        let limit = self.max_response_bytes;
        let too_large = |size| Error::ResponseTooLarge {
            provider: self.provider.to_string(),
            limit,
            size,
        };
        let length = response.content_length();
        if let Some(size) = length.filter(|size| *size > limit as u64) {
            return Err(too_large(Some(size)));
        }
        let mut body = Vec::with_capacity(length.map_or(0, |size| size as usize));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| self.connect_error(&error))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_large(None));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// `request.stream` must be true.
    pub async fn stream(
        &self,
        request: &ChatRequest,
        headers_timeout: Duration,
        trace: &opentelemetry::Context,
    ) -> Result<Reply<ChunkStream>, Error> {
        let response = self.send(request, Some(headers_timeout), trace).await?;
        let headers = PassedHeaders::from_upstream(response.headers(), &self.scrubber);
        let is_event_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        if !is_event_stream {
            let body = read_capped(response, MAX_ERROR_BODY_BYTES)
                .await
                .map_err(|error| self.connect_error(&error))?;
            let error = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|mut value| value.get_mut("error").map(serde_json::Value::take));
            return Err(match error {
                Some(error) => self.in_band(&error, headers).into(),
                None => self.malformed(
                    "asked for a stream but the response is not text/event-stream".to_owned(),
                ),
            });
        }
        let chunks = UpstreamChunks::new(
            response.bytes_stream(),
            self.max_sse_line_bytes,
            self.provider.clone(),
            self.scrubber.clone(),
        )
        .with_proto(request.proto.map(|decoders| decoders.chunk));
        Ok(Reply {
            value: Box::pin(chunks),
            headers,
        })
    }

    async fn send(
        &self,
        request: &ChatRequest,
        headers_timeout: Option<Duration>,
        trace: &opentelemetry::Context,
    ) -> Result<reqwest::Response, Error> {
        let not_ready = |reason: &String| Error::ProviderNotReady {
            provider: self.provider.to_string(),
            reason: reason.clone(),
        };
        let ring = self.keys.as_ref().map_err(not_ready)?;
        let headers = self.headers.as_ref().map_err(not_ready)?;
        let url = self.url.as_ref().map_err(not_ready)?.clone();
        let picked = ring.pick();
        let body = serde_json::to_vec(&UpstreamBody {
            request,
            rules: self.rules,
        })
        .map_err(|error| Error::Internal(format!("cannot encode the upstream request: {error}")))?;
        let mut builder = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        // Most providers configure no extra headers: skip copying the map.
        if !headers.is_empty() {
            builder = builder.headers(headers.clone());
        }
        if request.stream {
            builder = builder.header(ACCEPT, "text/event-stream");
        }
        if let Some((traceparent, tracestate)) = trace_headers(trace) {
            builder = builder.header("traceparent", traceparent);
            if let Some(tracestate) = tracestate {
                builder = builder.header("tracestate", tracestate);
            }
        }
        if let Some((_, key)) = picked {
            builder = builder.bearer_auth(key.expose());
        }
        let sent = builder.send();
        let response = match headers_timeout {
            None => sent.await,
            Some(limit) => tokio::time::timeout(limit, sent)
                .await
                .map_err(|_| Error::Timeout {
                    provider: self.provider.to_string(),
                    kind: TimeoutKind::Headers,
                    after: limit,
                })?,
        }
        .map_err(|error| self.connect_error(&error))?;
        if response.status().is_success() {
            return Ok(response);
        }
        // This key is refused or rate limited: the next attempt takes
        // another (a no-op with a single key).
        if let (Some((index, _)), 401 | 403 | 429) = (picked, response.status().as_u16()) {
            ring.bench(index);
        }
        Err(self.status_error(response).await.into())
    }

    async fn status_error(&self, response: reqwest::Response) -> UpstreamError {
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers(), SystemTime::now());
        let headers = PassedHeaders::from_upstream(response.headers(), &self.scrubber);
        let body = read_capped(response, MAX_ERROR_BODY_BYTES)
            .await
            .unwrap_or_default();
        let parsed = parse_error_body(&body);
        UpstreamError {
            provider: self.provider.to_string(),
            status,
            object: parsed.object,
            message: parsed.message,
            error_type: parsed.error_type,
            error_code: parsed.code,
            param: parsed.param,
            retry_after,
            headers,
            in_band: false,
        }
    }

    /// An error object found in a 200 answer.
    fn in_band(&self, error: &serde_json::Value, headers: PassedHeaders) -> UpstreamError {
        UpstreamError {
            headers,
            ..error_body::in_band_error(&self.provider, error)
        }
    }

    fn connect_error(&self, error: &reqwest::Error) -> Error {
        if error.is_connect() && error.is_timeout() {
            return Error::Timeout {
                provider: self.provider.to_string(),
                kind: TimeoutKind::Connect,
                after: self.connect_timeout,
            };
        }
        Error::Connect {
            provider: self.provider.to_string(),
            detail: describe(error),
        }
    }

    fn malformed(&self, detail: String) -> Error {
        Error::MalformedResponse {
            provider: self.provider.to_string(),
            detail,
        }
    }
}

/// All of a provider's keys: `api_key_file`/`api_key_env`, then `api_keys`.
/// A configured source that yields nothing is a problem worth naming.
fn load_keys(config: &ProviderConfig, env: Env<'_>) -> Result<Vec<ApiKey>, String> {
    let sources: Vec<_> = std::iter::once(&config.api_key)
        .chain(&config.more_api_keys)
        .filter(|source| source.env.is_some() || source.file.is_some())
        .collect();
    let mut keys = Vec::new();
    for source in &sources {
        if let Some(key) = load_key(source, env)? {
            keys.push(key);
        }
    }
    if keys.is_empty() && !sources.is_empty() {
        let names: Vec<&str> = sources
            .iter()
            .filter_map(|source| source.env.as_deref())
            .collect();
        return Err(if names.is_empty() {
            "it has no API key".to_owned()
        } else {
            format!(
                "it has no API key: set the environment variable {}",
                names.join(" or ")
            )
        });
    }
    Ok(keys)
}

/// The provider's configured headers, and the values of the secret ones.
fn load_headers(config: &ProviderConfig, env: Env<'_>) -> Result<(HeaderMap, Vec<String>), String> {
    let mut headers = HeaderMap::new();
    let mut secrets = Vec::new();
    for header in &config.headers {
        let value = match &header.value {
            HeaderValueSource::Inline(value) => value.clone(),
            HeaderValueSource::Loaded(source) => match load_key(source, env)
                .map_err(|problem| format!("header `{}`: {problem}", header.name))?
            {
                Some(value) => value.expose().to_owned(),
                None => {
                    return Err(format!(
                        "header `{}` has no value: set the environment variable {}",
                        header.name,
                        source.env.as_deref().unwrap_or_default()
                    ));
                }
            },
        };
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| format!("`{}` is not a valid header name", header.name))?;
        let parsed = HeaderValue::from_str(&value).map_err(|_| {
            format!(
                "the value of header `{}` is not a valid header value",
                header.name
            )
        })?;
        headers.append(name, parsed);
        if header.secret {
            secrets.push(value);
        }
    }
    Ok((headers, secrets))
}

/// The whole cause chain of a transport error: reqwest's own message alone
/// ("error sending request") does not say what went wrong.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a body up to `cap` bytes; the rest is dropped with the connection.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= cap {
            break;
        }
    }
    Ok(body)
}
