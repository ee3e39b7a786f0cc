//! Reading the fields the APIs share, and writing the normalised view they
//! all become.
//!
//! Chat completions, completions, the Responses API and embeddings name their
//! usage, token ids, logprobs and errors alike (with small variations this
//! file absorbs), so every assembler reads them through these functions. And
//! every assembler writes the same normalised shape — an OpenAI chat
//! [`Message`] with OpenAI [`tool_call`]s, choices with their token data
//! ([`TokenDeltas`]) — so that shape is written here, once.

use super::Output;
use super::sse::SseEvent;
use crate::record::{CallError, Choice, ErrorKind, TopLogprob, Usage};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Per token, the most likely alternatives.
pub type Alternatives = Vec<Vec<TopLogprob>>;

/// One chunk's (or answer's) logprobs and, when given, their alternatives.
pub type TokenLogprobs = (Vec<f64>, Option<Alternatives>);

/// The part of folding a chat or completions stream event that both share:
/// `[DONE]` completes the stream, an error chunk is the call's error, and
/// the first id and model and the latest usage are kept. Returns the chunk
/// when its choices are still to be folded.
pub fn stream_chunk(out: &mut Output, event: &SseEvent) -> Option<Value> {
    if event.is_done() {
        out.complete = true;
        return None;
    }
    let chunk = event.json()?;
    if let Some(e) = chunk.get("error") {
        out.error = Some(error(e));
        return None;
    }
    if out.response_id.is_none() {
        out.response_id = str_field(&chunk, "id");
    }
    if out.response_model.is_none() {
        out.response_model = str_field(&chunk, "model");
    }
    if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
        out.usage = usage(u);
    }
    Some(chunk)
}

/// A message in the normalised (OpenAI chat) shape: its role and content,
/// then, when present, reasoning, refusal and tool calls, in that order.
#[derive(Debug, Default)]
pub struct Message {
    role: Value,
    content: Value,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: Vec<Value>,
}

impl Message {
    /// A message from `role` with `content` (text, parts, or `null`).
    pub fn new(role: Value, content: Value) -> Message {
        Message {
            role,
            content,
            ..Message::default()
        }
    }

    /// An assistant message with this text (`null` content without).
    pub fn assistant(text: Option<String>) -> Message {
        Message::new(json!("assistant"), text.map_or(Value::Null, Value::String))
    }

    /// With `reasoning_content`, when there was reasoning.
    pub fn reasoning(self, reasoning: Option<String>) -> Message {
        Message { reasoning, ..self }
    }

    /// With `refusal`, when the model refused.
    pub fn refusal(self, refusal: Option<String>) -> Message {
        Message { refusal, ..self }
    }

    /// With `tool_calls` (left out when there are none).
    pub fn tool_calls(self, tool_calls: Vec<Value>) -> Message {
        Message { tool_calls, ..self }
    }

    /// The message as the record's JSON object.
    pub fn into_map(self) -> Map<String, Value> {
        let mut message = Map::new();
        message.insert("role".into(), self.role);
        message.insert("content".into(), self.content);
        if let Some(reasoning) = self.reasoning {
            message.insert("reasoning_content".into(), Value::String(reasoning));
        }
        if let Some(refusal) = self.refusal {
            message.insert("refusal".into(), Value::String(refusal));
        }
        if !self.tool_calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(self.tool_calls));
        }
        message
    }
}

/// A tool call in the OpenAI shape: `{id, type: "function", function:
/// {name, arguments}}`.
pub fn tool_call(id: impl Serialize, name: impl Serialize, arguments: impl Serialize) -> Value {
    json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    })
}

/// A list of inputs (completions prompts, embeddings inputs): a list of
/// numbers is one tokenised input, a list of anything else is several
/// inputs, and anything else but `null` is one.
pub fn inputs(v: Option<&Value>) -> Vec<Value> {
    match v {
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            vec![Value::Array(items.clone())]
        }
        Some(Value::Array(items)) => items.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other.clone()],
    }
}

/// Each input as a user message.
pub fn user_messages(inputs: Vec<Value>) -> Vec<Value> {
    inputs
        .into_iter()
        .map(|content| json!({"role": "user", "content": content}))
        .collect()
}

