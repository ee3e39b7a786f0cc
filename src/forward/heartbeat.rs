//! Heartbeats for long non-streamed calls, so that a tunnel or proxy that
//! cuts idle connections (often after 60 or 100 s) does not cut a call the
//! model is still working on.
//!
//! On a route with `heartbeat_after`, a non-streamed call whose upstream
//! has not answered by then gets its status and headers at once — `200`,
//! `Content-Type: application/json`, `X-RLLM-Trace-Id` — and a space every
//! `heartbeat_every` until the answer arrives. JSON allows whitespace
//! before a value, so the client's JSON parser reads the answer that
//! follows as if nothing had come before it. The status is committed then:
//!
//! * the upstream answers 2xx: its body follows the spaces, byte for byte;
//! * the upstream answers an error status (429, 500, ...): its error body
//!   follows, still under the `200` the client already has — an SDK then
//!   fails to read it as a completion, not with the status error it would
//!   raise directly;
//! * the gateway fails the call (timeout, unreachable): the gateway's
//!   error JSON (OpenAI's, or Anthropic's on `/v1/messages`) follows.
//!
//! The record keeps the upstream's status and bytes; the spaces are only
//! counted (`heartbeats`). Retries go on during the heartbeat: the spaces
//! are no part of any answer, so nothing of an upstream's answer has
//! reached the client yet.

use super::tee::{BodyError, TeeBody};
use super::{Forwarder, Outcome};
use crate::capture::Moment;
use bytes::Bytes;
use http_body::Frame;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The call on its way upstream, as a future the body can own.
pub(super) type Sending = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// The byte a heartbeat sends.
const BEAT: &[u8] = b" ";

/// The body of a call whose headers went out before the upstream answered.
pub(super) struct HeartbeatBody {
    forwarder: Arc<Forwarder>,
    state: State,
}

enum State {
    /// Spaces until the answer (or the failure) arrives.
    Waiting {
        sending: Sending,
        beat: Pin<Box<Sleep>>,
        every: Duration,
        beats: Arc<AtomicU64>,
        finish: bool,
    },
    /// The upstream's answer, teed as any other.
    Answering(Box<TeeBody>),
    /// The gateway's error JSON, once.
    Failed(Option<Bytes>),
}

impl HeartbeatBody {
    /// Starts beating (the first space follows `every` after the headers);
    /// `beats` counts them
    /// for the call's record, `finish` is the route's `finish_on_client_close`.
    pub(super) fn new(
        forwarder: Arc<Forwarder>,
        sending: Sending,
        every: Duration,
        beats: Arc<AtomicU64>,
        finish: bool,
    ) -> HeartbeatBody {
        HeartbeatBody {
            forwarder,
            state: State::Waiting {
                sending,
                beat: Box::pin(tokio::time::sleep(every)),
                every,
                beats,
                finish,
            },
        }
    }
}

impl http_body::Body for HeartbeatBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Answering(body) => return Pin::new(body.as_mut()).poll_frame(cx),
                State::Failed(json) => return Poll::Ready(json.take().map(|b| Ok(Frame::data(b)))),
                State::Waiting {
                    sending,
                    beat,
                    every,
                    beats,
                    ..
                } => match sending.as_mut().poll(cx) {
                    Poll::Ready(Some(Ok(sent))) => {
                        this.state = State::Answering(Box::new(this.forwarder.tee(sent, true).2));
                    }
                    Poll::Ready(Some(Err(failed))) => {
                        this.state = State::Failed(Some(this.forwarder.fail_late(failed)));
                    }
                    Poll::Ready(None) => this.state = State::Failed(None),
                    Poll::Pending => {
                        if beat.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        beat.as_mut().reset(Instant::now() + *every);
                        let _ = beat.as_mut().poll(cx); // register the next beat
                        beats.fetch_add(1, Ordering::Relaxed);
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(BEAT)))));
                    }
                },
            }
        }
    }
}

impl Drop for HeartbeatBody {
    /// The client left during the heartbeat: on a route that finishes such
    /// calls, the call goes on in a task of its own; otherwise dropping it
    /// cancels the upstream request and records the call.
    fn drop(&mut self) {
        let State::Waiting {
            sending, finish, ..
        } = &mut self.state
        else {
            return;
        };
        if !*finish {
            return;
        }
        let sending: Sending = std::mem::replace(sending, Box::pin(std::future::pending()));
        let forwarder = self.forwarder.clone();
        let left = Moment::now();
        self.forwarder
            .detached
            .spawn(async move { forwarder.finish_unheard(sending.await, left).await });
    }
}
