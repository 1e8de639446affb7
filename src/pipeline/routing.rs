//! Model name → provider. Aliases first, then exact names, then patterns in
//! the order configured, then the default provider; the first match wins.
//! Resolution happens before any upstream call, so an unroutable model is a
//! NOT_FOUND that costs nothing.

use crate::config::{Config, FallbackConfig, RouteConfig, TimeoutOverrides};
use crate::error::Error;
use globset::{Glob, GlobMatcher};
use std::collections::HashMap;
use std::sync::Arc;

/// The route name of a call the default provider took: it acts as a last
/// `*` pattern (a configured `*` route leaves it nothing to take).
pub const DEFAULT_ROUTE: &str = "*";
/// The route name of a call no route took (invalid, or not routable).
pub const UNROUTED: &str = "unrouted";

/// Where a model goes: the provider's index and the name to send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The name of the route that matched, as configured: the alias, the
    /// exact model, the pattern, or [`DEFAULT_ROUTE`]. A bounded set, so
    /// it can label metrics where the caller's model name cannot.
    pub route: Arc<str>,
    pub provider: usize,
    pub upstream_model: String,
    /// The route's own `max_attempts`, if it sets one.
    pub max_attempts: Option<u32>,
    /// The route's own timeouts.
    pub timeouts: TimeoutOverrides,
    /// Where to go, in order, when this target fails.
    pub fallbacks: Vec<Fallback>,
    /// The route's own `resume`, if it sets one.
    pub resume: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub provider: usize,
    pub upstream_model: String,
}

/// One row of the routing table, for ListModels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub model: String,
    pub provider: String,
    pub kind: MatchKind,
    pub target: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Exact,
    Alias,
    Pattern,
}

impl MatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKind::Exact => "exact",
            MatchKind::Alias => "alias",
            MatchKind::Pattern => "pattern",
        }
    }
}

#[derive(Debug)]
struct Target {
    /// The route's `model` as configured.
    name: Arc<str>,
    provider: usize,
    rewrite: Option<String>,
    max_attempts: Option<u32>,
    timeouts: TimeoutOverrides,
    fallbacks: Vec<FallbackConfig>,
    resume: Option<bool>,
    /// Bytes before the trailing `*` of a pattern, for `{suffix}`.
    prefix_len: usize,
}

#[derive(Debug)]
pub struct Router {
    provider_names: Vec<String>,
    aliases: HashMap<Arc<str>, String>,
    exact: HashMap<String, Target>,
    patterns: Vec<(GlobMatcher, Target)>,
    default_provider: Option<usize>,
    default_route: Arc<str>,
    table: Vec<RouteInfo>,
}

impl Router {
    /// Builds the table; the configuration was validated, so every provider
    /// a route names exists.
    pub fn new(config: &Config) -> Router {
        let provider_names: Vec<String> = config.providers.iter().map(|p| p.name.clone()).collect();
        let index_of = |name: &str| provider_names.iter().position(|known| known == name);
        let mut router = Router {
            aliases: config
                .aliases
                .iter()
                .map(|(alias, target)| (Arc::from(alias.as_str()), target.clone()))
                .collect(),
            exact: HashMap::new(),
            patterns: Vec::new(),
            default_provider: config.default_provider.as_deref().and_then(index_of),
            default_route: Arc::from(DEFAULT_ROUTE),
            table: Vec::new(),
            provider_names: provider_names.clone(),
        };
        for route in &config.routes {
            let Some(provider) = index_of(&route.provider) else {
                continue;
            };
            router.add(route, provider);
        }
        for (alias, target) in &config.aliases {
            let provider = router
                .resolve(target)
                .map(|resolved| provider_names[resolved.provider].clone())
                .unwrap_or_else(|_| "(unroutable)".to_owned());
            router.table.push(RouteInfo {
                model: alias.clone(),
                provider,
                kind: MatchKind::Alias,
                target: target.clone(),
            });
        }
        router
    }

