//! The mock's embeddings: `POST /v1/embeddings`.
//!
//! Each input gets a deterministic vector seeded by its text, of
//! `dimensions` values (default 8), as floats or, with
//! `encoding_format: base64`, as base64 of little-endian f32s.

use super::MockState;
use super::content::{fnv, model, tokenize};
use super::reply::{bad_request, read_call};
use crate::protocol::Protocol;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(
    State(state): State<MockState>,
    request: Request,
) -> Result<Response, Response> {
    let req = read_call(&state, request, Protocol::Openai).await?.body;
    let Some(inputs) = inputs(&req) else {
        return Err(bad_request(Protocol::Openai, "input is required"));
    };
    let dimensions = req
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(8)
        .clamp(1, 4096) as usize;
    let base64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let embedding = embedding(input, dimensions, base64);
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|i| tokenize(i).len()).sum();
    Ok(
        axum::Json(json!({"object": "list", "data": data, "model": model(&req),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
        .into_response(),
    )
}

/// The texts to embed: a string, a list of them, or one list of token ids
/// (as its JSON text); `None` when `input` is missing or of another type.
fn inputs(req: &Map<String, Value>) -> Option<Vec<String>> {
    match req.get("input")? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            Some(vec![Value::Array(items.clone()).to_string()])
        }
        Value::Array(items) => Some(
            items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

/// The vector of `input`, as floats or base64.
fn embedding(input: &str, dimensions: usize, base64: bool) -> Value {
    let seed = fnv(input);
    let vector: Vec<f32> = (0..dimensions)
        .map(|d| (((seed >> (d % 48)) & 0xff) as f32 - 127.5) / 128.0)
        .collect();
    if base64 {
        let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
        json!(base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        json!(vector)
    }
}
