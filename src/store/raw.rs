//! The request and the response as they crossed the gateway — headers and
//! raw body — one blob each, compressed against the call's own content.
//!
//! A raw request is mostly the call's messages and tools; a raw vLLM
//! response is mostly its token ids and its answer. Those are stored once
//! already (the message nodes, the tool list, the token runs), so the raw
//! bodies are zstd-compressed with a dictionary made of exactly that
//! content, which zstd then references instead of storing again: what a
//! blob costs is what is new in it (ids, parameters, the JSON around the
//! content). The dictionary is rebuilt at read time from the same stored
//! bytes, so a blob never depends on another call: reading any call
//! decompresses one frame, however long its session.
//!
//! A blob is one layout byte ([`LAYOUT`]), then a zstd frame of the headers
//! as JSON, and — when the raw body was kept — a newline and the body as
//! JSON. The dictionary of layout 1 is [`PRIMER`] followed by, for a
//! request, the tool list's JSON and the messages as one JSON array; for a
//! response, the prompt's and each choice's token ids as JSON arrays and
//! the answer's JSON. Changing any of that is a new layout number.

use crate::store::codec::{self, CodecError};
use serde_json::{Map, Value};
use std::fmt::Write;

/// The layout of the blobs this binary writes.
pub(crate) const LAYOUT: u8 = 1;

/// Text every dictionary starts with: the shapes of common requests and
/// responses (OpenAI, vLLM, Anthropic), so that a first call already
/// compresses well. Part of layout 1: it must never change.
const PRIMER: &str = concat!(
    r#"{"host":"127.0.0.1:9090","user-agent":"OpenAI/Python 1.0.0","accept":"application/json","#,
    r#""accept-encoding":"gzip, deflate","content-type":"application/json","content-length":"1","#,
    r#""x-stainless-lang":"python","x-stainless-package-version":"1.0.0","x-stainless-os":"Linux","#,
    r#""x-stainless-arch":"x64","x-stainless-runtime":"CPython","x-stainless-runtime-version":"3.12.0","#,
    r#""x-stainless-async":"false","x-stainless-retry-count":"0","x-stainless-read-timeout":"600","#,
    r#""anthropic-version":"2023-06-01","x-api-key":"[REDACTED]","authorization":"[REDACTED]","#,
    r#""x-rllm-session-id":"","x-rllm-run-id":"","traceparent":"00-"}"#,
    "\n",
    r#"{"model":"","messages":[{"role":"system","content":""},{"role":"user","content":""},"#,
    r#"{"role":"assistant","content":null,"tool_calls":[{"id":"call_","type":"function","#,
    r#""function":{"name":"","arguments":"{\""}}]},{"role":"tool","tool_call_id":"call_","content":""}],"#,
    r#""tools":[{"type":"function","function":{"name":"","description":"","parameters":{"type":"object","#,
    r#""properties":{"":{"type":"string","description":""}},"required":[""]}}}],"max_tokens":1,"#,
    r#""temperature":1.0,"top_p":1.0,"stream":true,"stream_options":{"include_usage":true},"#,
    r#""logprobs":true,"top_logprobs":0,"return_token_ids":true}"#,
    "\n",
    r#"{"content-type":"application/json","content-length":"1","date":"Mon, 01 Jan 2026 00:00:00 GMT","#,
    r#""server":"uvicorn","x-request-id":""}"#,
    "\n",
    r#"{"id":"chatcmpl-","object":"chat.completion","created":1,"model":"","choices":[{"index":0,"#,
    r#""message":{"role":"assistant","content":"","refusal":null,"reasoning_content":null,"#,
    r#""tool_calls":[]},"logprobs":{"content":[{"token":"","logprob":-0.1,"bytes":[1],"#,
    r#""top_logprobs":[]}]},"finish_reason":"stop","stop_reason":null,"token_ids":[1]}],"#,
    r#""usage":{"prompt_tokens":1,"total_tokens":1,"completion_tokens":1,"prompt_tokens_details":null},"#,
    r#""prompt_logprobs":null,"prompt_token_ids":[1],"kv_transfer_params":null}"#,
    "\n",
    r#"{"content_type":"text/event-stream","encoding":"utf8","body":"data: {\"id\":\"chatcmpl-\","#,
    r#"\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"\",\"choices\":[{\"index\":0,"#,
    r#"\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],"#,
    r#"\"prompt_token_ids\":[1]}\n\ndata: {\"id\":\"chatcmpl-\",\"object\":\"chat.completion.chunk\","#,
    r#"\"created\":1,\"model\":\"\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},"#,
    r#"\"logprobs\":{\"content\":[{\"token\":\"\",\"logprob\":-0.1,\"bytes\":[1],\"top_logprobs\":[]}]},"#,
    r#"\"finish_reason\":null,\"token_ids\":[1]}]}\n\ndata: [DONE]\n\n"}"#,
    "\n",
    r#"{"id":"msg_","type":"message","role":"assistant","model":"","content":[{"type":"text","text":""}],"#,
    r#""stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}"#,
    "\n",
    r#"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_\"}}\n\n"#,
    r#"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"#,
    r#"\"delta\":{\"type\":\"text_delta\",\"text\":\"\"}}\n\nevent: message_stop\n"#,
    r#"data: {\"type\":\"message_stop\"}\n\n"#,
);

