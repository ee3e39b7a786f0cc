//! The OpenAI Responses API (`/v1/responses`), streamed or not.
//!
//! A response is a list of output items — `message` (with `output_text` and
//! `refusal` parts), `function_call` (a tool call, its arguments streamed),
//! `reasoning` (summary and reasoning text) — plus a status and usage. A
//! stream is typed events: items are added, their text and arguments arrive
//! as deltas, they are done, and `response.completed` (or `.failed`,
//! `.incomplete`) carries the whole final response. When that terminal event
//! arrived it is authoritative; when the stream was cut before it, the items
//! are rebuilt from what arrived.
//!
//! The normalised view is one choice whose message has the output text as
//! `content`, the reasoning as `reasoning_content`, the function calls as
//! OpenAI `tool_calls`, and the raw items as `output_items`.

use crate::capture::fields::{self, Message, append, array, kind, str_field, text};
use crate::capture::sse::SseEvent;
use crate::capture::{Input, Output};
use crate::record::{CallError, Choice};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The normalised input: `instructions` as a system message, then `input`
/// (a string, or items: messages, function calls, function call outputs).
pub fn request(body: &Map<String, Value>) -> Input {
    let mut messages = Vec::new();
    if let Some(instructions) = body.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match body.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => messages.extend(items.iter().map(input_item)),
        _ => {}
    }
    Input {
        messages,
        tools: array(body.get("tools")),
        embeddings: None,
    }
}

/// One input item in the chat message shape.
fn input_item(item: &Value) -> Value {
    match kind(item) {
        Some("function_call") => json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [
                fields::tool_call(item.get("call_id"), item.get("name"), item.get("arguments")),
            ],
        }),
        Some("function_call_output") => json!({
            "role": "tool",
            "tool_call_id": item.get("call_id"),
            "content": item.get("output"),
        }),
        Some("message") | None if item.get("role").is_some() => json!({
            "role": item.get("role"),
            "content": text_of(item.get("content")),
        }),
        // Reasoning items and anything newer: kept as they are.
        _ => item.clone(),
    }
}

/// Content as text when it is a string or text parts; as-is otherwise.
fn text_of(content: Option<&Value>) -> Value {
    match content {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) if parts.iter().all(|p| p.get("text").is_some()) => {
            Value::String(
                parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect(),
            )
        }
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

/// Reads a non-streamed response (or the final response of a stream).
pub fn response_json(body: &Value) -> Output {
    let items = array(body.get("output"));
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("completed");
    let mut out = fields::whole_answer(body);
    if let Some(error) = body.get("error").filter(|e| e.is_object()) {
        out.error = Some(fields::error(error));
    }
    let incomplete_reason = body
        .get("incomplete_details")
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str);
    out.choices.push(choice(items, status, incomplete_reason));
    out
}

/// The one choice of a response: its items folded into a chat message.
fn choice(items: Vec<Value>, status: &str, incomplete_reason: Option<&str>) -> Choice {
    let (mut content, mut refusal, mut reasoning) = (None, None, None);
    let mut tool_calls = Vec::new();
    for item in &items {
        let parts = |key: &str| {
            item.get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        };
        match kind(item) {
            Some("message") => {
                for part in parts("content") {
                    match kind(part) {
                        Some("output_text") => append(&mut content, text(part, "text")),
                        Some("refusal") => append(&mut refusal, text(part, "refusal")),
                        _ => {}
                    }
                }
            }
            Some("function_call") => tool_calls.push(fields::tool_call(
                item.get("call_id").or_else(|| item.get("id")),
                item.get("name"),
                item.get("arguments"),
            )),
            Some("reasoning") => {
                for part in parts("summary").chain(parts("content")) {
                    append(&mut reasoning, text(part, "text"));
                }
            }
            _ => {}
        }
    }
    let finish_reason = finish_reason(status, !tool_calls.is_empty(), incomplete_reason);
    let mut message = Message::assistant(content)
        .reasoning(reasoning)
        .refusal(refusal)
        .tool_calls(tool_calls)
        .into_map();
    message.insert("output_items".into(), Value::Array(items));
    Choice {
        index: 0,
        message,
        finish_reason: Some(finish_reason.to_string()),
        ..Choice::default()
    }
}

/// The chat finish reason of a response with this status.
fn finish_reason<'a>(status: &'a str, called_tools: bool, incomplete: Option<&'a str>) -> &'a str {
    match status {
        "completed" if called_tools => "tool_calls",
        "completed" => "stop",
        "incomplete" => incomplete.unwrap_or("incomplete"),
        other => other,
    }
}

/// One output item being streamed.
#[derive(Default)]
struct ItemDeltas {
    /// The item as last announced (`output_item.added`, then `.done`).
    item: Value,
    done: bool,
    text: String,
    refusal: String,
    arguments: String,
    reasoning: String,
}

impl ItemDeltas {
    /// The item, completed from its deltas if it never reached `.done`.
    fn into_item(self) -> Value {
        if self.done {
            return self.item;
        }
        let Value::Object(mut item) = self.item else {
            return self.item; // not an item object: nothing to complete
        };
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                let mut parts = Vec::new();
                if !self.text.is_empty() {
                    parts.push(json!({"type": "output_text", "text": self.text}));
                }
                if !self.refusal.is_empty() {
                    parts.push(json!({"type": "refusal", "refusal": self.refusal}));
                }
                item.insert("content".into(), Value::Array(parts));
            }
            Some("function_call") => {
                item.insert("arguments".into(), Value::String(self.arguments));
            }
            Some("reasoning") if !self.reasoning.is_empty() => {
                let summary = json!([{"type": "summary_text", "text": self.reasoning}]);
                item.insert("summary".into(), summary);
            }
            _ => {}
        }
        Value::Object(item)
    }
}

