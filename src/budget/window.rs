//! A budget's window in UTC: where the one holding a moment starts and
//! where the next starts, in unix seconds. Months follow the proleptic
//! Gregorian calendar (`ledger::timestamp` for the day → date half).

use crate::config::budgets::BudgetWindow;
use crate::ledger::timestamp::civil_from_days;

const SECONDS_PER_DAY: i64 = 86_400;

/// `(start, end)` in unix seconds of the `window` holding `now` (unix
/// seconds): the hour, day or month it falls in; `end` is the next one's
/// start.
pub fn bounds(window: BudgetWindow, now: i64) -> (i64, i64) {
    match window {
        BudgetWindow::Hour => {
            let start = now - now.rem_euclid(3600);
            (start, start + 3600)
        }
        BudgetWindow::Day => {
            let start = now - now.rem_euclid(SECONDS_PER_DAY);
            (start, start + SECONDS_PER_DAY)
        }
        BudgetWindow::Month => {
            let (year, month, _) = civil_from_days(now.div_euclid(SECONDS_PER_DAY));
            let (next_year, next_month) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
            (
                days_from_civil(year, month, 1) * SECONDS_PER_DAY,
                days_from_civil(next_year, next_month, 1) * SECONDS_PER_DAY,
            )
        }
    }
}

/// (year, month 1-12, day) → days since 1970-01-01; Howard Hinnant's
/// `days_from_civil`, the inverse of `civil_from_days`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-02-29T13:45:10Z.
    const LEAP_DAY_AFTERNOON: i64 = 1_709_214_310;

    #[test]
    fn hours_and_days_are_utc_boundaries() {
        let (start, end) = bounds(BudgetWindow::Hour, LEAP_DAY_AFTERNOON);
        assert_eq!((start, end), (1_709_211_600, 1_709_215_200));
        let (start, end) = bounds(BudgetWindow::Day, LEAP_DAY_AFTERNOON);
        assert_eq!((start, end), (1_709_164_800, 1_709_251_200));
    }

    #[test]
    fn a_month_runs_from_its_first_day_to_the_next_months() {
        // February 2024 (a leap year): 2024-02-01 to 2024-03-01.
        let (start, end) = bounds(BudgetWindow::Month, LEAP_DAY_AFTERNOON);
        assert_eq!((start, end), (1_706_745_600, 1_709_251_200));
        // December rolls into the next year: 2023-12-01 to 2024-01-01.
        let (start, end) = bounds(BudgetWindow::Month, 1_702_000_000);
        assert_eq!((start, end), (1_701_388_800, 1_704_067_200));
    }

    #[test]
    fn days_from_civil_inverts_civil_from_days() {
        for days in [-800_000, -1, 0, 59, 60, 11_016, 19_782, 2_932_896] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
    }
}
