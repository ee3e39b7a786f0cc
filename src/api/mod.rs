//! The HTTP query and admin API, compatible with rllm-model-gateway.
//!
//! rLLM's Python `GatewayClient` works against tracegate unchanged: the same
//! paths, the same JSON (`{session_id, url}`, `{deleted}`,
//! `{"status": "flushed"}`, TraceRecords with rLLM's field names). tracegate
//! adds runs (`/runs`) and its own fields beside rLLM's. Errors use the
//! OpenAI error shape, with 404 for unknown sessions, traces and runs and 400
//! for unusable parameters.
//!
//! Every handler takes typed requests — a `Deserialize` type through
//! [`Query`] or [`Json`] (`extract`), whose rejection is that 400 — and
//! answers a typed `Serialize` body. The handlers ask the store through its
//! reader and writer and know no SQL; a store failure is a 500, logged.
//!
//! The web UI (`/ui`) is served from here too, with its own few endpoints
//! under `/ui/api/` (see `ui.rs`; its charts are computed in `charts.rs`).

mod admin;
mod charts;
mod compact;
mod extract;
mod feedback;
mod params;
mod runs;
mod sessions;
mod traces;
mod trajectory;
mod ui;
mod weights;
mod workers;

pub use extract::{Json, Query};

use crate::error::GatewayError;
use crate::record::ErrorKind;
use crate::server::AppState;
use crate::store::StoreError;
use axum::Router;
use axum::routing::{delete, get, post};

/// The API's routes, on the gateway's state.
pub fn router() -> Router<AppState> {
    Router::new()
        // A browser pointed at the gateway lands on its UI.
        .route(
            "/",
            get(|| async { axum::response::Redirect::temporary("/ui/") }),
        )
        .route("/health", get(admin::health))
        .route("/metrics", get(admin::metrics))
        .route("/admin/flush", post(admin::flush))
        .route("/admin/reload", post(admin::reload))
        .route(
            "/admin/weight_version",
            get(weights::get).post(weights::set),
        )
        .route("/admin/workers", get(workers::list).post(workers::add))
        .route("/admin/workers/{worker_id}", delete(workers::remove))
        .route("/admin/routes", get(workers::routes))
        .route("/health/workers", get(workers::health))
        .route("/sessions", get(sessions::list).post(sessions::create))
        .route("/sessions/batch_delete", post(sessions::batch_delete))
        .route(
            "/sessions/{session_id}",
            get(sessions::get).delete(sessions::delete),
        )
        .route("/sessions/{session_id}/traces", get(sessions::traces))
        .route(
            "/sessions/{session_id}/trajectory",
            get(trajectory::session),
        )
        .route("/traces", get(traces::list))
        .route("/sessions/{session_id}/spans", get(sessions::spans))
        .route("/traces/query", post(traces::query))
        .route("/traces/{trace_id}", get(traces::get))
        .route("/feedback", post(feedback::post))
        .route("/feedback/batch", post(feedback::batch))
        .route("/runs", get(runs::list))
        .route("/runs/{run_id}", get(runs::get))
        .route("/runs/{run_id}/trajectory", get(trajectory::run))
        .merge(ui::routes())
}

/// A resource the store found, or the API's 404 naming it (`what` and its
/// id).
fn found<T>(value: Option<T>, what: &str, id: &str) -> Result<Json<T>, GatewayError> {
    value
        .map(Json)
        .ok_or_else(|| GatewayError::not_found(format!("{what} {id} not found")))
}

/// A store failure, as the API reports it: a 503 while the store cannot
/// commit (`store_unavailable`: try again later), else a 500, logged.
impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Unavailable(_) = e {
            tracing::warn!("{e}");
            return GatewayError::new(ErrorKind::StoreUnavailable, e.to_string());
        }
        tracing::error!("{e}");
        GatewayError::internal(e.to_string())
    }
}
