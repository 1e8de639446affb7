//! The gRPC face of an [`Error`]: code from the one classification table,
//! a message a person can act on, and google.rpc details (ErrorInfo always,
//! RetryInfo when the upstream said when to try again).
//!
//! Everything a status carries out (message, every ErrorInfo value, the
//! upstream headers as metadata) passes the pipeline's [`Scrubber`] here,
//! behind the provider's own scrub where the error was made.

use crate::error::{Error, classify};
use crate::secret::Scrubber;
use std::collections::HashMap;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

/// The domain of our ErrorInfo reasons.
pub const ERROR_DOMAIN: &str = "llm-sidecar";

/// The status for `error`, every text in it scrubbed of `scrubber`'s
/// secrets.
pub fn to_status(error: &Error, scrubber: &Scrubber) -> Status {
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
