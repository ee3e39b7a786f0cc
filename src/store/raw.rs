//! The request and the response as they crossed the gateway — headers and
//! raw bodies — in one blob, compressed against the call's own content.
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
//! A blob is one layout byte ([`LAYOUT`]), then a zstd frame of four lines:
//! the request headers, the raw request body, the response headers and the
//! raw response body, each as compact JSON (a body that was not kept is an
//! empty line). The dictionary of layout 1 is [`PRIMER`], the raw lines of
//! the call's reference when it has one (`raw_ref`: an earlier call of the
//! same kind, [`kind_of`], whose lines `raw_references` keeps compressed
//! against the primer alone), a few of the call's column values each in
//! quotes (model, backend model, session, run,
//! harness, response id, response model), the tool list's JSON, the
//! messages as one JSON array, the prompt's and each choice's token ids as
//! JSON arrays, and the answer's JSON. Changing any of that is a new layout
//! number.

use crate::store::codec::{self, CodecError};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// What a call's blob is compressed against.
pub(crate) struct Dictionary(Vec<u8>);

/// The call's own content a dictionary is made of, as stored.
pub(crate) struct Own<'a, S> {
    /// The raw lines of the reference the call is compressed against.
    pub reference: Option<&'a [u8]>,
    /// Column values the headers and bodies repeat (model, ids).
    pub words: &'a [&'a str],
    /// The tool list's JSON.
    pub tools: Option<&'a str>,
    /// Each input message's JSON.
    pub messages: &'a [S],
    /// The prompt's token ids.
    pub prompt: &'a [u32],
    /// Each choice's completion token ids (those that have some).
    pub completions: &'a [&'a [u32]],
    /// The answer's JSON.
    pub answer: Option<&'a str>,
}

impl Dictionary {
    /// The dictionary of a call with this content.
    pub(crate) fn of<S: AsRef<str>>(own: &Own<'_, S>) -> Dictionary {
        let messages: usize = own.messages.iter().map(|m| m.as_ref().len() + 1).sum();
        let ids = 8 * (own.prompt.len() + own.completions.iter().map(|c| c.len()).sum::<usize>());
        let mut bytes = Vec::with_capacity(PRIMER.len() + messages + ids + 256);
        bytes.extend_from_slice(PRIMER.as_bytes());
        bytes.extend_from_slice(own.reference.unwrap_or_default());
        for word in own.words {
            bytes.push(b'"');
            bytes.extend_from_slice(word.as_bytes());
            bytes.push(b'"');
        }
        bytes.extend_from_slice(own.tools.unwrap_or("").as_bytes());
        bytes.push(b'[');
        for (i, message) in own.messages.iter().enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            bytes.extend_from_slice(message.as_ref().as_bytes());
        }
        bytes.push(b']');
        let mut text = String::new();
        for ids in std::iter::once(own.prompt).chain(own.completions.iter().copied()) {
            push_ids(&mut text, ids);
        }
        text.push_str(own.answer.unwrap_or(""));
        bytes.extend_from_slice(text.as_bytes());
        Dictionary(bytes)
    }
}

/// The raw references the writer has stored, by kind of call (see
/// [`kind_of`]): shared by the tasks that encode records, which compress
/// against them, and the writer, which stores, announces and forgets them.
/// A stored raw reference: its id and its raw lines.
pub(crate) type Reference = (i64, Arc<[u8]>);

#[derive(Debug, Default)]
pub(crate) struct References(Mutex<HashMap<String, Reference>>);

impl References {
    /// The reference of calls of `kind`: its id and raw lines.
    pub(crate) fn get(&self, kind: &str) -> Option<Reference> {
        crate::sync::lock(&self.0).get(kind).cloned()
    }

    /// Announces a stored reference (once its transaction committed).
    pub(crate) fn publish(&self, kind: String, id: i64, lines: Arc<[u8]>) {
        crate::sync::lock(&self.0)
            .entry(kind)
            .or_insert((id, lines));
    }

    /// Forgets the references for which `gone` holds.
    pub(crate) fn forget(&self, gone: impl Fn(i64) -> bool) {
        crate::sync::lock(&self.0).retain(|_, (id, _)| !gone(*id));
    }
}

/// What makes calls alike enough to share a reference: their operation,
/// whether they stream, and their model.
pub(crate) fn kind_of(record: &crate::record::TraceRecord) -> String {
    format!(
        "{} {} {}",
        record.operation.as_str(),
        record.stream,
        record.model.as_deref().unwrap_or("")
    )
}

/// `[1,2,3]`: token ids as JSON writes them (with `itoa`, as serde_json
/// does: `write!` cost 5 % of the store's instructions here).
fn push_ids(text: &mut String, ids: &[u32]) {
    let mut digits = itoa::Buffer::new();
    text.reserve(ids.len() * 7 + 2);
    text.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(digits.format(*id));
    }
    text.push(']');
}

/// The raw parts of a call: what crossed the gateway.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Raw {
    /// The request headers, as stored (credentials redacted).
    pub request_headers: Map<String, Value>,
    /// The raw request body, when kept.
    pub request: Option<Value>,
    /// The response headers.
    pub response_headers: Map<String, Value>,
    /// The raw response body, when kept.
    pub response: Option<Value>,
}

