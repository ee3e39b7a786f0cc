//! The mock's chat completions: `POST /v1/chat/completions`, streamed or
//! not.
//!
//! Each of the `n` choices answers text, or the tool call when tools are
//! offered. Streams are shaped like the real ones: a role chunk (with the
//! prompt's token ids, vLLM style), content split into `chunks` deltas
//! (tool-call arguments too), a finish chunk, an optional usage chunk and
//! `[DONE]`.

use super::content::{
    Token, ToolCall, content_text, first_tool, last_turn, logprob_entries, split_even, split_text,
    text_field, tokenize, tool_call,
};
use super::openai::{Sampled, choice_count, data_frame, ids, text};
use super::reply::{Answer, Call};
use crate::protocol::Protocol;
use axum::body::Bytes;
use serde_json::{Value, json};

/// The mock's answer to `POST /v1/chat/completions`.
pub(crate) struct Chat {
    sampled: Sampled,
    /// The tool call every choice makes, when it makes one.
    tool: Option<ToolCall>,
    /// The `weight_version` the answer carries (`x-mock-weight-version`).
    weight_version: Option<u64>,
    /// Whether choices carry `routing_matrices`.
    routing_matrices: bool,
}

impl Answer for Chat {
    const PROTOCOL: Protocol = Protocol::Openai;

    fn of(call: &Call) -> Chat {
        let req = &call.body;
        let n = choice_count(call);
        let last_is_result =
            last_turn(req, "messages").is_some_and(|m| text_field(m, "role") == Some("tool"));
        let first = first_tool(req, &["function", "name"]);
        let tool = tool_call(req, first, last_is_result, "call_mock");
        // Per choice: the text tokens (empty for a tool call).
        let choices = (0..n)
            .map(|i| match &tool {
                Some(_) => Vec::new(),
                None => tokenize(&call.answer(i)),
            })
            .collect();
        let top = req
            .get("top_logprobs")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(5) as usize;
        let logprobs = call.flag("logprobs").then_some(top);
        let id = format!("chatcmpl-mock{}", call.digest);
        let mut sampled = Sampled::new(call, id, logprobs, choices);
        if call.behaviour.chat_template {
            sampled.prompt = templated_prompt(req);
        }
        Chat {
            sampled,
            tool,
            weight_version: call.behaviour.weight_version,
            routing_matrices: call.behaviour.routing_matrices,
        }
    }

    /// The answer as one `chat.completion`.
    fn whole(&self) -> Value {
        let s = &self.sampled;
        let choices: Vec<Value> = s
            .choices
            .iter()
            .enumerate()
            .map(|(i, tokens)| {
                let message = match &self.tool {
                    Some(t) => json!({"role": "assistant", "content": null, "tool_calls": [
                        {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}]}),
                    None => json!({"role": "assistant", "content": text(tokens)}),
                };
                let mut choice =
                    json!({"index": i, "message": message, "finish_reason": self.finish_reason()});
                self.add_token_data(&mut choice, tokens, 0);
                if self.routing_matrices {
                    let matrices: Vec<String> = tokens.iter().map(|t| format!("rm{}", t.id)).collect();
                    choice["routing_matrices"] = json!(matrices);
                }
                choice
            })
            .collect();
        let mut response = s.envelope("chat.completion", json!(choices));
        if let Some(version) = self.weight_version {
            response["weight_version"] = json!(version);
        }
        response["usage"] = self.usage();
        if s.token_ids {
            response["prompt_token_ids"] = s.prompt_ids();
        }
        response
    }

    /// The answer as `chat.completion.chunk`s, content in `chunks` deltas.
    fn frames(&self, chunks: usize) -> Vec<Bytes> {
        let s = &self.sampled;
        let chunk = |choices: Value| s.envelope("chat.completion.chunk", choices);
        let every_choice = |delta: Value, finish: Value| {
            let all: Vec<Value> = (0..s.choices.len())
                .map(|i| json!({"index": i, "delta": delta, "finish_reason": finish}))
                .collect();
            json!(all)
        };
        // First chunk: the role (and the prompt's token ids, vLLM style).
        let mut first = chunk(every_choice(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ));
        if s.token_ids {
            first["prompt_token_ids"] = s.prompt_ids();
        }
        let mut frames = vec![data_frame(&first)];
        for (i, tokens) in s.choices.iter().enumerate() {
            let deltas = match &self.tool {
                Some(t) => tool_call_deltas(t, i, chunks),
                None => self.content_deltas(i, tokens, chunks),
            };
            frames.extend(deltas.iter().map(|d| data_frame(&chunk(json!([d])))));
        }
        let last = every_choice(json!({}), json!(self.finish_reason()));
        frames.push(data_frame(&chunk(last)));
        s.stream_end(&mut frames, "chat.completion.chunk", self.usage());
        frames
    }
}

/// A chat prompt's tokens as a chat template lays them out: each message's
/// content tokens, end to end (`x-mock-chat-template`), so that a turn's
/// prompt extends the previous turn's prompt and answer.
fn templated_prompt(req: &serde_json::Map<String, Value>) -> Vec<Token> {
    let messages = req.get("messages").and_then(Value::as_array);
    messages
        .into_iter()
        .flatten()
        .flat_map(|m| tokenize(&content_text(m.get("content"))))
        .collect()
}

impl Chat {
    fn finish_reason(&self) -> &'static str {
        if self.tool.is_some() {
            "tool_calls"
        } else {
            "stop"
        }
    }

    fn usage(&self) -> Value {
        let s = &self.sampled;
        let completion_tokens = match &self.tool {
            Some(t) => tokenize(&t.arguments).len() * s.choices.len(),
            None => s.choices.iter().map(Vec::len).sum(),
        };
        s.usage(completion_tokens)
    }

    /// Adds the token data asked for to a choice (or a choice's delta)
    /// carrying `tokens`, the first at `offset` in the answer.
    fn add_token_data(&self, choice: &mut Value, tokens: &[Token], offset: usize) {
        if let Some(top) = self.sampled.logprobs {
            choice["logprobs"] = json!({"content": logprob_entries(tokens, top, offset)});
        }
        if self.sampled.token_ids {
            choice["token_ids"] = json!(ids(tokens));
        }
    }

    /// Choice `i`'s content in `chunks` deltas, with their token data.
    fn content_deltas(&self, i: usize, tokens: &[Token], chunks: usize) -> Vec<Value> {
        let mut offset = 0;
        split_even(tokens, chunks)
            .into_iter()
            .map(|group| {
                let mut c =
                    json!({"index": i, "delta": {"content": text(&group)}, "finish_reason": null});
                self.add_token_data(&mut c, &group, offset);
                offset += group.len();
                c
            })
            .collect()
    }
}

/// Choice `i`'s tool call: its opening, then its arguments in `chunks`
/// deltas.
fn tool_call_deltas(tool: &ToolCall, i: usize, chunks: usize) -> Vec<Value> {
    let opening = json!({"index": i, "delta": {"tool_calls": [{"index": 0, "id": tool.id,
        "type": "function", "function": {"name": tool.name, "arguments": ""}}]}, "finish_reason": null});
    let pieces = split_text(&tool.arguments, chunks)
        .into_iter()
        .map(|piece| {
            json!({"index": i, "delta": {"tool_calls": [{"index": 0,
            "function": {"arguments": piece}}]}, "finish_reason": null})
        });
    std::iter::once(opening).chain(pieces).collect()
}
