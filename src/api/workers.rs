//! Worker pools and routes at run time: the admin API of
//! rllm-model-gateway (`/admin/workers`, `/health/workers`), so its
//! `GatewayClient` manages tracegate's pools unchanged, and `/admin/routes`.
//!
//! `/admin/routes` shows the routes as configured, with secrets masked:
//! `auth` and env-sourced headers show the variable's name (never its
//! value), literal header values show as `[REDACTED]`.

use super::{Json, params};
use crate::config::{HeaderSource, WorkerConfig, parse_upstream};
use crate::error::GatewayError;
use crate::headers::REDACTED_VALUE;
use crate::protocol::Protocol;
use crate::route::{Route, WorkerInfo};
use crate::server::AppState;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `GET /admin/workers`: every worker, with health and load.
pub async fn list(State(state): State<AppState>) -> Json<Vec<WorkerInfo>> {
    Json(state.router.workers())
}

/// The body of `GET /health/workers`.
#[derive(Debug, Serialize)]
pub struct WorkerHealth {
    /// Every worker.
    workers: Vec<WorkerInfo>,
    /// How many are healthy.
    healthy: usize,
    /// How many there are.
    total: usize,
}

/// `GET /health/workers`: `{workers, healthy, total}`.
pub async fn health(State(state): State<AppState>) -> Json<WorkerHealth> {
    let workers = state.router.workers();
    Json(WorkerHealth {
        healthy: workers.iter().filter(|w| w.healthy).count(),
        total: workers.len(),
        workers,
    })
}

/// The body of `POST /admin/workers`. Text fields that are not strings
/// count as absent.
#[derive(Debug, Deserialize)]
pub struct AddWorker {
    /// The worker's base URL (required).
    #[serde(default, deserialize_with = "params::lenient_text")]
    url: Option<String>,
    /// A path appended to `url`.
    #[serde(default, deserialize_with = "params::lenient_text")]
    api_path: Option<String>,
    /// Its id; the gateway picks one when absent.
    #[serde(default, deserialize_with = "params::lenient_text")]
    worker_id: Option<String>,
    /// The model it serves.
    #[serde(default, deserialize_with = "params::lenient_text")]
    model_name: Option<String>,
    /// Its weight (1 when absent).
    #[serde(default, deserialize_with = "params::weight")]
    weight: Option<u32>,
    /// The route to join.
    #[serde(default, deserialize_with = "params::lenient_text")]
    route: Option<String>,
}

/// The body of a worker added.
#[derive(Debug, Serialize)]
pub struct AddedWorker {
    /// Its id.
    worker_id: String,
    /// Its root URL.
    url: String,
    /// Its API path.
    api_path: String,
}

/// `POST /admin/workers` with `{url, worker_id?, model_name?, weight?,
/// api_path?, route?}`: adds a worker to the named route, or to the route
/// that serves `model_name`, or to the only route; answers
/// `{worker_id, url, api_path}`.
pub async fn add(
    State(state): State<AppState>,
    Json(request): Json<AddWorker>,
) -> Result<Json<AddedWorker>, GatewayError> {
    let url = request
        .url
        .ok_or_else(|| GatewayError::bad_request("url is required"))?;
    let full = match &request.api_path {
        Some(path) => format!(
            "{}/{}",
            url.trim_end_matches('/'),
            path.trim_start_matches('/')
        ),
        None => url,
    };
    let url = parse_upstream(&full).map_err(|e| GatewayError::bad_request(e.to_string()))?;
    let route = pick_route(
        &state,
        request.route.as_deref(),
        request.model_name.as_deref(),
    )?;
    let worker = WorkerConfig {
        id: request.worker_id.unwrap_or_default(),
        url: url.clone(),
        weight: request.weight.unwrap_or(1),
        model_name: request.model_name,
    };
    let id = state
        .router
        .add_worker(route, worker)
        .map_err(|e| GatewayError::bad_request(e.to_string()))?;
    let mut root = url.clone();
    root.set_path("");
    Ok(Json(AddedWorker {
        worker_id: id,
        url: root.as_str().trim_end_matches('/').to_string(),
        api_path: url.path().to_string(),
    }))
}

/// The route a new worker joins: the one named, else the one serving its
/// model, else the only one.
fn pick_route<'s>(
    state: &'s AppState,
    name: Option<&str>,
    model: Option<&str>,
) -> Result<&'s Route, GatewayError> {
    if let Some(name) = name {
        return state
            .router
            .route_named(name)
            .ok_or_else(|| GatewayError::not_found(format!("route {name} not found")));
    }
    state
        .router
        .route_for(model)
        .or_else(|e| match state.router.routes() {
            [only] => Ok(only),
            _ => Err(e),
        })
        .map_err(|e| GatewayError::bad_request(format!("{}; name the route with \"route\"", e.0)))
}

/// The body of a worker removed.
#[derive(Debug, Serialize)]
pub struct Removed {
    /// Its id.
    removed: String,
}

/// `DELETE /admin/workers/{id}`: `{removed: id}`, 404 when unknown.
pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Removed>, GatewayError> {
    if state.router.remove_worker(&id) {
        Ok(Json(Removed { removed: id }))
    } else {
        Err(GatewayError::not_found(format!("worker {id} not found")))
    }
}

/// A route as `/admin/routes` shows it, secrets masked.
#[derive(Debug, Serialize)]
pub struct RouteView {
    name: String,
    model_prefix: Option<String>,
    default: bool,
    protocol: Protocol,
    kind: &'static str,
    /// Why it is that kind (`auto`: what the start-up probe found).
    kind_reason: String,
    backend_model: Option<String>,
    /// `passthrough` or `env:VAR`.
    auth: String,
    /// Per header, `env:VAR` or `[REDACTED]`.
    headers: Map<String, Value>,
    allow_caller_headers: bool,
    inject_logprobs: bool,
    inject_return_token_ids: bool,
    strip_vllm_fields: bool,
    health_checked: bool,
    workers: Vec<WorkerInfo>,
}

impl RouteView {
    fn of(route: &Route, workers: Vec<WorkerInfo>) -> RouteView {
        let c = &route.config;
        let headers = c
            .headers
            .iter()
            .map(|(name, source)| {
                let shown = match source {
                    HeaderSource::Env(var) => format!("env:{var}"),
                    HeaderSource::Literal(_) => REDACTED_VALUE.to_string(),
                };
                (name.to_string(), Value::String(shown))
            })
            .collect();
        RouteView {
            name: c.label().to_string(),
            model_prefix: c.model_prefix.clone(),
            default: c.is_default,
            protocol: c.protocol,
            kind: c.kind.as_str(),
            kind_reason: c.kind_reason.to_string(),
            backend_model: c.backend_model.clone(),
            auth: c.auth.to_string(),
            headers,
            allow_caller_headers: c.allow_caller_headers,
            inject_logprobs: c.inject_logprobs,
            inject_return_token_ids: c.inject_return_token_ids,
            strip_vllm_fields: c.strip_vllm_fields,
            health_checked: route.health_checked(),
            workers,
        }
    }
}

/// `GET /admin/routes`: the routes, secrets masked.
pub async fn routes(State(state): State<AppState>) -> Json<Vec<RouteView>> {
    let all = state.router.workers();
    let views = state
        .router
        .routes()
        .iter()
        .map(|route| {
            let label = route.config.label();
            let workers = all.iter().filter(|w| w.route == label).cloned().collect();
            RouteView::of(route, workers)
        })
        .collect();
    Json(views)
}