/// What one blob is compressed against.
pub(crate) struct Dictionary(Vec<u8>);

impl Dictionary {
    /// A request's: its tool list and its messages, as stored.
    pub(crate) fn request<S: AsRef<str>>(tools: Option<&str>, messages: &[S]) -> Dictionary {
        let size: usize = messages.iter().map(|m| m.as_ref().len() + 1).sum();
        let mut bytes = Vec::with_capacity(PRIMER.len() + size + tools.map_or(0, str::len) + 2);
        bytes.extend_from_slice(PRIMER.as_bytes());
        bytes.extend_from_slice(tools.unwrap_or("").as_bytes());
        bytes.push(b'[');
        for (i, message) in messages.iter().enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            bytes.extend_from_slice(message.as_ref().as_bytes());
        }
        bytes.push(b']');
        Dictionary(bytes)
    }

    /// A response's: the prompt's and each choice's token ids, then the
    /// answer, as stored.
    pub(crate) fn response(
        prompt: &[u32],
        completions: &[&[u32]],
        answer: Option<&str>,
    ) -> Dictionary {
        let mut text = String::from(PRIMER);
        for ids in std::iter::once(prompt).chain(completions.iter().copied()) {
            push_ids(&mut text, ids);
        }
        text.push_str(answer.unwrap_or(""));
        Dictionary(text.into_bytes())
    }
}

/// `[1,2,3]`: token ids as JSON writes them.
fn push_ids(text: &mut String, ids: &[u32]) {
    text.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(text, "{id}");
    }
    text.push(']');
}

/// The blob of headers and an optional raw body; `None` when there is
/// neither.
pub(crate) fn encode(
    headers: &Map<String, Value>,
    body: Option<&Value>,
    dictionary: &Dictionary,
) -> Result<Option<Vec<u8>>, CodecError> {
    if headers.is_empty() && body.is_none() {
        return Ok(None);
    }
    let mut text = serde_json::to_vec(headers)?;
    if let Some(body) = body {
        // Compact JSON never holds a raw newline: it separates the two.
        text.push(b'\n');
        serde_json::to_writer(&mut text, body)?;
    }
    let frame = codec::compress_with(&dictionary.0, &text)?;
    let mut blob = Vec::with_capacity(frame.len() + 1);
    blob.push(LAYOUT);
    blob.extend_from_slice(&frame);
    Ok(Some(blob))
}

/// The headers and raw body of a blob [`encode`] made with `dictionary`.
pub(crate) fn decode(
    blob: &[u8],
    dictionary: &Dictionary,
) -> Result<(Map<String, Value>, Option<Value>), CodecError> {
    match blob.split_first() {
        Some((&LAYOUT, frame)) => {
            let text = codec::decompress_with(&dictionary.0, frame)?;
            let (headers, body) = match text.iter().position(|&b| b == b'\n') {
                Some(at) => (&text[..at], Some(&text[at + 1..])),
                None => (&text[..], None),
            };
            let body = body.map(serde_json::from_slice).transpose()?;
            Ok((serde_json::from_slice(headers)?, body))
        }
        Some((&other, _)) => Err(CodecError::Layout(other)),
        None => Err(CodecError::Layout(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_request_costs_what_is_new_in_it() {
        let messages: Vec<String> = (0..20)
            .map(|i| {
                json!({"role": "user", "content": format!("turn {i}: {}", "words ".repeat(50 + i))})
                    .to_string()
            })
            .collect();
        let body = json!({
            "model": "qwen3",
            "messages": messages.iter().map(|m| serde_json::from_str::<Value>(m).unwrap()).collect::<Vec<_>>(),
            "max_tokens": 256,
        });
        let headers: Map<String, Value> = serde_json::from_value(
            json!({"content-type": "application/json", "content-length": "9000"}),
        )
        .unwrap();
        let dictionary = Dictionary::request(None, &messages);
        let blob = encode(&headers, Some(&body), &dictionary).unwrap().unwrap();
        assert!(
            blob.len() < 120,
            "{} bytes for {} of JSON",
            blob.len(),
            body.to_string().len()
        );
        assert_eq!(decode(&blob, &dictionary).unwrap(), (headers, Some(body)));
    }

    #[test]
    fn headers_alone_and_nothing_at_all() {
        let headers: Map<String, Value> = serde_json::from_value(json!({"a": "b\nc"})).unwrap();
        let dictionary = Dictionary::response(&[1, 2], &[&[3]], None);
        let blob = encode(&headers, None, &dictionary).unwrap().unwrap();
        assert_eq!(decode(&blob, &dictionary).unwrap(), (headers, None));
        assert!(encode(&Map::new(), None, &dictionary).unwrap().is_none());
        assert!(matches!(
            decode(&[9, 1], &dictionary),
            Err(CodecError::Layout(9))
        ));
    }

    #[test]
    fn token_ids_are_written_as_json_writes_them() {
        let mut text = String::new();
        push_ids(&mut text, &[1, 22, 333]);
        assert_eq!(text, serde_json::to_string(&[1, 22, 333]).unwrap());
    }
}
