//! The mock's Anthropic API: `POST /v1/messages`, streamed or not.
//!
//! The answer is a list of content blocks: a `thinking` block (with a
//! signature) when the request enables thinking, then either a `text` block
//! or, when tools are offered, a `tool_use` block. Streams send the real
//! event sequence: `message_start`, per block `content_block_start`, deltas
//! (`thinking_delta` + `signature_delta`, `text_delta`, `input_json_delta`),
//! `content_block_stop`, then `message_delta` and `message_stop`, with a
//! `ping` after the first block opens.

use super::content::{
    ToolCall, first_tool, last_turn, last_user_text, model, prompt_text, split_text, text_field,
    tokenize, tool_call,
};
use super::reply::{Answer, Call, TypedEvents};
use crate::protocol::Protocol;
use axum::body::Bytes;
use serde_json::{Value, json};

/// One content block: whole, as it opens in a stream, and what its deltas
/// stream.
struct Block {
    whole: Value,
    start: Value,
    /// The delta type, the field it carries the text in, and the text.
    delta: (&'static str, &'static str, String),
    /// The delta sent after the text (a thinking block's signature).
    last: Option<Value>,
    /// The output tokens the block counts.
    tokens: usize,
}

impl Block {
    /// The block's deltas: its text in `chunks` pieces, then the last one.
    fn deltas(&self, chunks: usize) -> Vec<Value> {
        let (kind, field, text) = &self.delta;
        let pieces = split_text(text, chunks)
            .into_iter()
            .map(|piece| json!({"type": kind, field.to_string(): piece}));
        pieces.chain(self.last.clone()).collect()
    }
}

/// The mock's answer to `POST /v1/messages`.
pub(crate) struct Message {
    id: String,
    model: String,
    input_tokens: usize,
    output_tokens: usize,
    stop_reason: &'static str,
    blocks: Vec<Block>,
}

impl Answer for Message {
    const PROTOCOL: Protocol = Protocol::Anthropic;

    fn of(call: &Call) -> Message {
        let req = &call.body;
        let last_is_result = last_turn(req, "messages")
            .and_then(|m| m.get("content"))
            .and_then(Value::as_array)
            .is_some_and(|parts| {
                parts
                    .iter()
                    .any(|p| text_field(p, "type") == Some("tool_result"))
            });
        let tool = tool_call(
            req,
            first_tool(req, &["name"]),
            last_is_result,
            "toolu_mock",
        );
        let thinking = req.get("thinking").and_then(|t| text_field(t, "type")) == Some("enabled");
        let mut blocks = Vec::new();
        if thinking {
            let thought = format!("The user wants: {}", last_user_text(req));
            blocks.push(thinking_block(
                thought,
                format!("mock-signature-{}", call.digest),
            ));
        }
        let (stop_reason, answer) = match tool {
            Some(tool) => ("tool_use", tool_use_block(&tool)),
            None => ("end_turn", text_block(call.answer(0))),
        };
        blocks.push(answer);
        Message {
            id: format!("msg_mock{}", call.digest),
            model: model(req),
            input_tokens: tokenize(&prompt_text(req)).len(),
            output_tokens: blocks.iter().map(|b| b.tokens).sum(),
            stop_reason,
            blocks,
        }
    }

    fn whole(&self) -> Value {
        let usage = json!({"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
        let content: Vec<&Value> = self.blocks.iter().map(|b| &b.whole).collect();
        json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": content, "stop_reason": self.stop_reason, "stop_sequence": null, "usage": usage,
        })
    }

    fn frames(&self, chunks: usize) -> Vec<Bytes> {
        let mut events = TypedEvents::new();
        events.push(
            "message_start",
            json!({"message": {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": 1,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
        );
        for (index, block) in self.blocks.iter().enumerate() {
            events.push(
                "content_block_start",
                json!({"index": index, "content_block": block.start}),
            );
            if index == 0 {
                events.push("ping", json!({}));
            }
            for delta in block.deltas(chunks) {
                events.push(
                    "content_block_delta",
                    json!({"index": index, "delta": delta}),
                );
            }
            events.push("content_block_stop", json!({"index": index}));
        }
        events.push(
            "message_delta",
            json!({"delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
                   "usage": {"output_tokens": self.output_tokens}}),
        );
        events.push("message_stop", json!({}));
        events.into_frames()
    }
}

fn thinking_block(thought: String, signature: String) -> Block {
    Block {
        whole: json!({"type": "thinking", "thinking": thought, "signature": signature}),
        start: json!({"type": "thinking", "thinking": "", "signature": ""}),
        tokens: tokenize(&thought).len(),
        delta: ("thinking_delta", "thinking", thought),
        last: Some(json!({"type": "signature_delta", "signature": signature})),
    }
}

fn tool_use_block(tool: &ToolCall) -> Block {
    let input: Value = serde_json::from_str(&tool.arguments).unwrap_or_default();
    Block {
        whole: json!({"type": "tool_use", "id": tool.id, "name": tool.name, "input": input}),
        start: json!({"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}}),
        tokens: tokenize(&tool.arguments).len(),
        delta: ("input_json_delta", "partial_json", tool.arguments.clone()),
        last: None,
    }
}

fn text_block(text: String) -> Block {
    Block {
        whole: json!({"type": "text", "text": text}),
        start: json!({"type": "text", "text": ""}),
        tokens: tokenize(&text).len(),
        delta: ("text_delta", "text", text),
        last: None,
    }
}
