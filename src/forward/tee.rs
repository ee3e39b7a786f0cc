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
//! * a body whose vLLM fields are stripped (see `vllm`) is complete when
//!   the upstream ends it, before the rewritten rest is sent;
//! * a body dropped before any of those means the client went away
//!   ([`ResponseCapture`]'s drop records `client_closed`), and dropping the
//!   upstream stream closes the upstream connection, so the model server
//!   stops generating for nobody.

use crate::capture::{Ending, ResponseCapture};
use crate::forward::vllm::Stripper;
use crate::route::Lease;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The upstream's body, as reqwest streams it.
pub type UpstreamStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

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
    /// The call's share of its worker's load, released with the body.
    _lease: Lease,
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
    ) -> Self {
        let length = if stripper.is_some() { None } else { length };
        if length == Some(0) {
            // hyper may never poll an empty body.
            capture.finish(Ending::Complete);
        }
        Self {
            upstream,
            capture,
            stripper,
            length,
            remaining: length,
            upstream_done: false,
            _lease: lease,
        }
    }
}

impl http_body::Body for TeeBody {
    type Data = Bytes;
    type Error = reqwest::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, reqwest::Error>>> {
        let this = &mut *self;
        loop {
            if this.upstream_done {
                return Poll::Ready(None);
            }
            match this.upstream.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
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
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.capture
                        .finish(Ending::UpstreamFailed(super::failure::mid_body(&e)));
                    return Poll::Ready(Some(Err(e)));
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
