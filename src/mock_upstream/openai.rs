//! What the mock's chat and text completions share: the completion
//! envelope, usage, token lists, and the end of their streams.
//!
//! Both APIs answer `n` choices of sampled tokens, can return vLLM's token
//! ids and logprobs, and stream `data:` chunks ending with an optional usage
//! chunk and `[DONE]`; [`Sampled`] is that common answer, which each
//! endpoint writes in its own shape.

use super::content::{Token, prompt_text, tokenize};
use super::reply::Call;
use super::reply::sse_frame;
use axum::body::Bytes;
use serde_json::{Value, json};

/// The `created` time of every answer: fixed, so answers are predictable.
pub(crate) const CREATED: u64 = 1_700_000_000;

/// A chat or text completion's answer, before it is written.
pub(crate) struct Sampled {
    /// The completion's id.
    pub(crate) id: String,
    /// The model that answers.
    pub(crate) model: String,
    /// The prompt's tokens.
    pub(crate) prompt: Vec<Token>,
    /// Per choice, the answer's tokens.
    pub(crate) choices: Vec<Vec<Token>>,
    /// `Some(k)` when logprobs were asked for, with `k` alternatives each.
    pub(crate) logprobs: Option<usize>,
    /// Whether vLLM's `return_token_ids` was asked for.
    pub(crate) token_ids: bool,
    /// Whether a streamed answer ends with a usage chunk.
    pub(crate) include_usage: bool,
}

impl Sampled {
    /// The answer to `call`, with id `id` and these choices' tokens.
    pub(crate) fn new(
        call: &Call,
        id: String,
        logprobs: Option<usize>,
        choices: Vec<Vec<Token>>,
    ) -> Sampled {
        let req = &call.body;
        Sampled {
            id,
            model: super::content::model(req),
            prompt: tokenize(&prompt_text(req)),
            choices,
            logprobs,
            token_ids: call.flag("return_token_ids"),
            include_usage: req
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }

    /// The envelope of a completion (or chunk) of type `object`.
    pub(crate) fn envelope(&self, object: &str, choices: Value) -> Value {
        json!({"id": self.id, "object": object, "created": CREATED, "model": self.model,
               "choices": choices})
    }

    /// Usage with `completion` output tokens.
    pub(crate) fn usage(&self, completion: usize) -> Value {
        let prompt = self.prompt.len();
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
    }

    /// The prompt's token ids.
    pub(crate) fn prompt_ids(&self) -> Value {
        json!(ids(&self.prompt))
    }

    /// The end of a stream of `object` chunks: the usage chunk when asked
    /// for, then `[DONE]`.
    pub(crate) fn stream_end(&self, frames: &mut Vec<Bytes>, object: &str, usage: Value) {
        if self.include_usage {
            let mut chunk = self.envelope(object, json!([]));
            chunk["usage"] = usage;
            frames.push(data_frame(&chunk));
        }
        frames.push(sse_frame(None, "[DONE]"));
    }
}

/// `n`, the number of choices asked for (1 to 8).
pub(crate) fn choice_count(call: &Call) -> usize {
    call.body
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 8) as usize
}

/// An unnamed SSE frame carrying `data`.
pub(crate) fn data_frame(data: &Value) -> Bytes {
    sse_frame(None, &data.to_string())
}

/// The ids of tokens.
pub(crate) fn ids(tokens: &[Token]) -> Vec<u32> {
    tokens.iter().map(|t| t.id).collect()
}

/// The text of tokens.
pub(crate) fn text(tokens: &[Token]) -> String {
    tokens.iter().map(|t| t.text.as_str()).collect()
}
