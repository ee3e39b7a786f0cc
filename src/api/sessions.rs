//! Sessions: create, list, inspect, delete, and a session's traces.

use super::compact::{self, TraceGraph};
use super::{Json, Query, found, params};
use crate::error::GatewayError;
use crate::feedback::Feedback;
use crate::record::{HarnessSpan, TraceRecord};
use crate::server::AppState;
use crate::store::feedback::FeedbackScope;
use crate::store::summary::SessionInfo;
use crate::store::{SessionFilter, TraceFilter};
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The body of `POST /sessions` (which may also be empty).
#[derive(Debug, Default, Deserialize)]
pub struct CreateSession {
    /// The id; a UUIDv7 when absent.
    #[serde(default, deserialize_with = "params::session_id")]
    session_id: Option<String>,
    /// Metadata to keep with the session.
    #[serde(default, deserialize_with = "params::metadata")]
    metadata: Map<String, Value>,
    /// Sampling parameters merged into every call of the session (rLLM).
    #[serde(default, deserialize_with = "params::sampling_params")]
    sampling_params: Option<Map<String, Value>>,
}

/// The answer of `POST /sessions`.
#[derive(Debug, Serialize)]
pub struct CreatedSession {
    /// The session's id.
    session_id: String,
    /// The base URL an agent should use for the session.
    url: String,
}

/// `POST /sessions` with optional `{session_id, metadata, sampling_params}`:
/// creates the session (or updates its metadata, and its sampling
/// parameters when given) and returns `{session_id, url}`.
pub async fn create(
    State(state): State<AppState>,
    body: Option<Json<CreateSession>>,
) -> Result<Json<CreatedSession>, GatewayError> {
    let Json(request) = body.unwrap_or_default();
    let session_id = request
        .session_id
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let sampling = request.sampling_params.filter(|p| !p.is_empty());
    state
        .writer
        .create_session(session_id.clone(), request.metadata, sampling.clone())
        .await?;
    if let Some(params) = sampling {
        state.forwarder.sampling.set(session_id.clone(), params);
    }
    Ok(Json(CreatedSession {
        url: format!("/sessions/{session_id}/v1"),
        session_id,
    }))
}

/// The query of `GET /sessions`.
#[derive(Debug, Deserialize)]
pub struct SessionsQuery {
    /// Only sessions created after this.
    #[serde(default, deserialize_with = "params::time")]
    since: Option<f64>,
    /// At most this many (the newest).
    #[serde(default, deserialize_with = "params::limit")]
    limit: Option<usize>,
    /// Only the sessions of this run.
    #[serde(default)]
    run_id: Option<String>,
}

/// `GET /sessions?since&limit&run_id`: sessions, newest first (like runs
/// and traces).
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<SessionsQuery>,
) -> Result<Json<Vec<SessionInfo>>, GatewayError> {
    let filter = SessionFilter {
        since: query.since,
        run_id: query.run_id,
        limit: query.limit,
        newest_first: true,
        ..SessionFilter::default()
    };
    Ok(Json(state.reader.sessions(filter).await?))
}

/// The answer of `GET /sessions/{session_id}`: the session and its
/// feedback.
#[derive(Debug, Serialize)]
pub struct SessionDetail {
    /// The session.
    #[serde(flatten)]
    session: SessionInfo,
    /// The feedback naming the session or one of its calls, oldest first.
    feedback: Vec<Feedback>,
}

/// `GET /sessions/{session_id}`: one session with its feedback, 404 when
/// unknown.
pub async fn get(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
) -> Result<Json<SessionDetail>, GatewayError> {
    let Some(session) = state.reader.session(session_id.clone()).await? else {
        return found(None, "session", &session_id);
    };
    let feedback = state
        .reader
        .feedback(FeedbackScope::Session(session_id))
        .await?;
    Ok(Json(SessionDetail { session, feedback }))
}

/// The `since`, `limit` and `format` of a listing of a session's traces.
#[derive(Debug, Deserialize)]
pub struct Window {
    /// Only traces that started after this.
    #[serde(default, deserialize_with = "params::time")]
    since: Option<f64>,
    /// At most this many.
    #[serde(default, deserialize_with = "params::limit")]
    limit: Option<usize>,
    /// The full records (the default), or rLLM's compact graph.
    #[serde(default)]
    format: TraceFormat,
}

/// How a session's traces are listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceFormat {
    /// A list of full TraceRecords.
    #[default]
    Default,
    /// rLLM's compact trace graph (`compact`).
    Compact,
}

/// A session's traces, as the format asks.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum SessionTraces {
    /// The full records, as served.
    Records(Vec<super::traces::ServedRecord>),
    /// The compact graph.
    Graph(TraceGraph),
}

