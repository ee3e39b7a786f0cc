//! Health, metrics and flush.

use super::{ApiState, store_error};
use crate::config::InboundAuth;
use crate::error::GatewayError;
use crate::metrics::Scrape;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header;
use serde_json::{Value, json};

/// `GET /health`: the gateway is up; also reports the store queue and, when
/// span export is on, its backlog (spans waiting, the oldest one's age, the
/// last error), and how to present a token when inbound auth is on.
pub async fn health(State(state): State<ApiState>) -> Json<Value> {
    let export = match &state.export {
        None => json!({"enabled": false}),
        Some(config) => match crate::export::health(config, &state.reader).await {
            Ok(health) => {
                let mut v = json!(health);
                v["enabled"] = json!(true);
                v
            }
            Err(e) => json!({"enabled": true, "error": e}),
        },
    };
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "store": {"queue_depth": state.writer.queue_depth()},
        "export": export,
        "auth": auth_scheme(&state.inbound),
    }))
}

/// How callers present the gateway token: `{enabled, header, scheme}` —
/// `Authorization` with `Bearer`, or the configured header with the bare
/// token.
fn auth_scheme(auth: &InboundAuth) -> Value {
    if !auth.enabled() {
        return json!({"enabled": false});
    }
    match &auth.header {
        Some(name) => json!({"enabled": true, "header": name.as_str(), "scheme": null}),
        None => json!({"enabled": true, "header": "authorization", "scheme": "Bearer"}),
    }
}

/// `POST /admin/flush`: returns once every record of a call that has ended is
/// committed.
pub async fn flush(State(state): State<ApiState>) -> Result<Json<Value>, GatewayError> {
    state.writer.flush().await.map_err(store_error)?;
    Ok(Json(json!({"status": "flushed"})))
}

/// The OpenMetrics content type Prometheus asks for.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`: every metric in the OpenMetrics text format, with the
/// store queue, the export backlog and the workers' health read now.
pub async fn metrics(State(state): State<ApiState>) -> Response {
    let mut scrape = Scrape {
        store_queue_depth: state.writer.queue_depth(),
        workers: state
            .router
            .workers()
            .into_iter()
            .map(|w| (w.route, w.worker_id, w.healthy))
            .collect(),
        ..Scrape::default()
    };
    if let Some(config) = &state.export {
        match crate::export::health(config, &state.reader).await {
            Ok(health) => {
                scrape.export_waiting = health.waiting;
                scrape.export_lag_seconds = health.oldest_waiting_seconds.unwrap_or(0.0);
            }
            Err(e) => tracing::warn!("metrics: cannot read the export backlog: {e}"),
        }
    }
    let body = state.metrics.encode(&scrape);
    ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response()
}
