//! OpenAI chat completions (`/v1/chat/completions`), streamed or not.
//!
//! A streamed answer arrives as deltas: the message's text, reasoning and
//! refusal in pieces, each tool call as fragments addressed by its `index`
//! (the id and name once, the arguments a few characters at a time), token
//! ids and logprobs per chunk (vLLM), usage in a final chunk when the client
//! asked for `stream_options.include_usage`. The assembler folds those deltas
//! into the same [`Output`] a non-streamed answer gives, for every choice
//! (`n > 1` answers interleave choices), merging tool-call fragments by index.

use crate::capture::sse::SseEvent;
use crate::capture::{ChoiceData, Output};
use crate::record::{CallError, Choice, Usage};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Fills the normalised request view from a chat request body.
pub fn request(body: &Map<String, Value>) -> (Vec<Value>, Vec<Value>) {
    let messages = array(body.get("messages"));
    let mut tools = array(body.get("tools"));
    if tools.is_empty() {
        // The legacy `functions` parameter describes tools too.
        tools = array(body.get("functions"));
    }
    (messages, tools)
}

fn array(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_array).cloned().unwrap_or_default()
}

/// Reads a non-streamed chat completion.
pub fn response_json(body: &Value) -> Output {
    let mut out = Output {
        response_id: str_field(body, "id"),
        response_model: str_field(body, "model"),
        usage: body.get("usage").map(usage).unwrap_or_default(),
        prompt_token_ids: token_ids(body.get("prompt_token_ids")),
        complete: true,
        ..Output::default()
    };
    for (position, c) in body
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let index = c
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position as u64) as u32;
        let message = c
            .get("message")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let (logprobs, _) = logprob_content(c.get("logprobs"));
        out.choices.push(ChoiceData {
            choice: Choice {
                index,
                message,
                finish_reason: str_field(c, "finish_reason"),
            },
            token_ids: token_ids(c.get("token_ids")),
            logprobs,
        });
    }
    out
}

/// Folds the events of a streamed chat completion.
pub fn response_events(events: &[SseEvent]) -> Output {
    let mut out = Output::default();
    let mut choices: BTreeMap<u32, ChoiceDeltas> = BTreeMap::new();
    for event in events {
        if event.is_done() {
            out.complete = true;
            continue;
        }
        let Some(chunk) = event.json() else { continue };
        if let Some(error) = chunk.get("error") {
            out.error = Some(stream_error(error));
            continue;
        }
        if out.response_id.is_none() {
            out.response_id = str_field(&chunk, "id");
        }
        if out.response_model.is_none() {
            out.response_model = str_field(&chunk, "model");
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            out.usage = usage(u);
        }
        out.prompt_token_ids
            .extend(token_ids(chunk.get("prompt_token_ids")));
        for (position, c) in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let index = c
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64) as u32;
            choices.entry(index).or_default().apply(c);
        }
    }
    out.choices = choices
        .into_iter()
        .map(|(index, deltas)| deltas.into_choice(index))
        .collect();
    out
}

/// The deltas of one streamed choice, merged so far.
#[derive(Default)]
struct ChoiceDeltas {
    role: Option<String>,
    content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, ToolCallDeltas>,
    finish_reason: Option<String>,
    token_ids: Vec<u32>,
    logprobs: Option<Vec<f64>>,
}

/// The fragments of one streamed tool call, merged so far.
#[derive(Default)]
struct ToolCallDeltas {
    id: String,
    kind: String,
    name: String,
    arguments: String,
}

fn append(slot: &mut Option<String>, piece: Option<&str>) {
    if let Some(piece) = piece {
        slot.get_or_insert_with(String::new).push_str(piece);
    }
}

