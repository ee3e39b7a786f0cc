//! Traces: one by id, or a query over sessions.

use super::{Json, found, params};
use crate::error::GatewayError;
use crate::record::TraceRecord;
use crate::server::AppState;
use crate::store::TraceFilter;
use axum::extract::{Path, State};
use serde::Deserialize;

/// `GET /traces/{trace_id}`: one trace, 404 when unknown.
pub async fn get(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Json<TraceRecord>, GatewayError> {
    let record = state.reader.trace(trace_id.clone()).await?;
    found(record, "trace", &trace_id)
}

/// The body of `POST /traces/query`.
#[derive(Debug, Deserialize)]
pub struct TraceQuery {
    /// The sessions whose traces to read.
    #[serde(default, deserialize_with = "params::session_ids")]
    session_ids: Vec<String>,
    /// Only traces that started after this (epoch seconds).
    #[serde(default, deserialize_with = "params::body_since")]
    since: Option<f64>,
    /// At most this many.
    #[serde(default, deserialize_with = "params::body_limit")]
    limit: Option<usize>,
    /// Only traces made by this policy (weights) version.
    #[serde(default)]
    weight_version: Option<i64>,
}

/// `POST /traces/query` with `{session_ids, since, limit, weight_version}`:
/// the traces of those sessions, in the order they started.
pub async fn query(
    State(state): State<AppState>,
    Json(query): Json<TraceQuery>,
) -> Result<Json<Vec<TraceRecord>>, GatewayError> {
    if query.session_ids.is_empty() {
        // rLLM answers an empty list for no sessions, not every trace.
        return Ok(Json(Vec::new()));
    }
    let filter = TraceFilter {
        session_ids: query.session_ids,
        since: query.since,
        limit: query.limit,
        weight_version: query.weight_version,
        ..TraceFilter::default()
    };
    Ok(Json(state.reader.traces(filter).await?))
}
