//! The attempt loop of one target: circuit → budget → rates and queue →
//! the provider call, retried by the policy until it answers, fails for
//! good, or the call's bounds end.

use super::*;

/// One routed call, ready to be attempted.
pub(super) struct Routed<'a> {
    pub(super) slot: &'a ProviderSlot,
    pub(super) policy: RetryPolicy,
    pub(super) timeouts: Timeouts,
    pub(super) upstream_model: String,
    pub(super) trace: AttemptTrace<'a>,
    pub(super) stop: &'a CancellationToken,
    /// Whether the route has a target after this one: a silent upstream
    /// is then left for it at once instead of being waited on again.
    pub(super) has_next: bool,
}

/// A target's failure and the attempts it made.
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) error: Error,
    pub(super) attempts: u32,
}

/// A target's answer, the attempts it took and the serving attempt's span.
pub(super) struct Won<T> {
    pub(super) reply: Reply<T>,
    pub(super) attempts: u32,
    pub(super) trace: TraceContext,
}

impl Routed<'_> {
    pub(super) async fn complete(
        &self,
        request: &ChatRequest,
        bounds: Bounds,
        call: &CallContext,
    ) -> Result<Won<ChatResponse>, Failed> {
        let provider = &self.slot.provider;
        let progress = &*call.progress;
        self.attempt(
            bounds,
            call,
            request,
            "waiting for the answer",
            |trace| async move {
                let _slot = self
                    .slot
                    .acquire(bounds, request, call, self.trace, &trace)
                    .await?;
                let _in_flight = self.slot.in_flight.enter();
                let _upstream = progress.upstream_timer();
                if self.has_next {
                    // A unary answer's headers come once it is whole: with
                    // a next target, its wait is bounded per attempt too.
                    let limit = self.silence_limit(self.timeouts.unary_attempt, bounds);
                    tokio::time::timeout(limit, provider.complete(request, &trace))
                        .await
                        .unwrap_or_else(|_| {
                            Err(Error::Timeout {
                                provider: provider.name.to_string(),
                                kind: TimeoutKind::Headers,
                                after: limit,
                            })
                        })
                } else {
                    provider.complete(request, &trace).await
                }
            },
        )
        .await
    }

    pub(super) async fn stream(
        &self,
        request: &ChatRequest,
        bounds: Bounds,
        call: &CallContext,
    ) -> Result<Won<ChunkStream>, Failed> {
        let provider = &self.slot.provider;
        let timeouts = self.timeouts;
        let progress = &*call.progress;
        let until_first_byte = bounds.until_first_byte(call.first_byte_deadline);
        let first_chunk = |trace: &TraceContext, headers_limit: Duration| {
            let trace = trace.clone();
            async move {
                let Reply {
                    value: mut stream,
                    headers,
                } = provider.stream(request, headers_limit, &trace).await?;
                match stream.next().await {
                    Some(Ok(first)) => Ok((Some(first), stream, headers)),
                    Some(Err(error)) => Err(error),
                    // Complete and empty: [DONE] straight away.
                    None => Ok((None, stream, headers)),
                }
            }
        };
        let Won {
            reply: opened,
            attempts,
            trace,
        } = self
            .attempt(
                // An SDK's read timeout bounds the wait for the first byte.
                until_first_byte,
                call,
                request,
                "waiting for the first chunk",
                |trace| async move {
                    // The slot is held for as long as the stream lives.
                    let slot = self
                        .slot
                        .acquire(bounds, request, call, self.trace, &trace)
                        .await?;
                    let in_flight = self.slot.in_flight.enter();
                    let upstream = progress.upstream_timer();
                    let first_chunk_limit =
                        self.silence_limit(timeouts.first_chunk, until_first_byte);
                    let headers_limit = self.silence_limit(timeouts.headers, until_first_byte);
                    let first =
                        tokio::time::timeout(first_chunk_limit, first_chunk(&trace, headers_limit))
                            .await;
                    let waited = upstream.elapsed();
                    drop(upstream);
                    let (first, rest, headers) = first.unwrap_or_else(|_| {
                        Err(Error::Timeout {
                            provider: provider.name.to_string(),
                            kind: TimeoutKind::FirstChunk,
                            after: first_chunk_limit,
                        })
                    })?;
                    self.trace.first_chunk(&trace, waited);
                    Ok(Reply {
                        value: (first, rest, (slot, in_flight)),
                        headers,
                    })
                },
            )
            .await?;
        let (first, rest, slot) = opened.value;
        let stream: ChunkStream = match first {
            Some(first) => Box::pin(futures::stream::once(async { Ok(first) }).chain(rest)),
            None => rest,
        };
        let bounded = BoundedStream::new(
            stream,
            provider.name.clone(),
            bounds,
            timeouts.idle,
            Some(slot),
        )
        .stopped_by(self.stop);
        let reply = Reply {
            value: Box::pin(bounded) as ChunkStream,
            headers: opened.headers,
        };
        Ok(Won {
            reply,
            attempts,
            trace,
        })
    }

    /// Runs `work` until it succeeds or the policy, the budget or the
    /// caller's deadline says stop; returns the value and the attempts made.
    async fn attempt<T, F, Fut>(
        &self,
        bounds: Bounds,
        call: &CallContext,
        request: &ChatRequest,
        stage: &'static str,
        mut work: F,
    ) -> Result<Won<T>, Failed>
    where
        F: FnMut(TraceContext) -> Fut,
        Fut: Future<Output = Result<Reply<T>, Error>>,
    {
        let slot = self.slot;
        slot.budget.deposit();
        let mut attempts = 0;
        // The failure being retried: if the circuit closes the way before
        // the retry, the caller gets it, the provider's own words, rather
        // than the circuit's.
        let mut retrying: Option<Error> = None;
        loop {
            if let Err(wait) = slot.circuit.allow() {
                let error = retrying.take().unwrap_or_else(|| Error::CircuitOpen {
                    provider: slot.provider.name.to_string(),
                    retry_after: wait,
                });
                return Err(Failed { error, attempts });
            }
            attempts += 1;
            call.progress.attempt_started(&slot.provider.name);
            let trace = self.trace.start(call, request, &slot.provider);
            // Boxed: the work holds the upstream request's futures (some
            // 6 KiB), which inline would be copied by every layer above.
            let error = match self
                .within(bounds, stage, Box::pin(work(trace.clone())))
                .await
            {
                Ok(value) => {
                    if slot.circuit.on_success() {
                        tracing::info!(provider = %slot.provider.name, "circuit closed: the provider answers again");
                    }
                    self.trace.answered(&slot.provider);
                    return Ok(Won {
                        reply: value,
                        attempts,
                        trace,
                    });
                }
                Err(error) => error,
            };
            self.trace.failed(&trace, &slot.provider, &error);
            // A rate limit says the provider is busy, not broken: it never
            // opens the circuit (which would turn it into an outage).
            if error.is_provider_failure() && !error.is_rate_limit() {
                if slot.circuit.on_failure() {
                    tracing::warn!(provider = %slot.provider.name, reason = classify(&error).reason, "circuit opened: skipping the provider for a while");
                }
            } else if matches!(error, Error::Upstream(_)) && slot.circuit.on_success() {
                // It answered (a 4xx, a rate limit): up, if not willing.
                tracing::info!(provider = %slot.provider.name, "circuit closed: the provider answers again");
            }
            if self.has_next && error.is_silence() {
                // The next target answers sooner than another wait here.
                return Err(Failed { error, attempts });
            }
            let next = self.policy.next(
                &error,
                attempts,
                Instant::now(),
                Some(bounds.deadline()),
                fastrand::f64(),
            );
            let wait = match next {
                Next::RetryAfter(wait) => wait,
                Next::GiveUp => return Err(Failed { error, attempts }),
                Next::LeaveToCaller => {
                    call.progress.retry_stopped(RetryStop::LeftToCaller);
                    return Err(Failed { error, attempts });
                }
            };
            if !slot.budget.try_withdraw() {
                // The upstream's own error goes back as it was; the
                // refusal is told beside it.
                call.progress.retry_stopped(RetryStop::BudgetExhausted);
                tracing::debug!(provider = %slot.provider.name, "retry refused: the retry budget is spent");
                return Err(Failed { error, attempts });
            }
            self.trace
                .retrying(call, &slot.provider, attempts + 1, wait, &error);
            tracing::debug!(
                provider = %slot.provider.name,
                attempt = attempts,
                reason = classify(&error).reason,
                wait_ms = wait.as_millis() as u64,
                "retrying"
            );
            retrying = Some(error);
            let sleeping = Instant::now();
            tokio::time::sleep(wait).await;
            call.progress.add_backoff(sleeping.elapsed());
        }
    }
}

impl Routed<'_> {
    /// How long an attempt waits for an upstream that says nothing, at
    /// most `limit`. With a next target and a caller deadline, at most half
    /// the time the caller has left, so the next target still gets a fair
    /// share of it (a deadline shorter than the limits would otherwise be
    /// spent whole on a silent first target).
    fn silence_limit(&self, limit: Duration, bounds: Bounds) -> Duration {
        let deadline = bounds.deadline();
        if self.has_next && deadline.set_by_caller {
            limit.min(deadline.end.saturating_duration_since(Instant::now()) / 2)
        } else {
            limit
        }
    }

    /// Runs `work` until the call's bounds end; past them the work is
    /// dropped, which closes any upstream request it had open.
    async fn within<T>(
        &self,
        bounds: Bounds,
        stage: &'static str,
        work: impl Future<Output = Result<Reply<T>, Error>>,
    ) -> Result<Reply<T>, Error> {
        match tokio::time::timeout_at(bounds.end(), work).await {
            Ok(result) => result,
            Err(_) => Err(bounds.expired(&self.slot.provider.name, stage)),
        }
    }
}
