//! `GET /v1/models` and `GET /v1/models/{id}`: the routing table as OpenAI
//! model objects, `owned_by` the provider that serves each.
//!
//! `data` holds only names a caller can send as they are (exact names,
//! aliases, and the names a provider that knows all its models serves
//! behind a pattern: the mock's `mock/echo`), since model pickers read
//! every `id` there as a concrete model.
//! Pattern rows (`gpt-4o*`, `mock/*`) are listed apart, under `patterns`,
//! each `{"pattern", "object": "model_pattern", "owned_by"}`; OpenAI SDKs
//! ignore the extra member. `GET /v1/models/{id}` answers for any name the
//! sidecar would serve: a listed name, or one a pattern or the default
//! provider takes (`mock/echo`), with `match` saying which (`exact`,
//! `alias`, `pattern`, `default`). `created` is 0: the table has no dates.

use crate::pipeline::routing::{MatchKind, RouteInfo};
use serde::Serialize;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
    patterns: Vec<PatternObject<'a>>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    owned_by: &'a str,
    #[serde(rename = "match")]
    kind: &'static str,
}

/// A pattern row: the names it takes, not a name to send.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PatternObject<'a> {
    pattern: &'a str,
    object: &'static str,
    owned_by: &'a str,
}

impl<'a> ModelObject<'a> {
    /// `id` served by `provider`, matched as `kind`.
    pub fn new(id: &'a str, provider: &'a str, kind: &'static str) -> Self {
        ModelObject {
            id,
            object: "model",
            created: 0,
            owned_by: provider,
            kind,
        }
    }
}

/// The table's names and patterns, and `known`: concrete names a pattern
/// serves that a provider knows (`(model, provider)`, the mock's).
pub fn list<'a>(routes: &'a [RouteInfo], known: &[(&'a str, &'a str)]) -> ModelList<'a> {
    let (patterns, names): (Vec<_>, Vec<_>) = routes
        .iter()
        .partition(|route| route.kind == MatchKind::Pattern);
    let mut data: Vec<_> = names
        .into_iter()
        .map(|route| ModelObject::new(&route.model, &route.provider, route.kind.as_str()))
        .collect();
    for &(model, provider) in known {
        if !data.iter().any(|listed| listed.id == model) {
            data.push(ModelObject::new(
                model,
                provider,
                MatchKind::Pattern.as_str(),
            ));
        }
    }
    ModelList {
        object: "list",
        data,
        patterns: patterns
            .into_iter()
            .map(|route| PatternObject {
                pattern: &route.model,
                object: "model_pattern",
                owned_by: &route.provider,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(model: &str, provider: &str, kind: MatchKind) -> RouteInfo {
        RouteInfo {
            model: model.into(),
            provider: provider.into(),
            kind,
            target: model.into(),
        }
    }

    #[test]
    fn names_are_listed_in_openai_shape_and_patterns_apart() {
        let routes = [
            route("fast", "vllm", MatchKind::Alias),
            route("mock/*", "mock", MatchKind::Pattern),
            route("gpt-4o", "openai", MatchKind::Exact),
        ];
        assert_eq!(
            serde_json::to_value(list(&routes, &[("mock/echo", "mock")])).unwrap(),
            json!({"object": "list", "data": [
                {"id": "fast", "object": "model", "created": 0, "owned_by": "vllm", "match": "alias"},
                {"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "openai", "match": "exact"},
                {"id": "mock/echo", "object": "model", "created": 0, "owned_by": "mock", "match": "pattern"},
            ], "patterns": [
                {"pattern": "mock/*", "object": "model_pattern", "owned_by": "mock"},
            ]})
        );
    }
}