/// A streamed response, folded event by event until its terminal event.
#[derive(Default)]
struct ResponseStream {
    items: BTreeMap<u64, ItemDeltas>,
    /// The response as `response.created` gave it.
    header: Value,
    error: Option<CallError>,
}

impl ResponseStream {
    /// Folds one event; the output when it is the terminal one.
    fn apply(&mut self, kind: &str, data: &Value) -> Option<Output> {
        let at = data
            .get("output_index")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let delta = data.get("delta").and_then(Value::as_str).unwrap_or("");
        match kind {
            "response.completed" | "response.failed" | "response.incomplete" => {
                let mut out = response_json(data.get("response")?);
                out.error = out.error.or(self.error.take());
                return Some(out);
            }
            "response.created" | "response.in_progress" => {
                self.header = data.get("response").cloned().unwrap_or(Value::Null);
            }
            "response.output_item.added" | "response.output_item.done" => {
                let entry = self.item(at);
                entry.item = data.get("item").cloned().unwrap_or(Value::Null);
                entry.done = kind.ends_with(".done");
            }
            "response.output_text.delta" => self.item(at).text.push_str(delta),
            "response.refusal.delta" => self.item(at).refusal.push_str(delta),
            "response.function_call_arguments.delta" => self.item(at).arguments.push_str(delta),
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                self.item(at).reasoning.push_str(delta)
            }
            "error" => self.error = Some(fields::error(data)),
            _ => {}
        }
        None
    }

    fn item(&mut self, at: u64) -> &mut ItemDeltas {
        self.items.entry(at).or_default()
    }

    /// The stream ended without its terminal event: the response rebuilt
    /// from the pieces.
    fn cut_short(self) -> Output {
        let items: Vec<Value> = self
            .items
            .into_values()
            .map(ItemDeltas::into_item)
            .collect();
        let status = if self.error.is_some() {
            "failed"
        } else {
            "incomplete"
        };
        Output {
            response_id: str_field(&self.header, "id"),
            response_model: str_field(&self.header, "model"),
            choices: vec![choice(items, status, None)],
            error: self.error,
            complete: false,
            ..Output::default()
        }
    }
}

/// Folds the events of a streamed response.
pub fn response_events(events: &[SseEvent]) -> Output {
    let mut stream = ResponseStream::default();
    for (kind, data) in events.iter().filter_map(SseEvent::typed_json) {
        if let Some(out) = stream.apply(&kind, &data) {
            return out;
        }
    }
    stream.cut_short()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::sse::test_events::typed_stream;

    #[test]
    fn input_items_become_chat_messages() {
        let input = request(
            json!({"instructions": "be terse", "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"}
            ]})
            .as_object()
            .unwrap(),
        );
        assert_eq!(
            input.messages[0],
            json!({"role": "system", "content": "be terse"})
        );
        assert_eq!(
            input.messages[1],
            json!({"role": "user", "content": "weather?"})
        );
        assert_eq!(input.messages[2]["tool_calls"][0]["function"]["name"], "w");
        assert_eq!(
            input.messages[3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"})
        );
    }

    #[test]
    fn a_completed_response_is_read_whole() {
        let out = response_json(&json!({"id": "resp_1", "model": "m", "status": "completed",
            "output": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thinking"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]},
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"a\":1}"}],
            "usage": {"input_tokens": 5, "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 2}}}));
        let m = &out.choices[0].message;
        assert_eq!(m["content"], "Hi");
        assert_eq!(m["reasoning_content"], "thinking");
        assert_eq!(m["tool_calls"][0]["id"], "call_1");
        assert_eq!(out.choices[0].finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(out.usage.reasoning_tokens, Some(2));
    }

    #[test]
    fn the_terminal_event_is_authoritative() {
        let out = response_events(&typed_stream(json!([
            {"type": "response.output_text.delta", "output_index": 0, "delta": "partial"},
            {"type": "response.completed", "response": {"id": "r", "status": "completed",
                "output": [{"type": "message", "content": [{"type": "output_text", "text": "whole"}]}]}},
        ])));
        assert_eq!(out.choices[0].message["content"], "whole");
        assert!(out.complete);
    }

    #[test]
    fn a_cut_stream_is_rebuilt_from_its_deltas() {
        let out = response_events(&typed_stream(json!([
            {"type": "response.created", "response": {"id": "r9", "model": "m"}},
            {"type": "response.output_item.added", "output_index": 0,
                "item": {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""}},
            {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": "{\"x\""},
            {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": ":2}"},
            {"type": "response.output_item.added", "output_index": 1,
                "item": {"type": "message", "content": []}},
            {"type": "response.output_text.delta", "output_index": 1, "delta": "so "},
            {"type": "response.output_text.delta", "output_index": 1, "delta": "far"},
        ])));
        assert!(!out.complete);
        assert_eq!(out.response_id.as_deref(), Some("r9"));
        let m = &out.choices[0].message;
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"x\":2}");
        assert_eq!(m["content"], "so far");
    }

    #[test]
    fn error_events_are_reported() {
        let out = response_events(&typed_stream(json!([
            {"type": "error", "code": "server_error", "message": "boom"},
        ])));
        assert_eq!(out.error.unwrap().message, "boom");
    }
}
