//! Sending a call upstream, attempt after attempt, until one is answered
//! or the route's retry policy ([`retry`](super::retry)) gives up.
//!
//! An attempt goes to the session's worker or the least busy one; a retry
//! to a worker the call has not tried, where the pool has one. Each attempt
//! waits for the response headers at most its first-byte limit, and never
//! past the call's total limit: whichever fires first is the error, each
//! its own kind, naming its setting. The connect timeout is the pooled
//! client's. Every attempt, its worker, status or error and duration, is
//! kept (see `waiting`) for the record, and each is a `tracing` span
//! (`tracegate.upstream_attempt`, and `tracegate.retry_backoff` for each
//! wait) that self-tracing exports under the call's span.

use super::tee::Deadline;
use super::waiting::Waiting;
use super::{Forwarder, Outgoing, failure, retry};
use crate::capture::CallContext;
use crate::config::{CallPolicy, Limit};
use crate::error::GatewayError;
use crate::export::self_tracing::{self, TARGET};
use crate::record::ErrorKind;
use crate::route::{self, Lease, Route};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// The call's total limit as a deadline, counted from its arrival.
pub(super) fn total_deadline(policy: &CallPolicy, arrived: Instant) -> Option<Deadline> {
    policy.timeouts.total.as_ref().map(|limit| Deadline {
        at: tokio::time::Instant::from_std(arrived + limit.after),
        limit: limit.clone(),
    })
}

/// When an attempt starting now must have its response headers: its
/// first-byte limit or the call's total, whichever comes first.
fn answer_deadline(policy: &CallPolicy, arrived: Instant) -> Option<(Deadline, ErrorKind)> {
    let first = policy.timeouts.first_byte.as_ref().map(|limit: &Limit| {
        let at = tokio::time::Instant::now() + limit.after;
        let deadline = Deadline {
            at,
            limit: limit.clone(),
        };
        (deadline, ErrorKind::UpstreamTimeout)
    });
    let total = total_deadline(policy, arrived).map(|d| (d, ErrorKind::UpstreamTotalTimeout));
    match (first, total) {
        (Some(first), Some(total)) if total.0.at < first.0.at => Some(total),
        (first, total) => first.or(total),
    }
}

impl Forwarder {
    /// Sends `outgoing` on `route` until an attempt is answered (the
    /// answer may be an error status the policy does not retry, or the
    /// last one) or fails for good.
    pub(super) async fn attempts(
        &self,
        route: &Route,
        ctx: &CallContext,
        outgoing: &Outgoing,
        waiting: &mut Waiting<'_>,
    ) -> Result<(Lease, reqwest::Response), GatewayError> {
        let session = ctx.who.identity.session_id.as_deref();
        let policy = &route.config.policy;
        let mut tried: Vec<String> = Vec::new();
        let mut retries = 0;
        loop {
            let Some(lease) = route.pool.pick_retry(session, &tried) else {
                return Err(GatewayError::new(
                    ErrorKind::UpstreamUnreachable,
                    "no worker of this route accepted the connection",
                ));
            };
            let answered = self.attempt(&lease, policy, ctx, outgoing, waiting).await;
            let situation = retry::Situation {
                policy: policy.retry.as_ref(),
                outcome: retry::Outcome::of(&answered),
                retries,
                untried: tried.len() + 1 < route.pool.len(),
                elapsed: ctx.arrival.started.mono.elapsed(),
            };
            let Some(again) = retry::next(&situation) else {
                return answered.map(|upstream| (lease, upstream));
            };
            let worker = lease.worker().id.clone();
            tracing::info!(%worker, reason = %again.reason, wait = ?again.wait, "retrying the call");
            waiting.retrying(again.reason);
            self.metrics.retried(route.config.label(), again.reason);
            retries += u32::from(again.counted);
            tried.push(worker);
            drop((answered, lease));
            self.backoff(again.wait, ctx).await;
        }
    }

    /// One attempt: the request to `lease`'s worker, and its response
    /// headers within the limits.
    async fn attempt(
        &self,
        lease: &Lease,
        policy: &CallPolicy,
        ctx: &CallContext,
        outgoing: &Outgoing,
        waiting: &mut Waiting<'_>,
    ) -> Result<reqwest::Response, GatewayError> {
        let worker = lease.worker();
        waiting.start(worker);
        let span =
            tracing::trace_span!(target: TARGET, "tracegate.upstream_attempt", worker = %worker.id);
        self_tracing::attach(&span, &ctx.who.trace);
        let url = route::target_url(&worker.url, &outgoing.api_path, outgoing.query.as_deref());
        let request = self
            .client
            .request(outgoing.method.clone(), url)
            .headers(outgoing.headers.clone())
            .body(outgoing.body.clone())
            .send();
        let deadline = answer_deadline(policy, ctx.arrival.started.mono);
        let sent = match deadline {
            None => Ok(request.instrument(span).await),
            Some((deadline, kind)) => tokio::time::timeout_at(deadline.at, request)
                .instrument(span)
                .await
                .map_err(|_| failure::no_answer_within(kind, &deadline.limit)),
        };
        let answered =
            sent.and_then(|r| r.map_err(|e| failure::before_answer(&e, self.connect_timeout)));
        waiting.end(&answered);
        answered
    }

    /// Waits `wait` before a retry (a `retry.backoff` span).
    async fn backoff(&self, wait: Duration, ctx: &CallContext) {
        if wait.is_zero() {
            return;
        }
        let span = tracing::trace_span!(target: TARGET, "tracegate.retry_backoff", wait_ms = wait.as_millis() as u64);
        self_tracing::attach(&span, &ctx.who.trace);
        tokio::time::sleep(wait).instrument(span).await;
    }
}