    fn add(&mut self, route: &RouteConfig, provider: usize) {
        let is_pattern = route.model.contains(['*', '?', '[', '{']);
        let target = Target {
            name: Arc::from(route.model.as_str()),
            provider,
            rewrite: route.rewrite.clone(),
            max_attempts: route.max_attempts,
            timeouts: route.timeouts,
            fallbacks: route.fallbacks.clone(),
            resume: route.resume,
            prefix_len: route.model.trim_end_matches('*').len(),
        };
        let kind = if is_pattern {
            MatchKind::Pattern
        } else {
            MatchKind::Exact
        };
        self.table.push(RouteInfo {
            model: route.model.clone(),
            provider: route.provider.clone(),
            kind,
            target: route.rewrite.clone().unwrap_or_default(),
        });
        if !is_pattern {
            self.exact.entry(route.model.clone()).or_insert(target);
        } else if let Ok(glob) = Glob::new(&route.model) {
            // `*` in globset does not cross `/` only with literal_separator,
            // which stays off: "*/*" and "anthropic/*" mean what they say.
            self.patterns.push((glob.compile_matcher(), target));
        }
    }

    pub fn resolve(&self, requested: &str) -> Result<Resolved, Error> {
        let alias = self.aliases.get_key_value(requested);
        let model = alias.map_or(requested, |(_, target)| target.as_str());
        let Some((target, upstream_model)) = self.lookup(model) else {
            return match self.default_provider {
                Some(provider) => Ok(Resolved {
                    route: alias
                        .map_or_else(|| self.default_route.clone(), |(name, _)| name.clone()),
                    provider,
                    upstream_model: model.to_owned(),
                    max_attempts: None,
                    timeouts: TimeoutOverrides::default(),
                    fallbacks: Vec::new(),
                    resume: None,
                }),
                None => Err(Error::ModelNotFound {
                    model: requested.to_owned(),
                    hint: self.hint(),
                }),
            };
        };
        let fallbacks = target
            .fallbacks
            .iter()
            .filter_map(|fallback| self.fallback(fallback, &upstream_model))
            .collect();
        Ok(Resolved {
            route: alias.map_or_else(|| target.name.clone(), |(name, _)| name.clone()),
            provider: target.provider,
            upstream_model,
            max_attempts: target.max_attempts,
            timeouts: target.timeouts,
            fallbacks,
            resume: target.resume,
        })
    }

    /// The route a model name matches and the name to send upstream.
    fn lookup(&self, model: &str) -> Option<(&Target, String)> {
        let target = self.exact.get(model).or_else(|| {
            self.patterns
                .iter()
                .find(|(matcher, _)| matcher.is_match(model))
                .map(|(_, target)| target)
        })?;
        Some((target, rewrite(model, target)))
    }

    /// A fallback with a provider keeps (or replaces) the model name; one
    /// with only a model is routed like a request's model.
    fn fallback(&self, fallback: &FallbackConfig, primary_model: &str) -> Option<Fallback> {
        match (&fallback.provider, &fallback.model) {
            (Some(provider), model) => Some(Fallback {
                provider: self
                    .provider_names
                    .iter()
                    .position(|name| name == provider)?,
                upstream_model: model.clone().unwrap_or_else(|| primary_model.to_owned()),
            }),
            (None, Some(model)) => {
                let model = self.aliases.get(model.as_str()).unwrap_or(model);
                match self.lookup(model) {
                    Some((target, upstream_model)) => Some(Fallback {
                        provider: target.provider,
                        upstream_model,
                    }),
                    None => self.default_provider.map(|provider| Fallback {
                        provider,
                        upstream_model: model.clone(),
                    }),
                }
            }
            (None, None) => None,
        }
    }

    fn hint(&self) -> String {
        let mut names: Vec<&str> = self
            .table
            .iter()
            .map(|route| route.model.as_str())
            .collect();
        names.truncate(12);
        if names.is_empty() {
            "no routes are configured".to_owned()
        } else {
            format!("routable models are {} (see ListModels)", names.join(", "))
        }
    }

    pub fn table(&self) -> &[RouteInfo] {
        &self.table
    }

