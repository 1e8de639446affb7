//! `GET /v1/models`: the routing table as OpenAI model objects, one per
//! row, `owned_by` the provider that serves it.
//!
//! Every row is listed: exact names and aliases are models a caller can
//! send as they are; a pattern row (`gpt-4o*`, `mock/*`) has its pattern as
//! `id`, so a client picking from the list sees the naming a provider
//! takes. `match` (`exact`, `alias`, `pattern`) tells them apart for
//! clients that want only the concrete names; OpenAI SDKs ignore it.
//! `created` is 0: the table has no dates.

use crate::pipeline::routing::RouteInfo;
use serde::Serialize;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
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

impl<'a> ModelObject<'a> {
    fn new(route: &'a RouteInfo) -> Self {
        ModelObject {
            id: &route.model,
            object: "model",
            created: 0,
            owned_by: &route.provider,
            kind: route.kind.as_str(),
        }
    }
}

pub fn list(routes: &[RouteInfo]) -> ModelList<'_> {
    ModelList {
        object: "list",
        data: routes.iter().map(ModelObject::new).collect(),
    }
}

/// `GET /v1/models/{id}`: the row listed under that id.
pub fn find<'a>(routes: &'a [RouteInfo], id: &str) -> Option<ModelObject<'a>> {
    routes
        .iter()
        .find(|route| route.model == id)
        .map(ModelObject::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::routing::MatchKind;
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
    fn routes_are_listed_in_openai_shape() {
        let routes = [
            route("fast", "vllm", MatchKind::Alias),
            route("mock/*", "mock", MatchKind::Pattern),
        ];
        assert_eq!(
            serde_json::to_value(list(&routes)).unwrap(),
            json!({"object": "list", "data": [
                {"id": "fast", "object": "model", "created": 0, "owned_by": "vllm", "match": "alias"},
                {"id": "mock/*", "object": "model", "created": 0, "owned_by": "mock", "match": "pattern"},
            ]})
        );
        assert_eq!(find(&routes, "mock/*").unwrap().owned_by, "mock");
        assert!(find(&routes, "mock/echo").is_none());
    }
}