/// The four raw lines of a call's raw parts; `None` when there are none.
pub(crate) fn lines(raw: &Raw) -> Result<Option<Vec<u8>>, CodecError> {
    if *raw == Raw::default() {
        return Ok(None);
    }
    // Four lines (compact JSON never holds a raw newline); an absent body
    // is an empty line.
    let mut text = serde_json::to_vec(&raw.request_headers)?;
    text.push(b'\n');
    if let Some(body) = &raw.request {
        serde_json::to_writer(&mut text, body)?;
    }
    text.push(b'\n');
    serde_json::to_writer(&mut text, &raw.response_headers)?;
    text.push(b'\n');
    if let Some(body) = &raw.response {
        serde_json::to_writer(&mut text, body)?;
    }
    Ok(Some(text))
}

/// The blob of a call's raw lines.
pub(crate) fn compress(lines: &[u8], dictionary: &Dictionary) -> Result<Vec<u8>, CodecError> {
    let frame = codec::compress_with(&dictionary.0, lines)?;
    let mut blob = Vec::with_capacity(frame.len() + 1);
    blob.push(LAYOUT);
    blob.extend_from_slice(&frame);
    Ok(blob)
}

/// The raw lines in a blob [`compress`] made with `dictionary`.
pub(crate) fn decompress(blob: &[u8], dictionary: &Dictionary) -> Result<Vec<u8>, CodecError> {
    match blob.split_first() {
        Some((&LAYOUT, frame)) => codec::decompress_with(&dictionary.0, frame),
        Some((&other, _)) => Err(CodecError::Layout(other)),
        None => Err(CodecError::Layout(0)),
    }
}

/// A `raw_references` blob: raw lines compressed against the primer alone.
pub(crate) fn reference_blob(lines: &[u8]) -> Result<Vec<u8>, CodecError> {
    codec::compress_with(PRIMER.as_bytes(), lines)
}

/// The raw lines of a `raw_references` blob.
pub(crate) fn reference_lines(blob: &[u8]) -> Result<Vec<u8>, CodecError> {
    codec::decompress_with(PRIMER.as_bytes(), blob)
}

/// The raw parts of the raw lines `text`.
pub(crate) fn parse(text: &[u8]) -> Result<Raw, CodecError> {
    let mut lines = text.split(|b| *b == b'\n');
    let mut next = || lines.next().unwrap_or_default();
    let (request_headers, request, response_headers, response) = (next(), next(), next(), next());
    let body = |line: &[u8]| -> Result<Option<Value>, CodecError> {
        Ok((!line.is_empty())
            .then(|| serde_json::from_slice(line))
            .transpose()?)
    };
    Ok(Raw {
        request_headers: serde_json::from_slice(request_headers)?,
        request: body(request)?,
        response_headers: serde_json::from_slice(response_headers)?,
        response: body(response)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn own<'a>(words: &'a [&'a str], messages: &'a [String]) -> Own<'a, String> {
        Own {
            reference: None,
            words,
            tools: None,
            messages,
            prompt: &[1, 2],
            completions: &[&[3]],
            answer: None,
        }
    }

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
        let raw = Raw {
            request_headers: serde_json::from_value(
                json!({"content-type": "application/json", "content-length": "9000"}),
            )
            .unwrap(),
            request: Some(body.clone()),
            ..Raw::default()
        };
        let dictionary = Dictionary::of(&own(&["qwen3"], &messages));
        let blob = compress(&lines(&raw).unwrap().unwrap(), &dictionary).unwrap();
        assert!(
            blob.len() < 120,
            "{} bytes for {} of JSON",
            blob.len(),
            body.to_string().len()
        );
        assert_eq!(
            parse(&decompress(&blob, &dictionary).unwrap()).unwrap(),
            raw
        );
    }

    #[test]
    fn headers_alone_and_nothing_at_all() {
        let raw = Raw {
            response_headers: serde_json::from_value(json!({"a": "b\nc"})).unwrap(),
            response: Some(json!({"text": "x\ny"})),
            ..Raw::default()
        };
        let dictionary = Dictionary::of(&own(&[], &[]));
        let text = lines(&raw).unwrap().unwrap();
        let blob = compress(&text, &dictionary).unwrap();
        assert_eq!(
            parse(&decompress(&blob, &dictionary).unwrap()).unwrap(),
            raw
        );
        assert!(lines(&Raw::default()).unwrap().is_none());
        assert!(matches!(
            decompress(&[9, 1], &dictionary),
            Err(CodecError::Layout(9))
        ));
        let reference = reference_blob(&text).unwrap();
        assert_eq!(reference_lines(&reference).unwrap(), text);
    }

    #[test]
    fn token_ids_are_written_as_json_writes_them() {
        let mut text = String::new();
        push_ids(&mut text, &[1, 22, 333]);
        assert_eq!(text, serde_json::to_string(&[1, 22, 333]).unwrap());
    }
}
