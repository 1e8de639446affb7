//! Reading error objects from upstream bodies and stream frames. Providers
//! disagree on the shape: `{"error": {"message", "type", "code"}}` (OpenAI),
//! `{"error": "text"}`, `{"message": ...}`, `{"detail": ...}`, numeric or
//! string codes, or a plain-text or HTML page from a proxy in between.

use crate::error::UpstreamError;
use serde_json::Value;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    pub message: String,
    pub error_type: Option<String>,
    pub code: Option<String>,
    pub param: Option<String>,
    /// The error object itself, when it has a `message`.
    pub object: Option<Value>,
}

pub fn parse_error_body(body: &[u8]) -> ErrorBody {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let error = value.get("error").unwrap_or(&value);
            from_value(error)
        }
        Err(_) => ErrorBody {
            message: String::from_utf8_lossy(body).trim().to_owned(),
            ..ErrorBody::default()
        },
    }
}

fn from_value(error: &Value) -> ErrorBody {
    if let Some(text) = error.as_str() {
        return ErrorBody {
            message: text.to_owned(),
            ..ErrorBody::default()
        };
    }
    let text_of = |key: &str| {
        error.get(key).and_then(|value| match value {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        })
    };
    ErrorBody {
        message: text_of("message")
            .or_else(|| text_of("detail"))
            .unwrap_or_else(|| error.to_string()),
        error_type: text_of("type"),
        code: text_of("code"),
        param: text_of("param"),
        object: error
            .get("message")
            .is_some_and(Value::is_string)
            .then(|| error.clone()),
    }
}

/// An error object received inside a 200 response. A numeric HTTP-like code
/// (OpenRouter sends `"code": 502`) classifies it like the status would.
/// Not yet scrubbed: the provider scrubs every error it returns.
pub fn in_band_error(provider: &str, error: &Value) -> UpstreamError {
    let parsed = from_value(error);
    let status = parsed
        .code
        .as_deref()
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (400..600).contains(code))
        .unwrap_or(0);
    UpstreamError {
        provider: provider.to_owned(),
        status,
        message: parsed.message,
        object: parsed.object,
        error_type: parsed.error_type,
        error_code: parsed.code,
        param: parsed.param,
        in_band: true,
        ..UpstreamError::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_openai_shape() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        let parsed = parse_error_body(body);
        assert_eq!(parsed.message, "Rate limit reached");
        assert_eq!(parsed.error_type.as_deref(), Some("requests"));
        assert_eq!(parsed.code.as_deref(), Some("rate_limit_exceeded"));
    }

    #[test]
    fn reads_strings_details_numbers_and_plain_text() {
        assert_eq!(parse_error_body(br#"{"error":"boom"}"#).message, "boom");
        assert_eq!(parse_error_body(br#"{"detail":"nope"}"#).message, "nope");
        assert_eq!(
            parse_error_body(br#"{"error":{"message":"x","code":429}}"#)
                .code
                .as_deref(),
            Some("429")
        );
        assert_eq!(
            parse_error_body(b"<html>Bad Gateway</html>").message,
            "<html>Bad Gateway</html>"
        );
    }

    #[test]
    fn in_band_numeric_codes_become_statuses() {
        let error: Value = serde_json::json!({"message": "overloaded", "code": 502});
        assert_eq!(in_band_error("p", &error).status, 502);
        let error: Value = serde_json::json!({"message": "odd", "code": "server_error"});
        assert_eq!(in_band_error("p", &error).status, 0);
    }
}
