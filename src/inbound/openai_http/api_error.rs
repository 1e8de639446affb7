//! The HTTP face of an error: the status from the one classification table
//! and an OpenAI error object, so OpenAI SDKs raise their usual classes
//! (`RateLimitError` for 429, `BadRequestError` for 400 ...), plus
//! `Retry-After` when the upstream or our own limits said when to retry.
//!
//! An error the upstream reported keeps the upstream's words: its status
//! (except 401/403, which mean the sidecar's key failed: 502), and its own
//! `message`, `type`, `code` and `param`, scrubbed of secrets, so SDK code
//! that branches on `context_length_exceeded` or `insufficient_quota` works
//! through the sidecar as it does without it. An error the sidecar raises
//! itself has `type` following the status the way OpenAI-style APIs name
//! it and `code` = the classification's reason in lower case. Either way
//! the sidecar's classification rides in the `x-llm-error-reason` header,
//! and the upstream's rate-limit, retry and request-id headers pass on.
//!
//! A failed call's response also says what the sidecar already did, so
//! the OpenAI SDKs do not stack their retries on its own: `x-llm-attempts`,
//! and `x-should-retry: false` when it retried already or no retry can help
//! (see [`RetryAdvice`]); `x-llm-retry-stopped` names why a failure worth
//! another try was not retried (`RETRY_BUDGET_EXHAUSTED`,
//! `RETRY_AFTER_LEFT_TO_CALLER`).
//!
//! Everything of a call's error object (message, type, code, param, any
//! other member the upstream sent) and the headers passed on go through
//! the pipeline's [`Scrubber`] here, behind the provider's own scrub.

use crate::error::{Class, Error, UpstreamError, classify};
use crate::inbound::observe::Finished;
use crate::inbound::retry_advice::RetryAdvice;
use crate::pipeline::RetryStop;
use crate::secret::Scrubber;
use crate::upstream::PassedHeaders;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;

/// The sidecar's classification of an error, beside the upstream's words.
pub const ERROR_REASON_HEADER: &str = "x-llm-error-reason";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// What the error is about, e.g. `messages[0].role`.
    pub param: Option<String>,
    pub code: Option<String>,
    /// The sidecar's classification for `x-llm-error-reason` (written in
    /// upper case): the gRPC ErrorInfo reason (`UPSTREAM_RATE_LIMITED`), or
    /// for a request the facade could not read, its `code`
    /// (`INVALID_JSON`).
    pub reason: &'static str,
    /// Where a call's failure came from; `None` for a request refused
    /// before any call (boxed: most errors have none).
    pub origin: Option<Box<Origin>>,
}

/// What a failed call adds to its error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// When the upstream or our own limits said to try again.
    pub retry_after: Option<Duration>,
    /// The provider the error came from, for `x-llm-provider`.
    pub provider: Option<String>,
    /// The upstream's own `type`; `None`: the one the status names.
    pub upstream_type: Option<String>,
    /// The upstream's headers that reach the caller.
    pub headers: PassedHeaders,
    /// The upstream's own error object (scrubbed), written as it is.
    pub upstream_object: Option<serde_json::Value>,
    /// Upstream attempts the call made (0: not known here).
    pub attempts: u32,
    /// Why the sidecar stopped retrying a failure worth another try.
    pub retry_stop: Option<RetryStop>,
    /// What the caller's retry logic is told; `None`: nothing.
    pub advice: Option<RetryAdvice>,
}

/// `{"error": {...}}`, OpenAI's error body.
#[derive(Serialize)]
struct Body<'a> {
    error: Object<'a>,
}

