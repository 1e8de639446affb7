//! Resuming a stream cut mid-answer (`resume = true` on a route or a
//! provider). Without it, a stream that breaks after output reached the
//! caller ends with an error, and the caller pays again for the whole
//! answer. With it, the pipeline asks a target that accepts a prefill
//! (`prefill` on its provider) to continue from the text the caller already
//! has, and passes on only what follows: one answer, no seam, no repeat.
//!
//! The rules, and why:
//! - **what is resumed**: a stream cut (body ended or broke, idle limit, a
//!   malformed frame, an in-band error) after content text went out, that
//!   carried text only (one choice, no tool calls). Nothing else can be
//!   continued from a prefill.
//! - **never** after a content-policy stop (a `content_filter` finish, an
//!   error that names moderation or safety): resuming would route around
//!   the provider's moderation. Nor after a finish reason at all (the
//!   answer was whole), nor past the caller's deadline or our total.
//! - **reasoning** that went out is not sent back: the prefill is the
//!   content text only, and a stream that sent only reasoning is not
//!   resumed (a prefill cannot hold reasoning).
//! - **where**: the target that was serving, then the route's later
//!   targets, the first whose provider sets `prefill` and whose circuit
//!   allows (each through the usual attempt loop: circuit, quota, slot,
//!   retries before its first chunk). Once per call.
//! - **what the caller sees** (documented edits, see `resume/edit.rs`): the
//!   continuation's chunks carry the first attempt's `id` and `created`,
//!   its role-only opening delta is dropped, and its usage is the sum over
//!   both attempts (the cut one's estimated when it reported none).
//! - **when the continuation fails** (refused, or cut again), the call ends
//!   with the original failure: that is what went wrong with the answer.
//!
//! Cost: nothing when resuming is off for the call (the stream is not
//! wrapped). When on, each chunk's text is read once more and kept, up to
//! `upstream.resume_max_bytes`; past that the stream is no longer resumed
//! and the text is let go.

mod edit;

use super::*;
use crate::config::PrefillStyle;
use crate::error::{TimeoutKind, UpstreamError};
use crate::model::ChatChunk;
use crate::model::ProtoChunkDecoder;
use crate::telemetry::spans;
use edit::{Seen, Splice};
use futures::Stream;
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The call's span event when a stream is resumed.
const EVENT_RESUME: &str = "resume";

/// What the config says about resuming, per provider.
#[derive(Debug, Default)]
pub(super) struct ResumeSettings {
    /// In the pipeline's provider order: `resume`, and `prefill`.
    providers: Vec<(bool, Option<PrefillStyle>)>,
    /// Some route or provider resumes: else no call looks further.
    anywhere: bool,
    max_bytes: usize,
}

impl ResumeSettings {
    pub(super) fn new(config: &Config) -> ResumeSettings {
        let providers: Vec<_> = config
            .providers
            .iter()
            .map(|provider| (provider.resume, provider.prefill))
            .collect();
        let anywhere = providers.iter().any(|(resume, _)| *resume)
            || config.routes.iter().any(|route| route.resume == Some(true));
        ResumeSettings {
            providers,
            anywhere,
            max_bytes: config.upstream.resume_max_bytes,
        }
    }

    fn prefill(&self, provider: usize) -> Option<PrefillStyle> {
        self.providers.get(provider).and_then(|(_, style)| *style)
    }
}

/// A stream call that may be resumed: what opening its continuation needs.
pub(super) struct Plan {
    pipeline: Arc<Pipeline>,
    /// The caller's request (its model as asked, before routing).
    request: ChatRequest,
    call: CallContext,
    bounds: Bounds,
    /// The route's own `resume`.
    route_resume: Option<bool>,
}

impl Plan {
    /// `None` when no stream of this call could be resumed: resuming is off
    /// everywhere, the route says no, or the request asks for several
    /// choices (`n` > 1).
    pub(super) fn new(
        pipeline: &Arc<Pipeline>,
        request: &ChatRequest,
        call: &CallContext,
        bounds: Bounds,
    ) -> Option<Plan> {
        if !pipeline.resume.anywhere || request.integer("n").is_some_and(|n| n > 1) {
            return None;
        }
        let route = pipeline.router.resolve(&request.model).ok()?;
        if route.resume == Some(false) {
            return None;
        }
        Some(Plan {
            pipeline: Arc::clone(pipeline),
            request: request.clone(),
            call: call.clone(),
            bounds,
            route_resume: route.resume,
        })
    }

