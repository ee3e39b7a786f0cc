//! The one SSE reader every streaming assembler shares.
//!
//! Capture sees a streamed response as the list of byte chunks the upstream
//! sent, cut wherever the network cut them: an event may span chunks and a
//! multi-byte character may be split. The `eventsource-stream` crate does the
//! framing (WHATWG rules: `data:` lines joined, comments skipped, a final
//! event without its blank line discarded); this module only feeds it the
//! chunks and decodes each event's data as JSON.

use bytes::Bytes;
use eventsource_stream::{Event, Eventsource};
use futures_util::StreamExt;
use serde_json::Value;
use std::convert::Infallible;
use std::task::{Context, Poll, Waker};

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The `event:` field (empty for the default "message").
    pub event: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

impl SseEvent {
    /// The data as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }

    /// The data as JSON with its kind: the data's `type`, else the event's
    /// name (Anthropic and the Responses API send both, alike).
    pub fn typed_json(&self) -> Option<(String, Value)> {
        let data = self.json()?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(&self.event)
            .to_string();
        Some((kind, data))
    }

    /// True for OpenAI's end-of-stream sentinel `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

/// Events as upstreams send them, for the assemblers' tests.
#[cfg(test)]
pub mod test_events {
    use super::SseEvent;
    use serde_json::Value;

    /// An unnamed event carrying `data` as JSON (OpenAI's streams).
    pub fn ev(data: Value) -> SseEvent {
        SseEvent {
            event: String::new(),
            data: data.to_string(),
        }
    }

    /// OpenAI's end of stream, `data: [DONE]`.
    pub fn done() -> SseEvent {
        SseEvent {
            event: String::new(),
            data: "[DONE]".into(),
        }
    }

    /// Typed events (Anthropic's, the Responses API's) from a JSON list of
    /// their data, each data's `type` repeated as its `event:` name.
    pub fn typed_stream(events: Value) -> Vec<SseEvent> {
        let list = events.as_array().cloned().unwrap_or_default();
        list.into_iter()
            .map(|data| SseEvent {
                event: data["type"].as_str().unwrap_or_default().to_string(),
                data: data.to_string(),
            })
            .collect()
    }
}

/// Splits the chunks of a streamed response into events.
pub fn events(chunks: &[Bytes]) -> Vec<SseEvent> {
    let source = futures_util::stream::iter(
        chunks
            .iter()
            .cloned()
            .chain(final_lf(chunks))
            .map(Ok::<Bytes, Infallible>),
    );
    let mut stream = source.eventsource();
    // The source never waits, so the stream is driven to its end without a
    // runtime: every poll is Ready.
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match stream.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(Ok(Event { event, data, .. }))) => out.push(SseEvent { event, data }),
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!("unreadable SSE stream after {} events: {e}", out.len());
                break;
            }
            Poll::Ready(None) | Poll::Pending => break,
        }
    }
    out
}

/// A `\n` after a stream whose last byte is `\r`. A lone `\r` ends a line
/// (WHATWG), but the reader cannot tell it from the start of a `\r\n`
/// until the next byte arrives, and at the stream's end it never does: the
/// last event of an upstream that ends its lines with `\r` would be lost.
/// `\r\n` is the same line end, so the added byte changes nothing else.
fn final_lf(chunks: &[Bytes]) -> Option<Bytes> {
    let last = chunks.iter().rev().find(|c| !c.is_empty())?;
    (last.last() == Some(&b'\r')).then(|| Bytes::from_static(b"\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&[u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
    }

    #[test]
    fn events_split_across_chunks_are_joined() {
        let evs = events(&chunks(&[b"data: {\"a\"", b":1}\n", b"\ndata: [DONE]\n\n"]));
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].json().unwrap()["a"], 1);
        assert!(evs[1].is_done());
    }

    #[test]
    fn multibyte_characters_split_across_chunks_survive() {
        let text = "data: \"héllo\"\n\n".as_bytes();
        let (a, b) = text.split_at(9); // inside the two-byte 'é'
        let evs = events(&chunks(&[a, b]));
        assert_eq!(evs[0].json().unwrap(), "héllo");
    }

    #[test]
    fn named_events_and_comments() {
        let evs = events(&chunks(&[b": ping\n\nevent: message_start\ndata: {}\n\n"]));
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].event, "message_start");
    }

    #[test]
    fn a_stream_whose_lines_end_in_cr_keeps_its_last_event() {
        let evs = events(&chunks(&[b"data: 1\r\rdata: 2\r", b"\r"]));
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[1].data, "2");
    }

    #[test]
    fn an_unterminated_final_event_is_dropped() {
        let evs = events(&chunks(&[b"data: 1\n\ndata: 2"]));
        assert_eq!(evs.len(), 1);
    }
}