#[derive(Serialize)]
struct Object<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: Some(code.to_owned()),
            reason: code,
            origin: None,
        }
    }

    /// A 400 about the request itself.
    pub fn invalid(
        code: &'static str,
        message: impl Into<String>,
        param: Option<String>,
    ) -> ApiError {
        ApiError {
            param,
            ..ApiError::new(StatusCode::BAD_REQUEST, code, message)
        }
    }

    /// The error a failed call answers with, every text in it scrubbed of
    /// `scrubber`'s secrets.
    pub fn from_error(error: &Error, scrubber: &Scrubber) -> ApiError {
        let mut api_error = ApiError::unscrubbed(error);
        api_error.scrub(scrubber);
        api_error
    }

    /// The error a finished call answers with: [`ApiError::from_error`]'s,
    /// with the attempts made and the advice to the caller's retries.
    pub fn from_call(error: &Error, scrubber: &Scrubber, finished: &Finished) -> ApiError {
        let mut api_error = ApiError::from_error(error, scrubber);
        if let Some(origin) = &mut api_error.origin {
            origin.attempts = finished.attempts;
            origin.retry_stop = finished.retry_stop;
            origin.advice = Some(RetryAdvice::for_call(error, finished));
        }
        api_error
    }

    /// Every text it carries, scrubbed. Each field is named (no `..`), so
    /// one added later does not compile until it is decided here.
    fn scrub(&mut self, scrubber: &Scrubber) {
        let ApiError {
            status: _,
            message,
            param,
            code,
            reason: _,
            origin,
        } = self;
        scrubber.scrub_string(message);
        for text in [param, code].into_iter().flatten() {
            scrubber.scrub_string(text);
        }
        if let Some(origin) = origin {
            let Origin {
                retry_after: _,
                provider,
                upstream_type,
                headers,
                upstream_object,
                attempts: _,
                retry_stop: _,
                advice: _,
            } = origin.as_mut();
            for text in [provider, upstream_type].into_iter().flatten() {
                scrubber.scrub_string(text);
            }
            headers.scrub(scrubber);
            if let Some(object) = upstream_object {
                scrubber.scrub_json(object);
            }
        }
    }

    fn unscrubbed(error: &Error) -> ApiError {
        let class = classify(error);
        if let Error::Upstream(upstream) = error {
            return ApiError::from_upstream(upstream, class, error);
        }
        let message = error.to_string();
        let param = match error {
            Error::InvalidRequest(message) => param_of(message),
            Error::ModelNotFound { .. } => Some("model".to_owned()),
            _ => None,
        };
        ApiError {
            status: StatusCode::from_u16(class.http_status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message,
            param,
            code: Some(class.reason.to_ascii_lowercase()),
            reason: class.reason,
            origin: Some(Box::new(Origin {
                retry_after: error.retry_after(),
                provider: error.provider().map(str::to_owned),
                ..Origin::default()
            })),
        }
    }

    /// The upstream's status and error object, as it sent them.
    fn from_upstream(upstream: &UpstreamError, class: Class, error: &Error) -> ApiError {
        let status = match upstream.status {
            // Our key failed: not the caller's to fix.
            401 | 403 => StatusCode::BAD_GATEWAY,
            status @ 400..=599 => StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            // In band, with no status of its own: the classification's.
            _ => StatusCode::from_u16(class.http_status).unwrap_or(StatusCode::BAD_GATEWAY),
        };
        let message = if upstream.message.trim().is_empty() {
            error.to_string()
        } else {
            upstream.message.clone()
        };
        let own_key_failed = matches!(upstream.status, 401 | 403);
        ApiError {
            status,
            message,
            param: upstream.param.clone(),
            code: if own_key_failed {
                Some(class.reason.to_ascii_lowercase())
            } else {
                upstream.error_code.clone()
            },
            reason: class.reason,
            origin: Some(Box::new(Origin {
                retry_after: upstream.retry_after,
                provider: Some(upstream.provider.clone()),
                upstream_type: upstream.error_type.clone().filter(|_| !own_key_failed),
                headers: upstream.headers.clone(),
                upstream_object: upstream.object.clone().filter(|_| !own_key_failed),
                ..Origin::default()
            })),
        }
    }

    /// The provider the error came from, if a call failed.
    pub fn provider(&self) -> Option<&str> {
        self.origin.as_ref()?.provider.as_deref()
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.origin.as_ref()?.retry_after
    }

    /// The OpenAI error `type`: the upstream's own, else the status's.
    pub fn kind(&self) -> &str {
        self.origin
            .as_ref()
            .and_then(|origin| origin.upstream_type.as_deref())
            .unwrap_or_else(|| kind_for(self.status))
    }

    /// The JSON body, `{"error": {"message", "type", "param", "code"}}`.
    pub fn write_json(&self, out: &mut impl std::io::Write) -> serde_json::Result<()> {
        if let Some(serde_json::Value::Object(object)) = self
            .origin
            .as_ref()
            .and_then(|origin| origin.upstream_object.as_ref())
        {
            // As the upstream wrote it; the members an OpenAI error object
            // always has are added where it left them out.
            let mut object = object.clone();
            for (key, missing) in [
                ("type", serde_json::Value::from(kind_for(self.status))),
                ("param", serde_json::Value::Null),
                ("code", serde_json::Value::Null),
            ] {
                object.entry(key).or_insert(missing);
            }
            return serde_json::to_writer(out, &serde_json::json!({ "error": object }));
        }
        serde_json::to_writer(
            out,
            &Body {
                error: Object {
                    message: &self.message,
                    kind: self.kind(),
                    param: self.param.as_deref(),
                    code: self.code.as_deref(),
                },
            },
        )
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.message.len() + 96);
        // Plain strings only: writing to a Vec cannot fail.
        let _ = self.write_json(&mut body);
        body
    }
}