/// The choices of an answer or chunk.
pub fn choices(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A choice's `index`, or its position when a server omits it.
pub fn index(choice: &Value, position: usize) -> u32 {
    choice
        .get("index")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(position as u32)
}

/// Appends a streamed piece of text to what arrived before.
pub fn append(slot: &mut Option<String>, piece: Option<&str>) {
    if let Some(piece) = piece {
        slot.get_or_insert_with(String::new).push_str(piece);
    }
}

/// A choice's finish reason and token data (vLLM's `token_ids`, logprobs),
/// merged across the chunks of a stream, or read from a whole answer.
#[derive(Debug, Default)]
pub struct TokenDeltas {
    finish_reason: Option<String>,
    token_ids: Vec<u32>,
    logprobs: Option<Vec<f64>>,
    top_logprobs: Option<Alternatives>,
}

impl TokenDeltas {
    /// The token data of one whole choice.
    pub fn of(choice: &Value, logprobs: Option<TokenLogprobs>) -> TokenDeltas {
        let mut deltas = TokenDeltas::default();
        deltas.apply(choice, logprobs);
        deltas
    }

    /// Merges one chunk of a choice, whose logprobs (read in the API's
    /// shape) are `logprobs`.
    pub fn apply(&mut self, choice: &Value, logprobs: Option<TokenLogprobs>) {
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        self.token_ids.extend(token_ids(choice.get("token_ids")));
        extend_logprobs(&mut self.logprobs, &mut self.top_logprobs, logprobs);
    }

    /// The choice `index` with `message`.
    pub fn into_choice(self, index: u32, message: Map<String, Value>) -> Choice {
        Choice {
            index,
            message,
            finish_reason: self.finish_reason,
            token_ids: self.token_ids,
            logprobs: self.logprobs,
            top_logprobs: self.top_logprobs,
        }
    }
}

/// The `type` of a block, item, part or event.
pub fn kind(v: &Value) -> Option<&str> {
    text(v, "type")
}

/// What every whole OpenAI-style answer says alike: its id, model and
/// usage; a whole answer is complete.
pub fn whole_answer(body: &Value) -> Output {
    Output {
        response_id: str_field(body, "id"),
        response_model: str_field(body, "model"),
        usage: body.get("usage").map(usage).unwrap_or_default(),
        complete: true,
        ..Output::default()
    }
}

/// The choices of a whole answer, each with the message `message` reads
/// from it and its token data (its logprobs read by `logprobs`).
pub fn whole_choices(
    body: &Value,
    message: impl Fn(&Value) -> Map<String, Value>,
    logprobs: impl Fn(&Value) -> Option<TokenLogprobs>,
) -> Vec<Choice> {
    choices(body)
        .enumerate()
        .map(|(position, c)| {
            TokenDeltas::of(c, logprobs(c)).into_choice(index(c, position), message(c))
        })
        .collect()
}

/// A string field of a JSON object, borrowed.
pub fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A string field of a JSON object.
pub fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// An array field of a JSON object, cloned (empty when absent).
pub fn array(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_array).cloned().unwrap_or_default()
}

/// Token ids from a JSON array of integers.
pub fn token_ids(v: Option<&Value>) -> Vec<u32> {
    v.and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|i| i.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Usage in OpenAI's shape: chat and completions name it `prompt_tokens`,
/// the Responses API and embeddings `input_tokens`; both are read.
pub fn usage(u: &Value) -> Usage {
    let count = |keys: &[&str]| keys.iter().find_map(|k| u.get(*k).and_then(Value::as_u64));
    let detail = |outer: &[&str], inner: &str| {
        outer
            .iter()
            .find_map(|k| u.get(*k).and_then(|d| d.get(inner)).and_then(Value::as_u64))
    };
    Usage {
        input_tokens: count(&["prompt_tokens", "input_tokens"]),
        output_tokens: count(&["completion_tokens", "output_tokens"]),
        total_tokens: count(&["total_tokens"]),
        cached_input_tokens: detail(
            &["prompt_tokens_details", "input_tokens_details"],
            "cached_tokens",
        ),
        cache_creation_input_tokens: None,
        reasoning_tokens: detail(
            &["completion_tokens_details", "output_tokens_details"],
            "reasoning_tokens",
        ),
    }
}

/// An error object sent inside a 2xx answer (an SSE error event, a failed
/// response).
pub fn error(error: &Value) -> CallError {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string());
    CallError::new(ErrorKind::UpstreamStreamError, message)
}

/// Per-token logprobs in the chat shape: `{"content": [{"token", "logprob",
/// "top_logprobs": [{"token", "logprob"}]}]}`. Returns the logprobs and the
/// alternatives (`None` when no token had any), or `None` when absent.
pub fn chat_logprobs(v: Option<&Value>) -> Option<TokenLogprobs> {
    let items = v?.get("content")?.as_array()?;
    let logprobs = items
        .iter()
        .filter_map(|t| t.get("logprob").and_then(Value::as_f64))
        .collect();
    let tops: Vec<Vec<TopLogprob>> = items
        .iter()
        .map(|t| {
            t.get("top_logprobs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|alt| {
                    Some(TopLogprob {
                        token: alt.get("token")?.as_str()?.to_string(),
                        logprob: alt.get("logprob")?.as_f64()?,
                    })
                })
                .collect()
        })
        .collect();
    let any_top = tops.iter().any(|t| !t.is_empty());
    Some((logprobs, any_top.then_some(tops)))
}

