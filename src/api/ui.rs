//! The built-in web UI: a few static files compiled into the binary, and the
//! JSON endpoints that only the UI needs.
//!
//! The UI is plain HTML, CSS and JavaScript in the top-level `ui/` directory,
//! embedded with `include_str!`: no build step, no CDN, nothing fetched from
//! outside the gateway, so it works offline on a training node. It is served
//! at `/ui/` (`/ui` redirects there, so the page's relative links resolve the
//! same behind a path-prefixing proxy). Files are served with `no-cache` and
//! an `ETag` of their content: a browser revalidates each load and gets a 304
//! until the binary changes. The page carries a strict Content-Security-Policy
//! — it renders model output, which is untrusted text — and only ever reaches
//! the gateway it came from.
//!
//! The UI reads records through the existing API (`/runs/{id}`,
//! `/sessions/{id}`, `/traces/{id}`) and adds four endpoints under
//! `/ui/api/` for what that API does not answer cheaply (their SQL is the
//! store's; the charts' arithmetic is `charts`):
//!
//! * `GET /ui/api/runs`: runs with filters, plus the values the filters take;
//! * `GET /ui/api/sessions`: sessions, with a run or without one, with
//!   filters, newest first;
//! * `GET /ui/api/calls`: call summaries for a session's or run's tree and
//!   waterfall (the store's `CallNode`s, each knowing which attempt of its
//!   step it is), and a cursor to poll for calls committed since;
//! * `GET /ui/api/stats`: per-model statistics, latency and TTFT
//!   distributions and per-bucket calls, errors and tokens; calls without a
//!   model (operation `other`) only when asked;
//! * `GET /ui/api/sessions/{session_id}/spans`: the harness spans of a
//!   session's tree, each with the calls made under it — like `GET
//!   /sessions/{id}/spans`, but from three columns per call instead of the
//!   records, so a session of hundreds of calls stays one cheap request.
//!
//! Every list and chart takes a time range, `since` and `until` (epoch
//! seconds from the UI's time picker; any form `time_bound` reads).
//!
//! These routes sit in the API router, so the inbound auth (when it exists)
//! covers them like every other route.

use super::charts::{self, Stats};
use super::{Json, Query, params};
use crate::error::GatewayError;
use crate::record::HarnessSpan;
use crate::server::AppState;
use crate::store::summary::{CallLink, CallPage, Facets, RunInfo, SessionRow};
use crate::store::{CallFilter, RunFilter, SessionFilter, TraceFilter};
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The UI's routes (merged into the API router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::temporary("ui/") }))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(asset))
        .route("/ui/api/runs", get(runs))
        .route("/ui/api/sessions", get(sessions))
        .route("/ui/api/calls", get(calls))
        .route("/ui/api/stats", get(stats))
        .route("/ui/api/sessions/{session_id}/spans", get(session_spans))
}

/// A file of the UI, compiled in.
#[derive(Debug)]
pub struct Asset {
    /// Its name under `/ui/`.
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    body: &'static str,
    etag: u64,
}

const fn asset_of(name: &'static str, content_type: &'static str, body: &'static str) -> Asset {
    Asset {
        name,
        content_type,
        body,
        etag: fnv1a(body.as_bytes()),
    }
}

