//! vLLM token data: ask for it on the way up, hide it on the way down.
//!
//! RL training needs the exact token ids and logprobs of every completion.
//! vLLM returns them when asked (`logprobs`, `return_token_ids`), so for a
//! vLLM route the gateway adds those parameters to chat and completions
//! requests that lack them (never to OpenAI itself, which rejects unknown
//! parameters). The record keeps everything the upstream returned.
//!
//! The client, though, asked for a plain answer, and some clients choke on
//! fields they do not know. So, when `strip_vllm_fields` is on, the answer is
//! rewritten before it reaches the client: `prompt_token_ids`,
//! `prompt_logprobs`, `kv_transfer_params`, and in each choice `token_ids`,
//! `prompt_token_ids`, `prompt_logprobs`, `stop_reason`, `routing_matrices`
//! are removed, and so is
//! `logprobs` when the client did not ask for it. Streams are rewritten event
//! by event; an event (or a whole body) with nothing to remove is passed on
//! as the upstream's exact bytes.
//!
//! Rewriting a stream means cutting it at event boundaries (a blank line) so
//! that a partial event is held until its end arrives; the events' contents
//! are parsed with serde_json. (Capture's own SSE reading, which needs no
//! byte-exact pass-through, uses the eventsource-stream crate.)

use crate::config::RouteConfig;
use crate::protocol::Endpoint;
use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};

/// Adds the token-data parameters the route asks for to a request body.
/// Returns true when the body changed.
pub fn inject(body: &mut Map<String, Value>, endpoint: Endpoint, route: &RouteConfig) -> bool {
    if !endpoint.has_token_data() {
        return false;
    }
    let mut changed = false;
    if route.inject_logprobs && !body.contains_key("logprobs") {
        // Chat takes a boolean; completions the number of alternatives (0:
        // just the sampled token's logprob).
        let value = match endpoint {
            Endpoint::ChatCompletions => Value::Bool(true),
            _ => Value::from(0),
        };
        body.insert("logprobs".into(), value);
        changed = true;
    }
    if route.inject_return_token_ids && !body.contains_key("return_token_ids") {
        body.insert("return_token_ids".into(), Value::Bool(true));
        changed = true;
    }
    changed
}

/// Whether the client itself asked for logprobs.
pub fn client_wants_logprobs(body: Option<&Map<String, Value>>) -> bool {
    match body.and_then(|b| b.get("logprobs")) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(_) => true,
    }
}

/// Top-level fields vLLM adds.
const TOP_FIELDS: &[&str] = &["prompt_token_ids", "prompt_logprobs", "kv_transfer_params"];
/// Per-choice fields vLLM adds.
const CHOICE_FIELDS: &[&str] = &[
    "token_ids",
    "prompt_token_ids",
    "prompt_logprobs",
    "stop_reason",
    "routing_matrices",
];
/// Byte patterns that must occur in JSON that has something to strip; JSON
/// without any of them is passed on without being parsed.
const NEEDLES: &[&[u8]] = &[
    b"\"token_ids\"",
    b"\"prompt_token_ids\"",
    b"\"prompt_logprobs\"",
    b"\"kv_transfer_params\"",
    b"\"stop_reason\"",
    b"\"routing_matrices\"",
    b"\"logprobs\"",
];

