use super::*;
use crate::config::budgets::BudgetWindow;

fn budget(name: &str, scope: BudgetScope, tokens: Option<u64>, usd: Option<f64>) -> BudgetConfig {
    BudgetConfig {
        name: name.to_owned(),
        scope,
        window: BudgetWindow::Day,
        tokens,
        usd,
        unpriced: UnpricedModels::Refuse,
    }
}

fn team(value: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("team".to_owned(), value.to_owned())])
}

fn subject<'a>(tags: &'a BTreeMap<String, String>) -> Subject<'a> {
    Subject {
        caller: Some("app"),
        tags,
        provider: "openai",
    }
}

fn tokens(tokens: u64) -> Charge {
    Charge {
        tokens,
        usd: Some(0.0),
    }
}

#[test]
fn a_call_that_would_cross_the_limit_is_refused_until_the_window_resets() {
    let tag = BudgetScope::Tag {
        key: "team".into(),
        value: "search".into(),
    };
    let budgets = Budgets::new(&[budget("search", tag, Some(100), None)]);
    let search = team("search");
    let (held, remaining) = budgets.reserve(subject(&search), tokens(60)).unwrap();
    assert_eq!(remaining.unwrap().tokens, Some(40));
    // 60 held: another 60 would cross.
    let refused = budgets.reserve(subject(&search), tokens(60)).unwrap_err();
    assert_eq!(refused.budget, "search");
    assert!(
        refused.detail.contains("60 of its 100 tokens"),
        "{}",
        refused.detail
    );
    assert!(refused.retry_after > Duration::ZERO);
    assert!(refused.retry_after <= Duration::from_secs(86_400));
    // Settled to what it really took: 30, so 60 fit again.
    budgets.settle(held, tokens(30));
    budgets.reserve(subject(&search), tokens(60)).unwrap();
    // Another team's calls are not counted.
    let other = team("ads");
    let (_, remaining) = budgets.reserve(subject(&other), tokens(1_000)).unwrap();
    assert_eq!(remaining, None);
}

#[test]
fn usd_budgets_refuse_unpriced_models_unless_allowed() {
    let caller = BudgetScope::Caller("app".into());
    let mut allowing = budget("allowing", caller.clone(), Some(1_000), Some(1.0));
    allowing.unpriced = UnpricedModels::Allow;
    let none = BTreeMap::new();
    let unpriced = Charge {
        tokens: 10,
        usd: None,
    };
    let budgets = Budgets::new(&[allowing]);
    let (held, _) = budgets.reserve(subject(&none), unpriced).unwrap();
    budgets.settle(held, unpriced);
    let status = budgets.status();
    assert_eq!((status[0].tokens_spent, status[0].usd_spent), (10, 0.0));

    let budgets = Budgets::new(&[budget("strict", caller, None, Some(1.0))]);
    let refused = budgets.reserve(subject(&none), unpriced).unwrap_err();
    assert!(refused.detail.contains("no price"), "{}", refused.detail);
    let priced = Charge {
        tokens: 10,
        usd: Some(0.75),
    };
    let (held, remaining) = budgets.reserve(subject(&none), priced).unwrap();
    assert_eq!(remaining.unwrap().usd, Some(0.25));
    assert!(
        budgets.reserve(subject(&none), priced).is_err(),
        "$1.50 of $1"
    );
    budgets.settle(
        held,
        Charge {
            tokens: 10,
            usd: Some(0.1),
        },
    );
    assert!((budgets.status()[0].usd_spent - 0.1).abs() < 1e-9);
}

#[test]
fn a_refusal_reserves_nothing_on_the_other_budgets() {
    let budgets = Budgets::new(&[
        budget(
            "caller",
            BudgetScope::Caller("app".into()),
            Some(1_000),
            None,
        ),
        budget(
            "provider",
            BudgetScope::Provider("openai".into()),
            Some(50),
            None,
        ),
    ]);
    let none = BTreeMap::new();
    assert!(budgets.reserve(subject(&none), tokens(60)).is_err());
    let status = budgets.status();
    assert_eq!(
        status[0].tokens_reserved, 0,
        "the caller's budget holds nothing"
    );
    let (_, remaining) = budgets.reserve(subject(&none), tokens(20)).unwrap();
    assert_eq!(
        remaining.unwrap().budget,
        "provider",
        "the tightest is reported"
    );
}

#[test]
fn a_reload_keeps_the_spend_of_budgets_it_keeps() {
    let caller = BudgetScope::Caller("app".into());
    let budgets = Budgets::new(&[
        budget("kept", caller.clone(), Some(100), None),
        budget("dropped", caller.clone(), Some(100), None),
    ]);
    let none = BTreeMap::new();
    let (held, _) = budgets.reserve(subject(&none), tokens(40)).unwrap();
    budgets.settle(held, tokens(40));
    // The limit changes, the name, scope and window do not.
    budgets.configure(&[
        budget("kept", caller.clone(), Some(500), None),
        budget("new", caller, Some(100), None),
    ]);
    let status = budgets.status();
    assert_eq!(status.len(), 2);
    assert_eq!(
        (status[0].name.as_str(), status[0].tokens_spent),
        ("kept", 40)
    );
    assert_eq!(status[0].tokens_limit, Some(500));
    assert_eq!(
        (status[1].name.as_str(), status[1].tokens_spent),
        ("new", 0)
    );
}

#[test]
fn spend_read_back_counts_only_in_its_own_window() {
    let budgets = Budgets::new(&[budget(
        "b",
        BudgetScope::Caller("app".into()),
        Some(100),
        None,
    )]);
    let (name, _, start) = budgets.windows().remove(0);
    budgets.restore(&name, start, 70, 0.0);
    budgets.restore(&name, start - 86_400, 1_000, 0.0);
    assert_eq!(budgets.status()[0].tokens_spent, 70);
    let none = BTreeMap::new();
    assert!(budgets.reserve(subject(&none), tokens(31)).is_err());
}

#[test]
fn a_call_larger_than_a_whole_window_is_told_to_ask_for_less() {
    let budgets = Budgets::new(&[budget(
        "small",
        BudgetScope::Caller("app".into()),
        Some(5),
        None,
    )]);
    let none = BTreeMap::new();
    let refused = budgets.reserve(subject(&none), tokens(6)).unwrap_err();
    assert!(
        refused.detail.contains("more than the budget's whole 5"),
        "{}",
        refused.detail
    );
    assert_eq!(
        refused.retry_after,
        Duration::ZERO,
        "no window would admit it"
    );
    budgets.reserve(subject(&none), tokens(5)).unwrap();
}

#[test]
fn the_tightest_budget_is_the_one_with_the_least_share_of_its_limit_left() {
    let tag = BudgetScope::Tag {
        key: "team".into(),
        value: "search".into(),
    };
    let budgets = Budgets::new(&[
        budget(
            "big-tokens",
            BudgetScope::Provider("openai".into()),
            Some(1_000_000),
            None,
        ),
        budget("small-usd", tag, None, Some(0.05)),
    ]);
    let search = team("search");
    let spend = Charge {
        tokens: 26,
        usd: Some(0.046),
    };
    let (_, remaining) = budgets.reserve(subject(&search), spend).unwrap();
    // $0.004 of $0.05 left (8 %) is tighter than 999,974 of a million.
    let remaining = remaining.unwrap();
    assert_eq!(remaining.budget, "small-usd");
    assert!((remaining.share_left - 0.08).abs() < 1e-9, "{remaining:?}");
}
