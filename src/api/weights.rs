//! `GET`/`POST /admin/weight_version`: the policy version calls are stamped
//! with (`forward::weights`), as rLLM's trainer sets it after a weight sync.
//!
//! rLLM's body is `{"weight_version": <int>}`; a missing (or `null`)
//! version is a 400, and so is one that is not an integer (a JSON integer,
//! or a string holding one). tracegate adds an optional `route` or `run_id`
//! beside it to scope the version; with a scope, `null` clears that scope's
//! version, so its calls fall back to the gateway's.

use super::{Json, params};
use crate::error::GatewayError;
use crate::forward::weights::Scope;
use crate::server::AppState;
use axum::body::Bytes;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The scope of a request: `?route=` / `?run_id=`, or the same body fields.
#[derive(Debug, Default, Deserialize)]
pub struct ScopeQuery {
    /// A route's version.
    #[serde(default)]
    route: Option<String>,
    /// A run's version.
    #[serde(default)]
    run_id: Option<String>,
}

/// The answer of both endpoints.
#[derive(Debug, Serialize)]
pub struct Version {
    /// The version (`null` when none is set).
    weight_version: Option<i64>,
    /// The route it is scoped to, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<String>,
    /// The run it is scoped to, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<String>,
}

/// `GET /admin/weight_version[?route=|?run_id=]`: the version a call (of
/// that route or run) would be stamped with now.
pub async fn get(
    State(state): State<AppState>,
    super::Query(scope): super::Query<ScopeQuery>,
) -> Json<Version> {
    let weights = &state.forwarder.weights;
    Json(Version {
        weight_version: weights.current(scope.route.as_deref(), scope.run_id.as_deref()),
        route: scope.route,
        run_id: scope.run_id,
    })
}

/// `POST /admin/weight_version` with `{weight_version, route?, run_id?}`:
/// sets the version calls dispatched from now on are stamped with.
pub async fn set(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Version>, GatewayError> {
    // Like rLLM, a body that is not a JSON object reads as an empty one.
    let body: Map<String, Value> = serde_json::from_slice(&body).unwrap_or_default();
    let text = |key: &str| -> Result<Option<String>, GatewayError> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
            Some(other) => Err(GatewayError::bad_request(format!(
                "{key} must be a non-empty string, not {other}"
            ))),
        }
    };
    let (route, run_id) = (text("route")?, text("run_id")?);
    let scope = match (&route, &run_id) {
        (Some(_), Some(_)) => {
            return Err(GatewayError::bad_request("give route or run_id, not both"));
        }
        (Some(name), None) => {
            known_route(&state, name)?;
            Scope::Route(name.clone())
        }
        (None, Some(run)) => Scope::Run(run.clone()),
        (None, None) => Scope::Gateway,
    };
    let version = match body.get("weight_version") {
        None | Some(Value::Null) if scope == Scope::Gateway => {
            return Err(GatewayError::bad_request("weight_version is required"));
        }
        None | Some(Value::Null) => None,
        Some(value) => Some(params::integer(value).ok_or_else(|| {
            GatewayError::bad_request(format!("invalid weight_version: {value}"))
        })?),
    };
    state.forwarder.weights.set(scope.clone(), version);
    // The other replicas of a shared store follow it (`weights::follow`);
    // this one has it already, so a store that cannot take it now only
    // delays the others.
    if let Err(e) = state
        .writer
        .share_setting(scope.key(), version.into())
        .await
    {
        tracing::warn!("weight version {version:?} not shared with other replicas: {e}");
    }
    Ok(Json(Version {
        weight_version: version,
        route,
        run_id,
    }))
}

/// Refuses a route the gateway does not have.
fn known_route(state: &AppState, name: &str) -> Result<(), GatewayError> {
    let known = state
        .router
        .routes()
        .iter()
        .any(|r| r.config.name.as_deref() == Some(name));
    if known {
        Ok(())
    } else {
        Err(GatewayError::bad_request(format!("no route named {name}")))
    }
}
