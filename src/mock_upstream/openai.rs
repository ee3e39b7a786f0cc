//! The mock's OpenAI API: chat completions, completions, the Responses API
//! and embeddings, each streamed (where the API streams) or not.
//!
//! Streams are shaped like the real ones: chat and completions send a role
//! chunk, content split into `chunks` deltas (tool-call arguments too), a
//! finish chunk, an optional usage chunk and `[DONE]`; the Responses API
//! sends its typed events, ending with `response.completed` carrying the
//! whole response.

use super::content::{
    Token, ToolCall, alternative, answer, fnv, logprob, logprob_entries, prompt_text, split_even,
    split_text, tokenize, tool_call,
};
use super::{MockState, bad_request, openai_error, receive, sse_frame, stream_response};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

/// What every OpenAI endpoint of the mock reads first: the request, or the
/// failure to answer instead.
async fn read(
    state: &MockState,
    request: Request,
) -> Result<(Map<String, Value>, String, super::Behaviour), Response> {
    let (_, body, behaviour) = receive(state, request).await;
    if let Some(status) = behaviour.fail_status {
        return Err(openai_error(status));
    }
    let Ok(req) = serde_json::from_slice::<Map<String, Value>>(&body) else {
        return Err(bad_request("the body must be a JSON object"));
    };
    // Ids derive from the body, so the same request gets the same answer.
    let digest = format!("{:016x}", fnv(&String::from_utf8_lossy(&body)));
    Ok((req, digest, behaviour))
}

fn model(req: &Map<String, Value>) -> String {
    req.get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_string()
}

