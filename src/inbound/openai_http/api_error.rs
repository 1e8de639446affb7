//! The HTTP face of an error: the status from the one classification table
//! and an OpenAI error object, so OpenAI SDKs raise their usual classes
//! (`RateLimitError` for 429, `BadRequestError` for 400 ...), plus
//! `Retry-After` when the upstream or our own limits said when to retry.
//!
//! `type` follows the status the way OpenAI-style APIs name it; `code` is
//! the classification's reason in lower case (the gRPC ErrorInfo reason), a
//! stable value to branch on. Messages are the errors' own, whose upstream
//! parts are already scrubbed of keys.

use crate::error::{Error, classify};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// What the error is about, e.g. `messages[0].role`.
    pub param: Option<String>,
    pub code: Option<String>,
    pub retry_after: Option<Duration>,
    /// The provider the error came from, for `x-llm-provider`.
    pub provider: Option<String>,
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
    kind: &'static str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: Some(code.to_owned()),
            retry_after: None,
            provider: None,
        }
    }

    /// A 400 about the request itself.
    pub fn invalid(code: &str, message: impl Into<String>, param: Option<String>) -> ApiError {
        ApiError {
            param,
            ..ApiError::new(StatusCode::BAD_REQUEST, code, message)
        }
    }

    pub fn from_error(error: &Error) -> ApiError {
        let class = classify(error);
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
            retry_after: error.retry_after(),
            provider: error.provider().map(str::to_owned),
        }
    }

    /// The OpenAI error `type` for this status.
    pub fn kind(&self) -> &'static str {
        kind_for(self.status)
    }

    /// The JSON body, `{"error": {"message", "type", "param", "code"}}`.
    pub fn write_json(&self, out: &mut impl std::io::Write) -> serde_json::Result<()> {
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
        if let Some(delay) = self.retry_after {
            headers.insert(header::RETRY_AFTER, retry_after_seconds(delay).into());
            // The OpenAI SDKs read this one first, to the millisecond.
            headers.insert(
                HeaderName::from_static("retry-after-ms"),
                (delay.as_millis() as u64).into(),
            );
        }
        if let Some(provider) = self
            .provider
            .as_deref()
            .and_then(|name| HeaderValue::from_str(name).ok())
        {
            headers.insert(HeaderName::from_static("x-llm-provider"), provider);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UpstreamError;
    use serde_json::{Value, json};

    fn upstream(status: u16, retry_after: Option<Duration>) -> Error {
        Error::Upstream(UpstreamError {
            provider: "fake".into(),
            status,
            message: "upstream says no".into(),
            error_type: None,
            error_code: None,
            retry_after,
            in_band: false,
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
            (500, 503, "server_error"),
            (503, 503, "server_error"),
            (504, 504, "server_error"),
        ];
        for (upstream_status, status, kind) in cases {
            let error = ApiError::from_error(&upstream(upstream_status, None));
            assert_eq!(error.status.as_u16(), status, "upstream {upstream_status}");
            assert_eq!(
                body(&error)["error"]["type"],
                kind,
                "upstream {upstream_status}"
            );
        }
    }

    #[test]
    fn the_body_is_an_openai_error_object() {
        let error = ApiError::from_error(&upstream(429, Some(Duration::from_millis(1500))));
        assert_eq!(
            body(&error),
            json!({"error": {
                "message": "provider `fake` answered 429: upstream says no",
                "type": "rate_limit_error",
                "param": null,
                "code": "upstream_rate_limited",
            }})
        );
        assert_eq!(error.provider.as_deref(), Some("fake"));
    }

    #[test]
    fn retry_after_rounds_up_and_keeps_the_milliseconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(7)), 7);
        assert_eq!(retry_after_seconds(Duration::ZERO), 0);
        let response =
            ApiError::from_error(&upstream(429, Some(Duration::from_millis(1500)))).into_response();
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(response.headers()["retry-after-ms"], "1500");
        assert_eq!(response.headers()["x-llm-provider"], "fake");
        let response = ApiError::from_error(&upstream(400, None)).into_response();
        assert!(response.headers().get("retry-after").is_none());
    }

    #[test]
    fn validation_messages_name_their_param() {
        let param = |message: &str| ApiError::from_error(&Error::invalid(message)).param;
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
        let error = ApiError::from_error(&not_found);
        assert_eq!(error.param.as_deref(), Some("model"));
        assert_eq!(error.code.as_deref(), Some("model_not_routed"));
        assert_eq!(error.status, StatusCode::NOT_FOUND);
    }
}
