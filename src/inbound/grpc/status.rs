//! The gRPC face of an [`Error`]: code from the one classification table,
//! a message a person can act on, and google.rpc details (ErrorInfo always,
//! RetryInfo when the upstream said when to try again).

use crate::error::{Error, classify};
use std::collections::HashMap;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

/// The domain of our ErrorInfo reasons.
pub const ERROR_DOMAIN: &str = "llm-sidecar";

pub fn to_status(error: &Error) -> Status {
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
    let mut details = ErrorDetails::new();
    details.set_error_info(class.reason, ERROR_DOMAIN, metadata);
    if let Some(delay) = error.retry_after() {
        details.set_retry_info(Some(delay));
    }
    let mut status = Status::with_error_details(class.code, error.to_string(), details);
    if let Error::Upstream(upstream) = error {
        upstream.headers.add_to(status.metadata_mut().as_mut());
    }
    status
}
