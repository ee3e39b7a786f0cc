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
//! hyper's own head limits are set at twice the gateway's, so that the
//! gateway's check (`header_limits`) answers first with a message naming
//! the key, and hyper's only stops what would cost memory; hyper's header
//! timer is off (the deadlines are the gateway's).

use super::deadline::{self, Activity, CallGuard};
use super::io::ConnectionIo;
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
use tower::ServiceExt;

/// hyper's default read buffer limit (8 KiB + 100 × 4 KiB), which also
/// bounds a request head: kept unless the gateway's limits need more.
const HYPER_DEFAULT_BUFFER: usize = 8192 + 4096 * 100;

/// The longest request target hyper parses (beyond it, 414).
const MAX_TARGET: usize = 64 * 1024;

/// The accepting side of the server: the slots, and how each connection is
/// served.
pub struct Acceptor {
    builder: Builder<TokioExecutor>,
    options: ServerOptions,
    slots: Arc<Semaphore>,
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
        Acceptor {
            builder,
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
        let io = TokioIo::new(ConnectionIo::new(stream, activity.clone()));
        let calls = activity.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            call(app.clone(), request, calls.call_started())
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let connection = graceful.watch(connection);
        let options = self.options;
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
