//! Calls whose client leaves while the gateway waits on their behalf — for
//! the rest of their request body, for the upstream's response headers,
//! through a retry's backoff.
//!
//! hyper drops the handler's future when its client goes away, and with it
//! whatever the future was awaiting. These guards live in that future, and
//! record the call as `client_closed` when they are dropped before being
//! disarmed, with what was known: the request (when it was read), the
//! identity, the timing, and every attempt so far — the one in flight
//! marked as cut short by the client. Dropping the future has already
//! dropped the upstream request, which closes its connection: a model
//! server stops generating for nobody. (A route with
//! `finish_on_client_close` sends from a task of its own instead, see
//! `detached`, so its calls are never dropped this way.)
//!
//! The guards borrow what they would record and copy it only when they
//! fire, so a call that is answered pays for nothing but a flag.

use super::{Arrived, Forwarder, who};
use crate::capture::{CallContext, Moment, record_failure};
use crate::error::GatewayError;
use crate::record::{Attempt, CallError, ErrorKind, RetryReason, millis, rfc3339};
use crate::route::Worker;
use crate::store::StoreWriter;
use std::sync::atomic::{AtomicU64, Ordering};

/// The client left: the error its record carries.
fn left(what: String) -> GatewayError {
    GatewayError::new(
        ErrorKind::ClientClosed,
        format!("the client disconnected {what}"),
    )
}

/// Guards the read of a request body.
pub(super) struct Unread<'a> {
    forwarder: &'a Forwarder,
    arrived: &'a Arrived,
    armed: bool,
}

impl<'a> Unread<'a> {
    pub(super) fn new(forwarder: &'a Forwarder, arrived: &'a Arrived) -> Unread<'a> {
        Unread {
            forwarder,
            arrived,
            armed: true,
        }
    }

    /// The body was read (or failed to be): nothing to record here.
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Unread<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let arrived = self.arrived;
        let ctx = self.forwarder.context_before_body(
            arrived.arrival.clone(),
            self.forwarder.metrics.in_flight(),
            who(arrived, None),
        );
        let error = left("while sending its request body".to_string());
        record_failure(ctx, &error, &self.forwarder.store);
    }
}

/// Guards a call while it is sent upstream, and keeps its attempts.
pub(super) struct Waiting<'a> {
    ctx: &'a CallContext,
    store: &'a StoreWriter,
    beats: Option<&'a AtomicU64>,
    attempts: Vec<Attempt>,
    current: Option<(Attempt, Moment)>,
    armed: bool,
}

impl<'a> Waiting<'a> {
    /// Guards the call `ctx`; `beats` counts its heartbeats, if it has them.
    pub(super) fn new(
        ctx: &'a CallContext,
        store: &'a StoreWriter,
        beats: Option<&'a AtomicU64>,
    ) -> Waiting<'a> {
        Waiting {
            ctx,
            store,
            beats,
            attempts: Vec::new(),
            current: None,
            armed: true,
        }
    }

    /// An attempt to `worker` starts.
    pub(super) fn start(&mut self, worker: &Worker) {
        let now = Moment::now();
        let attempt = Attempt {
            worker: worker.id.clone(),
            upstream: worker.url.to_string(),
            started_at: rfc3339(now.wall),
            ..Attempt::default()
        };
        self.current = Some((attempt, now));
    }

    /// The attempt in flight ended with `answered`.
    pub(super) fn end(&mut self, answered: &Result<reqwest::Response, GatewayError>) {
        let (status, error) = match answered {
            Ok(response) => (Some(response.status().as_u16()), None),
            Err(e) => (None, Some(e.to_call_error())),
        };
        self.close(status, error);
    }

    /// Another attempt follows the last one, for `reason`.
    pub(super) fn retrying(&mut self, reason: RetryReason) {
        if let Some(last) = self.attempts.last_mut() {
            last.retry_reason = Some(reason);
        }
    }

    /// The call was answered or failed: its attempts, and no record here.
    pub(super) fn disarm(mut self) -> Vec<Attempt> {
        self.armed = false;
        std::mem::take(&mut self.attempts)
    }

    fn close(&mut self, http_status: Option<u16>, error: Option<CallError>) {
        if let Some((mut attempt, started)) = self.current.take() {
            attempt.duration_ms = millis(started.mono.elapsed());
            attempt.http_status = http_status;
            attempt.error = error;
            self.attempts.push(attempt);
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let cut = CallError::new(ErrorKind::ClientClosed, "the client disconnected first");
        self.close(None, Some(cut));
        let mut ctx = self.ctx.snapshot();
        ctx.attempts = std::mem::take(&mut self.attempts);
        ctx.heartbeats = self.beats.map_or(0, |b| b.load(Ordering::Relaxed));
        if let Some(last) = ctx.attempts.last() {
            ctx.destination.upstream = last.upstream.clone();
        }
        let waited = millis(ctx.arrival.started.mono.elapsed());
        let what = format!(
            "before the upstream answered ({waited:.0} ms after arriving, {} attempts)",
            ctx.attempts.len()
        );
        record_failure(ctx, &left(what), self.store);
    }
}
