//! Generators: JSON in the APIs' vocabulary, SSE streams of it, the chunks
//! a network cuts a body into, header maps of every case.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::{Map, Value};
use tracegate::headers;

/// The field names the assemblers, the stripper and the extractor read.
pub const KEYS: &[&str] = &[
    "id",
    "model",
    "object",
    "type",
    "index",
    "choices",
    "delta",
    "message",
    "role",
    "content",
    "reasoning_content",
    "reasoning",
    "refusal",
    "tool_calls",
    "function",
    "functions",
    "name",
    "arguments",
    "finish_reason",
    "logprobs",
    "top_logprobs",
    "token",
    "logprob",
    "tokens",
    "token_logprobs",
    "token_ids",
    "prompt_token_ids",
    "prompt_logprobs",
    "stop_reason",
    "kv_transfer_params",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "prompt_tokens_details",
    "cached_tokens",
    "completion_tokens_details",
    "reasoning_tokens",
    "input_tokens_details",
    "output_tokens_details",
    "text",
    "error",
    "code",
    "content_block",
    "partial_json",
    "thinking",
    "signature",
    "input",
    "response",
    "output",
    "item",
    "item_id",
    "output_index",
    "content_index",
    "sequence_number",
    "status",
    "summary",
    "call_id",
    "incomplete_details",
    "reason",
    "data",
    "messages",
    "tools",
    "system",
    "instructions",
    "prompt",
    "tool_call_id",
    "tool_use_id",
    "rllm",
    "metadata",
    "session_id",
    "run_id",
    "step_id",
    "harness",
    "project",
    "experiment",
    "parent_span_id",
];

/// String values with a meaning somewhere (event types, roles, reasons).
const WORDS: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "error",
    "text_delta",
    "input_json_delta",
    "thinking_delta",
    "signature_delta",
    "text",
    "tool_use",
    "server_tool_use",
    "thinking",
    "redacted_thinking",
    "response.created",
    "response.in_progress",
    "response.output_text.delta",
    "response.output_item.added",
    "response.output_item.done",
    "response.function_call_arguments.delta",
    "response.reasoning_summary_text.delta",
    "response.reasoning_text.delta",
    "response.refusal.delta",
    "response.completed",
    "response.failed",
    "response.incomplete",
    "function_call",
    "function_call_output",
    "message",
    "reasoning",
    "output_text",
    "summary_text",
    "assistant",
    "user",
    "system",
    "tool",
    "stop",
    "length",
    "tool_calls",
    "completed",
    "incomplete",
    "failed",
    "[DONE]",
    "",
    " ",
    "{\"a\":",
    "1}",
    "é",
    "日本",
    "\u{0}",
    "\n",
];

/// A JSON leaf: null, booleans, numbers, vocabulary words, arbitrary text.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-2i64..40).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        select(WORDS).prop_map(Value::from),
        select(WORDS).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ]
}

/// A key: mostly the vocabulary, sometimes anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(KEYS).prop_map(str::to_string),
        1 => "\\PC{0,8}",
    ]
}

/// A JSON object of this vocabulary, nested a few levels.
pub fn object() -> impl Strategy<Value = Map<String, Value>> {
    vec((key(), value()), 0..8).prop_map(|pairs| pairs.into_iter().collect())
}

/// A JSON value of this vocabulary.
pub fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((key(), inner), 0..8).prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// One SSE event as an upstream may write it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The `event:` name, if any.
    pub name: Option<String>,
    /// The data: JSON (an object, usually), `[DONE]`, or any text.
    pub data: String,
    /// Comment lines written before it (`: keep-alive`).
    pub comment: bool,
}

/// An event: its `type` doubled as its name (Anthropic, Responses) or not.
pub fn event() -> impl Strategy<Value = Event> {
    let data = prop_oneof![
        8 => object().prop_map(|o| Value::Object(o).to_string()),
        1 => Just("[DONE]".to_string()),
        1 => "[^\r\n]{0,16}",
    ];
    (data, any::<bool>(), any::<bool>()).prop_map(|(data, named, comment)| {
        let name = named
            .then(|| serde_json::from_str::<Value>(&data).ok())
            .flatten()
            .and_then(|v| v.get("type")?.as_str().map(str::to_string))
            .filter(|t| !t.contains(['\r', '\n']));
        Event {
            name,
            data,
            comment,
        }
    })
}

/// How lines end in a stream.
#[derive(Debug, Clone, Copy)]
pub enum LineEnd {
    /// `\n`.
    Lf,
    /// `\r\n`.
    CrLf,
    /// `\r`.
    Cr,
}

impl LineEnd {
    fn as_str(self) -> &'static str {
        match self {
            LineEnd::Lf => "\n",
            LineEnd::CrLf => "\r\n",
            LineEnd::Cr => "\r",
        }
    }
}

/// A line ending; `\r` alone is legal SSE but rare.
pub fn line_end() -> impl Strategy<Value = LineEnd> {
    prop_oneof![4 => Just(LineEnd::Lf), 4 => Just(LineEnd::CrLf), 1 => Just(LineEnd::Cr)]
}

