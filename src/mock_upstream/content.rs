//! The mock's deterministic content: answers, tokens, token ids, logprobs.
//!
//! Everything here is a pure function of the request, so a test can predict
//! the mock's answer (and send the same request straight to the mock to get
//! the reference bytes). Tokens are words with their leading space; a
//! token's id is a stable hash of its text; logprobs are binary fractions,
//! exact in JSON, f32 and f64 alike.

use serde_json::{Map, Value, json};

/// A word-level token: its text and its (deterministic) id.
#[derive(Debug, Clone)]
pub struct Token {
    /// The token's text, with its leading space.
    pub text: String,
    /// The token's id.
    pub id: u32,
}

/// FNV-1a: a stable hash, so token ids never change between builds.
pub fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Splits text into word tokens, each keeping its leading space.
pub fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c == ' ' && !current.is_empty() && !current.ends_with(' ') {
            tokens.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
        .into_iter()
        .map(|text| Token {
            id: 100 + (fnv(&text) % 50_000) as u32,
            text,
        })
        .collect()
}

/// The request's `model`, or `mock-model` when it names none.
pub fn model(body: &Map<String, Value>) -> String {
    body.get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_string()
}

/// The name of the first tool offered, found at `path` inside it (`name`,
/// or `function.name` for chat completions).
pub fn first_tool<'a>(body: &'a Map<String, Value>, path: &[&str]) -> Option<&'a str> {
    let tool = body.get("tools")?.as_array()?.first()?;
    path.iter().try_fold(tool, |v, key| v.get(key))?.as_str()
}

/// The last turn of the conversation kept under `key` (`messages`, or
/// `input` for the Responses API).
pub fn last_turn<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key)?.as_array()?.last()
}

/// A JSON object's string field `key`.
pub fn text_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The text of a content value: a string, or the text of its parts.
pub fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The prompt of a chat, messages or responses request as one text (for
/// token counting).
pub fn prompt_text(body: &Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for key in ["system", "instructions", "prompt"] {
        if let Some(v) = body.get(key) {
            parts.push(content_text(Some(v)));
        }
    }
    if let Some(Value::String(input)) = body.get("input") {
        parts.push(input.clone());
    }
    let items = body
        .get("messages")
        .or_else(|| body.get("input"))
        .and_then(Value::as_array);
    for m in items.into_iter().flatten() {
        parts.push(content_text(m.get("content")));
    }
    parts.join(" ")
}

/// The last user message's text, shortened: what the mock answers to.
pub fn last_user_text(body: &Map<String, Value>) -> String {
    let text = match body.get("input").or_else(|| body.get("prompt")) {
        Some(Value::String(s)) => s.clone(),
        _ => body
            .get("messages")
            .or_else(|| body.get("input"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .map(|m| content_text(m.get("content")))
            .unwrap_or_default(),
    };
    text.chars().take(60).collect()
}

/// A tool call the mock decided to make.
pub struct ToolCall {
    /// Its id (`call_mock…` or `toolu_mock…`).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Its arguments, as JSON text.
    pub arguments: String,
}

/// The tool call the mock makes: when tools are offered (`first_tool` is the
/// first one's name), `tool_choice` is not `none`, and the conversation's
/// last turn is not already a tool result.
pub fn tool_call(
    body: &Map<String, Value>,
    first_tool: Option<&str>,
    last_is_tool_result: bool,
    id_prefix: &str,
) -> Option<ToolCall> {
    let name = first_tool?;
    if body.get("tool_choice").and_then(Value::as_str) == Some("none") || last_is_tool_result {
        return None;
    }
    let arguments = json!({"query": last_user_text(body)}).to_string();
    Some(ToolCall {
        id: format!("{id_prefix}{:012x}", fnv(&arguments) & 0xffff_ffff_ffff),
        name: name.to_string(),
        arguments,
    })
}

/// The text answer for a request (and choice): `override_text` if the
/// request set one (`x-mock-content`), else an echo of the user's words.
pub fn answer(body: &Map<String, Value>, override_text: Option<&str>, choice: usize) -> String {
    let base = override_text.map(str::to_string).unwrap_or_else(|| {
        format!(
            "This is the tracegate mock answering: {}",
            last_user_text(body)
        )
    });
    if choice == 0 {
        base
    } else {
        format!("{base} (choice {choice})")
    }
}

/// Splits `items` into at most `n` consecutive groups, as evenly as possible.
pub fn split_even<T: Clone>(items: &[T], n: usize) -> Vec<Vec<T>> {
    let n = n.max(1).min(items.len().max(1));
    let size = items.len().div_ceil(n).max(1);
    items.chunks(size).map(<[T]>::to_vec).collect()
}

/// Splits text into at most `n` pieces of roughly equal length.
pub fn split_text(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    split_even(&chars, n)
        .into_iter()
        .map(|c| c.into_iter().collect())
        .collect()
}

/// The logprob of the token at `position`: a binary fraction.
pub fn logprob(position: usize) -> f64 {
    -((position % 7) as f64 + 1.0) * 0.125
}

/// Chat-style logprob entries for tokens, with `top` alternatives each;
/// `offset` is the first token's position in the answer.
pub fn logprob_entries(tokens: &[Token], top: usize, offset: usize) -> Vec<Value> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let lp = logprob(i + offset);
            let tops: Vec<Value> = (0..top)
                .map(|k| {
                    json!({
                        "token": alternative(&t.text, k),
                        "logprob": lp - k as f64 * 0.5,
                        "bytes": alternative(&t.text, k).as_bytes(),
                    })
                })
                .collect();
            json!({"token": t.text, "logprob": lp, "bytes": t.text.as_bytes(), "top_logprobs": tops})
        })
        .collect()
}

/// The `k`-th most likely token at a position (the 0th is the token itself).
pub fn alternative(token: &str, k: usize) -> String {
    if k == 0 {
        token.to_string()
    } else {
        format!("{token}#{k}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_their_spaces_and_ids_are_stable() {
        let t = tokenize("hello big world");
        let texts: Vec<_> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["hello", " big", " world"]);
        assert_eq!(t[0].id, tokenize("hello")[0].id);
    }

    #[test]
    fn even_split_keeps_everything_in_order() {
        let parts = split_text("abcdefghij", 3);
        assert_eq!(parts.concat(), "abcdefghij");
        assert_eq!(parts.len(), 3);
        assert_eq!(split_text("ab", 8).len(), 2);
    }
}
