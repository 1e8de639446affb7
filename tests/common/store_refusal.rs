//! What a call refused because the `[shared]` store is away (under
//! `on_unavailable = "closed"`) must carry on each edge: UNAVAILABLE / 503,
//! `SHARED_STORE_UNAVAILABLE`, and when to come back, which is when the
//! store is tried again: between 1 s (the least) and 2 s (the longest
//! wait between probes).

use std::time::Duration;
use tonic_types::StatusExt;

/// The gRPC refusal: RetryInfo, and the same wait as gRPC's pushback.
pub fn assert_grpc(status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "SHARED_STORE_UNAVAILABLE", "{status:?}");
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo: {status:?}"));
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(2)).contains(&delay),
        "{delay:?}"
    );
    let pushback: u128 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .unwrap_or_else(|| panic!("no pushback: {status:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pushback, delay.as_millis(), "{status:?}");
}

/// The facade's refusal: `Retry-After` (seconds) and `retry-after-ms`.
pub async fn assert_http(response: reqwest::Response) {
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    assert_eq!(
        headers["x-llm-error-reason"], "SHARED_STORE_UNAVAILABLE",
        "{body}"
    );
    let seconds: u64 = headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {headers:?} {body}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&seconds), "{seconds}");
    let millis: u64 = headers["retry-after-ms"].to_str().unwrap().parse().unwrap();
    assert!((1000..=2000).contains(&millis), "{millis}");
    assert!(body.contains("shared limits store"), "{body}");
}
