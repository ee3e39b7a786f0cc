//! Capture throughput: the SSE reader and each streaming assembler on a
//! realistic 500-chunk stream, reported in events per second.
//!
//! Run with `cargo bench --bench capture`. Each stream is built once, cut
//! into network-sized chunks (which split events mid-JSON, as TCP does), and
//! then read (`sse`), folded (`assemble`), or both (`sse+assemble`, what
//! capture does per streamed call).

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use tracegate::capture::{
    anthropic_messages, openai_chat, openai_completions, openai_responses, sse,
};

const EVENTS: usize = 500;

/// SSE text cut into chunks of ~1400 bytes (a typical TCP segment payload).
fn chunked(text: String) -> Vec<Bytes> {
    text.into_bytes()
        .chunks(1400)
        .map(Bytes::copy_from_slice)
        .collect()
}

fn frame(event: Option<&str>, data: serde_json::Value) -> String {
    match event {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// A vLLM chat stream: one token per chunk, with token ids and logprobs.
fn chat_stream() -> Vec<Bytes> {
    let mut text = String::new();
    for i in 0..EVENTS - 1 {
        text += &frame(
            None,
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "Qwen/Qwen3-8B",
            "choices": [{"index": 0, "delta": {"content": format!(" word{i}")}, "finish_reason": null, "token_ids": [1000 + i],
                "logprobs": {"content": [{"token": format!(" word{i}"), "logprob": -0.25, "bytes": [32], "top_logprobs": []}]}}]}),
        );
    }
    text += "data: [DONE]\n\n";
    chunked(text)
}

fn completions_stream() -> Vec<Bytes> {
    let mut text = String::new();
    for i in 0..EVENTS - 1 {
        text += &frame(
            None,
            json!({"id": "cmpl-1", "object": "text_completion", "model": "m",
            "choices": [{"index": 0, "text": format!(" word{i}"), "finish_reason": null, "token_ids": [1000 + i],
                "logprobs": {"tokens": [format!(" word{i}")], "token_logprobs": [-0.5], "top_logprobs": null}}]}),
        );
    }
    text += "data: [DONE]\n\n";
    chunked(text)
}

fn responses_stream() -> Vec<Bytes> {
    let mut text = frame(
        Some("response.created"),
        json!({"type": "response.created", "response": {"id": "resp_1", "model": "m"}}),
    );
    text += &frame(
        Some("response.output_item.added"),
        json!({"type": "response.output_item.added", "output_index": 0,
        "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
    );
    for i in 0..EVENTS - 3 {
        text += &frame(
            Some("response.output_text.delta"),
            json!({"type": "response.output_text.delta", "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "delta": format!(" word{i}"), "sequence_number": i}),
        );
    }
    text += &frame(
        Some("response.incomplete"),
        json!({"type": "response.output_item.done", "output_index": 0,
        "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": "…"}]}}),
    );
    chunked(text)
}

fn anthropic_stream() -> Vec<Bytes> {
    let mut text = frame(
        Some("message_start"),
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude",
        "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    );
    text += &frame(
        Some("content_block_start"),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    for i in 0..EVENTS - 4 {
        text += &frame(
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": format!(" word{i}")}}),
        );
    }
    text += &frame(
        Some("message_delta"),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 496}}),
    );
    text += &frame(Some("message_stop"), json!({"type": "message_stop"}));
    chunked(text)
}

fn bench(c: &mut Criterion) {
    type Fold = fn(&[sse::SseEvent]) -> tracegate::capture::Output;
    let streams: [(&str, Vec<Bytes>, Fold); 4] = [
        ("openai_chat", chat_stream(), openai_chat::response_events),
        (
            "openai_completions",
            completions_stream(),
            openai_completions::response_events,
        ),
        (
            "openai_responses",
            responses_stream(),
            openai_responses::response_events,
        ),
        (
            "anthropic_messages",
            anthropic_stream(),
            anthropic_messages::response_events,
        ),
    ];
    for (name, chunks, fold) in &streams {
        let events = sse::events(chunks);
        assert_eq!(events.len(), EVENTS, "{name}");
        let mut group = c.benchmark_group(*name);
        group.throughput(Throughput::Elements(EVENTS as u64));
        group.bench_function("sse", |b| b.iter(|| sse::events(black_box(chunks))));
        group.bench_function("assemble", |b| b.iter(|| fold(black_box(&events))));
        group.bench_function("sse+assemble", |b| {
            b.iter(|| fold(&sse::events(black_box(chunks))))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