/// Per-token logprobs in the completions shape: `{"tokens", "token_logprobs",
/// "top_logprobs": [{"token": logprob, ...}]}` (a `null` logprob, as for an
/// echoed first token, is skipped).
pub fn completion_logprobs(v: Option<&Value>) -> Option<TokenLogprobs> {
    let l = v?;
    let logprobs = l
        .get("token_logprobs")?
        .as_array()?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let tops: Option<Vec<Vec<TopLogprob>>> =
        l.get("top_logprobs")
            .and_then(Value::as_array)
            .map(|per_token| {
                per_token
                    .iter()
                    .map(|alts| {
                        alts.as_object()
                            .into_iter()
                            .flatten()
                            .filter_map(|(token, lp)| {
                                Some(TopLogprob {
                                    token: token.clone(),
                                    logprob: lp.as_f64()?,
                                })
                            })
                            .collect()
                    })
                    .collect()
            });
    Some((
        logprobs,
        tops.filter(|t: &Vec<Vec<TopLogprob>>| t.iter().any(|x| !x.is_empty())),
    ))
}

/// Appends one chunk's logprobs to a choice's running lists.
fn extend_logprobs(
    logprobs: &mut Option<Vec<f64>>,
    tops: &mut Option<Alternatives>,
    chunk: Option<TokenLogprobs>,
) {
    let Some((lp, top)) = chunk else { return };
    let before = logprobs.as_ref().map_or(0, Vec::len);
    logprobs.get_or_insert_with(Vec::new).extend(lp);
    if let Some(top) = top {
        // Tokens seen before without alternatives get empty lists, so the
        // alternatives stay aligned with their tokens.
        let list = tops.get_or_insert_with(|| vec![Vec::new(); before]);
        list.resize(before, Vec::new());
        list.extend(top);
    } else if let Some(list) = tops {
        let after = logprobs.as_ref().map_or(0, Vec::len);
        list.resize(after, Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_reads_both_namings_and_details() {
        let chat = usage(
            &json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 3}, "completion_tokens_details": {"reasoning_tokens": 1}}),
        );
        assert_eq!(
            (chat.input_tokens, chat.output_tokens, chat.total_tokens),
            (Some(5), Some(2), Some(7))
        );
        assert_eq!(
            (chat.cached_input_tokens, chat.reasoning_tokens),
            (Some(3), Some(1))
        );
        let responses = usage(&json!({"input_tokens": 9, "output_tokens": 4,
            "input_tokens_details": {"cached_tokens": 8}, "output_tokens_details": {"reasoning_tokens": 2}}));
        assert_eq!(
            (
                responses.input_tokens,
                responses.cached_input_tokens,
                responses.reasoning_tokens
            ),
            (Some(9), Some(8), Some(2))
        );
    }

    #[test]
    fn chat_logprobs_keep_alternatives_only_when_given() {
        let (lp, top) = chat_logprobs(Some(&json!({"content": [
            {"token": "a", "logprob": -0.5, "top_logprobs": []}]})))
        .unwrap();
        assert_eq!((lp, top), (vec![-0.5], None));
        let (_, top) = chat_logprobs(Some(&json!({"content": [
            {"token": "a", "logprob": -0.5, "top_logprobs": [{"token": "b", "logprob": -1.5}]}]})))
        .unwrap();
        assert_eq!(top.unwrap()[0][0].token, "b");
        assert!(chat_logprobs(None).is_none());
    }

    #[test]
    fn completion_logprobs_skip_nulls_and_read_dicts() {
        let (lp, top) = completion_logprobs(Some(
            &json!({"tokens": ["x", "y"], "token_logprobs": [null, -0.25],
            "top_logprobs": [null, {"y": -0.25, "z": -2.0}]}),
        ))
        .unwrap();
        assert_eq!(lp, vec![-0.25]);
        let top = top.unwrap();
        assert_eq!(top[1].len(), 2);
        assert_eq!(top[1][1].token, "z");
    }

    #[test]
    fn alternatives_stay_aligned_across_chunks() {
        let (mut lp, mut top) = (None, None);
        extend_logprobs(&mut lp, &mut top, Some((vec![-1.0], None)));
        let alt = vec![vec![TopLogprob {
            token: "t".into(),
            logprob: -2.0,
        }]];
        extend_logprobs(&mut lp, &mut top, Some((vec![-2.0], Some(alt))));
        assert_eq!(lp.unwrap().len(), 2);
        let top = top.unwrap();
        assert_eq!(top.len(), 2);
        assert!(top[0].is_empty());
        assert_eq!(top[1][0].token, "t");
    }
}
