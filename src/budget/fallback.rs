//! Budgets while the `[shared]` store is away (`on_unavailable =
//! "local"`): each pod counts alone, held to its share of each limit
//! (the limit ÷ `expected_pods`, as the fleet's rate limits are) and to
//! what the fleet had left when the store last answered it, so an outage
//! cannot let every pod spend the whole budget again. What a pod spends
//! alone is handed to the store once it is back (`alone.rs`), into the
//! window on the store's clock.

use super::{
    Amounts, BudgetExceeded, Budgets, Charge, Hold, Remaining, Reservation, Subject, Tracked,
    matching, unix_now, until, window,
};
use crate::config::budgets::BudgetConfig;
use crate::shared::SharedStore;

impl Budgets {
    /// Reserves `charge` on every budget `subject` falls under, counted by
    /// this pod alone, or refuses the call (reserving nothing) when a
    /// budget's share or the fleet's last known spend would be crossed;
    /// the refusal's Retry-After is when the store is next tried.
    pub(super) fn reserve_alone(
        &self,
        store: &SharedStore,
        subject: Subject<'_>,
        charge: Charge,
    ) -> Result<(Reservation, Option<Remaining>), BudgetExceeded> {
        let now = unix_now();
        let store_now = store.now();
        let pods = store.expected_pods();
        let mut tracked = self.lock();
        let matched = matching(&mut tracked, &subject, now);
        for &index in &matched {
            if let Some(refusal) = tracked[index].admits_alone(charge, store_now, pods) {
                return Err(BudgetExceeded {
                    retry_after: store.retry_after(),
                    ..refusal
                });
            }
        }
        let reserved = Amounts::from(charge);
        let mut reservation = Reservation {
            alone: true,
            ..Reservation::default()
        };
        let mut remaining: Option<Remaining> = None;
        for index in matched {
            let budget = &mut tracked[index];
            budget.reserved = budget.reserved.plus(reserved);
            budget.alone = budget.alone.plus(reserved);
            reservation.holds.push(Hold {
                name: budget.config.name.clone(),
                start: budget.start,
                reserved,
                window: None,
                fleet_start: Some(window::bounds(budget.config.window, store_now).0),
            });
            let left = Remaining::of(&share(&budget.config, pods), budget.alone);
            left.keep_tightest(&mut remaining);
        }
        Ok((reservation, remaining))
    }
}

impl Tracked {
    /// Why this budget refuses `charge` while the pod counts alone, if it
    /// does: past this pod's share of a limit, or past what the fleet had
    /// left when the store last answered (its window still running at
    /// `store_now`, unix seconds on the store's clock).
    fn admits_alone(&self, charge: Charge, store_now: i64, pods: u32) -> Option<BudgetExceeded> {
        if let Some(refusal) = self
            .unpriced_refusal(charge)
            .or_else(|| self.too_large(charge))
        {
            return Some(refusal);
        }
        let share = share(&self.config, pods);
        let fleet = self
            .fleet
            .filter(|seen| window::bounds(self.config.window, store_now).0 == seen.start)
            .map_or(Amounts::default(), |seen| seen.used);
        let usd = charge.usd.unwrap_or(0.0);
        let over_share = share
            .tokens
            .is_some_and(|limit| self.alone.tokens + charge.tokens > limit)
            || share.usd.is_some_and(|limit| self.alone.usd + usd > limit);
        let over_fleet = self
            .config
            .tokens
            .is_some_and(|limit| fleet.tokens + self.alone.tokens + charge.tokens > limit)
            || self
                .config
                .usd
                .is_some_and(|limit| fleet.usd + self.alone.usd + usd > limit);
        if !(over_share || over_fleet) {
            return None;
        }
        let window = self.config.window.as_str();
        let detail = format!(
            "the shared store is away, so this pod counts alone: it may spend {} a {window} \
             (the budget's limits ÷ expected_pods {pods}) and has spent or holds {}, the \
             fleet had used {} when the store last answered, and this call may take {}",
            describe(share),
            describe(self.alone),
            describe(fleet),
            describe(Amounts {
                tokens: charge.tokens,
                usd,
            }),
        );
        Some(BudgetExceeded {
            budget: self.config.name.clone(),
            detail,
            retry_after: until(self.end, unix_now()),
        })
    }
}

/// Budget `config` with this pod's share of its limits.
fn share(config: &BudgetConfig, pods: u32) -> BudgetConfig {
    BudgetConfig {
        tokens: config.tokens.map(|limit| limit / u64::from(pods)),
        usd: config.usd.map(|limit| limit / f64::from(pods)),
        ..config.clone()
    }
}

/// `120 tokens`, `$0.0400`, or both.
fn describe(amounts: impl Into<Described>) -> String {
    let Described(tokens, usd) = amounts.into();
    match (tokens, usd) {
        (Some(tokens), Some(usd)) => format!("{tokens} tokens and ${usd:.4}"),
        (Some(tokens), None) => format!("{tokens} tokens"),
        (None, Some(usd)) => format!("${usd:.4}"),
        (None, None) => "nothing".to_owned(),
    }
}

struct Described(Option<u64>, Option<f64>);

impl From<Amounts> for Described {
    fn from(amounts: Amounts) -> Described {
        Described(Some(amounts.tokens), Some(amounts.usd))
    }
}

impl From<BudgetConfig> for Described {
    fn from(config: BudgetConfig) -> Described {
        Described(config.tokens, config.usd)
    }
}
