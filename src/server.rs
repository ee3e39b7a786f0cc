//! The server: bind, build the router, serve, and shut down without losing a
//! record.
//!
//! The router puts the API (`api`) beside the proxy (`forward`); anything else
//! is a 404 in the OpenAI error shape. Inbound auth (`auth`) wraps them all.
//! A panic in a handler becomes a 500 for that request only. A background
//! task probes the workers of health-checked routes (`route`).
//!
//! Connections are served by hyper directly (HTTP/1.1 and HTTP/2), so that
//! shutdown is ours to order:
//!
//! 1. on SIGINT/SIGTERM, stop accepting;
//! 2. let in-flight calls finish, up to `shutdown_grace`;
//! 3. abort what is left: their response bodies are dropped, which records
//!    those calls as `client_closed`; calls finishing for clients that left
//!    (`finish_on_client_close`) get the same grace, then are cancelled;
//! 4. flush the store — every record, including those just made — give span
//!    export a few seconds to send what is queued (the rest stays in the
//!    outbox for the next start), stop the writer thread; then exit 0.

use crate::api::{self, ApiState};
use crate::config::{Config, InboundAuth};
use crate::error::GatewayError;
use crate::export::Exporter;
use crate::forward::{self, Forwarder};
use crate::metrics::Metrics;
use crate::route::Router;
use crate::store::Store;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower_http::catch_panic::CatchPanicLayer;

/// How long span export may take to send what is queued at shutdown.
const EXPORT_GRACE: Duration = Duration::from_secs(5);

/// A bound, ready-to-run gateway.
pub struct Server {
    listener: TcpListener,
    app: axum::Router,
    store: Store,
    exporter: Option<Exporter>,
    health_checks: tokio::task::JoinHandle<()>,
    grace: Duration,
    detached: forward::detached::Detached,
}

impl Server {
    /// Opens the store and binds the listen address.
    pub async fn bind(config: &Config) -> Result<Server, String> {
        let metrics = Arc::new(Metrics::new());
        let store = Store::open(&config.db, config.store, metrics.clone())?;
        let router = Arc::new(Router::new(
            config.routes.clone(),
            config.session_affinity_capacity,
        ));
        let forwarder = Arc::new(
            Forwarder::new(
                config,
                router.clone(),
                store.writer.clone(),
                metrics.clone(),
            )
            .map_err(|e| e.to_string())?,
        );
        let detached = forwarder.detached().clone();
        let api_state = ApiState {
            reader: store.reader.clone(),
            writer: store.writer.clone(),
            export: config.export.clone(),
            router: router.clone(),
            inbound: Arc::new(config.auth.clone()),
            metrics: metrics.clone(),
        };
        let auth = api_state.inbound.clone();
        let app = app(forwarder, api_state, auth);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let exporter = match &config.export {
            Some(export) => Some(Exporter::start(
                export.clone(),
                store.reader.clone(),
                store.writer.clone(),
                store.spans_committed.clone(),
                metrics,
            )?),
            None => None,
        };
        let health_checks = tokio::spawn(check_workers(router, config.health_check_interval));
        Ok(Server {
            listener,
            app,
            store,
            exporter,
            health_checks,
            grace: config.shutdown_grace,
            detached,
        })
    }

    /// The address the server is listening on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has an address")
    }

    /// Serves until `shutdown` completes, then drains and closes the store.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), String> {
        let Server {
            listener,
            app,
            store,
            exporter,
            health_checks,
            grace,
            detached,
        } = self;
        let builder = Builder::new(TokioExecutor::new());
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors and the like: wait, don't spin.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // SSE events are small writes that must not wait for more.
                    let _ = stream.set_nodelay(true);
                    let service = TowerToHyperService::new(app.clone());
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let connection = graceful.watch(connection);
                    connections.spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!("connection ended with an error: {e}");
                        }
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        health_checks.abort();
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
        detached.drain(grace).await;
        if let Some(exporter) = exporter {
            // Every record (and span) is committed first, then export gets a
            // moment to send them; what it cannot send waits in the outbox.
            store.writer.flush().await?;
            exporter.stop(EXPORT_GRACE).await;
        }
        store.close().await?;
        tracing::info!("store flushed; bye");
        Ok(())
    }
}

/// Probes the workers of health-checked routes every `interval`.
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

/// The gateway's router: API, proxy, and a JSON 404 for everything else.
fn app(forwarder: Arc<Forwarder>, api_state: ApiState, auth: Arc<InboundAuth>) -> axum::Router {
    let proxy = axum::Router::new()
        .route("/v1", any(forward::proxy))
        .route("/v1/{*rest}", any(forward::proxy))
        .route("/sessions/{session_id}/v1", any(forward::proxy))
        .route("/sessions/{session_id}/v1/{*rest}", any(forward::proxy))
        .with_state(forwarder);
    api::router(api_state)
        .merge(proxy)
        .fallback(not_found)
        // Layers run outside-in: panics are caught around everything, and
        // the token is checked before any handler (or body read).
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::check,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
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
