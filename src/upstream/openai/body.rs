//! The upstream request body: the caller's body as it is, with the fields
//! the sidecar owns written by the sidecar.
//!
//! Owned: `model` (the routed upstream name), `stream`,
//! `stream_options.include_usage` (asked for on streams when the provider
//! accepts it, so every call is accounted; the caller's other
//! `stream_options` stay; a provider configured with
//! `stream_options = false` receives none), the gRPC caller's `max_tokens` (written as the
//! provider's [`MaxTokensField`]) and `metadata` (sent only when the
//! provider sets `forward_metadata`). Every other member is written as the
//! caller sent it, in the caller's order.

use crate::config::MaxTokensField;
use crate::model::ChatRequest;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// How one provider wants the owned fields written.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    /// Ask for usage on streams (`stream_options.include_usage`).
    pub include_usage: bool,
    pub max_tokens_field: MaxTokensField,
    pub forward_metadata: bool,
}

/// A request as the provider receives it.
pub struct UpstreamBody<'a> {
    pub request: &'a ChatRequest,
    pub rules: BodyRules,
}

impl Serialize for UpstreamBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let request = self.request;
        let rules = self.rules;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("model", &request.model)?;
        let cap_field = rules.max_tokens_field.as_str();
        let mut options_written = false;
        for (key, value) in &request.body {
            match key.as_str() {
                // Ours, written below (a gRPC `extra` may name them too).
                "model" | "stream" | "metadata" => {}
                "stream_options" if request.stream && rules.include_usage => {
                    map.serialize_entry(key, &with_usage(value))?;
                    options_written = true;
                }
                // A provider configured without `stream_options` refuses it.
                "stream_options" if !rules.include_usage => {}
                _ => map.serialize_entry(key, value)?,
            }
        }
        if request.stream {
            map.serialize_entry("stream", &true)?;
            if rules.include_usage && !options_written {
                map.serialize_entry("stream_options", &UsageOnly)?;
            }
        }
        if let Some(cap) = request.max_output_tokens
            && !request.body.contains_key(cap_field)
        {
            map.serialize_entry(cap_field, &cap)?;
        }
        if rules.forward_metadata && !request.metadata.is_empty() {
            map.serialize_entry("metadata", &request.metadata)?;
        }
        map.end()
    }
}

/// The caller's `stream_options` with `include_usage` set.
fn with_usage(options: &Value) -> Value {
    let mut options = match options {
        Value::Object(options) => options.clone(),
        _ => Map::new(),
    };
    options.insert("include_usage".to_owned(), Value::Bool(true));
    Value::Object(options)
}

/// `{"include_usage": true}`, written without building a map.
struct UsageOnly;

impl Serialize for UsageOnly {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("include_usage", &true)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(request: &ChatRequest, rules: BodyRules) -> Value {
        serde_json::to_value(UpstreamBody { request, rules }).unwrap()
    }

    const RULES: BodyRules = BodyRules {
        include_usage: true,
        max_tokens_field: MaxTokensField::MaxTokens,
        forward_metadata: false,
    };

    fn request(body: Value) -> ChatRequest {
        ChatRequest {
            model: "routed".into(),
            body: body.as_object().cloned().unwrap(),
            ..ChatRequest::default()
        }
    }

    #[test]
    fn the_callers_fields_pass_and_the_sidecars_are_written() {
        let mut request = request(json!({
            "messages": [{"role": "user", "content": "", "cache_control": {"type": "ephemeral"}}],
            "stream_options": {"include_obfuscation": false},
            "model": "asked",
            "x_vendor": {"deep": [1, {"a": null}]},
        }));
        request.stream = true;
        request.metadata.insert("team".into(), "search".into());
        let sent = body(&request, RULES);
        assert_eq!(
            sent,
            json!({
                "model": "routed",
                "messages": [{"role": "user", "content": "", "cache_control": {"type": "ephemeral"}}],
                "stream_options": {"include_obfuscation": false, "include_usage": true},
                "x_vendor": {"deep": [1, {"a": null}]},
                "stream": true,
            })
        );
        let forwarded = body(
            &request,
            BodyRules {
                forward_metadata: true,
                include_usage: false,
                ..RULES
            },
        );
        assert_eq!(forwarded["metadata"], json!({"team": "search"}));
        assert!(forwarded.get("stream_options").is_none(), "{forwarded}");
    }

    #[test]
    fn a_portable_cap_takes_the_providers_spelling() {
        let mut request = request(json!({"messages": []}));
        request.max_output_tokens = Some(64);
        assert_eq!(body(&request, RULES)["max_tokens"], 64);
        let openai = BodyRules {
            max_tokens_field: MaxTokensField::MaxCompletionTokens,
            ..RULES
        };
        let sent = body(&request, openai);
        assert_eq!(sent["max_completion_tokens"], 64);
        assert!(sent.get("max_tokens").is_none());
        assert!(sent.get("stream").is_none() && sent.get("stream_options").is_none());
    }
}
