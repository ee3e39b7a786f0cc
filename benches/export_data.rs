//! A store of RL episodes for the export benchmark (`bench/export_memory.py`):
//! N calls in sessions of 16 turns, each turn's prompt the previous prompt
//! and completion plus 8 new tokens (so a session is one trajectory
//! segment of ~400 tokens), 16 completion tokens with logprobs, messages
//! growing with the episode, a reward on every session.
//!
//! It writes through the store's writer exactly as the gateway does (the
//! same encoding, compression and shared-content layout), without HTTP,
//! which would take minutes for 100 000 calls on a shared machine and
//! measure the gateway rather than the export.
//!
//! `EXPORT_BENCH_DB=path EXPORT_BENCH_N=100000 cargo bench --bench export_data`
//! prints `filled N calls in S s` and leaves the database at `path`.

// A bench fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::time::Instant;
use tracegate::config::StoreOptions;
use tracegate::feedback::FeedbackInput;
use tracegate::record::{Choice, Status, TraceRecord};
use tracegate::store::Store;

/// Turns per session.
const TURNS: usize = 16;

/// Turn `turn` of session `session`, its prompt `prompt`.
fn record(session: usize, turn: usize, prompt: &[u32], messages: &[Value]) -> TraceRecord {
    let n = session * TURNS + turn;
    let completion: Vec<u32> = (0..16).map(|i| 1000 + (n as u32 + i) % 30_000).collect();
    let logprobs: Vec<f64> = (0..16).map(|i| -0.01 * f64::from(i) - 0.001).collect();
    let answer: Map<String, Value> = serde_json::from_value(
        json!({"role": "assistant", "content": format!("step {turn}: run the tests")}),
    )
    .unwrap();
    let mut r = TraceRecord {
        trace_id: format!("bench-{n:08}"),
        span_id: format!("{n:016x}"),
        otel_trace_id: format!("{session:032x}"),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        upstream: "http://127.0.0.1:8000/v1".into(),
        model: Some("policy".into()),
        messages: messages.to_vec(),
        prompt_token_ids: prompt.to_vec(),
        response_message: answer.clone(),
        finish_reason: Some("tool_calls".into()),
        completion_token_ids: completion.clone(),
        logprobs: Some(logprobs.clone()),
        choices: vec![Choice {
            index: 0,
            message: answer,
            finish_reason: Some("tool_calls".into()),
            token_ids: completion,
            logprobs: Some(logprobs),
            top_logprobs: None,
        }],
        latency_ms: 1.0,
        status: Status::Ok,
        http_status: Some(200),
        ..TraceRecord::default()
    };
    r.identity.run_id = Some("bench".into());
    r.identity.session_id = Some(format!("bench-session-{session:06}"));
    r.identity.step_id = Some(turn as i64);
    r.identity.weight_version = Some((session / 100) as i64);
    r
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let db = PathBuf::from(std::env::var("EXPORT_BENCH_DB").expect("EXPORT_BENCH_DB=path"));
    let n: usize = std::env::var("EXPORT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let store = Store::open(
        &tracegate::store::Database::from(&*db),
        StoreOptions::default(),
        Default::default(),
        "test",
    )
    .unwrap();
    let started = Instant::now();
    let mut rewards = Vec::new();
    for session in 0..n.div_ceil(TURNS) {
        let mut prompt: Vec<u32> = (1..=40).collect();
        let mut messages =
            vec![json!({"role": "user", "content": format!("Fix failing test {session}")})];
        for turn in 0..TURNS.min(n - session * TURNS) {
            let r = record(session, turn, &prompt, &messages);
            prompt.extend_from_slice(&r.completion_token_ids);
            prompt.extend((0..8).map(|i| 500 + i));
            messages.push(Value::Object(r.response_message.clone()));
            messages.push(json!({"role": "tool", "content": format!("output of step {turn}")}));
            store.writer.reserve().submit(r, None).await;
        }
        let reward = FeedbackInput {
            session_id: Some(format!("bench-session-{session:06}")),
            name: Some("reward".into()),
            value: Some(tracegate::feedback::FeedbackValue::Number(
                (session % 2) as f64,
            )),
            ..FeedbackInput::default()
        };
        rewards.push(reward.into_feedback(std::time::SystemTime::now()).unwrap());
    }
    for items in rewards.chunks(1000) {
        let spans = vec![None; items.len()];
        store
            .writer
            .post_feedback(items.to_vec(), spans)
            .await
            .unwrap();
    }
    store.writer.flush().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    store.close().await.unwrap();
    println!("filled {n} calls in {seconds:.1} s");
}
