//! The mock's Anthropic API: `POST /v1/messages`, streamed or not.
//!
//! The answer is a list of content blocks: a `thinking` block (with a
//! signature) when the request enables thinking, then either a `text` block
//! or, when tools are offered, a `tool_use` block. Streams send the real
//! event sequence: `message_start`, per block `content_block_start`, deltas
//! (`thinking_delta` + `signature_delta`, `text_delta`, `input_json_delta`),
//! `content_block_stop`, then `message_delta` and `message_stop`, with a
//! `ping` after the first block opens.

use super::content::{answer, fnv, last_user_text, prompt_text, split_text, tokenize, tool_call};
use super::{MockState, anthropic_error, receive, sse_frame, stream_response};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Map, Value, json};

/// `POST /v1/messages`.
pub(crate) async fn messages(State(state): State<MockState>, request: Request) -> Response {
    let (_, body, behaviour) = receive(&state, request).await;
    if let Some(status) = behaviour.fail_status {
        return anthropic_error(status);
    }
    let Ok(req) = serde_json::from_slice::<Map<String, Value>>(&body) else {
        let body = json!({"type": "error", "error": {"type": "invalid_request_error",
            "message": "the body must be a JSON object"}});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_string();
    let input_tokens = tokenize(&prompt_text(&req)).len();
    let first_tool = req
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| t.first())
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str);
    let last_is_result = req
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|parts| {
            parts
                .iter()
                .any(|p| p.get("type").and_then(Value::as_str) == Some("tool_result"))
        });
    let call = tool_call(&req, first_tool, last_is_result, "toolu_mock");
    let digest = fnv(&String::from_utf8_lossy(&body));
    let id = format!("msg_mock{digest:016x}");
    let thinking = req
        .get("thinking")
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str)
        == Some("enabled");
    let thought = format!("The user wants: {}", last_user_text(&req));
    let signature = format!("mock-signature-{digest:016x}");
    let text = answer(&req, behaviour.content.as_deref(), 0);
    let (stop_reason, mut output_tokens) = match &call {
        Some(c) => ("tool_use", tokenize(&c.arguments).len()),
        None => ("end_turn", tokenize(&text).len()),
    };
    if thinking {
        output_tokens += tokenize(&thought).len();
    }

    // The blocks, whole, and the deltas that stream each.
    let mut blocks: Vec<(Value, Value, Vec<Value>)> = Vec::new();
    if thinking {
        let mut deltas: Vec<Value> = split_text(&thought, behaviour.chunks)
            .into_iter()
            .map(|t| json!({"type": "thinking_delta", "thinking": t}))
            .collect();
        deltas.push(json!({"type": "signature_delta", "signature": signature}));
        blocks.push((
            json!({"type": "thinking", "thinking": thought, "signature": signature}),
            json!({"type": "thinking", "thinking": "", "signature": ""}),
            deltas,
        ));
    }
    match &call {
        Some(c) => {
            let input: Value = serde_json::from_str(&c.arguments).unwrap_or_default();
            let deltas = split_text(&c.arguments, behaviour.chunks)
                .into_iter()
                .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                .collect();
            blocks.push((
                json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                json!({"type": "tool_use", "id": c.id, "name": c.name, "input": {}}),
                deltas,
            ));
        }
        None => {
            let deltas = split_text(&text, behaviour.chunks)
                .into_iter()
                .map(|t| json!({"type": "text_delta", "text": t}))
                .collect();
            blocks.push((
                json!({"type": "text", "text": text}),
                json!({"type": "text", "text": ""}),
                deltas,
            ));
        }
    }
    let usage = json!({"input_tokens": input_tokens, "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});

    if !req.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let content: Vec<Value> = blocks.into_iter().map(|(whole, _, _)| whole).collect();
        return axum::Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": usage,
        }))
        .into_response();
    }

    let mut frames = Vec::new();
    let mut event = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        frames.push(sse_frame(Some(kind), &data.to_string()));
    };
    event(
        "message_start",
        json!({"message": {"id": id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    );
    for (index, (_, start, deltas)) in blocks.into_iter().enumerate() {
        event(
            "content_block_start",
            json!({"index": index, "content_block": start}),
        );
        if index == 0 {
            event("ping", json!({}));
        }
        for delta in deltas {
            event(
                "content_block_delta",
                json!({"index": index, "delta": delta}),
            );
        }
        event("content_block_stop", json!({"index": index}));
    }
    event(
        "message_delta",
        json!({"delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": output_tokens}}),
    );
    event("message_stop", json!({}));
    stream_response(&state, behaviour, frames)
}
