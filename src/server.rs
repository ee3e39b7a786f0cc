//! The server: bind, build the router, serve, and shut down without losing a
//! record.
//!
//! The router puts the API (`api`) beside the proxy (`forward`); anything else
//! is a 404 in the OpenAI error shape. Inbound auth (`auth`) wraps them all.
//! All three share one [`AppState`], each taking the part it needs.
//! A panic in a handler becomes a 500 for that request only. A background
//! task probes the workers of health-checked routes (`route`).
//!
//! Connections are served by hyper directly (HTTP/1.1 and HTTP/2), within
//! the limits of `[server]`: at most `max_connections` at once
//! (`connection`), each cut when it holds its slot without a call —
//! a slow or missing request head, an idle keep-alive (`deadline`) — and
//! every request head within `max_headers`/`max_header_bytes`
//! (`header_limits`); the errors hyper answers by itself leave in the
//! gateway's error JSON (`io`). Shutdown is ours to order:
//!
//! 1. on SIGINT/SIGTERM, stop accepting;
//! 2. let in-flight calls finish, up to `shutdown_grace`;
//! 3. abort what is left: their response bodies are dropped, which records
//!    those calls as `client_closed`; calls finishing for clients that left
//!    (`finish_on_client_close`) get the same grace, then are cancelled;
//! 4. flush the store — every record, including those just made — give span
//!    export a few seconds to send what is queued (the rest stays in the
//!    outbox for the next start), stop the writer thread; then exit 0.

mod connection;
mod deadline;
mod header_limits;
mod io;
pub mod session_path;

use crate::api;
use crate::config::{Config, ExportConfig, InboundAuth, ServerOptions};
use crate::error::GatewayError;
use crate::export::{ExportError, Exporter};
use crate::forward::{self, ClientError, Forwarder};
use crate::metrics::Metrics;
use crate::otlp::grpc::GrpcReceiver;
use crate::route::Router;
use crate::store::{Backend, Store, StoreError, StoreReader, StoreWriter};
use axum::extract::FromRef;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use connection::Acceptor;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower_http::catch_panic::CatchPanicLayer;

/// How long span export may take to send what is queued at shutdown.
const EXPORT_GRACE: Duration = Duration::from_secs(5);

/// What the gateway's handlers share: the API's handlers take all of it,
/// the proxy its [`Forwarder`], the auth check the inbound tokens. One
/// `Arc`: axum clones the state for every request, twice on the proxy path
/// (the auth check and the handler).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
pub struct Shared {
    /// Read queries.
    pub reader: StoreReader,
    /// Session changes and flushes.
    pub writer: StoreWriter,
    /// The routes and worker pools.
    pub router: Arc<Router>,
    /// The proxy.
    pub forwarder: Arc<Forwarder>,
    /// Inbound auth: the tokens callers present (the API tells the web UI
    /// only how to present one).
    pub inbound: Arc<InboundAuth>,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
    /// Span export, when it is on (for `/health` and `/metrics`, and the
    /// OTLP receiver, which queues harness spans for it).
    pub export: Option<ExportConfig>,
    /// The OTLP receiver's limits.
    pub otlp: crate::otlp::Receiver,
}

impl AppState {
    /// The state of a gateway.
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for Arc<Forwarder> {
    fn from_ref(state: &AppState) -> Self {
        state.forwarder.clone()
    }
}

impl FromRef<AppState> for Arc<InboundAuth> {
    fn from_ref(state: &AppState) -> Self {
        state.inbound.clone()
    }
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The upstream HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The span exporter could not be built.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A bound, ready-to-run gateway.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    app: axum::Router,
    store: Store,
    exporter: Option<Exporter>,
    health_checks: tokio::task::JoinHandle<()>,
    /// Follows the weight versions other replicas set (PostgreSQL only).
    weights: Option<tokio::task::JoinHandle<()>>,
    grace: Duration,
    detached: forward::detached::Detached,
    options: ServerOptions,
    otlp_grpc: Option<GrpcReceiver>,
}

/// The OTLP/gRPC receiver, when `addr` is configured, bound.
async fn bind_grpc(
    addr: Option<SocketAddr>,
    state: &AppState,
) -> Result<Option<GrpcReceiver>, StartError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let receiver = GrpcReceiver::bind(addr, state.clone()).await;
    Ok(Some(
        receiver.map_err(|source| StartError::Listen { addr, source })?,
    ))
}

