//! Scrubbing an error whole: the boundary where an upstream's failure
//! becomes the sidecar's [`Error`] runs every text it carries through the
//! provider's [`Scrubber`], then bounds it ([`bound_message`]: after the
//! scrub, so a cut never leaves a secret's prefix). Every variant and field is named here, without
//! `..`, so a field added later does not compile until it is decided here.

use super::{Error, UpstreamError};
use crate::secret::{Scrubber, bound_message};

impl Error {
    /// The error with every text it carries scrubbed of `scrubber`'s
    /// secrets and bounded in length.
    pub fn scrubbed(mut self, scrubber: &Scrubber) -> Error {
        self.scrub(scrubber);
        self
    }

    /// [`Error::scrubbed`], in place.
    pub fn scrub(&mut self, scrubber: &Scrubber) {
        let s = |text: &mut String| scrub_and_bound(scrubber, text);
        match self {
            Error::InvalidRequest(text)
            | Error::Internal(text)
            | Error::Edge {
                fault: _,
                message: text,
            } => s(text),
            Error::ModelNotFound { model, hint } => {
                s(model);
                s(hint);
            }
            Error::ProviderNotReady { provider, reason } => {
                s(provider);
                s(reason);
            }
            Error::Upstream(upstream) => upstream.scrub(scrubber),
            Error::BudgetExceeded(refusal) => {
                s(&mut refusal.budget);
                s(&mut refusal.detail);
            }
            Error::Connect { provider, detail }
            | Error::StreamIncomplete { provider, detail }
            | Error::MalformedResponse { provider, detail } => {
                s(provider);
                s(detail);
            }
            Error::Overloaded {
                provider,
                kind: _,
                retry_after: _,
            }
            | Error::CircuitOpen {
                provider,
                retry_after: _,
            }
            | Error::Timeout {
                provider,
                kind: _,
                after: _,
            }
            | Error::SharedStoreUnavailable {
                provider,
                retry_after: _,
            } => s(provider),
            Error::ResponseTooLarge {
                provider,
                limit: _,
                size: _,
            } => s(provider),
            Error::DeadlineExceeded {
                stage: _,
                elapsed: _,
            }
            | Error::TooManyCalls { limit: _ }
            | Error::ShuttingDown => {}
        }
    }
}

impl UpstreamError {
    /// Every text of the upstream's error scrubbed: its words, its error
    /// object and the headers that pass to the caller.
    pub fn scrub(&mut self, scrubber: &Scrubber) {
        let UpstreamError {
            provider,
            status: _,
            message,
            error_type,
            error_code,
            param,
            object,
            retry_after: _,
            headers,
            in_band: _,
        } = self;
        scrub_and_bound(scrubber, provider);
        scrub_and_bound(scrubber, message);
        for text in [error_type, error_code, param].into_iter().flatten() {
            scrub_and_bound(scrubber, text);
        }
        if let Some(object) = object {
            scrubber.scrub_json(object);
        }
        headers.scrub(scrubber);
    }
}

fn scrub_and_bound(scrubber: &Scrubber, text: &mut String) {
    scrubber.scrub_string(text);
    if text.len() > crate::secret::MAX_MESSAGE_CHARS {
        *text = bound_message(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::PassedHeaders;
    use http::{HeaderMap, HeaderValue};

    const SECRET: &str = "secret-value-0123456789";

    #[test]
    fn every_text_of_an_upstream_error_is_scrubbed() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static(SECRET));
        let error = Error::from(UpstreamError {
            provider: "p".into(),
            status: 401,
            message: format!("bad {SECRET}"),
            error_type: Some(SECRET.into()),
            error_code: Some(SECRET.into()),
            param: Some(SECRET.into()),
            object: Some(serde_json::json!({"message": SECRET, "extra": [SECRET]})),
            headers: PassedHeaders::from_upstream(&headers, &Scrubber::default()),
            ..UpstreamError::default()
        })
        .scrubbed(&Scrubber::new([SECRET]));
        assert!(!format!("{error:?}").contains(SECRET), "{error:?}");
    }

    #[test]
    fn transport_details_are_scrubbed() {
        let error = Error::Connect {
            provider: "p".into(),
            detail: format!("refused for {SECRET}"),
        }
        .scrubbed(&Scrubber::new([SECRET]));
        assert_eq!(
            error.to_string(),
            "cannot reach provider `p`: refused for <redacted>"
        );
    }
}
