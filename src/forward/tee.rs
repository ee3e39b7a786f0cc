//! The response body that streams the upstream's bytes to the client and
//! tees a clone of each chunk to capture.
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
//! * a body dropped before any of those means the client went away
//!   ([`ResponseCapture`]'s drop records `client_closed`), and dropping the
//!   upstream stream closes the upstream connection, so the model server
//!   stops generating for nobody.

use crate::capture::{Ending, ResponseCapture};
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
    length: Option<u64>,
    remaining: Option<u64>,
}

impl TeeBody {
    /// Wraps the upstream body; `length` is its Content-Length, if known.
    pub fn new(
        upstream: UpstreamStream,
        mut capture: ResponseCapture,
        length: Option<u64>,
    ) -> Self {
        if length == Some(0) {
            // hyper may never poll an empty body.
            capture.finish(Ending::Complete);
        }
        Self {
            upstream,
            capture,
            length,
            remaining: length,
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
        match this.upstream.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.capture.chunk(&chunk);
                if let Some(remaining) = &mut this.remaining {
                    *remaining = remaining.saturating_sub(chunk.len() as u64);
                    if *remaining == 0 {
                        this.capture.finish(Ending::Complete);
                    }
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => {
                this.capture
                    .finish(Ending::UpstreamFailed(super::body_failure(&e)));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.capture.finish(Ending::Complete);
                Poll::Ready(None)
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