/// Span export from `store`'s outbox, when it is configured.
fn start_exporter(
    export: Option<&ExportConfig>,
    store: &Store,
    metrics: Arc<Metrics>,
) -> Result<Option<Exporter>, StartError> {
    let Some(export) = export else {
        return Ok(None);
    };
    Ok(Some(Exporter::start(
        export.clone(),
        store.reader.clone(),
        store.writer.clone(),
        store.spans_committed.clone(),
        metrics,
    )?))
}

impl Server {
    /// Opens the store and binds the listen address.
    pub async fn bind(config: &Config) -> Result<Server, StartError> {
        let metrics = Arc::new(Metrics::new());
        let instance = crate::forward::hop::Hop::draw_instance_id();
        let store = Store::open(&config.db, config.store.clone(), metrics.clone(), &instance)?;
        let routes = crate::route::kind::decide(config.routes.clone()).await;
        let router = Arc::new(Router::new(routes));
        let forwarder = Forwarder::new(
            config,
            router.clone(),
            store.writer.clone(),
            metrics.clone(),
            &instance,
        )?;
        for (session_id, params) in store.reader.sampling_params().await? {
            forwarder.sampling.set(session_id, params);
        }
        let detached = forwarder.detached().clone();
        let weights = forwarder.weights.clone();
        let state = AppState::new(Shared {
            reader: store.reader.clone(),
            writer: store.writer.clone(),
            router: router.clone(),
            forwarder: Arc::new(forwarder),
            inbound: Arc::new(config.auth.clone()),
            metrics: metrics.clone(),
            export: config.export.clone(),
            otlp: crate::otlp::Receiver {
                limits: config.otlp,
                max_body_bytes: config.max_body_bytes,
            },
        });
        let otlp_grpc = bind_grpc(config.otlp_grpc_listen, &state).await?;
        let app = app(state);
        let listen_error = |source| StartError::Listen {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        let exporter = start_exporter(config.export.as_ref(), &store, metrics)?;
        let health_checks = tokio::spawn(check_workers(router, config.health_check_interval));
        let weights = follow_weights(&store, weights);
        Ok(Server {
            listener,
            addr,
            app,
            store,
            exporter,
            health_checks,
            weights,
            grace: config.shutdown_grace,
            detached,
            options: config.server,
            otlp_grpc,
        })
    }

    /// The address the server is listening on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the OTLP/gRPC receiver listens on, when it is on.
    pub fn otlp_grpc_addr(&self) -> Option<SocketAddr> {
        self.otlp_grpc.as_ref().map(GrpcReceiver::local_addr)
    }

    /// Serves until `shutdown` completes, then drains and closes the store.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StoreError> {
        let Server {
            listener,
            addr: _,
            app,
            store,
            exporter,
            health_checks,
            weights,
            grace,
            detached,
            options,
            otlp_grpc,
        } = self;
        let app = app.layer(axum::middleware::from_fn_with_state(
            options,
            header_limits::check,
        ));
        let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
        let otlp_grpc = otlp_grpc.map(|receiver| {
            tokio::spawn(receiver.serve(async {
                let _ = grpc_stopped.await;
            }))
        });
        let shutdown = async {
            shutdown.await;
            let _ = stop_grpc.send(());
        };
        let graceful = GracefulShutdown::new();
        let connections = accept_until(shutdown, listener, options, app, &graceful).await;
        let deadline = tokio::time::Instant::now() + grace;
        health_checks.abort();
        if let Some(weights) = weights {
            weights.abort();
        }
        drain(connections, graceful, grace).await;
        if let Some(receiver) = otlp_grpc {
            drain_grpc(receiver, deadline).await;
        }
        detached.drain(grace).await;
        if let Some(exporter) = exporter {
            // Every record (and span) is committed first, then export gets a
            // moment to send them; what it cannot send waits in the outbox.
            // A store that cannot commit keeps its records for the next
            // start (`store.close`), so that is no reason to stop here.
            if let Err(e) = store.writer.flush().await {
                tracing::warn!("before the last export: {e}");
            }
            exporter.stop(EXPORT_GRACE).await;
        }
        store.close().await?;
        tracing::info!("store flushed; bye");
        Ok(())
    }
}