    pub fn provider_name(&self, index: usize) -> &str {
        &self.provider_names[index]
    }
}

fn rewrite(model: &str, target: &Target) -> String {
    match &target.rewrite {
        None => model.to_owned(),
        Some(template) => {
            let suffix = model.get(target.prefix_len..).unwrap_or("");
            template
                .replace("{model}", model)
                .replace("{suffix}", suffix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;

    fn router(extra: &str) -> Router {
        router_with("", extra)
    }

    fn router_with(top: &str, extra: &str) -> Router {
        let text = format!(
            "{top}[server]\nuds = \"/tmp/x\"\n[providers.a]\nbase_url = \"http://a\"\n[providers.b]\nbase_url = \"http://b\"\n{extra}"
        );
        Router::new(&from_toml(&text, "t").unwrap())
    }

    fn provider_of(router: &Router, model: &str) -> Option<String> {
        router
            .resolve(model)
            .ok()
            .map(|resolved| router.provider_name(resolved.provider).to_owned())
    }

    #[test]
    fn exact_beats_pattern_and_patterns_keep_their_order() {
        let router = router(
            "[[routes]]\nmodel = \"x/*\"\nprovider = \"a\"\n[[routes]]\nmodel = \"*\"\nprovider = \"b\"\n[[routes]]\nmodel = \"x/special\"\nprovider = \"b\"\n",
        );
        assert_eq!(provider_of(&router, "x/special").as_deref(), Some("b"));
        assert_eq!(provider_of(&router, "x/other").as_deref(), Some("a"));
        assert_eq!(provider_of(&router, "y").as_deref(), Some("b"));
        assert_eq!(provider_of(&router, "mock/echo").as_deref(), Some("mock"));
    }

    #[test]
    fn aliases_resolve_to_their_target() {
        let router = router(
            "[aliases]\nfast = \"gpt-4o-mini\"\n[[routes]]\nmodel = \"gpt-*\"\nprovider = \"a\"\n",
        );
        let resolved = router.resolve("fast").unwrap();
        assert_eq!(router.provider_name(resolved.provider), "a");
        assert_eq!(resolved.upstream_model, "gpt-4o-mini");
    }

    #[test]
    fn rewrite_uses_model_and_suffix() {
        let router = router(
            "[[routes]]\nmodel = \"ds/*\"\nprovider = \"a\"\nrewrite = \"deepseek-{suffix}\"\n",
        );
        assert_eq!(
            router.resolve("ds/chat").unwrap().upstream_model,
            "deepseek-chat"
        );
    }

    #[test]
    fn unroutable_model_is_not_found_with_a_hint() {
        let router = router("[[routes]]\nmodel = \"gpt-*\"\nprovider = \"a\"\n");
        let error = router.resolve("llama-3").unwrap_err();
        assert!(matches!(error, Error::ModelNotFound { .. }));
        assert!(error.to_string().contains("gpt-*"), "{error}");
    }

    #[test]
    fn default_provider_takes_the_rest() {
        let router = router_with("default_provider = \"b\"\n", "");
        assert_eq!(provider_of(&router, "anything").as_deref(), Some("b"));
        assert_eq!(&*router.resolve("anything").unwrap().route, DEFAULT_ROUTE);
    }

    #[test]
    fn the_route_is_named_as_configured_never_as_requested() {
        let router = router_with(
            "default_provider = \"b\"\n",
            "[aliases]\nfast = \"gpt-4o-mini\"\n[[routes]]\nmodel = \"gpt-*\"\nprovider = \"a\"\n[[routes]]\nmodel = \"x/exact\"\nprovider = \"a\"\n",
        );
        let route = |model: &str| router.resolve(model).unwrap().route.to_string();
        assert_eq!(route("gpt-4o-2024-08-06"), "gpt-*");
        assert_eq!(route("x/exact"), "x/exact");
        assert_eq!(route("fast"), "fast");
        assert_eq!(route(&"y".repeat(1000)), DEFAULT_ROUTE);
    }
}
