//! Sessions: create, list, inspect, delete, and a session's traces.

use super::{ApiState, Window, store_error};
use crate::error::GatewayError;
use crate::store::{TraceFilter, read};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// `POST /sessions` with optional `{session_id, metadata}`: creates the
/// session (or updates its metadata) and returns `{session_id, url}`, the
/// `url` being the base URL an agent should use for the session.
pub async fn create(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<Json<Value>, GatewayError> {
    let request: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            GatewayError::bad_request(format!("the body must be a JSON object: {e}"))
        })?
    };
    let session_id = match request.get("session_id") {
        None | Some(Value::Null) => uuid::Uuid::now_v7().to_string(),
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(_) => {
            return Err(GatewayError::bad_request(
                "session_id must be a non-empty string",
            ));
        }
    };
    let metadata = match request.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(GatewayError::bad_request("metadata must be a JSON object")),
    };
    state
        .writer
        .create_session(session_id.clone(), metadata)
        .await
        .map_err(store_error)?;
    let url = format!("/sessions/{session_id}/v1");
    Ok(Json(json!({"session_id": session_id, "url": url})))
}

/// `GET /sessions?since&limit&run_id`: sessions, oldest first.
pub async fn list(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, GatewayError> {
    let window = Window::from_query(&params)?;
    let run_id = params.get("run_id").cloned();
    let sessions = state
        .reader
        .call(move |conn| read::sessions(conn, window.since, run_id.as_deref(), window.limit))
        .await
        .map_err(store_error)?;
    Ok(Json(json!(sessions)))
}

/// `GET /sessions/{session_id}`: one session, 404 when unknown.
pub async fn get(
    State(state): State<ApiState>,
    Path(session_id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let sid = session_id.clone();
    let info = state
        .reader
        .call(move |conn| read::session(conn, &sid))
        .await
        .map_err(store_error)?;
    match info {
        Some(info) => Ok(Json(json!(info))),
        None => Err(GatewayError::not_found(format!(
            "session {session_id} not found"
        ))),
    }
}

/// `GET /sessions/{session_id}/traces?since&limit`: the session's traces in
/// the order they started.
pub async fn traces(
    State(state): State<ApiState>,
    Path(session_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, GatewayError> {
    let window = Window::from_query(&params)?;
    let filter = TraceFilter {
        session_ids: vec![session_id],
        since: window.since,
        limit: window.limit,
        ..TraceFilter::default()
    };
    let traces = state
        .reader
        .call(move |conn| read::traces(conn, &filter))
        .await
        .map_err(store_error)?;
    Ok(Json(json!(traces)))
}

/// `DELETE /sessions/{session_id}`: deletes the session and its traces,
/// returning `{deleted: <number of traces>}`.
pub async fn delete(
    State(state): State<ApiState>,
    Path(session_id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let deleted = state
        .writer
        .delete_session(session_id)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({"deleted": deleted})))
}
