//! Anthropic messages (`/v1/messages`), streamed or not.
//!
//! An Anthropic answer is a list of content blocks — `text`, `tool_use`,
//! `thinking` (with its signature), `redacted_thinking` — a `stop_reason`, and
//! usage. A stream opens with `message_start` (id, model, input usage), then
//! per block `content_block_start`, deltas (`text_delta`, `input_json_delta`
//! whose `partial_json` pieces concatenate into the tool's input,
//! `thinking_delta`, `signature_delta`), `content_block_stop`; then
//! `message_delta` (stop reason, output usage) and `message_stop`. Blocks are
//! merged by their `index`; usage is merged across `message_start` and
//! `message_delta`, the later value winning.
//!
//! The normalised view follows the OpenAI chat shape, so every protocol reads
//! alike: the system prompt becomes a system message, `tool_use` blocks
//! become `tool_calls`, `tool_result` blocks become `tool` messages, thinking
//! becomes `reasoning_content`. The blocks themselves are kept exactly, as
//! the message's `content_blocks`. Usage is normalised too: Anthropic's
//! `input_tokens` excludes cached tokens, so `usage.input_tokens` is
//! `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`
//! (as OpenAI counts them), with the cache counts beside it.

use crate::capture::fields::{self, Message, array, kind, str_field, text};
use crate::capture::sse::SseEvent;
use crate::capture::{Input, Output};
use crate::record::{Choice, Usage};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The normalised input: system prompt and messages in the chat shape.
pub fn request(body: &Map<String, Value>) -> Input {
    let mut messages = Vec::new();
    match body.get("system") {
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            messages.push(json!({"role": "system", "content": join_text(blocks)}));
        }
        _ => {}
    }
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        normalise_message(m, &mut messages);
    }
    Input {
        messages,
        tools: array(body.get("tools")),
        embeddings: None,
    }
}

