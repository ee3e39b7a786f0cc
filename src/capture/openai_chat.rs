//! OpenAI chat completions (`/v1/chat/completions`), streamed or not.
//!
//! A streamed answer arrives as deltas: the message's text, reasoning
//! (`reasoning_content`, or `reasoning` as some servers name it) and refusal
//! in pieces, each tool call as fragments addressed by its `index` (the id
//! and name once, the arguments a few characters at a time), token ids and
//! logprobs per chunk (vLLM), usage in a final chunk when the client asked
//! for `stream_options.include_usage`. The assembler folds those deltas into
//! the same [`Output`] a non-streamed answer gives, for every choice (`n > 1`
//! answers interleave choices), merging tool-call fragments by index.

use crate::capture::fields::{
    self, Message, TokenDeltas, append, array, choices, index, token_ids,
};
use crate::capture::sse::SseEvent;
use crate::capture::{Input, Output};
use crate::record::Choice;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The normalised input of a chat request: its messages and tools.
pub fn request(body: &Map<String, Value>) -> Input {
    let mut tools = array(body.get("tools"));
    if tools.is_empty() {
        // The legacy `functions` parameter describes tools too.
        tools = array(body.get("functions"));
    }
    Input {
        messages: array(body.get("messages")),
        tools,
        embeddings: None,
    }
}

/// The choice's logprobs, in the chat shape.
fn logprobs(c: &Value) -> Option<fields::TokenLogprobs> {
    fields::chat_logprobs(c.get("logprobs"))
}

/// Reads a non-streamed chat completion.
pub fn response_json(body: &Value) -> Output {
    let message = |c: &Value| {
        c.get("message")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    Output {
        prompt_token_ids: token_ids(body.get("prompt_token_ids")),
        choices: fields::whole_choices(body, message, logprobs),
        ..fields::whole_answer(body)
    }
}

/// Folds the events of a streamed chat completion.
pub fn response_events(events: &[SseEvent]) -> Output {
    let mut out = Output::default();
    let mut deltas: BTreeMap<u32, ChoiceDeltas> = BTreeMap::new();
    for event in events {
        let Some(chunk) = fields::stream_chunk(&mut out, event) else {
            continue;
        };
        out.prompt_token_ids
            .extend(token_ids(chunk.get("prompt_token_ids")));
        for (position, c) in choices(&chunk).enumerate() {
            deltas.entry(index(c, position)).or_default().apply(c);
        }
    }
    out.choices = deltas
        .into_iter()
        .map(|(index, d)| d.into_choice(index))
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
    tokens: TokenDeltas,
}

impl ChoiceDeltas {
    fn apply(&mut self, c: &Value) {
        if let Some(delta) = c.get("delta") {
            self.apply_delta(delta);
        }
        self.tokens.apply(c, logprobs(c));
    }

    /// The message's pieces: role, text, reasoning, refusal, tool calls.
    fn apply_delta(&mut self, delta: &Value) {
        let text = |key: &str| delta.get(key).and_then(Value::as_str);
        if let Some(role) = text("role") {
            self.role = Some(role.to_string());
        }
        append(&mut self.content, text("content"));
        append(
            &mut self.reasoning,
            text("reasoning_content").or_else(|| text("reasoning")),
        );
        append(&mut self.refusal, text("refusal"));
        let calls = delta.get("tool_calls").and_then(Value::as_array);
        for (position, tc) in calls.into_iter().flatten().enumerate() {
            let index = tc
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            self.tool_calls.entry(index).or_default().apply(tc);
        }
    }

    fn into_choice(self, index: u32) -> Choice {
        let role = Value::String(self.role.unwrap_or_else(|| "assistant".into()));
        let content = self.content.map_or(Value::Null, Value::String);
        let tool_calls = self.tool_calls.into_values();
        let message = Message::new(role, content)
            .reasoning(self.reasoning)
            .refusal(self.refusal)
            .tool_calls(tool_calls.map(ToolCallDeltas::into_value).collect());
        self.tokens.into_choice(index, message.into_map())
    }
}

/// The fragments of one streamed tool call, merged so far.
#[derive(Default)]
struct ToolCallDeltas {
    id: String,
    kind: String,
    name: String,
    arguments: String,
}

impl ToolCallDeltas {
    fn apply(&mut self, tc: &Value) {
        if let Some(id) = tc
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            self.id = id.to_string();
        }
        if let Some(kind) = tc.get("type").and_then(Value::as_str) {
            self.kind = kind.to_string();
        }
        let Some(function) = tc.get("function") else {
            return;
        };
        if let Some(name) = function.get("name").and_then(Value::as_str)
            && name != self.name
        {
            // Names normally arrive whole, once; a server that splits them
            // sends pieces, which concatenate.
            self.name.push_str(name);
        }
        if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
            self.arguments.push_str(arguments);
        }
    }

    fn into_value(self) -> Value {
        let mut call = fields::tool_call(self.id, self.name, self.arguments);
        if !self.kind.is_empty() {
            call["type"] = json!(self.kind);
        }
        call
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::sse::test_events::{done, ev};

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
        let calls = out.choices[0].message["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["id"], "call_a");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(calls[1]["function"]["name"], "get_time");
        assert_eq!(out.choices[0].finish_reason.as_deref(), Some("tool_calls"));
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
        assert_eq!(out.choices[0].message["content"], "A1A2");
        assert_eq!(out.choices[1].message["content"], "B1B2");
        assert_eq!(out.choices[1].finish_reason.as_deref(), Some("stop"));
        assert!(!out.complete, "no [DONE] was seen");
    }

    #[test]
    fn usage_from_the_final_chunk() {
        let events = vec![
            ev(json!({"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": null})),
            ev(
                json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
            ),
            done(),
        ];
        let u = response_events(&events).usage;
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.total_tokens),
            (Some(5), Some(2), Some(7))
        );
    }

    #[test]
    fn vllm_token_data_accumulates_across_chunks() {
        let events = vec![
            ev(
                json!({"prompt_token_ids": [1, 2, 3], "choices": [{"index": 0, "delta": {"content": "a"}, "token_ids": [10],
                "logprobs": {"content": [{"token": "a", "logprob": -0.5, "top_logprobs": [{"token": "a", "logprob": -0.5}]}]}}]}),
            ),
            ev(
                json!({"choices": [{"index": 0, "delta": {"content": "b"}, "token_ids": [11],
                "logprobs": {"content": [{"token": "b", "logprob": -0.25, "top_logprobs": [{"token": "c", "logprob": -3.0}]}]}}]}),
            ),
        ];
        let out = response_events(&events);
        assert_eq!(out.prompt_token_ids, [1, 2, 3]);
        assert_eq!(out.choices[0].token_ids, [10, 11]);
        assert_eq!(out.choices[0].logprobs, Some(vec![-0.5, -0.25]));
        assert_eq!(
            out.choices[0].top_logprobs.as_ref().unwrap()[1][0].token,
            "c"
        );
    }

    #[test]
    fn non_streamed_response_is_read_whole() {
        let body = json!({"id": "x", "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop", "token_ids": [5, 6]}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2}, "prompt_token_ids": [1, 2, 3]});
        let out = response_json(&body);
        assert_eq!(out.choices[0].message["content"], "hello");
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
        let m = &response_events(&events).choices[0].message;
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