/// Accepts and serves connections until `shutdown` completes; returns the
/// connections still open (the listener is closed).
async fn accept_until(
    shutdown: impl Future<Output = ()> + Send,
    listener: TcpListener,
    options: ServerOptions,
    app: axum::Router,
    graceful: &GracefulShutdown,
) -> JoinSet<()> {
    let acceptor = Acceptor::new(options);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = acceptor.accept(&listener) => {
                connections.spawn(acceptor.serve(accepted, app.clone(), graceful));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    connections
}

/// Lets the calls in flight finish for up to `grace`, then cuts the rest
/// (their guards record them as `client_closed`).
async fn drain(mut connections: JoinSet<()>, graceful: GracefulShutdown, grace: Duration) {
    tracing::info!(
        in_flight = connections.len(),
        "shutting down: draining in-flight calls"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "calls still in flight after {grace:?}; aborting them (recorded as client_closed)"
        );
    }
    connections.shutdown().await;
}

/// Lets the OTLP/gRPC exports in flight be answered (the receiver stopped
/// accepting with the main listener) until `deadline`, the end of the
/// shutdown grace; then stops the receiver.
async fn drain_grpc(receiver: tokio::task::JoinHandle<()>, deadline: tokio::time::Instant) {
    let abort = receiver.abort_handle();
    if tokio::time::timeout_at(deadline, receiver).await.is_err() {
        tracing::warn!("OTLP/gRPC exports still in flight at the end of the grace; cutting them");
        abort.abort();
    }
}

/// Probes the workers of health-checked routes every `interval`.
/// On a shared (PostgreSQL) store, the task that keeps this replica at the
/// weight versions set on the others.
fn follow_weights(
    store: &Store,
    weights: Arc<forward::weights::WeightVersions>,
) -> Option<tokio::task::JoinHandle<()>> {
    (store.writer.backend() == Backend::Postgres)
        .then(|| tokio::spawn(forward::weights::follow(weights, store.reader.clone())))
}

async fn check_workers(router: Arc<Router>, interval: Duration) {
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("worker health checks are off: {e}");
            return;
        }
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        router
            .check_health(&client, interval.min(Duration::from_secs(5)))
            .await;
    }
}

/// The gateway's router: API, proxy, and a JSON 404 for everything else,
/// behind the escaping of slashes in session ids (`session_path`), which
/// must happen before routing.
fn app(state: AppState) -> axum::Router {
    use tower::ServiceExt;
    axum::Router::new().fallback_service(routes(state).map_request(session_path::escape))
}

/// The routes of [`app`].
fn routes(state: AppState) -> axum::Router {
    let proxy = axum::Router::new()
        // The OTLP receiver's one path among the proxy's: other methods
        // on it are proxied, as before.
        .route(
            "/v1/traces",
            axum::routing::post(crate::otlp::receive).fallback(forward::proxy),
        )
        .route("/v1", any(forward::proxy))
        .route("/v1/{*rest}", any(forward::proxy))
        .route("/sessions/{session_id}/v1", any(forward::proxy))
        .route("/sessions/{session_id}/v1/{*rest}", any(forward::proxy));
    api::router()
        .merge(proxy)
        .fallback(not_found)
        // Layers run outside-in: panics are caught around everything, and
        // the token is checked before any handler (or body read).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::check,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

async fn not_found(uri: http::Uri) -> GatewayError {
    GatewayError::not_found(format!("no route for {}", uri.path()))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    GatewayError::internal("the gateway failed to handle this request").into_response()
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
