//! Health and flush.

use super::{ApiState, store_error};
use crate::error::GatewayError;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

/// `GET /health`: the gateway is up; also reports the store queue.
pub async fn health(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "store": {"queue_depth": state.writer.queue_depth()},
    }))
}

/// `POST /admin/flush`: returns once every record of a call that has ended is
/// committed.
pub async fn flush(State(state): State<ApiState>) -> Result<Json<Value>, GatewayError> {
    state.writer.flush().await.map_err(store_error)?;
    Ok(Json(json!({"status": "flushed"})))
}
