//! `[[budgets]]`: spend limits per caller, tag or provider, in tokens
//! and/or US dollars per UTC hour, day or month (`crate::budget` enforces
//! them).

/// One budget as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    /// How messages, headers and the admin view name it: `name` as
    /// configured, else its scope and window (`caller:search/day`).
    pub name: String,
    pub scope: BudgetScope,
    pub window: BudgetWindow,
    /// Tokens (prompt + completion) per window.
    pub tokens: Option<u64>,
    /// US dollars per window.
    pub usd: Option<f64>,
    /// What a USD budget does with a call to a model that has no price.
    pub unpriced: UnpricedModels,
}

/// Whose calls a budget counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BudgetScope {
    /// Calls whose caller (its token's name, else its `x-llm-caller`, else
    /// `uid:<uid>` of the peer process on a Unix socket) is this.
    Caller(String),
    /// Calls whose `metadata` has this key with this value
    /// (`tag = "team=search"`).
    Tag { key: String, value: String },
    /// Calls served by this provider (the route's first target).
    Provider(String),
}

/// The UTC calendar period a budget's spend is counted over; it starts
/// again at each boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetWindow {
    Hour,
    Day,
    Month,
}

impl BudgetWindow {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetWindow::Hour => "hour",
            BudgetWindow::Day => "day",
            BudgetWindow::Month => "month",
        }
    }
}

/// A model without a price under a USD budget: its cost is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnpricedModels {
    /// Refused: an unknown cost could overrun the budget (the default).
    Refuse,
    /// Served, and counted against the budget's tokens only.
    Allow,
}

impl BudgetScope {
    /// `caller:search`, `tag:team=search`, `provider:openai`.
    pub fn label(&self) -> String {
        match self {
            BudgetScope::Caller(name) => format!("caller:{name}"),
            BudgetScope::Tag { key, value } => format!("tag:{key}={value}"),
            BudgetScope::Provider(name) => format!("provider:{name}"),
        }
    }
}