fn kind_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// `Retry-After` takes whole seconds; rounding up never invites a retry
/// before the time the upstream asked for.
pub fn retry_after_seconds(delay: Duration) -> u64 {
    let seconds = delay.as_secs();
    if delay.subsec_nanos() > 0 {
        seconds + 1
    } else {
        seconds
    }
}

/// The field a validation message is about: it starts with `` `name` `` or
/// with a path and a colon (`messages[1]: ...`).
fn param_of(message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix('`') {
        let name = rest.split('`').next()?;
        return is_path(name).then(|| name.to_owned());
    }
    let (head, _) = message.split_once(": ")?;
    is_path(head).then(|| head.to_owned())
}

/// A field path as serde and our validation print them: `tools[0].name`.
pub fn is_path(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.[]-".contains(&b))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response();
        let headers = response.headers_mut();
        if let Some(delay) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, retry_after_seconds(delay).into());
            // The OpenAI SDKs read this one first, to the millisecond.
            headers.insert(
                HeaderName::from_static("retry-after-ms"),
                u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).into(),
            );
        }
        if let Some(provider) = self
            .provider()
            .and_then(|name| HeaderValue::from_str(name).ok())
        {
            headers.insert(HeaderName::from_static("x-llm-provider"), provider);
        }
        // Upper case for every error, as gRPC ErrorInfo reasons are.
        if let Ok(reason) = HeaderValue::from_str(&self.reason.to_ascii_uppercase()) {
            headers.insert(HeaderName::from_static(ERROR_REASON_HEADER), reason);
        }
        if let Some(origin) = &self.origin {
            origin.headers.add_to(headers);
            // After the upstream's: ours knows the retries already made.
            origin.add_retry_advice(headers);
        }
        response
    }
}

