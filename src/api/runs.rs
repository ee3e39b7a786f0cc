//! Runs: the top of the run → session → step tree.

use super::{Json, Query, found, params};
use crate::error::GatewayError;
use crate::server::AppState;
use crate::store::RunFilter;
use crate::store::summary::{RunInfo, SessionInfo};
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

/// The query of `GET /runs`.
#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    /// At most this many (the newest).
    #[serde(default, deserialize_with = "params::limit")]
    limit: Option<usize>,
}

/// `GET /runs?limit`: runs, newest first, with their counts.
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<RunsQuery>,
) -> Result<Json<Vec<RunInfo>>, GatewayError> {
    let filter = RunFilter {
        limit: query.limit,
        ..RunFilter::default()
    };
    Ok(Json(state.reader.runs(filter).await?))
}

/// The answer of `GET /runs/{run_id}`: the run and its sessions.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    run: RunInfo,
    /// Its sessions, oldest first.
    sessions: Vec<SessionInfo>,
}

/// `GET /runs/{run_id}`: one run with its counts and its sessions.
pub async fn get(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<RunDetail>, GatewayError> {
    let run = state.reader.run(run_id.clone()).await?;
    let detail = run.map(|(run, sessions)| RunDetail { run, sessions });
    found(detail, "run", &run_id)
}
