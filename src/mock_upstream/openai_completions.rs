//! The mock's text completions: `POST /v1/completions`, streamed or not.
//!
//! Each of the `n` choices echoes the prompt's words; `logprobs: k` asks
//! for logprobs in the completions shape (`tokens`, `token_logprobs`, and
//! `k` alternatives per token as a token → logprob map). Streams send each
//! choice's text in `chunks` pieces, the last one with its finish reason,
//! then an optional usage chunk and `[DONE]`.

use super::content::{Token, alternative, logprob, split_even, tokenize};
use super::openai::{Sampled, choice_count, data_frame, ids, text};
use super::reply::{Answer, Call};
use crate::protocol::Protocol;
use axum::body::Bytes;
use serde_json::{Map, Value, json};

/// Both the completion and its chunks are of this type.
const OBJECT: &str = "text_completion";

/// The mock's answer to `POST /v1/completions`.
pub(crate) struct Completion(Sampled);

impl Answer for Completion {
    const PROTOCOL: Protocol = Protocol::Openai;

    fn of(call: &Call) -> Completion {
        let choices = (0..choice_count(call))
            .map(|i| tokenize(&call.answer(i)))
            .collect();
        // `logprobs: k` asks for logprobs with k alternatives (0: none).
        let logprobs = call
            .body
            .get("logprobs")
            .and_then(Value::as_u64)
            .map(|k| k.min(5) as usize);
        let id = format!("cmpl-mock{}", call.digest);
        Completion(Sampled::new(call, id, logprobs, choices))
    }

    /// The answer as one `text_completion`.
    fn whole(&self) -> Value {
        let choices: Vec<Value> = self
            .0
            .choices
            .iter()
            .enumerate()
            .map(|(i, tokens)| self.choice(i, tokens, 0, json!("stop")))
            .collect();
        let mut response = self.0.envelope(OBJECT, json!(choices));
        response["usage"] = self.usage();
        response
    }

    /// The answer as chunks, each choice's text in `chunks` pieces, the last
    /// with its finish reason.
    fn frames(&self, chunks: usize) -> Vec<Bytes> {
        let mut frames = Vec::new();
        for (i, tokens) in self.0.choices.iter().enumerate() {
            let groups = split_even(tokens, chunks);
            let mut offset = 0;
            for (g, group) in groups.iter().enumerate() {
                let finish = if g + 1 == groups.len() {
                    json!("stop")
                } else {
                    Value::Null
                };
                let choice = self.choice(i, group, offset, finish);
                frames.push(data_frame(&self.0.envelope(OBJECT, json!([choice]))));
                offset += group.len();
            }
        }
        self.0.stream_end(&mut frames, OBJECT, self.usage());
        frames
    }
}

impl Completion {
    fn usage(&self) -> Value {
        self.0.usage(self.0.choices.iter().map(Vec::len).sum())
    }

    /// Choice `i` (or a chunk of it) carrying `tokens`, the first at
    /// `offset` in the answer.
    fn choice(&self, i: usize, tokens: &[Token], offset: usize, finish: Value) -> Value {
        let mut c =
            json!({"index": i, "text": text(tokens), "logprobs": null, "finish_reason": finish});
        if let Some(top) = self.0.logprobs {
            c["logprobs"] = completion_logprobs(tokens, top, offset);
        }
        if self.0.token_ids {
            c["token_ids"] = json!(ids(tokens));
            if offset == 0 {
                c["prompt_token_ids"] = self.0.prompt_ids();
            }
        }
        c
    }
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
