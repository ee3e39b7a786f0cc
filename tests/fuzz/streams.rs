//! The SSE reader and the stream assemblers: any bytes, any cut.

use crate::check;
use crate::generate::{self, Event};
use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;
use tracegate::capture::sse::{self, SseEvent};
use tracegate::capture::{
    Input, Output, anthropic_messages, openai_chat, openai_completions, openai_responses,
};

/// A stream assembler: the events of a streamed answer to its output.
type Assemble = fn(&[SseEvent]) -> Output;

/// A whole (non-streamed) answer's reader.
type ReadAnswer = fn(&Value) -> Output;

/// A request body's reader.
type ReadRequest = fn(&serde_json::Map<String, Value>) -> Input;

/// The streaming assemblers, by name.
const ASSEMBLERS: [(&str, Assemble); 4] = [
    ("openai_chat", openai_chat::response_events),
    ("openai_completions", openai_completions::response_events),
    ("openai_responses", openai_responses::response_events),
    ("anthropic_messages", anthropic_messages::response_events),
];

/// The events of a stream, as its upstream meant them: every event has a
/// `data:` line, so every one is dispatched, its data empty or not, and an
/// event without a name is a `message` (WHATWG).
fn meant(events: &[Event]) -> Vec<SseEvent> {
    events
        .iter()
        .map(|e| SseEvent {
            event: e
                .name
                .clone()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "message".to_string()),
            data: e.data.clone(),
        })
        .collect()
}

/// The longest stream also read a byte a chunk.
const BYTEWISE_MAX: usize = 1024;

#[test]
fn the_sse_reader_takes_any_bytes_cut_anywhere() {
    check(
        "sse_reader_arbitrary_bytes",
        (generate::bytes(), generate::cuts()),
        |(bytes, cuts)| {
            let whole = sse::events(&[Bytes::from(bytes.clone())]);
            let cut = sse::events(&generate::split(&bytes, &cuts));
            prop_assert_eq!(&cut, &whole);
            for (_, assemble) in ASSEMBLERS {
                assemble(&cut);
            }
            Ok(())
        },
    );
}

#[test]
fn the_sse_reader_reads_every_event_whatever_the_cut() {
    check(
        "sse_reader_events",
        generate::stream(),
        |(events, end, cuts)| {
            let text = generate::sse_text(&events, end);
            let expected = meant(&events);
            prop_assert_eq!(&sse::events(&[Bytes::from(text.clone())]), &expected);
            prop_assert_eq!(
                &sse::events(&generate::split(text.as_bytes(), &cuts)),
                &expected
            );
            // The reader rescans a line from its start for each chunk, so
            // a byte a chunk costs the square of the line's length: the
            // worst cut is tried on the shorter streams only.
            if text.len() <= BYTEWISE_MAX {
                prop_assert_eq!(
                    &sse::events(&generate::bytewise(text.as_bytes())),
                    &expected
                );
            }
            Ok(())
        },
    );
}

/// Each assembler reads a stream the same whatever the cut.
fn assembler_ignores_the_cut(name: &str, assemble: Assemble) {
    check(
        &format!("{name}_stream"),
        generate::stream(),
        |(events, end, cuts)| {
            let text = generate::sse_text(&events, end);
            let whole = assemble(&sse::events(&[Bytes::from(text.clone())]));
            let cut = assemble(&sse::events(&generate::split(text.as_bytes(), &cuts)));
            prop_assert_eq!(&cut, &whole);
            prop_assert_eq!(&assemble(&meant(&events)), &whole);
            Ok(())
        },
    );
}

#[test]
fn openai_chat_streams_read_the_same_whatever_the_cut() {
    assembler_ignores_the_cut(ASSEMBLERS[0].0, ASSEMBLERS[0].1);
}

#[test]
fn openai_completions_streams_read_the_same_whatever_the_cut() {
    assembler_ignores_the_cut(ASSEMBLERS[1].0, ASSEMBLERS[1].1);
}

#[test]
fn openai_responses_streams_read_the_same_whatever_the_cut() {
    assembler_ignores_the_cut(ASSEMBLERS[2].0, ASSEMBLERS[2].1);
}

#[test]
fn anthropic_messages_streams_read_the_same_whatever_the_cut() {
    assembler_ignores_the_cut(ASSEMBLERS[3].0, ASSEMBLERS[3].1);
}

#[test]
fn whole_answers_and_requests_of_any_shape_never_panic() {
    let readers: [(ReadAnswer, ReadRequest); 4] = [
        (openai_chat::response_json, openai_chat::request),
        (
            openai_completions::response_json,
            openai_completions::request,
        ),
        (openai_responses::response_json, openai_responses::request),
        (
            anthropic_messages::response_json,
            anthropic_messages::request,
        ),
    ];
    check("whole_answers_and_requests", generate::object(), |object| {
        let value = Value::Object(object.clone());
        for (response_json, request) in readers {
            response_json(&value);
            request(&object);
        }
        Ok(())
    });
}
