//! Checks for the `[[budgets]]` tables.

use super::Checker;
use crate::config::ConfigError;
use crate::config::budgets::{BudgetConfig, BudgetScope, BudgetWindow, UnpricedModels};
use crate::config::raw::RawBudget;

impl Checker<'_> {
    pub(super) fn budgets(
        &self,
        raw: Vec<RawBudget>,
        known_provider: impl Fn(&str) -> bool,
    ) -> Result<Vec<BudgetConfig>, ConfigError> {
        let mut budgets: Vec<BudgetConfig> = Vec::new();
        for (index, raw) in raw.into_iter().enumerate() {
            let key = format!("budgets[{index}]");
            let scope = self.budget_scope(&key, &raw, &known_provider)?;
            let window = match raw.window.as_deref() {
                Some("hour") => BudgetWindow::Hour,
                Some("day") => BudgetWindow::Day,
                Some("month") => BudgetWindow::Month,
                Some(other) => {
                    return Err(self.error(
                        format!("{key}.window"),
                        format!("`{other}` is not a window: \"hour\", \"day\" or \"month\" (UTC)"),
                    ));
                }
                None => {
                    return Err(self.error(
                        format!("{key}.window"),
                        "is required: \"hour\", \"day\" or \"month\" (UTC)",
                    ));
                }
            };
            if raw.tokens.is_none() && raw.usd.is_none() {
                return Err(self.error(
                    key,
                    "sets no limit: give `tokens` (per window) and/or `usd` (US dollars per window)",
                ));
            }
            if raw.tokens == Some(0) {
                return Err(self.error(format!("{key}.tokens"), "must be at least 1"));
            }
            // Counted in millionths of a dollar in a shared store.
            if let Some(usd) = raw.usd
                && !(usd.is_finite() && usd >= 0.000_001)
            {
                return Err(self.error(
                    format!("{key}.usd"),
                    format!("{usd} is not an amount of US dollars of at least 0.000001"),
                ));
            }
            let unpriced = match raw.unpriced.as_deref() {
                None | Some("refuse") => UnpricedModels::Refuse,
                Some("allow") => UnpricedModels::Allow,
                Some(other) => {
                    return Err(self.error(
                        format!("{key}.unpriced"),
                        format!("`{other}` is neither \"refuse\" nor \"allow\""),
                    ));
                }
            };
            let name = match raw.name {
                Some(name) if name.trim().is_empty() => {
                    return Err(self.error(format!("{key}.name"), "must not be empty"));
                }
                Some(name) => name,
                None => format!("{}/{}", scope.label(), window.as_str()),
            };
            // It goes out in a header (`x-llm-budget`) and gRPC metadata.
            if !name.bytes().all(|byte| (0x20..0x7f).contains(&byte)) {
                return Err(self.error(
                    format!("{key}.name"),
                    format!(
                        "`{}` must be printable ASCII (it is sent in the `x-llm-budget` header); \
                         give the budget a `name` that is",
                        name.escape_default()
                    ),
                ));
            }
            if budgets.iter().any(|budget| budget.name == name) {
                return Err(self.error(
                    format!("{key}.name"),
                    format!("`{name}` names another budget already; give each its own `name`"),
                ));
            }
            budgets.push(BudgetConfig {
                name,
                scope,
                window,
                tokens: raw.tokens,
                usd: raw.usd,
                unpriced,
            });
        }
        Ok(budgets)
    }

    fn budget_scope(
        &self,
        key: &str,
        raw: &RawBudget,
        known_provider: impl Fn(&str) -> bool,
    ) -> Result<BudgetScope, ConfigError> {
        let scope = match (&raw.caller, &raw.tag, &raw.provider) {
            (Some(caller), None, None) if !caller.is_empty() => BudgetScope::Caller(caller.clone()),
            (None, Some(tag), None) => match tag.split_once('=') {
                Some((name, value)) if name.trim() != name || value.trim() != value => {
                    return Err(self.error(
                        format!("{key}.tag"),
                        format!(
                            "`{tag}` has spaces around its key or value, which a request's \
                             metadata would have to repeat exactly; write `key=value`"
                        ),
                    ));
                }
                Some((name, value)) if !name.is_empty() => BudgetScope::Tag {
                    key: name.to_owned(),
                    value: value.to_owned(),
                },
                _ => {
                    return Err(self.error(
                        format!("{key}.tag"),
                        format!("`{tag}` is not `key=value` (a request metadata entry)"),
                    ));
                }
            },
            (None, None, Some(provider)) => {
                if !known_provider(provider) {
                    return Err(self.error(
                        format!("{key}.provider"),
                        format!("no provider named `{provider}` is configured"),
                    ));
                }
                BudgetScope::Provider(provider.clone())
            }
            _ => {
                return Err(self.error(
                    key,
                    "needs exactly one of `caller`, `tag` (\"key=value\") or `provider`",
                ));
            }
        };
        Ok(scope)
    }
}
