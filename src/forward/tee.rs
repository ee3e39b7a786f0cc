//! The response body that streams the upstream's bytes to the client and
//! tees a copy of each chunk to capture.
//!
//! Each chunk is yielded to hyper the moment the upstream produced it: no
//! buffering, no re-framing, so an SSE stream reaches the client event by
//! event. The body also decides how the response ended, and tells capture
//! before the client can know it too:
//!
//! * a length-delimited body is complete when its last byte passes, even if
//!   hyper never polls again;
//! * a chunked body is complete when the upstream ends it, which is what lets
//!   hyper send the final chunk to the client;
//! * an upstream error mid-body is passed on (hyper aborts the client's
//!   connection, so the client sees a truncated answer, as it would
//!   directly) and recorded;
//! * a silence longer than the idle limit, or a call past its total limit,
//!   ends the body the same way, recorded as `upstream_idle_timeout` or
//!   `upstream_total_timeout` naming the setting;
//! * a body whose vLLM fields are stripped (see `vllm`) is complete when
//!   the upstream ends it, before the rewritten rest is sent;
//! * a body dropped before any of those means the client went away
//!   ([`ResponseCapture`]'s drop records `client_closed`), and dropping the
//!   upstream stream closes the upstream connection, so the model server
//!   stops generating for nobody — unless the route finishes calls whose
//!   client left: then the rest of the body is read in a task of its own
//!   ([`Detached`]) and the record has the whole answer.
//!
//! A stream on a route with `stream_keepalive` gets an SSE comment,
//! `: keep-alive`, whenever the upstream has been silent that long — only
//! between events, never inside one. Capture counts it and never sees its
//! bytes.

use super::detached::Detached;
use crate::capture::{Ending, Moment, ResponseCapture};
use crate::config::Limit;
use crate::forward::vllm::Stripper;
use crate::record::ErrorKind;
use crate::route::Lease;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The upstream's body, as reqwest streams it.
pub type UpstreamStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// What the client's body fails with (hyper then aborts the connection).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The SSE comment sent while a stream is silent.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// When a call must be over, and the setting that says so.
#[derive(Debug, Clone)]
pub struct Deadline {
    /// The instant.
    pub at: Instant,
    /// The limit it comes from.
    pub limit: Limit,
}

/// What a body watches besides its bytes.
#[derive(Default)]
pub struct Watch {
    /// The longest silence between chunks.
    pub idle: Option<Limit>,
    /// The call's total limit.
    pub total: Option<Deadline>,
    /// Send a keep-alive comment after this much silence (SSE only).
    pub keepalive: Option<Duration>,
    /// Where to finish the body if the client leaves (`finish_on_client_close`).
    pub finish: Option<Detached>,
}

/// A response body that forwards the upstream's chunks and tees them.
pub struct TeeBody {
    upstream: UpstreamStream,
    capture: ResponseCapture,
    /// Rewrites what the client receives (vLLM fields); capture still sees
    /// the upstream's bytes.
    stripper: Option<Stripper>,
    length: Option<u64>,
    remaining: Option<u64>,
    upstream_done: bool,
    idle: Option<(Limit, Pin<Box<Sleep>>)>,
    total: Option<(Limit, Pin<Box<Sleep>>)>,
    keepalive: Option<(Duration, Pin<Box<Sleep>>)>,
    /// The last bytes the client got (to send keep-alives between events).
    tail: Tail,
    finish: Option<Detached>,
    /// The call's share of its worker's load, released with the body.
    lease: Option<Lease>,
}

impl TeeBody {
    /// Wraps the upstream body; `length` is its Content-Length, if known
    /// (ignored when a stripper changes the bytes).
    pub fn new(
        upstream: UpstreamStream,
        mut capture: ResponseCapture,
        length: Option<u64>,
        stripper: Option<Stripper>,
        lease: Lease,
        watch: Watch,
    ) -> Self {
        let length = if stripper.is_some() { None } else { length };
        if length == Some(0) {
            // hyper may never poll an empty body.
            capture.finish(Ending::Complete);
        }
        let timer = |after: Duration| Box::pin(tokio::time::sleep(after));
        Self {
            upstream,
            capture,
            stripper,
            length,
            remaining: length,
            upstream_done: false,
            idle: watch.idle.map(|limit| (limit.clone(), timer(limit.after))),
            total: watch
                .total
                .map(|d| (d.limit, Box::pin(tokio::time::sleep_until(d.at)))),
            keepalive: watch.keepalive.map(|every| (every, timer(every))),
            tail: Tail::default(),
            finish: watch.finish,
            lease: Some(lease),
        }
    }

    /// Notes that the client left at `at` while this body is read on.
    pub fn client_left(&mut self, at: Moment) {
        self.capture.client_left(at);
    }