    /// The served stream, resumable if the route or the serving provider
    /// says so; else as it was.
    pub(super) fn wrap(plan: Option<Plan>, served: Served<ChunkStream>) -> Served<ChunkStream> {
        let Some(plan) = plan else {
            return served;
        };
        let settings = &plan.pipeline.resume;
        let provider_resumes = plan
            .pipeline
            .providers
            .iter()
            .position(|slot| slot.provider.name == served.provider)
            .is_some_and(|index| settings.providers[index].0);
        if !plan.route_resume.unwrap_or(provider_resumes) {
            return served;
        }
        let seen = Seen::new(settings.max_bytes);
        let proto = plan.request.proto.map(|decoders| decoders.chunk);
        let stream = Resumable {
            state: State::First(served.value),
            plan: Some(Box::new(plan)),
            serving: served.provider.clone(),
            seen,
            proto,
            original: None,
            splice: None,
        };
        Served {
            value: Box::pin(stream),
            ..served
        }
    }

    /// Opens the continuation after `cut`: the route's targets from the
    /// serving one on, the first that takes a prefill and answers.
    async fn continuation(
        self,
        serving: Arc<str>,
        text: String,
        cut: &'static str,
    ) -> Result<Served<ChunkStream>, Error> {
        let Plan {
            pipeline,
            request,
            call,
            bounds,
            ..
        } = self;
        let targets = pipeline.route(&request, &call)?;
        let from = targets
            .iter()
            .position(|target| target.slot.provider.name == serving)
            .unwrap_or(0);
        let mut last = None;
        for target in &targets[from..] {
            let index = pipeline
                .providers
                .iter()
                .position(|slot| std::ptr::eq(slot, target.slot));
            let Some(style) = index.and_then(|index| pipeline.resume.prefill(index)) else {
                continue;
            };
            note_resume(&call, &serving, &target.slot.provider.name, cut);
            let prefilled = edit::with_prefill(&request, &text, style);
            let opened = pipeline.until_stopped(serve(
                std::slice::from_ref(target),
                prefilled,
                Streaming(bounds, &call),
            ));
            match opened.await {
                Ok(served) => return Ok(served),
                Err(error) => {
                    tracing::info!(
                        provider = %target.slot.provider.name,
                        reason = classify(&error).reason,
                        "resuming the stream failed here"
                    );
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal("no target takes a prefill".to_owned())))
    }
}

/// The span event and log line of a resume: the cut's reason, from where
/// to where.
fn note_resume(call: &CallContext, from: &str, to: &str, cut: &'static str) {
    tracing::info!(from, to, reason = cut, "resuming a cut stream");
    if call.trace.span().is_recording() {
        spans::add_event(
            &call.trace,
            EVENT_RESUME,
            vec![
                KeyValue::new("error.type", cut.to_ascii_lowercase()),
                KeyValue::new("from", from.to_owned()),
                KeyValue::new("to", to.to_owned()),
            ],
        );
    }
}

/// Whether a stream that failed with `error` after output may be resumed:
/// a cut, a stall, garbage or an in-band error, never a content-policy
/// stop or one of the call's own ends (deadline, total, shutdown).
pub(super) fn resumable(error: &Error) -> bool {
    match error {
        Error::StreamIncomplete { .. } | Error::MalformedResponse { .. } => true,
        Error::Timeout { kind, .. } => *kind == TimeoutKind::Idle,
        Error::Upstream(upstream) => upstream.in_band && !names_content_policy(upstream),
        _ => false,
    }
}

/// An upstream error that says moderation stopped the answer, in any of
/// the spellings providers use (`content_filter`, `content_policy_violation`,
/// Azure's `ResponsibleAIPolicyViolation`, Gemini's `SAFETY`).
fn names_content_policy(error: &UpstreamError) -> bool {
    const WORDS: [&str; 5] = [
        "content_filter",
        "content_policy",
        "moderation",
        "safety",
        "responsibleai",
    ];
    [
        error.error_type.as_deref(),
        error.error_code.as_deref(),
        Some(error.message.as_str()),
    ]
    .into_iter()
    .flatten()
    .any(|text| {
        let text = text.to_ascii_lowercase();
        WORDS.iter().any(|word| text.contains(word))
    })
}

type Opening = Pin<Box<dyn Future<Output = Result<Served<ChunkStream>, Error>> + Send>>;

enum State {
    /// The first attempt's stream.
    First(ChunkStream),
    /// It was cut; the continuation is being opened.
    Opening(Opening),
    /// The continuation's stream.
    Continuing(ChunkStream),
    Done,
}

/// A served stream that, when it is cut, continues on a target that takes
/// a prefill.
struct Resumable {
    state: State,
    /// Taken when the continuation opens (once per call).
    plan: Option<Box<Plan>>,
    /// The provider of the first attempt.
    serving: Arc<str>,
    seen: Seen,
    /// A gRPC caller's decoder, for the continuation's edited chunks.
    proto: Option<ProtoChunkDecoder>,
    /// The cut, which the call ends with if the continuation fails.
    original: Option<Error>,
    /// How the continuation's chunks are edited into the first's.
    splice: Option<Splice>,
}

impl Resumable {
    /// On a failure of the first attempt: opens the continuation when it
    /// may be, else passes the failure on.
    fn on_cut(&mut self, error: Error) -> Option<Error> {
        if !resumable(&error) || !self.seen.can_resume() {
            return Some(error);
        }
        let Some(plan) = self.plan.take() else {
            return Some(error);
        };
        // A stream read on after its caller left (`drain_on_cancel`) is
        // read for its usage only: continuing it would pay for an answer
        // nobody reads.
        if plan.call.progress.caller_left() {
            return Some(error);
        }
        let cut = classify(&error).reason;
        let earlier = self.seen.usage_so_far(&plan.request);
        plan.call.progress.resumed(cut, earlier.estimated);
        let text = self.seen.take_text();
        self.splice = Some(Splice::new(&self.seen, earlier, cut, self.proto));
        self.original = Some(error);
        let serving = self.serving.clone();
        self.state = State::Opening(Box::pin(plan.continuation(serving, text, cut)));
        None
    }