fn join_text(blocks: &[Value]) -> String {
    blocks
        .iter()
        .filter_map(|b| text(b, "text"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One Anthropic message as chat messages (tool results become their own).
fn normalise_message(m: &Value, out: &mut Vec<Value>) {
    let role = m.get("role").cloned().unwrap_or(json!("user"));
    let blocks = match m.get("content") {
        Some(Value::Array(blocks)) => blocks,
        content => {
            out.push(json!({"role": role, "content": content}));
            return;
        }
    };
    let mut texts = Vec::new();
    let mut reasoning = Vec::new();
    let mut tool_calls = Vec::new();
    let mut others = false;
    for block in blocks {
        match kind(block) {
            Some("text") => texts.extend(text(block, "text")),
            Some("thinking") => reasoning.extend(text(block, "thinking")),
            Some("tool_use") => tool_calls.push(tool_call(block)),
            Some("tool_result") => out.push(tool_result(block)),
            _ => others = true,
        }
    }
    if texts.is_empty() && tool_calls.is_empty() && reasoning.is_empty() && !others {
        return; // a message made only of tool results
    }
    let content = if others {
        // Images and other blocks: keep the content as blocks.
        Value::Array(blocks.clone())
    } else if texts.is_empty() {
        Value::Null
    } else {
        Value::String(texts.join("\n"))
    };
    let message = Message::new(role, content)
        .reasoning((!reasoning.is_empty()).then(|| reasoning.concat()))
        .tool_calls(tool_calls);
    out.push(Value::Object(message.into_map()));
}

/// A `tool_result` block as a `tool` message (text parts joined).
fn tool_result(block: &Value) -> Value {
    json!({
        "role": "tool",
        "tool_call_id": block.get("tool_use_id"),
        "content": match block.get("content") {
            Some(Value::Array(parts)) => Value::String(join_text(parts)),
            Some(other) => other.clone(),
            None => Value::Null,
        },
    })
}

/// A `tool_use` block as an OpenAI tool call (arguments as JSON text).
fn tool_call(block: &Value) -> Value {
    let input = block.get("input").cloned().unwrap_or(json!({}));
    let arguments = match input {
        Value::String(s) => s,
        other => other.to_string(),
    };
    fields::tool_call(block.get("id"), block.get("name"), arguments)
}

/// Anthropic usage, normalised (see the module comment).
fn usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let (input, read, created) = (
        n("input_tokens"),
        n("cache_read_input_tokens"),
        n("cache_creation_input_tokens"),
    );
    let input_tokens = match (input, read, created) {
        (None, None, None) => None,
        _ => Some(input.unwrap_or(0) + read.unwrap_or(0) + created.unwrap_or(0)),
    };
    let output_tokens = n("output_tokens");
    Usage {
        input_tokens,
        output_tokens,
        total_tokens: input_tokens.map(|i| i + output_tokens.unwrap_or(0)),
        cached_input_tokens: read,
        cache_creation_input_tokens: created,
        reasoning_tokens: None,
    }
}

/// The raw Anthropic usage fields merged so far (later values win).
fn merge_usage(into: &mut Map<String, Value>, from: Option<&Value>) {
    for (k, v) in from.and_then(Value::as_object).into_iter().flatten() {
        if !v.is_null() {
            into.insert(k.clone(), v.clone());
        }
    }
}

/// The one choice of a message, from its blocks and stop reason.
fn choice(blocks: Vec<Value>, stop_reason: Option<String>) -> Choice {
    let texts: Vec<&str> = blocks
        .iter()
        .filter(|b| kind(b) == Some("text"))
        .filter_map(|b| text(b, "text"))
        .collect();
    // Text blocks, even empty ones, make the content text.
    let content = (!texts.is_empty()).then(|| texts.concat());
    let thinking: String = blocks.iter().filter_map(|b| text(b, "thinking")).collect();
    let tool_calls = blocks
        .iter()
        .filter(|b| kind(b) == Some("tool_use"))
        .map(tool_call)
        .collect();
    let mut message = Message::assistant(content)
        .reasoning((!thinking.is_empty()).then_some(thinking))
        .tool_calls(tool_calls)
        .into_map();
    message.insert("content_blocks".into(), Value::Array(blocks));
    Choice {
        index: 0,
        message,
        finish_reason: stop_reason,
        ..Choice::default()
    }
}

/// Reads a non-streamed message.
pub fn response_json(body: &Value) -> Output {
    Output {
        response_id: str_field(body, "id"),
        response_model: str_field(body, "model"),
        usage: body.get("usage").map(usage).unwrap_or_default(),
        choices: vec![choice(
            array(body.get("content")),
            str_field(body, "stop_reason"),
        )],
        complete: true,
        ..Output::default()
    }
}

/// One content block being streamed.
#[derive(Default)]
struct BlockDeltas {
    block: Map<String, Value>,
    text: String,
    partial_json: String,
    thinking: String,
    signature: String,
}

impl BlockDeltas {
    /// Appends one `content_block_delta`'s piece.
    fn apply(&mut self, delta: &Value) {
        let piece = |key: &str| text(delta, key).unwrap_or("");
        match kind(delta) {
            Some("text_delta") => self.text.push_str(piece("text")),
            Some("input_json_delta") => self.partial_json.push_str(piece("partial_json")),
            Some("thinking_delta") => self.thinking.push_str(piece("thinking")),
            Some("signature_delta") => self.signature.push_str(piece("signature")),
            _ => {}
        }
    }

    /// The block as it started, completed by its deltas.
    fn into_block(self) -> Value {
        let mut block = self.block;
        let started = |block: &Map<String, Value>, key: &str| {
            block
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        match started(&block, "type").as_str() {
            "text" => {
                let text = started(&block, "text") + &self.text;
                block.insert("text".into(), Value::String(text));
            }
            "tool_use" | "server_tool_use" if !self.partial_json.is_empty() => {
                // The pieces concatenate to the input's JSON; if the stream was
                // cut mid-way, keep what arrived as text.
                let input = serde_json::from_str(&self.partial_json)
                    .unwrap_or(Value::String(self.partial_json));
                block.insert("input".into(), input);
            }
            "thinking" => {
                let thinking = started(&block, "thinking") + &self.thinking;
                block.insert("thinking".into(), Value::String(thinking));
                if !self.signature.is_empty() {
                    block.insert("signature".into(), Value::String(self.signature));
                }
            }
            _ => {}
        }
        Value::Object(block)
    }
}

/// A streamed message, folded event by event.
#[derive(Default)]
struct MessageStream {
    out: Output,
    blocks: BTreeMap<u64, BlockDeltas>,
    raw_usage: Map<String, Value>,
    stop_reason: Option<String>,
}

impl MessageStream {
    fn apply(&mut self, kind: &str, data: &Value) {
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => {
                let message = data.get("message").cloned().unwrap_or(Value::Null);
                self.out.response_id = str_field(&message, "id");
                self.out.response_model = str_field(&message, "model");
                merge_usage(&mut self.raw_usage, message.get("usage"));
            }
            "content_block_start" => {
                let block = data
                    .get("content_block")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let started = BlockDeltas {
                    block,
                    ..BlockDeltas::default()
                };
                self.blocks.insert(index, started);
            }
            "content_block_delta" => {
                if let (Some(b), Some(delta)) = (self.blocks.get_mut(&index), data.get("delta")) {
                    b.apply(delta);
                }
            }
            "message_delta" => {
                if let Some(reason) = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(reason.to_string());
                }
                merge_usage(&mut self.raw_usage, data.get("usage"));
            }
            "message_stop" => self.out.complete = true,
            "error" => self.out.error = Some(fields::error(data.get("error").unwrap_or(data))),
            _ => {}
        }
    }

    fn finish(self) -> Output {
        let blocks = self.blocks.into_values().map(BlockDeltas::into_block);
        Output {
            usage: usage(&Value::Object(self.raw_usage)),
            choices: vec![choice(blocks.collect(), self.stop_reason)],
            ..self.out
        }
    }
}

/// Folds the events of a streamed message.
pub fn response_events(events: &[SseEvent]) -> Output {
    let mut stream = MessageStream::default();
    for (kind, data) in events.iter().filter_map(SseEvent::typed_json) {
        stream.apply(&kind, &data);
    }
    stream.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::sse::test_events::typed_stream;

    #[test]
    fn requests_normalise_to_the_chat_shape() {
        let input = request(json!({"system": [{"type": "text", "text": "be kind"}], "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "tu_1", "name": "w", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "sunny"}]}
        ]}).as_object().unwrap());
        assert_eq!(
            input.messages[0],
            json!({"role": "system", "content": "be kind"})
        );
        assert_eq!(
            input.messages[2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            input.messages[3],
            json!({"role": "tool", "tool_call_id": "tu_1", "content": "sunny"})
        );
        assert_eq!(input.messages.len(), 4);
    }

    #[test]
    fn input_json_deltas_merge_per_block() {
        let out = response_events(&typed_stream(json!([
            {"type": "message_start", "message": {"id": "msg_1", "model": "claude",
                "usage": {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 5}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}},
            {"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "tu", "name": "w", "input": {}}},
            {"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "{\"ci"}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}},
            {"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "ty\": \"Paris\"}"}},
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}},
            {"type": "message_stop"},
        ])));
        let m = &out.choices[0].message;
        assert_eq!(m["content"], "Let me check.");
        assert_eq!(m["content_blocks"][1]["input"], json!({"city": "Paris"}));
        assert_eq!(
            m["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(out.choices[0].finish_reason.as_deref(), Some("tool_use"));
        assert_eq!(out.usage.output_tokens, Some(30), "message_delta wins");
        assert_eq!(
            out.usage.input_tokens,
            Some(15),
            "cache reads count as input"
        );
        assert_eq!(out.usage.cached_input_tokens, Some(5));
        assert!(out.complete);
    }

    #[test]
    fn thinking_and_signatures_are_kept() {
        let out = response_events(&typed_stream(json!([
            {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
            {"type": "content_block_start", "index": 1,
                "content_block": {"type": "redacted_thinking", "data": "opaque"}},
        ])));
        let m = &out.choices[0].message;
        assert_eq!(m["reasoning_content"], "hmm");
        assert_eq!(m["content_blocks"][0]["signature"], "sig");
        assert_eq!(
            m["content_blocks"][1],
            json!({"type": "redacted_thinking", "data": "opaque"})
        );
        assert!(!out.complete);
    }

    #[test]
    fn error_events_are_reported() {
        let out = response_events(&typed_stream(json!([
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ])));
        assert_eq!(out.error.unwrap().message, "Overloaded");
    }
}
