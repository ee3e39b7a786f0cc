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
//! `/traces/{id}`) and adds three endpoints under `/ui/api/` for what that API
//! does not answer cheaply (their SQL is in [`crate::store::stats`]):
//!
//! * `GET /ui/api/runs`: runs with filters, plus the values the filters take;
//! * `GET /ui/api/calls`: light call summaries for a run's tree and
//!   waterfall, and a cursor to poll for calls committed since;
//! * `GET /ui/api/stats`: latency and TTFT distributions and per-bucket
//!   calls, errors and tokens, per model.
//!
//! These routes sit in the API router, so the inbound auth (when it exists)
//! covers them like every other route.

use super::{ApiState, Window, store_error};
use crate::error::GatewayError;
use crate::store::read::ReadResult;
use crate::store::stats::{self, CallFilter, FACET_COLUMNS, RunFilter, StatsFilter};
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use rusqlite::Connection;
use serde::Serialize;
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// The UI's routes (merged into the API router).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::temporary("ui/") }))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(asset))
        .route("/ui/api/runs", get(runs))
        .route("/ui/api/calls", get(calls))
        .route("/ui/api/stats", get(stats))
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

/// Runs `query` on a read connection and answers its result as JSON that no
/// cache may keep (the store changes under it).
async fn answer<T, F>(state: &ApiState, query: F) -> Result<Response, GatewayError>
where
    T: Serialize + Send + 'static,
    F: FnOnce(&Connection) -> ReadResult<T> + Send + 'static,
{
    let body = state.reader.call(query).await.map_err(store_error)?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// A text parameter: trimmed, empty meaning absent.
fn text(params: &HashMap<String, String>, key: &str) -> Option<String> {
    params
        .get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// An integer parameter within `range`; 400 naming `what` it should be.
fn integer<T: FromStr + PartialOrd>(
    params: &HashMap<String, String>,
    key: &str,
    range: RangeInclusive<T>,
    what: &str,
) -> Result<Option<T>, GatewayError> {
    params
        .get(key)
        .map(|v| {
            v.trim()
                .parse::<T>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| GatewayError::bad_request(format!("{key}: '{v}' is not {what}")))
        })
        .transpose()
}

/// The `limit` parameter, `default` when absent, at most `max`.
fn limit(window: Window, default: usize, max: usize) -> usize {
    window.limit.unwrap_or(default).min(max)
}

/// `GET /ui/api/runs?q&model&harness&project&experiment&errors&since&limit`:
/// `{runs: [run, ...], facets: {models, harnesses, projects, experiments}}`,
/// runs newest first, each as `GET /runs` has it. `q` matches part of the
/// run id; `model`, `harness`, `project` and `experiment` keep runs with a
/// call of that value; `errors=1` keeps runs with a failed call; `since`
/// (epoch seconds) keeps runs active after it. `limit`: 100, at most 1000.
async fn runs(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, GatewayError> {
    let window = Window::from_query(&params)?;
    let errors_only = match params.get("errors").map(|v| v.trim()) {
        None | Some("" | "0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return Err(GatewayError::bad_request(format!(
                "errors: '{other}' is not 1, true, 0 or false"
            )));
        }
    };
    let filter = RunFilter {
        search: text(&params, "q"),
        facets: FACET_COLUMNS.map(|column| text(&params, column)),
        errors_only,
        since: window.since,
        limit: limit(window, 100, 1000),
    };
    answer(&state, move |conn| stats::runs(conn, &filter)).await
}

/// `GET /ui/api/calls?run_id&session_id&after&limit`:
/// `{cursor, truncated, calls: [summary, ...]}`, calls in start order. With
/// `after` (a previous `cursor`): the calls committed since; without: the
/// newest. `limit`: 500, at most 5000.
async fn calls(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, GatewayError> {
    let window = Window::from_query(&params)?;
    let filter = CallFilter {
        run_id: text(&params, "run_id"),
        session_id: text(&params, "session_id"),
        after: integer(
            &params,
            "after",
            0..=i64::MAX,
            "a cursor (a non-negative integer)",
        )?,
        limit: limit(window, 500, 5000).max(1),
    };
    answer(&state, move |conn| stats::calls(conn, &filter)).await
}

/// `GET /ui/api/stats?run_id&since&buckets`: `{calls, sampled, models,
/// per_model, latency_ms, ttft_ms, over_time}` (see [`stats::Stats`]) for
/// the calls of a run, or all calls, started after `since` (epoch seconds).
/// `buckets`: about how many time buckets, 40 by default, 1 to 500.
async fn stats(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, GatewayError> {
    let window = Window::from_query(&params)?;
    let buckets = integer(&params, "buckets", 1..=500, "an integer from 1 to 500")?;
    let filter = StatsFilter {
        run_id: text(&params, "run_id"),
        since: window.since,
        buckets: buckets.unwrap_or(40),
    };
    answer(&state, move |conn| stats::stats(conn, &filter)).await
}
