//! Worker pools and routes at run time: the admin API of
//! rllm-model-gateway (`/admin/workers`, `/health/workers`), so its
//! `GatewayClient` manages tracegate's pools unchanged, and `/admin/routes`.
//!
//! `/admin/routes` shows the routes as configured, with secrets masked:
//! `auth` and env-sourced headers show the variable's name (never its
//! value), literal header values show as `[REDACTED]`.

use super::ApiState;
use crate::config::{HeaderSource, UpstreamAuth, WorkerConfig, parse_upstream};
use crate::error::GatewayError;
use crate::headers::REDACTED_VALUE;
use crate::route::Route;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

/// `GET /admin/workers`: every worker, with health and load.
pub async fn list(State(state): State<ApiState>) -> Json<Value> {
    Json(json!(state.router.workers()))
}

/// `GET /health/workers`: `{workers, healthy, total}`.
pub async fn health(State(state): State<ApiState>) -> Json<Value> {
    let workers = state.router.workers();
    let healthy = workers.iter().filter(|w| w.healthy).count();
    Json(json!({"workers": workers, "healthy": healthy, "total": workers.len()}))
}

/// `POST /admin/workers` with `{url, worker_id?, model_name?, weight?,
/// api_path?, route?}`: adds a worker to the named route, or to the route
/// that serves `model_name`, or to the default route; answers
/// `{worker_id, url, api_path}`.
pub async fn add(State(state): State<ApiState>, body: Bytes) -> Result<Json<Value>, GatewayError> {
    let request: Map<String, Value> = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::bad_request(format!("the body must be a JSON object: {e}")))?;
    let text = |key: &str| request.get(key).and_then(Value::as_str).map(str::to_string);
    let url = text("url").ok_or_else(|| GatewayError::bad_request("url is required"))?;
    let full = match text("api_path") {
        Some(path) => format!(
            "{}/{}",
            url.trim_end_matches('/'),
            path.trim_start_matches('/')
        ),
        None => url,
    };
    let url = parse_upstream(&full).map_err(GatewayError::bad_request)?;
    let weight = match request.get("weight") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .and_then(|w| u32::try_from(w).ok())
            .filter(|w| *w > 0)
            .ok_or_else(|| GatewayError::bad_request("weight must be a positive integer"))?,
    };
    let model_name = text("model_name");
    let route: &Route = match text("route") {
        Some(name) => state
            .router
            .route_named(&name)
            .ok_or_else(|| GatewayError::not_found(format!("route {name} not found")))?,
        None => state
            .router
            .route_for(model_name.as_deref())
            .or_else(|e| match state.router.routes() {
                [only] => Ok(only),
                _ => Err(e),
            })
            .map_err(|e| {
                GatewayError::bad_request(format!("{}; name the route with \"route\"", e.0))
            })?,
    };
    let worker = WorkerConfig {
        id: text("worker_id").unwrap_or_default(),
        url: url.clone(),
        weight,
        model_name,
    };
    let id = state
        .router
        .add_worker(route, worker)
        .map_err(|e| GatewayError::bad_request(e.to_string()))?;
    let mut root = url.clone();
    root.set_path("");
    Ok(Json(json!({
        "worker_id": id,
        "url": root.as_str().trim_end_matches('/'),
        "api_path": url.path(),
    })))
}

/// `DELETE /admin/workers/{id}`: `{removed: id}`, 404 when unknown.
pub async fn remove(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    if state.router.remove_worker(&id) {
        Ok(Json(json!({"removed": id})))
    } else {
        Err(GatewayError::not_found(format!("worker {id} not found")))
    }
}

/// `GET /admin/routes`: the routes, secrets masked.
pub async fn routes(State(state): State<ApiState>) -> Json<Value> {
    let routes: Vec<Value> = state
        .router
        .routes()
        .iter()
        .map(|route| {
            let c = &route.config;
            let headers: Map<String, Value> = c
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
            json!({
                "name": c.label(),
                "model_prefix": c.model_prefix,
                "default": c.is_default,
                "protocol": format!("{:?}", c.protocol).to_ascii_lowercase(),
                "kind": c.kind.as_str(),
                "backend_model": c.backend_model,
                "auth": match &c.auth {
                    UpstreamAuth::Passthrough => "passthrough".to_string(),
                    UpstreamAuth::Env(var) => format!("env:{var}"),
                },
                "headers": headers,
                "allow_caller_headers": c.allow_caller_headers,
                "inject_logprobs": c.inject_logprobs,
                "inject_return_token_ids": c.inject_return_token_ids,
                "strip_vllm_fields": c.strip_vllm_fields,
                "health_checked": route.health_checked(),
                "workers": state.router.workers().into_iter().filter(|w| w.route == c.label()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!(routes))
}