/// `GET /sessions/{session_id}/traces?since&limit&format`: the session's
/// traces in the order they started, as full records or (`format=compact`)
/// as rLLM's compact graph, computed from them.
pub async fn traces(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
    Query(window): Query<Window>,
) -> Result<Json<SessionTraces>, GatewayError> {
    let filter = TraceFilter {
        session_ids: vec![session_id],
        since: window.since,
        limit: window.limit,
        ..TraceFilter::default()
    };
    if window.format == TraceFormat::Default {
        let records = state.reader.traces_with_parents(filter).await?;
        return Ok(Json(SessionTraces::Records(super::traces::served(records))));
    }
    let selected = state.reader.traces(filter.clone()).await?;
    let ids: Vec<String> = selected.iter().map(|r| r.trace_id.clone()).collect();
    // Parents are found in the whole session, then the selection is cut.
    let all = if window.since.is_none() && window.limit.is_none() {
        selected
    } else {
        let whole = TraceFilter {
            since: None,
            limit: None,
            ..filter
        };
        state.reader.traces(whole).await?
    };
    Ok(Json(SessionTraces::Graph(compact::graph(&all, &ids))))
}

/// The answer of `DELETE /sessions/{session_id}`.
#[derive(Debug, Serialize)]
pub struct Deleted {
    /// How many traces were deleted with the session.
    deleted: usize,
}

/// `DELETE /sessions/{session_id}`: deletes the session and its traces,
/// returning `{deleted: <number of traces>}`.
pub async fn delete(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
) -> Result<Json<Deleted>, GatewayError> {
    state.forwarder.sampling.forget(&session_id);
    let deleted = state.writer.delete_session(session_id).await?;
    Ok(Json(Deleted { deleted }))
}

/// The body of `POST /sessions/batch_delete` (which may also be empty).
#[derive(Debug, Default, Deserialize)]
pub struct BatchDelete {
    /// The sessions to delete.
    #[serde(default, deserialize_with = "params::session_ids")]
    session_ids: Vec<String>,
}

/// `POST /sessions/batch_delete` with `{session_ids}`: deletes each session
/// and its traces, returning `{deleted: <number of traces>}` over all of
/// them (rLLM's trainer clears a finished batch in one call).
pub async fn batch_delete(
    State(state): State<AppState>,
    body: Option<Json<BatchDelete>>,
) -> Result<Json<Deleted>, GatewayError> {
    let Json(request) = body.unwrap_or_default();
    let mut deleted = 0;
    for session_id in request.session_ids {
        state.forwarder.sampling.forget(&session_id);
        deleted += state.writer.delete_session(session_id).await?;
    }
    Ok(Json(Deleted { deleted }))
}

/// The answer of `GET /sessions/{session_id}/spans`: the episode as one
/// tree — the harness's spans and the session's calls, each call naming
/// the harness span it hangs under, each span the calls under it.
#[derive(Debug, Serialize)]
pub struct SessionSpans {
    /// The session.
    session_id: String,
    /// The harness spans (naming the session, or in its calls' OTel
    /// traces), by start.
    spans: Vec<SpanNode>,
    /// The session's calls, in the order they started.
    calls: Vec<CallNode>,
}

/// A harness span in the tree.
#[derive(Debug, Serialize)]
pub struct SpanNode {
    /// The span.
    #[serde(flatten)]
    span: HarnessSpan,
    /// The trace ids of the calls whose parent span it is.
    calls: Vec<String>,
}

/// A call in the tree.
#[derive(Debug, Serialize)]
pub struct CallNode {
    /// The record's id.
    trace_id: String,
    /// The call's own span id.
    span_id: String,
    /// The OTel trace it belongs to.
    otel_trace_id: String,
    /// Its OTel parent span id (the harness span's, under `traceparent`).
    otel_parent_span_id: Option<String>,
    /// The harness span it hangs under, when that span is stored.
    harness_span_id: Option<String>,
    /// `{operation} {model}`, as its span is named.
    name: String,
    /// When it started and ended (RFC 3339).
    started_at: String,
    /// When it ended.
    ended_at: String,
    /// `ok`, `error`, `client_closed`.
    status: crate::record::Status,
}

/// `GET /sessions/{session_id}/spans`: the session's harness spans and
/// calls, linked both ways (an empty tree for a session with neither).
pub async fn spans(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
) -> Result<Json<SessionSpans>, GatewayError> {
    let (records, spans) = state.reader.session_spans(session_id.clone()).await?;
    let stored = |r: &TraceRecord| {
        let parent = r.otel_parent_span_id.as_deref()?;
        spans
            .iter()
            .any(|s| s.trace_id == r.otel_trace_id && s.span_id == parent)
            .then(|| parent.to_string())
    };
    let calls: Vec<CallNode> = records
        .iter()
        .map(|r| CallNode {
            trace_id: r.trace_id.clone(),
            span_id: r.span_id.clone(),
            otel_trace_id: r.otel_trace_id.clone(),
            otel_parent_span_id: r.otel_parent_span_id.clone(),
            harness_span_id: stored(r),
            name: format!(
                "{} {}",
                r.operation.as_str(),
                r.model.as_deref().unwrap_or_default()
            )
            .trim_end()
            .to_string(),
            started_at: r.started_at.clone(),
            ended_at: r.ended_at.clone(),
            status: r.status,
        })
        .collect();
    let spans = spans
        .into_iter()
        .map(|span| SpanNode {
            calls: records
                .iter()
                .filter(|r| {
                    r.otel_trace_id == span.trace_id
                        && r.otel_parent_span_id.as_deref() == Some(&span.span_id)
                })
                .map(|r| r.trace_id.clone())
                .collect(),
            span,
        })
        .collect();
    Ok(Json(SessionSpans {
        session_id,
        spans,
        calls,
    }))
}