impl ChoiceDeltas {
    fn apply(&mut self, c: &Value) {
        if let Some(delta) = c.get("delta") {
            if let Some(role) = delta.get("role").and_then(Value::as_str) {
                self.role = Some(role.to_string());
            }
            append(
                &mut self.content,
                delta.get("content").and_then(Value::as_str),
            );
            append(
                &mut self.reasoning,
                delta
                    .get("reasoning_content")
                    .or_else(|| delta.get("reasoning"))
                    .and_then(Value::as_str),
            );
            append(
                &mut self.refusal,
                delta.get("refusal").and_then(Value::as_str),
            );
            for (position, tc) in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let index = tc
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(position as u64);
                let call = self.tool_calls.entry(index).or_default();
                if let Some(id) = tc
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    call.id = id.to_string();
                }
                if let Some(kind) = tc.get("type").and_then(Value::as_str) {
                    call.kind = kind.to_string();
                }
                if let Some(function) = tc.get("function") {
                    if let Some(name) = function.get("name").and_then(Value::as_str)
                        && name != call.name
                    {
                        // Names normally arrive whole, once; a server that
                        // splits them sends pieces, which concatenate.
                        call.name.push_str(name);
                    }
                    if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
                        call.arguments.push_str(arguments);
                    }
                }
            }
        }
        if let Some(reason) = c.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        self.token_ids.extend(token_ids(c.get("token_ids")));
        let (logprobs, present) = logprob_content(c.get("logprobs"));
        if present {
            self.logprobs
                .get_or_insert_with(Vec::new)
                .extend(logprobs.unwrap_or_default());
        }
    }

    fn into_choice(self, index: u32) -> ChoiceData {
        let mut message = Map::new();
        message.insert(
            "role".into(),
            Value::String(self.role.unwrap_or_else(|| "assistant".into())),
        );
        message.insert(
            "content".into(),
            self.content.map(Value::String).unwrap_or(Value::Null),
        );
        if let Some(reasoning) = self.reasoning {
            message.insert("reasoning_content".into(), Value::String(reasoning));
        }
        if let Some(refusal) = self.refusal {
            message.insert("refusal".into(), Value::String(refusal));
        }
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self
                .tool_calls
                .into_values()
                .map(|c| {
                    json!({
                        "id": c.id,
                        "type": if c.kind.is_empty() { "function".to_string() } else { c.kind },
                        "function": {"name": c.name, "arguments": c.arguments},
                    })
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        ChoiceData {
            choice: Choice {
                index,
                message,
                finish_reason: self.finish_reason,
            },
            token_ids: self.token_ids,
            logprobs: self.logprobs,
        }
    }
}

/// The per-token logprobs of a `logprobs` object (`content[].logprob`), and
/// whether the object was present at all.
fn logprob_content(v: Option<&Value>) -> (Option<Vec<f64>>, bool) {
    match v.and_then(|l| l.get("content")).and_then(Value::as_array) {
        Some(items) => (
            Some(
                items
                    .iter()
                    .filter_map(|t| t.get("logprob").and_then(Value::as_f64))
                    .collect(),
            ),
            true,
        ),
        None => (None, false),
    }
}

/// Token ids from a JSON array of integers.
pub(crate) fn token_ids(v: Option<&Value>) -> Vec<u32> {
    v.and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|i| i.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// A string field of a JSON object.
pub(crate) fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Usage in OpenAI's shape (chat and completions name it `prompt_tokens`,
/// the Responses API `input_tokens`; both are read).
pub(crate) fn usage(u: &Value) -> Usage {
    let count = |keys: &[&str]| keys.iter().find_map(|k| u.get(*k).and_then(Value::as_u64));
    let detail = |outer: &[&str], inner: &str| {
        outer
            .iter()
            .find_map(|k| u.get(*k).and_then(|d| d.get(inner)).and_then(Value::as_u64))
    };
    Usage {
        input_tokens: count(&["prompt_tokens", "input_tokens"]),
        output_tokens: count(&["completion_tokens", "output_tokens"]),
        total_tokens: count(&["total_tokens"]),
        cached_input_tokens: detail(
            &["prompt_tokens_details", "input_tokens_details"],
            "cached_tokens",
        ),
        cache_creation_input_tokens: None,
        reasoning_tokens: detail(
            &["completion_tokens_details", "output_tokens_details"],
            "reasoning_tokens",
        ),
    }
}

/// An error object sent inside a stream.
pub(crate) fn stream_error(error: &Value) -> CallError {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string());
    CallError {
        kind: "upstream_stream_error".into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(data: Value) -> SseEvent {
        SseEvent {
            event: String::new(),
            data: data.to_string(),
        }
    }

    fn done() -> SseEvent {
        SseEvent {
            event: String::new(),
            data: "[DONE]".into(),
        }
    }

    #[test]
    fn tool_call_fragments_merge_by_index() {
        let events = vec![
            ev(
                json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
                {"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}}]}),
            ),
            ev(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}}]}),
            ),
            ev(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}}]}),
            ),
            ev(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}, "finish_reason": "tool_calls"}]}),
            ),
            done(),
        ];
        let out = response_events(&events);
        let calls = out.choices[0].choice.message["tool_calls"]
            .as_array()
            .unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["id"], "call_a");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(calls[1]["function"]["name"], "get_time");
        assert_eq!(
            out.choices[0].choice.finish_reason.as_deref(),
            Some("tool_calls")
        );
        assert!(out.complete);
    }

    #[test]
    fn interleaved_choices_stay_apart() {
        let events = vec![
            ev(json!({"choices": [{"index": 1, "delta": {"content": "B1"}}]})),
            ev(json!({"choices": [{"index": 0, "delta": {"content": "A1"}}]})),
            ev(
                json!({"choices": [{"index": 1, "delta": {"content": "B2"}, "finish_reason": "stop"}]}),
            ),
            ev(
                json!({"choices": [{"index": 0, "delta": {"content": "A2"}, "finish_reason": "length"}]}),
            ),
        ];
        let out = response_events(&events);
        assert_eq!(out.choices[0].choice.message["content"], "A1A2");
        assert_eq!(out.choices[1].choice.message["content"], "B1B2");
        assert_eq!(out.choices[1].choice.finish_reason.as_deref(), Some("stop"));
        assert!(!out.complete, "no [DONE] was seen");
    }

    #[test]
    fn usage_from_the_final_chunk() {
        let events = vec![
            ev(json!({"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": null})),
            ev(
                json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 3}, "completion_tokens_details": {"reasoning_tokens": 1}}}),
            ),
            done(),
        ];
        let u = response_events(&events).usage;
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.total_tokens),
            (Some(5), Some(2), Some(7))
        );
        assert_eq!(
            (u.cached_input_tokens, u.reasoning_tokens),
            (Some(3), Some(1))
        );
    }

    #[test]
    fn vllm_token_data_accumulates_across_chunks() {
        let events = vec![
            ev(
                json!({"prompt_token_ids": [1, 2, 3], "choices": [{"index": 0, "delta": {"content": "a"}, "token_ids": [10],
                "logprobs": {"content": [{"token": "a", "logprob": -0.5}]}}]}),
            ),
            ev(
                json!({"choices": [{"index": 0, "delta": {"content": "b"}, "token_ids": [11],
                "logprobs": {"content": [{"token": "b", "logprob": -0.25}]}}]}),
            ),
        ];
        let out = response_events(&events);
        assert_eq!(out.prompt_token_ids, [1, 2, 3]);
        assert_eq!(out.choices[0].token_ids, [10, 11]);
        assert_eq!(out.choices[0].logprobs, Some(vec![-0.5, -0.25]));
    }

    #[test]
    fn non_streamed_response_is_read_whole() {
        let body = json!({"id": "x", "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop", "token_ids": [5, 6]}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2}, "prompt_token_ids": [1, 2, 3]});
        let out = response_json(&body);
        assert_eq!(out.choices[0].choice.message["content"], "hello");
        assert_eq!(out.choices[0].token_ids, [5, 6]);
        assert_eq!(out.usage.input_tokens, Some(3));
    }

    #[test]
    fn reasoning_and_refusal_deltas_are_kept() {
        let events = vec![
            ev(json!({"choices": [{"index": 0, "delta": {"reasoning_content": "think "}}]})),
            ev(json!({"choices": [{"index": 0, "delta": {"reasoning": "more"}}]})),
            ev(json!({"choices": [{"index": 0, "delta": {"refusal": "no"}}]})),
        ];
        let m = &response_events(&events).choices[0].choice.message;
        assert_eq!(m["reasoning_content"], "think more");
        assert_eq!(m["refusal"], "no");
    }

    #[test]
    fn an_error_event_is_reported() {
        let events = vec![ev(
            json!({"error": {"message": "overloaded", "type": "server_error"}}),
        )];
        assert_eq!(
            response_events(&events).error.unwrap().message,
            "overloaded"
        );
    }
}