/// Removes vLLM's fields from one answer (or stream chunk). Returns true
/// when something was removed.
pub fn strip_json(value: &mut Value, strip_logprobs: bool) -> bool {
    let Some(object) = value.as_object_mut() else {
        return false;
    };
    let mut changed = false;
    for field in TOP_FIELDS {
        changed |= object.shift_remove(*field).is_some();
    }
    if let Some(Value::Array(choices)) = object.get_mut("choices") {
        for choice in choices.iter_mut().filter_map(Value::as_object_mut) {
            for field in CHOICE_FIELDS {
                changed |= choice.shift_remove(*field).is_some();
            }
            if strip_logprobs {
                changed |= choice.shift_remove("logprobs").is_some();
            }
        }
    }
    changed
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn might_need_stripping(bytes: &[u8]) -> bool {
    NEEDLES.iter().any(|n| contains(bytes, n))
}

/// Rewrites a response body on its way to the client.
pub struct Stripper {
    strip_logprobs: bool,
    stream: bool,
    pending: BytesMut,
}

impl Stripper {
    /// A stripper for an SSE stream (`stream`) or a JSON body.
    pub fn new(stream: bool, strip_logprobs: bool) -> Self {
        Self {
            strip_logprobs,
            stream,
            pending: BytesMut::new(),
        }
    }

    /// Takes the next upstream chunk; returns what can be sent now.
    pub fn push(&mut self, chunk: &[u8]) -> Option<Bytes> {
        // What is pending holds no whole event end (the last push sent
        // everything up to one), so a new end overlaps the new bytes: the
        // search starts just before them, not at the start of the event.
        let from = self.pending.len().saturating_sub(EVENT_END_MAX - 1);
        self.pending.extend_from_slice(chunk);
        if !self.stream {
            return None; // a JSON body is rewritten whole, at the end
        }
        let end = from + last_event_end(&self.pending[from..])?;
        let complete = self.pending.split_to(end).freeze();
        Some(self.rewrite_events(&complete))
    }

    /// The upstream body ended: returns what is left to send.
    pub fn finish(&mut self) -> Option<Bytes> {
        let rest = std::mem::take(&mut self.pending).freeze();
        if rest.is_empty() {
            return None;
        }
        if self.stream {
            // An unterminated last event: pass it on as it came.
            return Some(rest);
        }
        Some(self.rewrite_json(rest))
    }

    fn rewrite_json(&self, body: Bytes) -> Bytes {
        if !might_need_stripping(&body) {
            return body;
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(&body) else {
            return body;
        };
        if !strip_json(&mut value, self.strip_logprobs) {
            return body;
        }
        serde_json::to_vec(&value).map(Bytes::from).unwrap_or(body)
    }

    /// Rewrites complete events; untouched events keep their exact bytes.
    fn rewrite_events(&self, bytes: &Bytes) -> Bytes {
        if !might_need_stripping(bytes) {
            return bytes.clone();
        }
        let mut out = BytesMut::with_capacity(bytes.len());
        let mut start = 0;
        while let Some(len) = event_len(&bytes[start..]) {
            let event = &bytes[start..start + len];
            match self.rewrite_event(event) {
                Some(rewritten) => out.extend_from_slice(&rewritten),
                None => out.extend_from_slice(event),
            }
            start += len;
        }
        out.extend_from_slice(&bytes[start..]);
        out.freeze()
    }

    /// The event rewritten, or `None` when it has nothing to remove.
    fn rewrite_event(&self, event: &[u8]) -> Option<Vec<u8>> {
        if !might_need_stripping(event) {
            return None;
        }
        let text = std::str::from_utf8(event).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        let data: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        let mut value: Value = serde_json::from_str(&data.join("\n")).ok()?;
        if !strip_json(&mut value, self.strip_logprobs) {
            return None;
        }
        let mut out = String::with_capacity(event.len());
        let mut data_written = false;
        for line in lines.iter().filter(|l| !l.is_empty()) {
            if line.starts_with("data:") {
                if !data_written {
                    out.push_str("data: ");
                    out.push_str(&value.to_string());
                    out.push('\n');
                    data_written = true;
                }
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push('\n');
        Some(out.into_bytes())
    }
}

/// What ends an SSE event: a blank line, with LF or CRLF line ends.
const EVENT_ENDS: [&[u8]; 2] = [b"\n\n", b"\r\n\r\n"];

/// The length of the longest event end.
const EVENT_END_MAX: usize = 4;

/// The length of the first complete event (through its blank line).
fn event_len(bytes: &[u8]) -> Option<usize> {
    event_end(bytes, End::First)
}

/// Where the last complete event ends.
fn last_event_end(bytes: &[u8]) -> Option<usize> {
    event_end(bytes, End::Last)
}

/// Which event end to find.
#[derive(Clone, Copy, PartialEq)]
enum End {
    First,
    Last,
}

/// Where the first or last complete event in `bytes` ends.
fn event_end(bytes: &[u8], which: End) -> Option<usize> {
    let ends = EVENT_ENDS.iter().filter_map(|end| {
        let mut windows = bytes.windows(end.len());
        let at = match which {
            End::First => windows.position(|w| w == *end),
            End::Last => windows.rposition(|w| w == *end),
        }?;
        Some(at + end.len())
    });
    match which {
        End::First => ends.min(),
        End::Last => ends.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(vllm: bool) -> RouteConfig {
        RouteConfig {
            kind: crate::config::UpstreamKind::Vllm,
            inject_logprobs: vllm,
            inject_return_token_ids: vllm,
            strip_vllm_fields: vllm,
            session_affinity_headers: vllm,
            ..RouteConfig::to(reqwest::Url::parse("http://vllm:8000/v1").unwrap())
        }
    }

    #[test]
    fn injection_adds_only_what_is_missing() {
        let mut body = json!({"model": "m", "logprobs": false})
            .as_object()
            .unwrap()
            .clone();
        assert!(inject(&mut body, Endpoint::ChatCompletions, &route(true)));
        assert_eq!(body["logprobs"], false, "the client's choice stands");
        assert_eq!(body["return_token_ids"], true);
        let mut completion = Map::new();
        inject(&mut completion, Endpoint::Completions, &route(true));
        assert_eq!(completion["logprobs"], 0);
        let mut other = Map::new();
        assert!(!inject(&mut other, Endpoint::Embeddings, &route(true)));
        assert!(!inject(
            &mut other,
            Endpoint::ChatCompletions,
            &route(false)
        ));
    }

    #[test]
    fn json_bodies_are_stripped_whole() {
        let body = json!({"id": "x", "prompt_token_ids": [1], "choices": [
            {"index": 0, "message": {}, "token_ids": [2], "stop_reason": null, "logprobs": {"content": []}}]});
        let mut s = Stripper::new(false, true);
        assert!(s.push(body.to_string().as_bytes()).is_none());
        let out: Value = serde_json::from_slice(&s.finish().unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"id": "x", "choices": [{"index": 0, "message": {}}]})
        );
    }

    #[test]
    fn logprobs_the_client_asked_for_are_kept() {
        let mut v = json!({"choices": [{"logprobs": {"content": []}, "token_ids": [1]}]});
        strip_json(&mut v, false);
        assert_eq!(v, json!({"choices": [{"logprobs": {"content": []}}]}));
    }

    #[test]
    fn untouched_bodies_keep_their_bytes() {
        let body = b"{ \"id\" : \"x\",\n \"choices\": [] }";
        let mut s = Stripper::new(false, true);
        s.push(body);
        assert_eq!(s.finish().unwrap().as_ref(), body);
    }

    #[test]
    fn streams_are_stripped_event_by_event_across_chunk_boundaries() {
        let a = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"token_ids\":[5]}]}\n\n";
        let b = ": keep-alive comment\n\n";
        let c = "data: [DONE]\n\n";
        let all = format!("{a}{b}{c}");
        let (first, second) = all.split_at(30); // inside the first event
        let mut s = Stripper::new(true, true);
        assert_eq!(s.push(first.as_bytes()), None, "a partial event is held");
        let out = s.push(second.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"hi\"}}}}]}}\n\n{b}{c}"
            )
        );
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn events_with_nothing_to_strip_keep_their_bytes() {
        let event = "event: x\r\ndata:{\"choices\":[{\"delta\":{}}]}\r\n\r\n";
        let mut s = Stripper::new(true, true);
        assert_eq!(s.push(event.as_bytes()).unwrap().as_ref(), event.as_bytes());
    }
}