fn flag(req: &Map<String, Value>, key: &str) -> bool {
    req.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn include_usage(req: &Map<String, Value>) -> bool {
    req.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn ids(tokens: &[Token]) -> Vec<u32> {
    tokens.iter().map(|t| t.id).collect()
}

fn text(tokens: &[Token]) -> String {
    tokens.iter().map(|t| t.text.as_str()).collect()
}

/// `n`, the number of choices asked for (1 to 8).
fn choice_count(req: &Map<String, Value>) -> usize {
    req.get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 8) as usize
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(State(state): State<MockState>, request: Request) -> Response {
    let (req, digest, behaviour) = match read(&state, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let model = model(&req);
    let n = choice_count(&req);
    let want_logprobs = flag(&req, "logprobs");
    let top = req
        .get("top_logprobs")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(5) as usize;
    let want_ids = flag(&req, "return_token_ids");
    let prompt = tokenize(&prompt_text(&req));
    let first_tool = req
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| t.first())
        .and_then(|t| t.get("function"))
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str);
    let last_is_result = req
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .is_some_and(|m| m.get("role").and_then(Value::as_str) == Some("tool"));
    let call = tool_call(&req, first_tool, last_is_result, "call_mock");
    let id = format!("chatcmpl-mock{digest}");

    // Per choice: the text tokens (empty for a tool call).
    let choices: Vec<Vec<Token>> = (0..n)
        .map(|i| match &call {
            Some(_) => Vec::new(),
            None => tokenize(&answer(&req, behaviour.content.as_deref(), i)),
        })
        .collect();
    let completion_tokens = match &call {
        Some(c) => tokenize(&c.arguments).len() * n,
        None => choices.iter().map(Vec::len).sum(),
    };
    let usage = usage(prompt.len(), completion_tokens);
    let finish = if call.is_some() { "tool_calls" } else { "stop" };

    if !flag(&req, "stream") {
        let out: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(i, tokens)| {
                let message = match &call {
                    Some(c) => json!({"role": "assistant", "content": null, "tool_calls": [
                        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}]}),
                    None => json!({"role": "assistant", "content": text(tokens)}),
                };
                let mut choice = json!({"index": i, "message": message, "finish_reason": finish});
                if want_logprobs {
                    choice["logprobs"] = json!({"content": logprob_entries(tokens, top, 0)});
                }
                if want_ids {
                    choice["token_ids"] = json!(ids(tokens));
                }
                choice
            })
            .collect();
        let mut response = json!({
            "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": out, "usage": usage,
        });
        if want_ids {
            response["prompt_token_ids"] = json!(ids(&prompt));
        }
        return axum::Json(response).into_response();
    }

    let chunk = |choices: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": model, "choices": choices})
    };
    let mut frames = Vec::new();
    // First chunk: the role (and the prompt's token ids, vLLM style).
    let mut first = chunk(json!((0..n)
        .map(|i| json!({"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}))
        .collect::<Vec<_>>()));
    if want_ids {
        first["prompt_token_ids"] = json!(ids(&prompt));
    }
    frames.push(sse_frame(None, &first.to_string()));
    match &call {
        Some(c) => {
            for i in 0..n {
                let opening = json!([{"index": i, "delta": {"tool_calls": [{"index": 0, "id": c.id,
                    "type": "function", "function": {"name": c.name, "arguments": ""}}]}, "finish_reason": null}]);
                frames.push(sse_frame(None, &chunk(opening).to_string()));
                for piece in split_text(&c.arguments, behaviour.chunks) {
                    let delta = json!([{"index": i, "delta": {"tool_calls": [{"index": 0,
                        "function": {"arguments": piece}}]}, "finish_reason": null}]);
                    frames.push(sse_frame(None, &chunk(delta).to_string()));
                }
            }
        }
        None => {
            for (i, tokens) in choices.iter().enumerate() {
                let mut offset = 0;
                for group in split_even(tokens, behaviour.chunks) {
                    let mut c = json!({"index": i, "delta": {"content": text(&group)}, "finish_reason": null});
                    if want_logprobs {
                        c["logprobs"] = json!({"content": logprob_entries(&group, top, offset)});
                    }
                    if want_ids {
                        c["token_ids"] = json!(ids(&group));
                    }
                    offset += group.len();
                    frames.push(sse_frame(None, &chunk(json!([c])).to_string()));
                }
            }
        }
    }
    let last = json!(
        (0..n)
            .map(|i| json!({"index": i, "delta": {}, "finish_reason": finish}))
            .collect::<Vec<_>>()
    );
    frames.push(sse_frame(None, &chunk(last).to_string()));
    if include_usage(&req) {
        let mut u = chunk(json!([]));
        u["usage"] = usage;
        frames.push(sse_frame(None, &u.to_string()));
    }
    frames.push(sse_frame(None, "[DONE]"));
    stream_response(&state, behaviour, frames)
}

/// Completions-style logprobs for tokens: `tokens`, `token_logprobs`, and
/// `top` alternatives each as a token → logprob map.
fn completion_logprobs(tokens: &[Token], top: usize, offset: usize) -> Value {
    let lps: Vec<f64> = (0..tokens.len()).map(|i| logprob(i + offset)).collect();
    let tops: Vec<Value> = tokens
        .iter()
        .zip(&lps)
        .map(|(t, lp)| {
            let mut alts = Map::new();
            for k in 0..top {
                alts.insert(alternative(&t.text, k), json!(lp - k as f64 * 0.5));
            }
            Value::Object(alts)
        })
        .collect();
    json!({
        "tokens": tokens.iter().map(|t| t.text.clone()).collect::<Vec<_>>(),
        "token_logprobs": lps,
        "top_logprobs": if top > 0 { json!(tops) } else { Value::Null },
        "text_offset": [],
    })
}

/// `POST /v1/completions`.
pub(crate) async fn completions(State(state): State<MockState>, request: Request) -> Response {
    let (req, digest, behaviour) = match read(&state, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let model = model(&req);
    let n = choice_count(&req);
    // `logprobs: k` asks for logprobs with k alternatives (0: none).
    let logprobs = req
        .get("logprobs")
        .and_then(Value::as_u64)
        .map(|k| k.min(5) as usize);
    let want_ids = flag(&req, "return_token_ids");
    let prompt = tokenize(&prompt_text(&req));
    let choices: Vec<Vec<Token>> = (0..n)
        .map(|i| tokenize(&answer(&req, behaviour.content.as_deref(), i)))
        .collect();
    let id = format!("cmpl-mock{digest}");
    let usage = usage(prompt.len(), choices.iter().map(Vec::len).sum());
    let choice = |i: usize, tokens: &[Token], offset: usize, finish: Value| {
        let mut c =
            json!({"index": i, "text": text(tokens), "logprobs": null, "finish_reason": finish});
        if let Some(top) = logprobs {
            c["logprobs"] = completion_logprobs(tokens, top, offset);
        }
        if want_ids {
            c["token_ids"] = json!(ids(tokens));
            if offset == 0 {
                c["prompt_token_ids"] = json!(ids(&prompt));
            }
        }
        c
    };

    if !flag(&req, "stream") {
        let out: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(i, tokens)| choice(i, tokens, 0, json!("stop")))
            .collect();
        return axum::Json(
            json!({"id": id, "object": "text_completion", "created": 1_700_000_000,
            "model": model, "choices": out, "usage": usage}),
        )
        .into_response();
    }
    let chunk = |choices: Vec<Value>| json!({"id": id, "object": "text_completion", "created": 1_700_000_000, "model": model, "choices": choices});
    let mut frames = Vec::new();
    for (i, tokens) in choices.iter().enumerate() {
        let groups = split_even(tokens, behaviour.chunks);
        let mut offset = 0;
        for (g, group) in groups.iter().enumerate() {
            let finish = if g + 1 == groups.len() {
                json!("stop")
            } else {
                Value::Null
            };
            frames.push(sse_frame(
                None,
                &chunk(vec![choice(i, group, offset, finish)]).to_string(),
            ));
            offset += group.len();
        }
    }
    if include_usage(&req) {
        let mut u = chunk(Vec::new());
        u["usage"] = usage;
        frames.push(sse_frame(None, &u.to_string()));
    }
    frames.push(sse_frame(None, "[DONE]"));
    stream_response(&state, behaviour, frames)
}

/// `POST /v1/responses`.
pub(crate) async fn responses(State(state): State<MockState>, request: Request) -> Response {
    let (req, digest, behaviour) = match read(&state, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let model = model(&req);
    let prompt_tokens = tokenize(&prompt_text(&req)).len();
    let first_tool = req
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| t.first())
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str);
    let last_is_result = req
        .get("input")
        .and_then(Value::as_array)
        .and_then(|items| items.last())
        .is_some_and(|i| i.get("type").and_then(Value::as_str) == Some("function_call_output"));
    let call: Option<ToolCall> = tool_call(&req, first_tool, last_is_result, "call_mock");
    let answer_text = answer(&req, behaviour.content.as_deref(), 0);
    let output_tokens = match &call {
        Some(c) => tokenize(&c.arguments).len(),
        None => tokenize(&answer_text).len(),
    };
    let id = format!("resp_mock{digest}");
    let item = match &call {
        Some(c) => {
            json!({"type": "function_call", "id": format!("fc_mock{digest}"), "call_id": c.id,
            "name": c.name, "arguments": c.arguments, "status": "completed"})
        }
        None => json!({"type": "message", "id": format!("msg_mock{digest}"), "status": "completed",
            "role": "assistant", "content": [{"type": "output_text", "text": answer_text, "annotations": []}]}),
    };
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": id, "object": "response", "created_at": 1_700_000_000, "status": status,
            "model": model, "output": output, "parallel_tool_calls": true, "tool_choice": "auto",
            "tools": req.get("tools").cloned().unwrap_or(json!([])), "usage": usage})
    };
    let usage = json!({"input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + output_tokens});
    let complete = response("completed", json!([item.clone()]), usage);
    if !flag(&req, "stream") {
        return axum::Json(complete).into_response();
    }

    let mut sequence = 0;
    let mut frames = Vec::new();
    let mut event = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(sequence);
        sequence += 1;
        frames.push(sse_frame(Some(kind), &data.to_string()));
    };
    let started = response("in_progress", json!([]), Value::Null);
    event("response.created", json!({"response": started}));
    event("response.in_progress", json!({"response": started}));
    let item_id = item["id"].clone();
    match &call {
        Some(c) => {
            let mut opening = item.clone();
            opening["arguments"] = json!("");
            opening["status"] = json!("in_progress");
            event(
                "response.output_item.added",
                json!({"output_index": 0, "item": opening}),
            );
            for piece in split_text(&c.arguments, behaviour.chunks) {
                event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": 0, "delta": piece}),
                );
            }
            event(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": 0, "arguments": c.arguments}),
            );
        }
        None => {
            let opening = json!({"type": "message", "id": item_id, "status": "in_progress",
                "role": "assistant", "content": []});
            event(
                "response.output_item.added",
                json!({"output_index": 0, "item": opening}),
            );
            event(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0,
                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
            for piece in split_text(&answer_text, behaviour.chunks) {
                event(
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece}),
                );
            }
            event(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": answer_text}),
            );
            event(
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": 0,
                "content_index": 0, "part": item["content"][0].clone()}),
            );
        }
    }
    event(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    );
    event("response.completed", json!({"response": complete}));
    stream_response(&state, behaviour, frames)
}

/// `POST /v1/embeddings`: deterministic unit-ish vectors, as floats or
/// base64 (`encoding_format`), of `dimensions` (default 8).
pub(crate) async fn embeddings(State(state): State<MockState>, request: Request) -> Response {
    let (req, _, _) = match read(&state, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            vec![Value::Array(items.clone()).to_string()]
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect(),
        _ => return bad_request("input is required"),
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
            let seed = fnv(input);
            let vector: Vec<f32> = (0..dimensions)
                .map(|d| (((seed >> (d % 48)) & 0xff) as f32 - 127.5) / 128.0)
                .collect();
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|i| tokenize(i).len()).sum();
    axum::Json(json!({"object": "list", "data": data, "model": model(&req),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
    .into_response()
}
