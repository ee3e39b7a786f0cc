//! The mock's Responses API: `POST /v1/responses`, streamed or not.
//!
//! The answer is one output item: a `message` with one `output_text` part,
//! or a `function_call` when tools are offered. A stream sends the typed
//! events the real API sends, numbered: `response.created`,
//! `response.in_progress`, the item added, its text (or arguments) in
//! `chunks` deltas and done, the item done, and `response.completed`
//! carrying the whole response.

use super::content::{
    ToolCall, first_tool, last_turn, model, prompt_text, split_text, text_field, tokenize,
    tool_call,
};
use super::openai::CREATED;
use super::reply::{Answer, Call, TypedEvents};
use crate::protocol::Protocol;
use axum::body::Bytes;
use serde_json::{Value, json};

/// The mock's answer to `POST /v1/responses`.
pub(crate) struct Responses {
    id: String,
    model: String,
    /// The request's tools, echoed back.
    tools: Value,
    /// The tool call made, when one is.
    tool: Option<ToolCall>,
    /// The text answered, when no tool call is made.
    text: String,
    /// The one output item, complete.
    item: Value,
    usage: Value,
}

impl Answer for Responses {
    const PROTOCOL: Protocol = Protocol::Openai;

    fn of(call: &Call) -> Responses {
        let req = &call.body;
        let digest = &call.digest;
        let last_is_result = last_turn(req, "input")
            .is_some_and(|i| text_field(i, "type") == Some("function_call_output"));
        let tool = tool_call(req, first_tool(req, &["name"]), last_is_result, "call_mock");
        let text = call.answer(0);
        let (item, output_tokens) = match &tool {
            Some(t) => (
                json!({"type": "function_call", "id": format!("fc_mock{digest}"), "call_id": t.id,
                    "name": t.name, "arguments": t.arguments, "status": "completed"}),
                tokenize(&t.arguments).len(),
            ),
            None => (
                json!({"type": "message", "id": format!("msg_mock{digest}"), "status": "completed",
                    "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}),
                tokenize(&text).len(),
            ),
        };
        let input_tokens = tokenize(&prompt_text(req)).len();
        Responses {
            id: format!("resp_mock{digest}"),
            model: model(req),
            tools: req.get("tools").cloned().unwrap_or(json!([])),
            tool,
            text,
            item,
            usage: json!({"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens}),
        }
    }

    /// The whole, completed response.
    fn whole(&self) -> Value {
        self.response("completed", json!([self.item]), self.usage.clone())
    }

    /// The answer as the Responses API's numbered event stream.
    fn frames(&self, chunks: usize) -> Vec<Bytes> {
        let mut events = TypedEvents::numbered();
        let started = self.response("in_progress", json!([]), Value::Null);
        events.push("response.created", json!({"response": started}));
        events.push("response.in_progress", json!({"response": started}));
        match &self.tool {
            Some(tool) => self.function_call_events(&mut events, tool, chunks),
            None => self.message_events(&mut events, chunks),
        }
        events.push(
            "response.output_item.done",
            json!({"output_index": 0, "item": self.item}),
        );
        events.push("response.completed", json!({"response": self.whole()}));
        events.into_frames()
    }
}

impl Responses {
    /// The response object with this status, output and usage.
    fn response(&self, status: &str, output: Value, usage: Value) -> Value {
        json!({"id": self.id, "object": "response", "created_at": CREATED, "status": status,
            "model": self.model, "output": output, "parallel_tool_calls": true, "tool_choice": "auto",
            "tools": self.tools, "usage": usage})
    }

    /// The function call item opening, its arguments in deltas, and done.
    fn function_call_events(&self, events: &mut TypedEvents, tool: &ToolCall, chunks: usize) {
        let item_id = &self.item["id"];
        let mut opening = self.item.clone();
        opening["arguments"] = json!("");
        opening["status"] = json!("in_progress");
        events.push(
            "response.output_item.added",
            json!({"output_index": 0, "item": opening}),
        );
        for piece in split_text(&tool.arguments, chunks) {
            events.push(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": 0, "delta": piece}),
            );
        }
        events.push(
            "response.function_call_arguments.done",
            json!({"item_id": item_id, "output_index": 0, "arguments": tool.arguments}),
        );
    }

    /// The message item opening, its text part in deltas, and done.
    fn message_events(&self, events: &mut TypedEvents, chunks: usize) {
        let item_id = &self.item["id"];
        let opening = json!({"type": "message", "id": item_id, "status": "in_progress",
            "role": "assistant", "content": []});
        events.push(
            "response.output_item.added",
            json!({"output_index": 0, "item": opening}),
        );
        events.push(
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": 0,
            "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        );
        for piece in split_text(&self.text, chunks) {
            events.push(
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece}),
            );
        }
        events.push(
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": self.text}),
        );
        events.push(
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": 0,
            "content_index": 0, "part": self.item["content"][0]}),
        );
    }
}
