//! Traces: a filtered list in pages, one by id, or a query over sessions.
//!
//! `GET /traces` pages through every recorded call newest first, like
//! `GET /runs`, `GET /sessions` and `tracegate traces list`. Its pages are
//! keyset pages: `next_cursor` names the last trace returned (its start
//! time and id, opaque to the caller), and the next page is what comes after
//! it in the order. Calls recorded while a client pages start later than
//! the first page, so they never shift a later page: no trace is returned
//! twice and none is skipped, which an offset could not promise.
//!
//! Every record is served as a [`ServedRecord`]: the stored record, and —
//! when the harness sent the span its `traceparent` named to the receiver —
//! `harness_span`, joined when read.

use super::{Json, Query, found, params};
use crate::error::GatewayError;
use crate::record::{HarnessSpan, HarnessSpanKind, Status, TraceRecord};
use crate::server::AppState;
use crate::store::{TraceFilter, TraceKey};
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

/// A record as the API serves it: the stored fields, and `harness_span`.
#[derive(Debug, Serialize)]
pub struct ServedRecord {
    /// The stored record.
    #[serde(flatten)]
    pub record: TraceRecord,
    /// The stored harness span the call was made under; absent when there
    /// is none, so a record outside harness spans is served exactly as it
    /// is stored and exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub harness_span: Option<EnclosingSpan>,
}

impl From<(TraceRecord, Option<HarnessSpan>)> for ServedRecord {
    fn from((record, parent): (TraceRecord, Option<HarnessSpan>)) -> Self {
        ServedRecord {
            record,
            harness_span: parent.map(EnclosingSpan::from),
        }
    }
}

/// What a record says of the harness span it was made under: its ids,
/// name, kind and times (the whole span is in `GET /sessions/{sid}/spans`).
#[derive(Debug, Serialize)]
pub struct EnclosingSpan {
    /// Its OpenTelemetry trace id.
    pub trace_id: String,
    /// Its span id.
    pub span_id: String,
    /// Its parent's span id.
    pub parent_span_id: Option<String>,
    /// Its name (`execute_tool bash`).
    pub name: String,
    /// Its kind.
    pub kind: HarnessSpanKind,
    /// When it started (RFC 3339).
    pub start: String,
    /// When it ended (RFC 3339).
    pub end: String,
}

impl From<HarnessSpan> for EnclosingSpan {
    fn from(span: HarnessSpan) -> Self {
        EnclosingSpan {
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_span_id: span.parent_span_id,
            name: span.name,
            kind: span.kind,
            start: span.start,
            end: span.end,
        }
    }
}

/// Records with their harness spans, as served.
pub fn served(records: Vec<(TraceRecord, Option<HarnessSpan>)>) -> Vec<ServedRecord> {
    records.into_iter().map(ServedRecord::from).collect()
}

/// The query of `GET /traces`.
#[derive(Debug, Deserialize)]
pub struct TracesQuery {
    /// Only the traces of this run.
    #[serde(default, deserialize_with = "params::text")]
    run_id: Option<String>,
    /// Only the traces of this session.
    #[serde(default, deserialize_with = "params::text")]
    session_id: Option<String>,
    /// Only the traces of this harness.
    #[serde(default, deserialize_with = "params::text")]
    harness: Option<String>,
    /// Only the traces that asked for this model.
    #[serde(default, deserialize_with = "params::text")]
    model: Option<String>,
    /// Only the traces that ended with this status.
    #[serde(default)]
    status: Option<Status>,
    /// Only the traces that did not end `ok`.
    #[serde(default, deserialize_with = "params::flag")]
    errors: bool,
    /// Only the traces made by this policy (weights) version.
    #[serde(default)]
    weight_version: Option<i64>,
    /// Only the traces that started after this.
    #[serde(default, deserialize_with = "params::time")]
    since: Option<f64>,
    /// Only the traces that started before this.
    #[serde(default, deserialize_with = "params::time")]
    until: Option<f64>,
    /// At most this many: 100, 1 to 1000.
    #[serde(default, deserialize_with = "params::limit")]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[serde(default, deserialize_with = "params::page_cursor")]
    cursor: Option<TraceKey>,
}

/// The answer of `GET /traces`: a page.
#[derive(Debug, Serialize)]
pub struct TracePage {
    /// The page's traces, newest first.
    traces: Vec<ServedRecord>,
    /// Where the next page starts, or none when this one is the last.
    next_cursor: Option<String>,
}

/// `GET /traces?run_id&session_id&harness&model&status&errors&weight_version&since&until&limit&cursor`:
/// `{traces, next_cursor}`, the matching traces newest first, a page at a
/// time (pass `next_cursor` back as `cursor` for the next).
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<TracesQuery>,
) -> Result<Json<TracePage>, GatewayError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let filter = TraceFilter {
        session_ids: query.session_id.into_iter().collect(),
        run_id: query.run_id,
        harness: query.harness,
        model: query.model,
        status: query.status,
        errors_only: query.errors,
        weight_version: query.weight_version,
        since: query.since,
        until: query.until,
        after: query.cursor,
        // One more than the page says whether another page follows.
        limit: Some(limit + 1),
        newest_first: true,
        ..TraceFilter::default()
    };
    let mut traces = state.reader.traces_with_parents(filter).await?;
    let more = traces.len() > limit;
    traces.truncate(limit);
    let next_cursor = more
        .then(|| traces.last())
        .flatten()
        .map(|(last, _)| params::encode_cursor(&last.started_at, &last.trace_id));
    Ok(Json(TracePage {
        traces: served(traces),
        next_cursor,
    }))
}

/// `GET /traces/{trace_id}`: one trace, 404 when unknown, with the harness
/// span it was made under (`harness_span`, when one is stored).
pub async fn get(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Json<ServedRecord>, GatewayError> {
    let found_trace = state.reader.trace_with_parent(trace_id.clone()).await?;
    let record = found(found_trace, "trace", &trace_id)?.0;
    Ok(Json(ServedRecord::from(record)))
}

/// The body of `POST /traces/query`.
#[derive(Debug, Deserialize)]
pub struct TraceQuery {
    /// The sessions whose traces to read.
    #[serde(default, deserialize_with = "params::session_ids")]
    session_ids: Vec<String>,
    /// Only traces that started after this (epoch seconds, or a string
    /// in any form `since` takes).
    #[serde(default, deserialize_with = "params::body_time")]
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
) -> Result<Json<Vec<ServedRecord>>, GatewayError> {
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
    Ok(Json(served(
        state.reader.traces_with_parents(filter).await?,
    )))
}
