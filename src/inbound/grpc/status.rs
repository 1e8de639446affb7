//! The gRPC face of an [`Error`]: code from the one classification table,
//! a message a person can act on, and google.rpc details (ErrorInfo always,
//! RetryInfo when the upstream said when to try again). A failed call's
//! status also tells the caller's retry policy what the sidecar already
//! did (see [`RetryAdvice`]): `x-llm-attempts`, `x-should-retry`, and
//! `grpc-retry-pushback-ms`, which gRPC's built-in retry honours.
//!
//! Everything a status carries out (message, every ErrorInfo value, the
//! upstream headers as metadata) passes the pipeline's [`Scrubber`] here,
//! behind the provider's own scrub where the error was made.

use crate::error::{Error, classify};
use crate::inbound::observe::Finished;
use crate::inbound::retry_advice::RetryAdvice;
use crate::pipeline::RetryStop;
use crate::secret::Scrubber;
use std::collections::HashMap;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

/// The domain of our ErrorInfo reasons.
pub const ERROR_DOMAIN: &str = "llm-sidecar";

/// The status for `error`, every text in it scrubbed of `scrubber`'s
/// secrets.
pub fn to_status(error: &Error, scrubber: &Scrubber) -> Status {
    status_of(error, scrubber, None)
}

/// The status a failed call ends with: [`to_status`]'s, with why the
/// sidecar stopped retrying in ErrorInfo (`retry_stopped`), the request
/// id, the attempts made and the advice to the caller's retry policy.
pub fn call_status(error: &Error, scrubber: &Scrubber, finished: &Finished) -> Status {
    let mut status = status_of(error, scrubber, finished.retry_stop);
    let advice = RetryAdvice::for_call(error, finished);
    let metadata = status.metadata_mut();
    if let Some(value) = advice.should_retry_header() {
        metadata.insert("x-should-retry", value.parse().expect("an ASCII value"));
    }
    if let Some(pushback) = advice.pushback_ms() {
        metadata.insert("grpc-retry-pushback-ms", pushback.into());
    }
    with_request_id(status, finished)
}

/// A metadata value that differs on every call, kept out of HPACK's
/// dynamic table: h2 writes a value marked sensitive as a literal "never
/// indexed" (RFC 7541, 6.2.3) instead of inserting it, where it would
/// only push out the values that do repeat (`x-llm-model`,
/// `x-llm-provider`) and cost the encoder and the caller's decoder a
/// table update per call.
pub(super) fn unique_per_call(
    mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    value.set_sensitive(true);
    value
}

/// The request id, and how many upstream attempts the sidecar already
/// made, so a caller does not stack its own retries on ours.
pub(super) fn with_request_id(mut status: Status, finished: &Finished) -> Status {
    let metadata = status.metadata_mut();
    if let Ok(value) = finished.request_id.parse() {
        metadata.insert("x-request-id", unique_per_call(value));
    }
    if finished.attempts > 0 {
        metadata.insert("x-llm-attempts", finished.attempts.into());
    }
    status
}

fn status_of(error: &Error, scrubber: &Scrubber, retry_stop: Option<RetryStop>) -> Status {
    let class = classify(error);
    let mut metadata = HashMap::new();
    if let Some(provider) = error.provider() {
        metadata.insert("provider".to_owned(), provider.to_owned());
    }
    if let Error::Upstream(upstream) = error {
        metadata.insert("upstream_status".to_owned(), upstream.status.to_string());
        if let Some(kind) = &upstream.error_type {
            metadata.insert("upstream_error_type".to_owned(), kind.clone());
        }
        if let Some(code) = &upstream.error_code {
            metadata.insert("upstream_error_code".to_owned(), code.clone());
        }
        if let Some(param) = &upstream.param {
            metadata.insert("upstream_error_param".to_owned(), param.clone());
        }
    }
    metadata.insert("retryable".to_owned(), class.retryable.to_string());
    if let Some(stop) = retry_stop {
        metadata.insert("retry_stopped".to_owned(), stop.reason().to_owned());
    }
    for value in metadata.values_mut() {
        scrubber.scrub_string(value);
    }
    let mut details = ErrorDetails::new();
    details.set_error_info(class.reason, ERROR_DOMAIN, metadata);
    if let Some(delay) = error.retry_after() {
        details.set_retry_info(Some(delay));
    }
    let message = error.to_string();
    let message = scrubber.scrub(&message).into_owned();
    let mut status = Status::with_error_details(class.code, message, details);
    if let Error::Upstream(upstream) = error {
        let headers = upstream.headers.clone().scrubbed(scrubber);
        headers.add_to(status.metadata_mut().as_mut());
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UpstreamError;
    use crate::upstream::PassedHeaders;
    use http::{HeaderMap, HeaderValue};
    use tonic_types::StatusExt;

    const SECRET: &str = "secret-value-0123456789";

    /// An error no provider scrubbed (as a new field would be) is still
    /// scrubbed here: message, ErrorInfo values and metadata.
    #[test]
    fn the_status_is_scrubbed_even_of_an_unscrubbed_error() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ratelimit-limit-requests",
            HeaderValue::from_static(SECRET),
        );
        let error = Error::from(UpstreamError {
            provider: "p".into(),
            status: 429,
            message: format!("echo {SECRET}"),
            error_type: Some(SECRET.into()),
            error_code: Some(format!("Bearer {SECRET}")),
            param: Some(SECRET.into()),
            headers: PassedHeaders::from_upstream(&headers, &Scrubber::default()),
            ..UpstreamError::default()
        });
        let status = to_status(&error, &Scrubber::new([SECRET]));
        assert_eq!(
            status.message(),
            "provider `p` answered 429: echo <redacted>"
        );
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.metadata["upstream_error_type"], "<redacted>");
        assert_eq!(info.metadata["upstream_error_code"], "Bearer <redacted>");
        assert!(!format!("{info:?}").contains(SECRET));
        assert!(!format!("{:?}", status.metadata()).contains(SECRET));
        assert!(!String::from_utf8_lossy(status.details()).contains(SECRET));
    }
}
