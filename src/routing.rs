//! Model name → provider. Aliases first, then exact names, then patterns in
//! the order configured, then the default provider; the first match wins.
//! Resolution happens before any upstream call, so an unroutable model is a
//! NOT_FOUND that costs nothing.

use crate::config::{Config, FallbackConfig, RouteConfig, TimeoutOverrides};
use crate::error::Error;
use globset::{Glob, GlobMatcher};
use std::collections::HashMap;

/// Where a model goes: the provider's index and the name to send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub provider: usize,
    pub upstream_model: String,
    /// The route's own `max_attempts`, if it sets one.
    pub max_attempts: Option<u32>,
    /// The route's own timeouts.
    pub timeouts: TimeoutOverrides,
    /// Where to go, in order, when this target fails.
    pub fallbacks: Vec<Fallback>,
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
    provider: usize,
    rewrite: Option<String>,
    max_attempts: Option<u32>,
    timeouts: TimeoutOverrides,
    fallbacks: Vec<FallbackConfig>,
    /// Bytes before the trailing `*` of a pattern, for `{suffix}`.
    prefix_len: usize,
}

#[derive(Debug)]
pub struct Router {
    provider_names: Vec<String>,
    aliases: HashMap<String, String>,
    exact: HashMap<String, Target>,
    patterns: Vec<(GlobMatcher, Target)>,
    default_provider: Option<usize>,
    table: Vec<RouteInfo>,
}

impl Router {
    /// Builds the table; the configuration was validated, so every provider
    /// a route names exists.
    pub fn new(config: &Config) -> Router {
        let provider_names: Vec<String> = config.providers.iter().map(|p| p.name.clone()).collect();
        let index_of = |name: &str| provider_names.iter().position(|known| known == name);
        let mut router = Router {
            aliases: config.aliases.iter().cloned().collect(),
            exact: HashMap::new(),
            patterns: Vec::new(),
            default_provider: config.default_provider.as_deref().and_then(index_of),
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
            provider,
            rewrite: route.rewrite.clone(),
            max_attempts: route.max_attempts,
            timeouts: route.timeouts,
            fallbacks: route.fallbacks.clone(),
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
        let model = self
            .aliases
            .get(requested)
            .map_or(requested, String::as_str);
        let Some((target, upstream_model)) = self.lookup(model) else {
            return match self.default_provider {
                Some(provider) => Ok(Resolved {
                    provider,
                    upstream_model: model.to_owned(),
                    max_attempts: None,
                    timeouts: TimeoutOverrides::default(),
                    fallbacks: Vec::new(),
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
            provider: target.provider,
            upstream_model,
            max_attempts: target.max_attempts,
            timeouts: target.timeouts,
            fallbacks,
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
                let model = self.aliases.get(model).unwrap_or(model);
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
    }
}
