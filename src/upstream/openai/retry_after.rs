//! How long an upstream asks us to wait: `retry-after-ms` (OpenAI, Azure)
//! wins over `retry-after`, which is delta seconds or an HTTP date.

use reqwest::header::HeaderMap;
use std::time::{Duration, SystemTime};

/// The longest wait taken from an upstream: beyond a day a value is a
/// mistake or hostile, and unbounded it would overflow the clock's sums.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The upstream's wait, at most [`MAX_RETRY_AFTER`]; `None` when it sent
/// none or none that reads as a wait.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    let seconds = |value: f64| {
        (value.is_finite() && value >= 0.0)
            .then(|| Duration::try_from_secs_f64(value).unwrap_or(MAX_RETRY_AFTER))
            .map(|wait| wait.min(MAX_RETRY_AFTER))
    };
    if let Some(wait) = text("retry-after-ms")
        .and_then(|value| value.parse::<f64>().ok())
        .and_then(|ms| seconds(ms / 1000.0))
    {
        return Some(wait);
    }
    let value = text("retry-after")?;
    if let Ok(value) = value.parse::<f64>() {
        return seconds(value);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(
        date.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn seconds_milliseconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "7"), ("retry-after-ms", "1500")]),
                now
            ),
            Some(Duration::from_millis(1500))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &date)]), now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &past)]), now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn garbage_is_ignored() {
        let now = SystemTime::now();
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-3")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn absurd_waits_are_capped_at_a_day_not_a_panic() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (name, value) in [
            ("retry-after", "99999999999999999999"),
            ("retry-after", "1e30"),
            ("retry-after-ms", "18446744073709551615"),
            ("retry-after-ms", "1e300"),
            ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"),
        ] {
            assert_eq!(
                retry_after(&headers(&[(name, value)]), now),
                Some(MAX_RETRY_AFTER),
                "{name}: {value}"
            );
        }
    }
}
