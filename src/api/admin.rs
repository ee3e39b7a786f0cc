//! Health, metrics and flush.

use super::Json;
use crate::config::InboundAuth;
use crate::error::GatewayError;
use crate::export::ExportHealth;
use crate::metrics::Scrape;
use crate::metrics::exposition::Format;
use crate::server::AppState;
use crate::store::{Backend, StoreState, StoreStatus};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, header};
use serde::Serialize;

/// The body of `GET /health`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok`, or `degraded` while the store cannot commit (the gateway still
    /// serves calls, and keeps their records until it can).
    status: StoreState,
    /// The gateway's version.
    version: &'static str,
    /// This replica's instance id, drawn at start (the id in the `Via` it
    /// sends upstream).
    instance: String,
    /// The store's database.
    backend: Backend,
    /// The store: its state, the writer's queue, the backlog.
    store: StoreStatus,
    /// Span export.
    export: ExportStatus,
    /// How to present a token.
    auth: AuthScheme,
}

/// The export part of [`Health`]: `{enabled: false}`, or the backlog, or
/// the error that kept it from being read.
#[derive(Debug, Serialize)]
pub struct ExportStatus {
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    health: Option<ExportHealth>,
    /// Whether an OTLP endpoint is configured.
    enabled: bool,
    /// Why the backlog could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// How callers present the gateway token: `{enabled: false}`, or `{enabled,
/// header, scheme}` — `Authorization` with `Bearer`, or the configured
/// header with the bare token (`scheme: null`). Never the tokens.
#[derive(Debug, Serialize)]
pub struct AuthScheme {
    /// Whether a token is needed.
    enabled: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    placement: Option<TokenPlacement>,
}

/// Where the token goes, when one is needed.
#[derive(Debug, Serialize)]
pub struct TokenPlacement {
    /// The header carrying it.
    header: String,
    /// `Bearer`, or none for a bare token.
    scheme: Option<&'static str>,
}

/// `GET /health`: the gateway is up (always 200); `status` says whether the
/// store commits. Reports the store's state (with the fault, the last error
/// and the backlog while it cannot commit) and queue, and, when span export
/// is on, its backlog (spans waiting, the oldest one's age, the last error),
/// and how to present a token when inbound auth is on.
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    let export = match &state.export {
        None => ExportStatus {
            health: None,
            enabled: false,
            error: None,
        },
        Some(config) => {
            let backlog = crate::export::health(config, &state.reader).await;
            ExportStatus {
                enabled: true,
                error: backlog.as_ref().err().map(ToString::to_string),
                health: backlog.ok(),
            }
        }
    };
    let store = state.writer.status();
    Json(Health {
        status: store.state,
        version: env!("CARGO_PKG_VERSION"),
        instance: state.forwarder.instance_id().to_string(),
        backend: state.writer.backend(),
        store,
        export,
        auth: auth_scheme(&state.inbound),
    })
}

fn auth_scheme(auth: &InboundAuth) -> AuthScheme {
    let placement = auth.enabled().then(|| match &auth.header {
        Some(name) => TokenPlacement {
            header: name.as_str().to_string(),
            scheme: None,
        },
        None => TokenPlacement {
            header: "authorization".to_string(),
            scheme: Some("Bearer"),
        },
    });
    AuthScheme {
        enabled: auth.enabled(),
        placement,
    }
}

/// The body of `POST /admin/flush`.
#[derive(Debug, Serialize)]
pub struct Flushed {
    /// Always `flushed`.
    status: &'static str,
}

/// `POST /admin/flush`: returns once every record of a call that has ended is
/// committed. While the store cannot commit it waits up to
/// `store.flush_timeout`, then answers 503 (`store_unavailable`, with the
/// fault and the backlog in the message).
pub async fn flush(State(state): State<AppState>) -> Result<Json<Flushed>, GatewayError> {
    state.writer.flush().await?;
    Ok(Json(Flushed { status: "flushed" }))
}

/// The body of `POST /admin/reload`.
#[derive(Debug, Serialize)]
pub struct Reloaded {
    /// Always `ok`.
    status: &'static str,
}

/// `POST /admin/reload`: rLLM's placeholder, answered the same way. The
/// routes are read once at start (changing them is a restart; workers
/// change live through `/admin/workers`), so there is nothing to reload.
pub async fn reload() -> Json<Reloaded> {
    Json(Reloaded { status: "ok" })
}

/// `GET /metrics`: every metric, in the text format the `Accept` header
/// asks for (OpenMetrics, or the Prometheus format 0.0.4), with the store
/// queue, the export backlog and the workers' health read now.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let store = state.writer.status();
    let mut scrape = Scrape {
        store_queue_depth: store.queue_depth,
        store_degraded: store.is_degraded(),
        store_backlog_spilled: store.backlog.spilled,
        store_backlog_in_memory: store.backlog.in_memory,
        store_backlog_oldest_seconds: store.backlog.oldest_seconds.unwrap_or(0.0),
        workers: state
            .router
            .workers()
            .into_iter()
            .map(|w| (w.route, w.worker_id, w.healthy))
            .collect(),
        ..Scrape::default()
    };
    if let Some(config) = &state.export {
        match crate::export::health(config, &state.reader).await {
            Ok(health) => {
                scrape.export_waiting = health.waiting;
                scrape.export_lag_seconds = health.oldest_waiting_seconds.unwrap_or(0.0);
            }
            Err(e) => tracing::warn!("metrics: cannot read the export backlog: {e}"),
        }
    }
    let body = state.metrics.encode(&scrape, format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}