    /// A chunk arrived: the silence timers start again.
    fn heard(&mut self) {
        let now = Instant::now();
        if let Some((limit, sleep)) = &mut self.idle {
            sleep.as_mut().reset(now + limit.after);
        }
        if let Some((every, sleep)) = &mut self.keepalive {
            sleep.as_mut().reset(now + *every);
        }
    }

    /// While the upstream is silent: a limit that fired ends the body; a
    /// keep-alive that is due goes out (between events only).
    fn silence(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        for (kind, timer) in [
            (ErrorKind::UpstreamTotalTimeout, &mut self.total),
            (ErrorKind::UpstreamIdleTimeout, &mut self.idle),
        ] {
            if let Some((limit, sleep)) = timer
                && sleep.as_mut().poll(cx).is_ready()
            {
                let error = super::failure::cut_off(kind, limit);
                let message = error.message.clone();
                self.capture.finish(Ending::UpstreamFailed(error));
                self.upstream_done = true;
                return Poll::Ready(Some(Err(message.into())));
            }
        }
        if let Some((every, sleep)) = &mut self.keepalive
            && sleep.as_mut().poll(cx).is_ready()
        {
            sleep.as_mut().reset(Instant::now() + *every);
            let _ = sleep.as_mut().poll(cx); // register the next beat
            if self.tail.between_events() {
                self.capture.heartbeat();
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(KEEP_ALIVE)))));
            }
        }
        Poll::Pending
    }

    /// The rest of this body, to be read without a client.
    fn remainder(&mut self) -> TeeBody {
        TeeBody {
            upstream: std::mem::replace(
                &mut self.upstream,
                Box::pin(futures_util::stream::empty()),
            ),
            capture: self.capture.take(),
            stripper: None,
            length: None,
            remaining: self.remaining,
            upstream_done: self.upstream_done,
            idle: self.idle.take(),
            total: self.total.take(),
            keepalive: None,
            tail: Tail::default(),
            finish: None,
            lease: self.lease.take(),
        }
    }
}

impl http_body::Body for TeeBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            if this.upstream_done {
                return Poll::Ready(None);
            }
            match this.upstream.poll_next_unpin(cx) {
                Poll::Pending => return this.silence(cx),
                Poll::Ready(Some(Ok(chunk))) => {
                    this.heard();
                    this.capture.chunk(&chunk);
                    if let Some(remaining) = &mut this.remaining {
                        *remaining = remaining.saturating_sub(chunk.len() as u64);
                        if *remaining == 0 {
                            this.capture.finish(Ending::Complete);
                        }
                    }
                    let out = match &mut this.stripper {
                        None => chunk,
                        Some(stripper) => match stripper.push(&chunk) {
                            Some(bytes) if !bytes.is_empty() => bytes,
                            _ => continue, // held until the event completes
                        },
                    };
                    this.tail.push(&out);
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.capture
                        .finish(Ending::UpstreamFailed(super::failure::mid_body(&e)));
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(None) => {
                    this.capture.finish(Ending::Complete);
                    this.upstream_done = true;
                    if let Some(rest) = this.stripper.as_mut().and_then(Stripper::finish) {
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for TeeBody {
    /// The client left mid-body: on a route that finishes such calls, the
    /// rest is read in a task of its own; otherwise the capture's own drop
    /// records what arrived and the upstream request is cancelled.
    fn drop(&mut self) {
        if self.capture.is_finished() {
            return;
        }
        let Some(detached) = self.finish.take() else {
            return;
        };
        let mut rest = self.remainder();
        rest.capture.client_left(Moment::now());
        detached.spawn(async move {
            while let Some(frame) = rest.frame().await {
                if frame.is_err() {
                    break;
                }
            }
        });
    }
}

/// The last four bytes sent to the client, to tell whether the stream is
/// between two SSE events (after a blank line, or before any byte).
#[derive(Debug, Clone, Copy)]
struct Tail(u32, bool);

impl Default for Tail {
    fn default() -> Self {
        Tail(0, true)
    }
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        for b in bytes.iter().rev().take(4).rev() {
            self.0 = (self.0 << 8) | u32::from(*b);
        }
        if !bytes.is_empty() {
            self.1 = false;
        }
    }

    /// After `\n\n`, `\r\r` or `\r\n\r\n` (or before anything).
    fn between_events(&self) -> bool {
        self.1 || self.0 & 0xFFFF == 0x0A0A || self.0 & 0xFFFF == 0x0D0D || self.0 == 0x0D0A_0D0A
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alives_only_go_between_events() {
        let mut tail = Tail::default();
        assert!(tail.between_events(), "before the first byte");
        tail.push(b"data: {\"a\"");
        assert!(!tail.between_events());
        tail.push(b": 1}\n");
        assert!(
            !tail.between_events(),
            "one newline ends a line, not an event"
        );
        tail.push(b"\n");
        assert!(tail.between_events(), "the blank line split across chunks");
        tail.push(b"data: x\r\n\r\n");
        assert!(tail.between_events());
    }
}
