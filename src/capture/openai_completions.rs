//! OpenAI completions (`/v1/completions`), streamed or not.
//!
//! The legacy text API, still what RL stacks call on vLLM when they render
//! prompts themselves. The prompt is a string, a list of strings, or token
//! ids; each choice carries `text`, `logprobs` in the completions shape
//! (`tokens`, `token_logprobs`, `top_logprobs` as token → logprob maps) and,
//! from vLLM, `token_ids` and `prompt_token_ids`. Streams send text deltas
//! per choice, ending with `[DONE]`.

use crate::capture::fields::{
    self, Message, TokenDeltas, append, choices, index, inputs, str_field, token_ids, user_messages,
};
use crate::capture::sse::SseEvent;
use crate::capture::{Input, Output};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The normalised input: each prompt as a user message (a token-id prompt
/// keeps its ids as the content).
pub fn request(body: &Map<String, Value>) -> Input {
    Input {
        messages: user_messages(inputs(body.get("prompt"))),
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
    choices(body)
        .next()
        .map(|c| token_ids(c.get("prompt_token_ids")))
        .unwrap_or_default()
}

/// The choice's logprobs, in the completions shape.
fn logprobs(c: &Value) -> Option<fields::TokenLogprobs> {
    fields::completion_logprobs(c.get("logprobs"))
}

/// Reads a non-streamed completion.
pub fn response_json(body: &Value) -> Output {
    let message = |c: &Value| Message::assistant(str_field(c, "text")).into_map();
    Output {
        prompt_token_ids: prompt_ids(body),
        choices: fields::whole_choices(body, message, logprobs),
        ..fields::whole_answer(body)
    }
}

/// Folds the events of a streamed completion.
pub fn response_events(events: &[SseEvent]) -> Output {
    let mut out = Output::default();
    let mut deltas: BTreeMap<u32, (Option<String>, TokenDeltas)> = BTreeMap::new();
    for event in events {
        let Some(chunk) = fields::stream_chunk(&mut out, event) else {
            continue;
        };
        if out.prompt_token_ids.is_empty() {
            out.prompt_token_ids = prompt_ids(&chunk);
        }
        for (position, c) in choices(&chunk).enumerate() {
            let (text, tokens) = deltas.entry(index(c, position)).or_default();
            append(text, c.get("text").and_then(Value::as_str));
            tokens.apply(c, logprobs(c));
        }
    }
    out.choices = deltas
        .into_iter()
        .map(|(index, (text, tokens))| {
            tokens.into_choice(index, Message::assistant(text).into_map())
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::sse::test_events::{done, ev};
    use serde_json::json;

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
            done(),
        ]);
        assert_eq!(out.choices[0].message["content"], "Hello");
        assert_eq!(out.choices[0].token_ids, [1, 2]);
        assert_eq!(out.choices[0].logprobs, Some(vec![-1.0, -2.0]));
        assert!(out.complete);
    }
}
