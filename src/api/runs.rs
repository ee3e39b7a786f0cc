//! Runs: the top of the run → session → step tree.

use super::{ApiState, Window, store_error};
use crate::error::GatewayError;
use crate::store::read;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};
use std::collections::HashMap;

/// `GET /runs?limit`: runs, newest first, with their counts.
pub async fn list(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, GatewayError> {
    let window = Window::from_query(&params)?;
    let runs = state
        .reader
        .call(move |conn| read::runs(conn, window.limit))
        .await
        .map_err(store_error)?;
    Ok(Json(json!(runs)))
}

/// `GET /runs/{run_id}`: one run with its counts and its sessions.
pub async fn get(
    State(state): State<ApiState>,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let id = run_id.clone();
    let found = state
        .reader
        .call(move |conn| {
            let Some(run) = read::run(conn, &id)? else {
                return Ok(None);
            };
            let sessions = read::sessions(conn, None, Some(&id), None)?;
            Ok(Some((run, sessions)))
        })
        .await
        .map_err(store_error)?;
    let Some((run, sessions)) = found else {
        return Err(GatewayError::not_found(format!("run {run_id} not found")));
    };
    let mut body = json!(run);
    body["sessions"] = json!(sessions);
    Ok(Json(body))
}