impl Origin {
    fn add_retry_advice(&self, headers: &mut HeaderMap) {
        if self.attempts > 0 {
            headers.insert(
                HeaderName::from_static("x-llm-attempts"),
                self.attempts.into(),
            );
        }
        if let Some(stop) = self.retry_stop {
            headers.insert(
                HeaderName::from_static("x-llm-retry-stopped"),
                HeaderValue::from_static(stop.reason()),
            );
        }
        if let Some(value) = self.advice.and_then(RetryAdvice::should_retry_header) {
            headers.insert(
                HeaderName::from_static("x-should-retry"),
                HeaderValue::from_static(value),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UpstreamError;
    use serde_json::{Value, json};

    fn upstream(status: u16, retry_after: Option<Duration>) -> Error {
        Error::from(UpstreamError {
            provider: "fake".into(),
            status,
            message: "upstream says no".into(),
            retry_after,
            ..UpstreamError::default()
        })
    }

    fn body(error: &ApiError) -> Value {
        serde_json::from_slice(&error.to_json()).unwrap()
    }

    #[test]
    fn statuses_and_types_follow_the_classification() {
        let cases = [
            (400, 400, "invalid_request_error"),
            (401, 502, "server_error"),
            (403, 502, "server_error"),
            (404, 404, "not_found_error"),
            (409, 409, "invalid_request_error"),
            (429, 429, "rate_limit_error"),
            (500, 500, "server_error"),
            (503, 503, "server_error"),
            (529, 529, "server_error"),
        ];
        for (upstream_status, status, kind) in cases {
            let error =
                ApiError::from_error(&upstream(upstream_status, None), &Scrubber::default());
            assert_eq!(error.status.as_u16(), status, "upstream {upstream_status}");
            assert_eq!(
                body(&error)["error"]["type"],
                kind,
                "upstream {upstream_status}"
            );
        }
    }

    #[test]
    fn an_upstream_error_keeps_the_upstreams_words() {
        let error = ApiError::unscrubbed(&Error::from(UpstreamError {
            provider: "fake".into(),
            status: 400,
            message: "This model's maximum context length is 8192 tokens.".into(),
            error_type: Some("invalid_request_error".into()),
            error_code: Some("context_length_exceeded".into()),
            param: Some("messages".into()),
            ..UpstreamError::default()
        }));
        assert_eq!(
            body(&error),
            json!({"error": {
                "message": "This model's maximum context length is 8192 tokens.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }})
        );
        let response = error.into_response();
        assert_eq!(
            response.headers()[ERROR_REASON_HEADER],
            "UPSTREAM_CONTEXT_LENGTH"
        );
        assert_eq!(response.headers()["x-llm-provider"], "fake");
    }

    #[test]
    fn our_failed_key_is_a_bad_gateway_in_our_words() {
        let error = ApiError::unscrubbed(&Error::from(UpstreamError {
            provider: "fake".into(),
            status: 401,
            message: "Incorrect API key provided".into(),
            error_type: Some("invalid_request_error".into()),
            error_code: Some("invalid_api_key".into()),
            ..UpstreamError::default()
        }));
        assert_eq!(error.status, StatusCode::BAD_GATEWAY);
        assert_eq!(body(&error)["error"]["type"], "server_error");
        assert_eq!(error.code.as_deref(), Some("upstream_auth_failed"));
    }

    #[test]
    fn retry_after_rounds_up_and_keeps_the_milliseconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(7)), 7);
        assert_eq!(retry_after_seconds(Duration::ZERO), 0);
        let response = ApiError::from_error(
            &upstream(429, Some(Duration::from_millis(1500))),
            &Scrubber::default(),
        )
        .into_response();
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(response.headers()["retry-after-ms"], "1500");
        assert_eq!(response.headers()["x-llm-provider"], "fake");
        let response =
            ApiError::from_error(&upstream(400, None), &Scrubber::default()).into_response();
        assert!(response.headers().get("retry-after").is_none());
    }

    #[test]
    fn validation_messages_name_their_param() {
        let param = |message: &str| {
            ApiError::from_error(&Error::invalid(message), &Scrubber::default()).param
        };
        assert_eq!(param("`model` is required").as_deref(), Some("model"));
        assert_eq!(
            param("messages[1]: a user message needs non-empty content").as_deref(),
            Some("messages[1]")
        );
        assert_eq!(
            param("`extra.temperature` repeats").as_deref(),
            Some("extra.temperature")
        );
        assert_eq!(param("something else: entirely"), None);
        let not_found = Error::ModelNotFound {
            model: "x".into(),
            hint: "h".into(),
        };
        let error = ApiError::from_error(&not_found, &Scrubber::default());
        assert_eq!(error.param.as_deref(), Some("model"));
        assert_eq!(error.code.as_deref(), Some("model_not_routed"));
        assert_eq!(error.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_whole_error_object_and_the_headers_are_scrubbed() {
        const SECRET: &str = "secret-value-0123456789";
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static(SECRET));
        let error = Error::from(UpstreamError {
            provider: "fake".into(),
            status: 429,
            message: format!("echo {SECRET}"),
            error_type: Some(SECRET.into()),
            error_code: Some(SECRET.into()),
            param: Some(SECRET.into()),
            object: Some(json!({
                "message": SECRET, "type": SECRET, "code": SECRET, "param": SECRET,
                "metadata": {"raw": SECRET},
            })),
            headers: PassedHeaders::from_upstream(&headers, &Scrubber::default()),
            ..UpstreamError::default()
        });
        let api_error = ApiError::from_error(&error, &Scrubber::new([SECRET]));
        let body = String::from_utf8(api_error.to_json()).unwrap();
        assert!(!body.contains(SECRET), "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["error"]["metadata"]["raw"],
            "<redacted>"
        );
        let response = api_error.into_response();
        assert!(!format!("{:?}", response.headers()).contains(SECRET));
    }
}
