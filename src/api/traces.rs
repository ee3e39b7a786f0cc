//! Traces: one by id, or a query over sessions.

use super::{Json, found, params};
use crate::error::GatewayError;
use crate::record::TraceRecord;
use crate::server::AppState;
use crate::store::TraceFilter;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

/// `GET /traces/{trace_id}`: one trace, 404 when unknown. When the call
/// hangs under a stored harness span (its `traceparent` named one), the
/// record carries `harness_span`: that span's ids, name and kind.
pub async fn get(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let found_trace = state.reader.trace_with_parent(trace_id.clone()).await?;
    let (record, parent) = found(found_trace, "trace", &trace_id)?.0;
    let mut json =
        serde_json::to_value(record).map_err(|e| GatewayError::internal(e.to_string()))?;
    if let (Some(span), Value::Object(fields)) = (parent, &mut json) {
        fields.insert(
            "harness_span".into(),
            json!({
                "trace_id": span.trace_id,
                "span_id": span.span_id,
                "parent_span_id": span.parent_span_id,
                "name": span.name,
                "kind": span.kind,
                "start": span.start,
                "end": span.end,
            }),
        );
    }
    Ok(Json(json))
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