/// FNV-1a, evaluated at compile time: the ETag changes when the file does.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u64).wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Every file the UI is made of; the first is the page itself.
pub const ASSETS: [Asset; 3] = [
    asset_of(
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    asset_of(
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    asset_of(
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
];

/// Where the page may load from and connect to: only this gateway. `data:`
/// images cover the empty favicon; the UI has no inline script or style
/// (chart colours and sizes are SVG attributes), so none is allowed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// `GET /ui/`: the page.
async fn index(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

/// `GET /ui/{file}`: a script or stylesheet; 404 for anything else.
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => serve(asset, &headers),
        None => GatewayError::not_found(format!("no UI file named {file}")).into_response(),
    }
}

/// The file, or 304 when the browser's copy (`If-None-Match`) is current.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let current = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*");
    let mut response = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    if asset.content_type.starts_with("text/html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

/// A JSON answer that no cache may keep (the store changes under it).
fn uncached<T: Serialize>(body: T) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// The query of `GET /ui/api/runs`.
#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    /// Part of the run id.
    #[serde(default, deserialize_with = "params::text")]
    q: Option<String>,
    /// Runs with a call to this model.
    #[serde(default, deserialize_with = "params::text")]
    model: Option<String>,
    /// Runs with a call of this harness.
    #[serde(default, deserialize_with = "params::text")]
    harness: Option<String>,
    /// Runs with a call of this project.
    #[serde(default, deserialize_with = "params::text")]
    project: Option<String>,
    /// Runs with a call of this experiment.
    #[serde(default, deserialize_with = "params::text")]
    experiment: Option<String>,
    /// Runs with a failed call.
    #[serde(default, deserialize_with = "params::flag")]
    errors: bool,
    /// Runs active after this.
    #[serde(default, deserialize_with = "params::time")]
    since: Option<f64>,
    /// Runs active before this.
    #[serde(default, deserialize_with = "params::time")]
    until: Option<f64>,
    /// At most this many: 100, at most 1000.
    #[serde(default, deserialize_with = "params::limit")]
    limit: Option<usize>,
}

/// The answer of `GET /ui/api/runs`.
#[derive(Debug, Serialize)]
pub struct RunPage {
    /// The matching runs, newest first.
    runs: Vec<RunInfo>,
    /// The values the filters can take.
    facets: Facets,
}

/// `GET /ui/api/runs?q&model&harness&project&experiment&errors&since&until&limit`:
/// `{runs: [run, ...], facets: {models, harnesses, projects, experiments}}`,
/// runs newest first, each as `GET /runs` has it.
async fn runs(
    State(state): State<AppState>,
    Query(query): Query<RunsQuery>,
) -> Result<Response, GatewayError> {
    let filter = RunFilter {
        search: query.q,
        model: query.model,
        harness: query.harness,
        project: query.project,
        experiment: query.experiment,
        errors_only: query.errors,
        since: query.since,
        until: query.until,
        limit: Some(query.limit.unwrap_or(100).min(1000)),
    };
    let runs = state.reader.runs(filter).await?;
    let facets = state.reader.facets().await?;
    Ok(uncached(RunPage { runs, facets }))
}

/// The query of `GET /ui/api/sessions`.
#[derive(Debug, Deserialize)]
pub struct SessionsQuery {
    /// Part of the session id or of its run id.
    #[serde(default, deserialize_with = "params::text")]
    q: Option<String>,
    /// Only the sessions of this run.
    #[serde(default, deserialize_with = "params::text")]
    run_id: Option<String>,
    /// Only the sessions without a run.
    #[serde(default, deserialize_with = "params::flag")]
    no_run: bool,
    /// Sessions with a call to this model.
    #[serde(default, deserialize_with = "params::text")]
    model: Option<String>,
    /// Sessions with a call of this harness.
    #[serde(default, deserialize_with = "params::text")]
    harness: Option<String>,
    /// Sessions with a failed call.
    #[serde(default, deserialize_with = "params::flag")]
    errors: bool,
    /// Sessions active after this.
    #[serde(default, deserialize_with = "params::time")]
    since: Option<f64>,
    /// Sessions active before this.
    #[serde(default, deserialize_with = "params::time")]
    until: Option<f64>,
    /// At most this many: 100, at most 1000.
    #[serde(default, deserialize_with = "params::limit")]
    limit: Option<usize>,
}

/// The answer of `GET /ui/api/sessions`.
#[derive(Debug, Serialize)]
pub struct SessionPage {
    /// The matching sessions, newest first.
    sessions: Vec<SessionRow>,
    /// The values the filters can take.
    facets: Facets,
}

/// `GET /ui/api/sessions?q&run_id&no_run&model&harness&errors&since&until&limit`:
/// `{sessions: [session, ...], facets}`, sessions newest first, each as
/// `GET /sessions` has it plus its `harness` and `model`. `run_id` and
/// `no_run` exclude each other (400).
async fn sessions(
    State(state): State<AppState>,
    Query(query): Query<SessionsQuery>,
) -> Result<Response, GatewayError> {
    if query.run_id.is_some() && query.no_run {
        return Err(GatewayError::bad_request(
            "run_id and no_run exclude each other",
        ));
    }
    let filter = SessionFilter {
        run_id: query.run_id,
        without_run: query.no_run,
        search: query.q,
        model: query.model,
        harness: query.harness,
        errors_only: query.errors,
        active_after: query.since,
        active_before: query.until,
        newest_first: true,
        limit: Some(query.limit.unwrap_or(100).min(1000)),
        ..SessionFilter::default()
    };
    let sessions = state.reader.session_rows(filter).await?;
    let facets = state.reader.facets().await?;
    Ok(uncached(SessionPage { sessions, facets }))
}

/// The query of `GET /ui/api/calls`.
#[derive(Debug, Deserialize)]
pub struct CallsQuery {
    /// Only calls of this run.
    #[serde(default, deserialize_with = "params::text")]
    run_id: Option<String>,
    /// Only calls of this session.
    #[serde(default, deserialize_with = "params::text")]
    session_id: Option<String>,
    /// Only calls without a session.
    #[serde(default, deserialize_with = "params::flag")]
    no_session: bool,
    /// Only calls that started after this.
    #[serde(default, deserialize_with = "params::time")]
    since: Option<f64>,
    /// Only calls that started before this.
    #[serde(default, deserialize_with = "params::time")]
    until: Option<f64>,
    /// A previous page's `cursor`: the calls committed since.
    #[serde(default, deserialize_with = "params::cursor")]
    after: Option<i64>,
    /// At most this many: 500, 1 to 5000.
    #[serde(default, deserialize_with = "params::limit")]
    limit: Option<usize>,
}

/// `GET /ui/api/calls?run_id&session_id&no_session&since&until&after&limit`:
/// `{cursor, truncated, calls: [node, ...]}`, calls in start order. With
/// `after` (a previous `cursor`): the calls committed since; without: the
/// newest.
async fn calls(
    State(state): State<AppState>,
    Query(query): Query<CallsQuery>,
) -> Result<Response, GatewayError> {
    let filter = CallFilter {
        run_id: query.run_id,
        session_id: query.session_id,
        without_session: query.no_session,
        since: query.since,
        until: query.until,
        after: query.after,
        limit: query.limit.unwrap_or(500).clamp(1, 5000),
    };
    let page: CallPage = state.reader.call_page(filter).await?;
    Ok(uncached(page))
}

/// The query of `GET /ui/api/stats`.
#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    /// Only calls of this run.
    #[serde(default, deserialize_with = "params::text")]
    run_id: Option<String>,
    /// Only calls that started after this.
    #[serde(default, deserialize_with = "params::time")]
    since: Option<f64>,
    /// Only calls that started before this.
    #[serde(default, deserialize_with = "params::time")]
    until: Option<f64>,
    /// Count the calls without a model (operation `other`) too.
    #[serde(default, deserialize_with = "params::flag")]
    other: bool,
    /// About how many time buckets: 40, 1 to 500.
    #[serde(default, deserialize_with = "params::buckets")]
    buckets: Option<usize>,
}

/// `GET /ui/api/stats?run_id&since&until&other&buckets`: `{calls, sampled,
/// models, per_model, latency_ms, ttft_ms, over_time}` (see [`Stats`]) for
/// the newest calls of a run, or of all runs, started between `since` and
/// `until`; the calls without a model (a model list, a token count) only
/// with `other=1`: they would add a model-less "model" to every chart.
async fn stats(
    State(state): State<AppState>,
    Query(query): Query<StatsQuery>,
) -> Result<Response, GatewayError> {
    let filter = TraceFilter {
        run_id: query.run_id,
        since: query.since,
        until: query.until,
        skip_other: !query.other,
        ..TraceFilter::default()
    };
    let sample = state.reader.chart_sample(filter).await?;
    let stats: Stats = charts::summarise(&sample, query.buckets.unwrap_or(40));
    Ok(uncached(stats))
}

/// The answer of `GET /ui/api/sessions/{session_id}/spans`.
#[derive(Debug, Serialize)]
pub struct SpanPage {
    /// The session.
    session_id: String,
    /// Its harness spans (naming it, or in its calls' OTel traces), by
    /// start.
    spans: Vec<UiSpan>,
}

/// A harness span as the UI's tree draws it.
#[derive(Debug, Serialize)]
pub struct UiSpan {
    /// The span as stored.
    #[serde(flatten)]
    span: HarnessSpan,
    /// From start to end, in milliseconds.
    duration_ms: f64,
    /// The trace ids of the session's calls made under it (`traceparent`
    /// naming it), by start.
    calls: Vec<String>,
}

/// `GET /ui/api/sessions/{session_id}/spans`: `{session_id, spans: [span
/// as in GET /sessions/{id}/spans, plus duration_ms]}`; an empty list for
/// a session without harness spans (or an unknown one).
async fn session_spans(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
) -> Result<Response, GatewayError> {
    let (spans, links) = state.reader.session_span_links(session_id.clone()).await?;
    let mut under = calls_under(links);
    let spans = spans
        .into_iter()
        .map(|span| UiSpan {
            duration_ms: span.end_unix_nanos.saturating_sub(span.start_unix_nanos) as f64 / 1e6,
            calls: under
                .remove(&(span.trace_id.clone(), span.span_id.clone()))
                .unwrap_or_default(),
            span,
        })
        .collect();
    Ok(uncached(SpanPage { session_id, spans }))
}

/// The calls made under each (OTel trace id, span id), in `links`' order.
fn calls_under(links: Vec<CallLink>) -> HashMap<(String, String), Vec<String>> {
    let mut under: HashMap<(String, String), Vec<String>> = HashMap::new();
    for link in links {
        if let Some(parent) = link.otel_parent_span_id {
            under
                .entry((link.otel_trace_id, parent))
                .or_default()
                .push(link.trace_id);
        }
    }
    under
}
