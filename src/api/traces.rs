//! Traces: one by id, or a query over sessions.

use super::{ApiState, store_error};
use crate::error::GatewayError;
use crate::store::{TraceFilter, read};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value, json};

/// `GET /traces/{trace_id}`: one trace, 404 when unknown.
pub async fn get(
    State(state): State<ApiState>,
    Path(trace_id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let id = trace_id.clone();
    let record = state
        .reader
        .call(move |conn| read::trace(conn, &id))
        .await
        .map_err(store_error)?;
    match record {
        Some(record) => Ok(Json(json!(record))),
        None => Err(GatewayError::not_found(format!(
            "trace {trace_id} not found"
        ))),
    }
}

/// `POST /traces/query` with `{session_ids, since, limit}`: the traces of
/// those sessions, in the order they started.
pub async fn query(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<Json<Value>, GatewayError> {
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::bad_request(format!("the body must be a JSON object: {e}")))?;
    let session_ids = match request.get("session_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| {
                id.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| GatewayError::bad_request("session_ids must be strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(GatewayError::bad_request("session_ids must be a list")),
    };
    if session_ids.is_empty() {
        // rLLM answers an empty list for no sessions, not every trace.
        return Ok(Json(json!([])));
    }
    let since =
        match request.get("since") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_f64().ok_or_else(|| {
                GatewayError::bad_request("since must be seconds since the epoch")
            })?),
        };
    let limit = match request.get("limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| GatewayError::bad_request("limit must be a non-negative integer"))?
                as usize,
        ),
    };
    let filter = TraceFilter {
        session_ids,
        since,
        limit,
        ..TraceFilter::default()
    };
    let traces = state
        .reader
        .call(move |conn| read::traces(conn, &filter))
        .await
        .map_err(store_error)?;
    Ok(Json(json!(traces)))
}
