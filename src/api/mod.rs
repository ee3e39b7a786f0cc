//! The HTTP query and admin API, compatible with rllm-model-gateway.
//!
//! rLLM's Python `GatewayClient` works against tracegate unchanged: the same
//! paths, the same JSON (`{session_id, url}`, `{deleted}`,
//! `{"status": "flushed"}`, TraceRecords with rLLM's field names). tracegate
//! adds runs (`/runs`) and its own fields beside rLLM's. Errors use the
//! OpenAI error shape, with 404 for unknown sessions, traces and runs and 400
//! for unusable parameters.
//!
//! The web UI (`/ui`) is served from here too, with its own few endpoints
//! under `/ui/api/` (see `ui.rs`).

mod admin;
mod runs;
mod sessions;
mod traces;
mod ui;
mod workers;

use crate::config::ExportConfig;
use crate::error::GatewayError;
use crate::store::{StoreReader, StoreWriter};
use axum::Router;
use axum::routing::{delete, get, post};
use std::collections::HashMap;
use std::sync::Arc;

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Read queries.
    pub reader: StoreReader,
    /// Session changes and flushes.
    pub writer: StoreWriter,
    /// Span export, when it is on (for `/health`).
    pub export: Option<ExportConfig>,
    /// The routes and worker pools (for `/admin/workers`, `/admin/routes`).
    pub router: Arc<crate::route::Router>,
    /// Inbound auth, so `/health` can tell a client (the web UI) how to
    /// present a token — never the tokens themselves.
    pub inbound: Arc<crate::config::InboundAuth>,
    /// What `/metrics` reports.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(admin::health))
        .route("/metrics", get(admin::metrics))
        .route("/admin/flush", post(admin::flush))
        .route("/admin/workers", get(workers::list).post(workers::add))
        .route("/admin/workers/{worker_id}", delete(workers::remove))
        .route("/admin/routes", get(workers::routes))
        .route("/health/workers", get(workers::health))
        .route("/sessions", get(sessions::list).post(sessions::create))
        .route(
            "/sessions/{session_id}",
            get(sessions::get).delete(sessions::delete),
        )
        .route("/sessions/{session_id}/traces", get(sessions::traces))
        .route("/traces/query", post(traces::query))
        .route("/traces/{trace_id}", get(traces::get))
        .route("/runs", get(runs::list))
        .route("/runs/{run_id}", get(runs::get))
        .merge(ui::routes())
        .with_state(state)
}

/// A store failure, as the API reports it.
fn store_error(message: String) -> GatewayError {
    tracing::error!("{message}");
    GatewayError::internal(message)
}

/// The `since` (epoch seconds) and `limit` query parameters.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Window {
    since: Option<f64>,
    limit: Option<usize>,
}

impl Window {
    fn from_query(params: &HashMap<String, String>) -> Result<Window, GatewayError> {
        let since = params
            .get("since")
            .map(|s| {
                s.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        GatewayError::bad_request(format!(
                            "since: '{s}' is not a number of seconds since the epoch"
                        ))
                    })
            })
            .transpose()?;
        let limit = params
            .get("limit")
            .map(|s| {
                s.parse::<usize>().map_err(|_| {
                    GatewayError::bad_request(format!("limit: '{s}' is not a non-negative integer"))
                })
            })
            .transpose()?;
        Ok(Window { since, limit })
    }
}
