//! Accepting connections, within the limit, and serving each one.
//!
//! The gateway serves at most `server.max_connections` connections at once.
//! Past the limit it stops accepting: a new connection waits in the
//! kernel's accept queue (its TCP handshake completes, its request is
//! read once a connection closes and frees a slot) instead of being
//! refused — a burst of agents waits a moment rather than failing, and an
//! over-long wait ends at the client's own timeout. Answering the overflow
//! with a `503` would need a descriptor, a task and a read of the request
//! for each connection over the limit, which is what the limit is there to
//! bound. Idle and slow connections do not keep their slot: each one is
//! watched by its deadlines (`deadline`), and the IO under hyper is
//! [`ConnectionIo`] (`io`), which feeds them and reshapes hyper's bare
//! error answers.
//!
//! A connection is HTTP/1 unless its first bytes are the HTTP/2 preface.
//! hyper-util's automatic detection reads those bytes itself and hands
//! them back to hyper's HTTP/1 parser as a first read of 24 bytes, after
//! which hyper doubles its read buffer (16 KiB a connection, for the whole
//! connection). So the gateway peeks at the first bytes first ([`sniff`]):
//! a request that is plainly HTTP/1 is served by an HTTP/1-only builder,
//! whose first read gets the whole request into 8 KiB; the HTTP/2 preface,
//! or a first segment too short to tell, goes to the automatic one.
//!
//! hyper's own head limits are set at twice the gateway's, so that the
//! gateway's check (`header_limits`) answers first with a message naming
//! the key, and hyper's only stops what would cost memory; hyper's header
//! timer is off (the deadlines are the gateway's).

use super::deadline::{self, Activity, CallGuard};
use super::io::{ConnectionIo, H2_PREFACE};
use crate::config::ServerOptions;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};
use tower::ServiceExt;

/// hyper's default read buffer limit (8 KiB + 100 × 4 KiB), which also
/// bounds a request head: kept unless the gateway's limits need more.
const HYPER_DEFAULT_BUFFER: usize = 8192 + 4096 * 100;

/// The longest request target hyper parses (beyond it, 414).
const MAX_TARGET: usize = 64 * 1024;

/// The accepting side of the server: the slots, and how each connection is
/// served.
pub struct Acceptor {
    /// Serves HTTP/1 or HTTP/2, as the connection's first bytes say.
    builder: Arc<Builder<TokioExecutor>>,
    /// Serves HTTP/1 only: for connections [`sniff`] knows are HTTP/1.
    http1: Arc<Builder<TokioExecutor>>,
    options: ServerOptions,
    slots: Arc<Semaphore>,
    /// Cancelled when the acceptor goes (shutdown): a connection still
    /// waiting for its first bytes then closes, as hyper's detection would.
    closing: CancellationToken,
    _close_on_drop: DropGuard,
}

/// What a connection's first bytes say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaks {
    /// Not the HTTP/2 preface: HTTP/1.
    Http1,
    /// The HTTP/2 preface, or too few bytes to tell.
    Unknown,
}

/// Peeks at the connection's first bytes (without reading them).
async fn sniff(stream: &TcpStream) -> Speaks {
    let mut first = [0u8; H2_PREFACE.len()];
    match stream.peek(&mut first).await {
        Ok(n) if n > 0 && !H2_PREFACE.starts_with(&first[..n]) => Speaks::Http1,
        _ => Speaks::Unknown,
    }
}

/// An accepted connection and the slot it holds until it closes.
pub struct Accepted {
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
}

impl Acceptor {
    /// Connections served as `options` say.
    pub fn new(options: ServerOptions) -> Acceptor {
        let mut builder = Builder::new(TokioExecutor::new());
        let header_bytes = options.max_header_bytes.saturating_mul(2);
        let head_buffer = header_bytes
            .saturating_add(MAX_TARGET)
            .max(HYPER_DEFAULT_BUFFER);
        builder
            .http1()
            .header_read_timeout(None)
            .max_headers(options.max_headers.saturating_mul(2))
            .max_buf_size(head_buffer);
        let list_size = u32::try_from(header_bytes).unwrap_or(u32::MAX);
        builder.http2().max_header_list_size(list_size);
        let closing = CancellationToken::new();
        Acceptor {
            _close_on_drop: closing.clone().drop_guard(),
            closing,
            http1: Arc::new(builder.clone().http1_only()),
            builder: Arc::new(builder),
            options,
            slots: Arc::new(Semaphore::new(options.max_connections)),
        }
    }

    /// Waits for a free slot, then for a connection.
    pub async fn accept(&self, listener: &TcpListener) -> Accepted {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                tracing::warn!(
                    max = self.options.max_connections,
                    "server.max_connections reached: new connections wait until one closes"
                );
                let Ok(slot) = self.slots.clone().acquire_owned().await else {
                    // The semaphore is never closed.
                    return std::future::pending().await;
                };
                slot
            }
        };
        loop {
            match listener.accept().await {
                Ok((stream, _)) => return Accepted { stream, slot },
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Serves `accepted` with `app` until the connection ends, a deadline
    /// passes, or shutdown (`graceful`) closes it.
    pub fn serve(
        &self,
        accepted: Accepted,
        app: axum::Router,
        graceful: &GracefulShutdown,
    ) -> impl Future<Output = ()> + Send + 'static {
        let Accepted { stream, slot } = accepted;
        // SSE events are small writes that must not wait for more.
        let _ = stream.set_nodelay(true);
        let activity = Activity::opened();
        let calls = activity.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            call(app.clone(), request, calls.call_started())
        });
        // Shared, not cloned: the connection's task holds them until it
        // knows which one serves it.
        let (builder, http1) = (self.builder.clone(), self.http1.clone());
        let watcher = graceful.watcher();
        let options = self.options;
        let watched = activity.clone();
        let closing = self.closing.clone();
        let connection = async move {
            let speaks = tokio::select! {
                speaks = sniff(&stream) => speaks,
                () = closing.cancelled() => return Ok(()),
            };
            let builder = match speaks {
                Speaks::Http1 => http1,
                Speaks::Unknown => builder,
            };
            let io = TokioIo::new(ConnectionIo::new(stream, watched));
            let connection = builder.serve_connection(io, service).into_owned();
            watcher.watch(connection).await
        };
        async move {
            let _slot = slot;
            tokio::select! {
                ended = connection => if let Err(e) = ended {
                    tracing::debug!("connection ended with an error: {e}");
                },
                expired = deadline::expire(&activity, &options) => {
                    tracing::debug!("connection closed: {expired}");
                }
            }
        }
    }
}

/// One call: the app's answer, whose body ends the call when it is done.
async fn call(
    app: axum::Router,
    request: Request<Incoming>,
    guard: CallGuard,
) -> Result<Response<Counted>, Infallible> {
    let response = app.oneshot(request).await?;
    Ok(response.map(|body| Counted { body, _call: guard }))
}

/// A response body that holds its call's place on the connection.
struct Counted {
    body: axum::body::Body,
    _call: CallGuard,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
