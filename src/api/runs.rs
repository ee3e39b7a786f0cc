//! Runs: the top of the run → session → step tree, with their feedback.

use super::{Json, Query, found, params};
use crate::error::GatewayError;
use crate::feedback::{Feedback, FeedbackSummary, TargetKind};
use crate::server::AppState;
use crate::store::RunFilter;
use crate::store::feedback::FeedbackScope;
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
    /// The feedback naming the run itself, oldest first.
    feedback: Vec<Feedback>,
    /// The feedback of the run, its sessions and its calls, per name.
    feedback_summary: Vec<FeedbackSummary>,
}

/// `GET /runs/{run_id}`: one run with its counts and its sessions.
pub async fn get(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<RunDetail>, GatewayError> {
    let Some((run, sessions)) = state.reader.run(run_id.clone()).await? else {
        return found(None, "run", &run_id);
    };
    let reader = &state.reader;
    let feedback = reader
        .feedback(FeedbackScope::Target(TargetKind::Run, run_id.clone()))
        .await?;
    let feedback_summary = reader.feedback_summary(FeedbackScope::Run(run_id)).await?;
    Ok(Json(RunDetail {
        run,
        sessions,
        feedback,
        feedback_summary,
    }))
}
