//! Instants as an operator types them in a URL: `15m`, `24h` or `7d` ago,
//! or a Unix time in milliseconds.

use std::time::{Duration, SystemTime};

/// Parses `since`/`until` values; `now` anchors relative ones.
pub fn parse_instant(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "`{text}` is not a time: use a span ago such as 90s, 15m, 24h, 7d, or Unix milliseconds"
        )
    };
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let ago = Duration::from_secs(number.saturating_mul(seconds));
    Ok(now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_ago_and_unix_milliseconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ago = |secs| now - Duration::from_secs(secs);
        assert_eq!(parse_instant("90s", now), Ok(ago(90)));
        assert_eq!(parse_instant("15m", now), Ok(ago(900)));
        assert_eq!(parse_instant("24h", now), Ok(ago(86_400)));
        assert_eq!(parse_instant("7d", now), Ok(ago(604_800)));
        assert_eq!(
            parse_instant("1500", now),
            Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(1500))
        );
    }

    #[test]
    fn anything_else_is_refused_with_examples() {
        let now = SystemTime::now();
        for text in ["", "h", "5w", "-5m", "yesterday"] {
            let error = parse_instant(text, now).unwrap_err();
            assert!(error.contains("15m"), "{error}");
        }
    }
}