/// The bytes of a stream of `events`, with these line ends.
pub fn sse_text(events: &[Event], end: LineEnd) -> String {
    let eol = end.as_str();
    let mut out = String::new();
    for event in events {
        if event.comment {
            out.push_str(&format!(": keep-alive{eol}{eol}"));
        }
        if let Some(name) = &event.name {
            out.push_str(&format!("event: {name}{eol}"));
        }
        out.push_str(&format!("data: {}{eol}{eol}", event.data));
    }
    out
}

/// A stream: events, its line ends, and where the network cut it.
pub fn stream() -> impl Strategy<Value = (Vec<Event>, LineEnd, Vec<Index>)> {
    (vec(event(), 0..12), line_end(), cuts())
}

/// Where a body is cut into chunks.
pub fn cuts() -> impl Strategy<Value = Vec<Index>> {
    vec(any::<Index>(), 0..16)
}

/// `bytes` cut at `cuts` (empty chunks included: cuts may coincide).
pub fn split(bytes: &[u8], cuts: &[Index]) -> Vec<Bytes> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for end in at {
        chunks.push(Bytes::copy_from_slice(&bytes[start..end]));
        start = end;
    }
    chunks.push(Bytes::copy_from_slice(&bytes[start..]));
    chunks
}

/// `bytes` one byte a chunk: the worst cut there is.
pub fn bytewise(bytes: &[u8]) -> Vec<Bytes> {
    bytes
        .iter()
        .map(|b| Bytes::copy_from_slice(&[*b]))
        .collect()
}

/// The bytes that mean something to the SSE reader and the JSON parser.
const SSE_PIECES: &[&[u8]] = &[
    b"data:",
    b"data: ",
    b"event: ",
    b"id: ",
    b"retry: ",
    b": ",
    b"\n",
    b"\r\n",
    b"\r",
    b"\n\n",
    b"{",
    b"}",
    b"[DONE]",
    b"\"choices\"",
    b"\"token_ids\"",
    b"\"logprobs\"",
    b"\"type\"",
    b"\xc3",
    b"\xa9",
    b"\xff",
];

/// Arbitrary bytes, biased towards the SSE and JSON bytes that matter.
pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => vec(any::<u8>(), 0..8),
        4 => select(SSE_PIECES).prop_map(<[u8]>::to_vec),
    ];
    vec(piece, 0..48).prop_map(|pieces| pieces.concat())
}

/// A header name: the identity carriers in any case, other `x-rllm-` names,
/// the names the gateway's header policy lists (hop-by-hop, blocked for
/// callers, credentials: from its own tables, so a name added there is
/// fuzzed too), and arbitrary tokens.
pub fn header_name() -> impl Strategy<Value = String> {
    let identity = [
        "x-rllm-session-id",
        "x-rllm-run-id",
        "x-rllm-harness",
        "x-rllm-step-id",
        "x-rllm-parent-span-id",
        "x-rllm-project",
        "x-rllm-experiment",
        "x-rllm-trace-id",
        "x-rllm-",
    ];
    let others = [
        headers::PROVIDER_DATA,
        "x-forwarded-for",
        "accept-encoding",
        "anthropic-version",
        "x-kept",
    ];
    let policy = headers::HOP_BY_HOP
        .iter()
        .chain(headers::BLOCKED_FOR_CALLER);
    let known: Vec<&'static str> = identity
        .into_iter()
        .chain(policy.copied())
        .chain(others)
        .collect();
    let known = select(known);
    prop_oneof![
        6 => (known, vec(any::<bool>(), 32)).prop_map(|(name, upper)| any_case(name, &upper)),
        2 => "[xX]-[rR][lL][lL][mM]-[a-zA-Z0-9-]{0,12}",
        1 => "[!#$%&'*+.^_`|~0-9a-zA-Z-]{1,16}",
    ]
}

/// `name` with the letters flagged in `upper` upper-cased.
fn any_case(name: &str, upper: &[bool]) -> String {
    name.chars()
        .zip(upper.iter().cycle())
        .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
        .collect()
}

/// A header value's bytes: visible ASCII, tabs, spaces and obs-text (bytes
/// 0x80 and up, which are not UTF-8 text), sometimes a list of header names.
pub fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff], 0..24),
        1 => vec(header_name(), 0..4).prop_map(|names| names.join(", ").into_bytes()),
        1 => (vec(header_name(), 1..4), vec(0x80u8..=0xff, 1..3)).prop_map(|(names, obs)| {
            [names.join(", ").into_bytes(), b", ".to_vec(), obs].concat()
        }),
        1 => "\\PC{0,12}".prop_map(String::into_bytes),
    ]
}

/// A header map of these names and values (a name may repeat).
pub fn header_map() -> impl Strategy<Value = HeaderMap> {
    vec((header_name(), header_value()), 0..12).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(&value),
            ) {
                map.append(name, value);
            }
        }
        map
    })
}
