//! OpenAI completions (`/v1/completions`), streamed or not.
//!
//! The legacy text API, still what RL stacks call on vLLM when they render
//! prompts themselves. The prompt is a string, a list of strings, or token
//! ids; each choice carries `text`, `logprobs` in the completions shape
//! (`tokens`, `token_logprobs`, `top_logprobs` as token → logprob maps) and,
//! from vLLM, `token_ids` and `prompt_token_ids`. Streams send text deltas
//! per choice, ending with `[DONE]`.

use crate::capture::fields::{self, str_field, token_ids};
use crate::capture::openai_chat::{append, index};
use crate::capture::sse::SseEvent;
use crate::capture::{Input, Output};
use crate::record::{Choice, TopLogprob};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The normalised input: each prompt as a user message (a token-id prompt
/// keeps its ids as the content).
pub fn request(body: &Map<String, Value>) -> Input {
    let prompts = match body.get("prompt") {
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            vec![Value::Array(items.clone())]
        }
        Some(Value::Array(items)) => items.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other.clone()],
    };
    Input {
        messages: prompts
            .into_iter()
            .map(|p| json!({"role": "user", "content": p}))
            .collect(),
        tools: Vec::new(),
        embeddings: None,
    }
}

/// The prompt's token ids: vLLM returns them per choice.
fn prompt_ids(body: &Value) -> Vec<u32> {
    let top = token_ids(body.get("prompt_token_ids"));
    if !top.is_empty() {
        return top;
    }
    body.get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .map(|c| token_ids(c.get("prompt_token_ids")))
        .unwrap_or_default()
}

fn message(text: Option<String>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("role".into(), json!("assistant"));
    m.insert(
        "content".into(),
        text.map(Value::String).unwrap_or(Value::Null),
    );
    m
}

/// Reads a non-streamed completion.
pub fn response_json(body: &Value) -> Output {
    let mut out = Output {
        response_id: str_field(body, "id"),
        response_model: str_field(body, "model"),
        usage: body.get("usage").map(fields::usage).unwrap_or_default(),
        prompt_token_ids: prompt_ids(body),
        complete: true,
        ..Output::default()
    };
    let choices = body.get("choices").and_then(Value::as_array);
    for (position, c) in choices.into_iter().flatten().enumerate() {
        let (logprobs, top_logprobs) = fields::completion_logprobs(c.get("logprobs")).unzip();
        out.choices.push(Choice {
            index: index(c, position),
            message: message(str_field(c, "text")),
            finish_reason: str_field(c, "finish_reason"),
            token_ids: token_ids(c.get("token_ids")),
            logprobs,
            top_logprobs: top_logprobs.flatten(),
        });
    }
    out
}

/// Folds the events of a streamed completion.
pub fn response_events(events: &[SseEvent]) -> Output {
    let mut out = Output::default();
    let mut choices: BTreeMap<u32, Deltas> = BTreeMap::new();
    for event in events {
        let Some(chunk) = fields::stream_chunk(&mut out, event) else {
            continue;
        };
        if out.prompt_token_ids.is_empty() {
            out.prompt_token_ids = prompt_ids(&chunk);
        }
        let list = chunk.get("choices").and_then(Value::as_array);
        for (position, c) in list.into_iter().flatten().enumerate() {
            let d = choices.entry(index(c, position)).or_default();
            append(&mut d.text, c.get("text").and_then(Value::as_str));
            if let Some(reason) = c.get("finish_reason").and_then(Value::as_str) {
                d.finish_reason = Some(reason.to_string());
            }
            d.token_ids.extend(token_ids(c.get("token_ids")));
            fields::extend_logprobs(
                &mut d.logprobs,
                &mut d.top_logprobs,
                fields::completion_logprobs(c.get("logprobs")),
            );
        }
    }
    out.choices = choices
        .into_iter()
        .map(|(index, d)| Choice {
            index,
            message: message(d.text),
            finish_reason: d.finish_reason,
            token_ids: d.token_ids,
            logprobs: d.logprobs,
            top_logprobs: d.top_logprobs,
        })
        .collect();
    out
}

#[derive(Default)]
struct Deltas {
    text: Option<String>,
    finish_reason: Option<String>,
    token_ids: Vec<u32>,
    logprobs: Option<Vec<f64>>,
    top_logprobs: Option<Vec<Vec<TopLogprob>>>,
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

    #[test]
    fn prompts_become_user_messages() {
        let one = request(json!({"prompt": "hi"}).as_object().unwrap());
        assert_eq!(one.messages, vec![json!({"role": "user", "content": "hi"})]);
        let ids = request(json!({"prompt": [1, 2, 3]}).as_object().unwrap());
        assert_eq!(ids.messages[0]["content"], json!([1, 2, 3]));
        let batch = request(json!({"prompt": ["a", "b"]}).as_object().unwrap());
        assert_eq!(batch.messages.len(), 2);
    }

    #[test]
    fn vllm_prompt_ids_come_from_the_choices() {
        let out = response_json(
            &json!({"choices": [{"index": 0, "text": "x", "prompt_token_ids": [7, 8],
            "token_ids": [9], "logprobs": {"tokens": ["x"], "token_logprobs": [-0.5], "top_logprobs": [{"x": -0.5}]},
            "finish_reason": "length"}]}),
        );
        assert_eq!(out.prompt_token_ids, [7, 8]);
        assert_eq!(out.choices[0].token_ids, [9]);
        assert_eq!(out.choices[0].logprobs, Some(vec![-0.5]));
        assert_eq!(out.choices[0].message["content"], "x");
    }

    #[test]
    fn streamed_text_and_logprobs_concatenate() {
        let out = response_events(&[
            ev(
                json!({"id": "c", "choices": [{"index": 0, "text": "Hel", "token_ids": [1],
                "logprobs": {"tokens": ["Hel"], "token_logprobs": [-1.0]}}]}),
            ),
            ev(
                json!({"choices": [{"index": 0, "text": "lo", "token_ids": [2], "finish_reason": "stop",
                "logprobs": {"tokens": ["lo"], "token_logprobs": [-2.0]}}]}),
            ),
            SseEvent {
                event: String::new(),
                data: "[DONE]".into(),
            },
        ]);
        assert_eq!(out.choices[0].message["content"], "Hello");
        assert_eq!(out.choices[0].token_ids, [1, 2]);
        assert_eq!(out.choices[0].logprobs, Some(vec![-1.0, -2.0]));
        assert!(out.complete);
    }
}
