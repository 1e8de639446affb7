//! OpenAI's `logprobs` object → the typed protobuf form. An object of
//! another shape is not converted (the caller then finds it, as sent, in
//! the choice's `extra`).

use crate::proto::v1 as pb;
use serde_json::{Map, Value};

/// `{"content": [...], "refusal": [...]}` → [`pb::Logprobs`]; `None` when
/// `value` is not of that shape.
pub fn logprobs_from_json(value: &Value) -> Option<pb::Logprobs> {
    let fields = value.as_object()?;
    if fields
        .keys()
        .any(|key| key != "content" && key != "refusal")
    {
        return None;
    }
    Some(pb::Logprobs {
        content: tokens(fields, "content")?,
        refusal: tokens(fields, "refusal")?,
    })
}

fn tokens(fields: &Map<String, Value>, key: &str) -> Option<Vec<pb::TokenLogprob>> {
    match fields.get(key) {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(token).collect(),
        Some(_) => None,
    }
}

fn token(item: &Value) -> Option<pb::TokenLogprob> {
    let (token, logprob, bytes) = common(item, &["top_logprobs"])?;
    let top_logprobs = match item.get("top_logprobs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|top| {
                let (token, logprob, bytes) = common(top, &[])?;
                Some(pb::TopLogprob {
                    token,
                    logprob,
                    bytes,
                })
            })
            .collect::<Option<_>>()?,
        Some(_) => return None,
    };
    Some(pb::TokenLogprob {
        token,
        logprob,
        bytes,
        top_logprobs,
    })
}

/// `token`, `logprob` and `bytes` (a list of byte values, or null); `None`
/// when anything else is present or a value is of another type.
fn common(item: &Value, also: &[&str]) -> Option<(String, f64, Vec<u8>)> {
    let fields = item.as_object()?;
    let known = ["token", "logprob", "bytes"];
    if fields
        .keys()
        .any(|key| !known.contains(&key.as_str()) && !also.contains(&key.as_str()))
    {
        return None;
    }
    let token = fields.get("token")?.as_str()?.to_owned();
    let logprob = fields.get("logprob")?.as_f64()?;
    let bytes = match fields.get("bytes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .iter()
            .map(|value| u8::try_from(value.as_u64()?).ok())
            .collect::<Option<_>>()?,
        Some(_) => return None,
    };
    Some((token, logprob, bytes))
}