    /// Ends the call with the original cut; `why` is the continuation's
    /// failure, logged.
    fn fail(&mut self, why: &Error) -> Poll<Option<Result<ChatChunk, Error>>> {
        tracing::warn!(reason = classify(why).reason, error = %why, "the resumed stream failed; the call ends with the cut");
        self.state = State::Done;
        let original = self
            .original
            .take()
            .unwrap_or_else(|| Error::Internal("a resumed stream without its cut".to_owned()));
        Poll::Ready(Some(Err(original)))
    }
}

impl Stream for Resumable {
    type Item = Result<ChatChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::First(stream) => match std::task::ready!(stream.as_mut().poll_next(cx)) {
                    Some(Ok(chunk)) => {
                        this.seen.note(&chunk);
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    Some(Err(error)) => {
                        if let Some(error) = this.on_cut(error) {
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(error)));
                        }
                    }
                    None => {
                        this.state = State::Done;
                        return Poll::Ready(None);
                    }
                },
                State::Opening(opening) => match std::task::ready!(opening.as_mut().poll(cx)) {
                    Ok(served) => {
                        // Its attempt span ends once it answered; the
                        // call's span covers the rest.
                        spans::end_ok(&served.trace);
                        this.state = State::Continuing(served.value);
                    }
                    Err(error) => return this.fail(&error),
                },
                State::Continuing(stream) => {
                    match std::task::ready!(stream.as_mut().poll_next(cx)) {
                        Some(Ok(chunk)) => {
                            let Some(splice) = this.splice.as_mut() else {
                                return Poll::Ready(Some(Ok(chunk)));
                            };
                            match splice.edit(chunk) {
                                Ok(Some(chunk)) => return Poll::Ready(Some(Ok(chunk))),
                                Ok(None) => continue,
                                Err(error) => return this.fail(&error),
                            }
                        }
                        Some(Err(error)) => return this.fail(&error),
                        None => {
                            this.state = State::Done;
                            return Poll::Ready(None);
                        }
                    }
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

#[cfg(test)]
mod tests;
