//! `GET /sessions/{session_id}/trajectory` and `GET /runs/{run_id}/trajectory`:
//! sessions as training data (see `crate::trajectory`, `schema/trajectory.md`).

use super::{Json, found};
use crate::error::GatewayError;
use crate::feedback::TargetKind;
use crate::server::AppState;
use crate::store::feedback::FeedbackScope;
use crate::trajectory::{self, Trajectory};
use axum::extract::{Path, State};
use serde::Serialize;

/// `GET /sessions/{session_id}/trajectory`: the session's trajectory, 404
/// when the session is unknown.
pub async fn session(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
) -> Result<Json<Trajectory>, GatewayError> {
    if state.reader.session(session_id.clone()).await?.is_none() {
        return found(None, "session", &session_id);
    }
    Ok(Json(read(&state, session_id).await?))
}

/// The answer of `GET /runs/{run_id}/trajectory`.
#[derive(Debug, Serialize)]
pub struct RunTrajectories {
    /// The run.
    run_id: String,
    /// Its sessions' trajectories, oldest session first.
    sessions: Vec<Trajectory>,
}

/// `GET /runs/{run_id}/trajectory`: every session of the run as a
/// trajectory, 404 when the run is unknown.
pub async fn run(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<RunTrajectories>, GatewayError> {
    let Some((_, sessions)) = state.reader.run(run_id.clone()).await? else {
        return found(None, "run", &run_id);
    };
    let mut out = Vec::with_capacity(sessions.len());
    for session in sessions {
        out.push(read(&state, session.session_id).await?);
    }
    Ok(Json(RunTrajectories {
        run_id,
        sessions: out,
    }))
}

/// One session's trajectory, from its records, its feedback and its
/// harness spans (read together with the records).
async fn read(state: &AppState, session_id: String) -> Result<Trajectory, GatewayError> {
    let (records, spans) = state.reader.session_spans(session_id.clone()).await?;
    let scope = FeedbackScope::Target(TargetKind::Session, session_id.clone());
    let feedback = state.reader.feedback(scope).await?;
    Ok(trajectory::build(&session_id, records, feedback, spans))
}
