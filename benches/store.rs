//! Store throughput without HTTP: how many records per second the store
//! takes from request tasks and commits to SQLite on its own.
//!
//! Run with `cargo bench --bench store` (env `STORE_BENCH_N`, default
//! 50 000 records). One task hands over records shaped like a recorded
//! vLLM chat call (messages, raw request and response, token ids and
//! logprobs) through the writer handle exactly as the gateway does
//! (`reserve` then `submit`, which encodes and compresses on the caller's
//! side), then flushes; records/s is the count over the time to the end of
//! that flush, so it includes every commit. It prints one line
//! (`store: N records in S s: R records/s`) that `bench/run.sh` parses, and
//! fails if the database holds any other number of records.
//!
//! With `STORE_BENCH_POSTGRES` set (a PostgreSQL superuser URL, as
//! `bench/store_backends.sh` gives it), the same run follows, side by side,
//! on both backends: SQLite, PostgreSQL with one replica, and PostgreSQL
//! with three replicas (three stores, each with its own writer thread,
//! sharing one fresh database, each handed a third of the records at
//! once), plus each backend's commit latency (the median of 200 lone
//! records, each submitted and flushed: one commit each). One
//! `store_backends:` line per case.

// A bench fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Map, Value, json};
use std::time::Instant;
use tracegate::config::StoreOptions;
use tracegate::record::{Choice, Status, TraceRecord};
use tracegate::store::Store;

/// A finished vLLM chat call; `n` makes its ids unique.
fn record(n: usize) -> TraceRecord {
    let messages = vec![
        json!({"role": "system", "content": "You are a helpful agent."}),
        json!({"role": "user", "content": format!("Summarise failing test {n} and propose a fix.")}),
    ];
    let answer: Map<String, Value> = serde_json::from_value(
        json!({"role": "assistant", "content": "The test expects a sorted list; sort before comparing."}),
    )
    .unwrap();
    let completion: Vec<u32> = (0..16).map(|i| 1000 + i).collect();
    let logprobs: Vec<f64> = (0..16).map(|i| -0.01 * f64::from(i)).collect();
    let mut r = TraceRecord {
        trace_id: format!("bench-{n:08}"),
        span_id: format!("{n:016x}"),
        otel_trace_id: format!("{n:032x}"),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        upstream: "http://127.0.0.1:8000/v1".into(),
        model: Some("mock-model".into()),
        raw_request: Some(json!({"model": "mock-model", "messages": messages, "max_tokens": 128})),
        raw_response: Some(
            json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion",
            "choices": [{"index": 0, "message": answer, "finish_reason": "stop"}]}),
        ),
        messages,
        prompt_token_ids: (1..=40).collect(),
        response_message: answer.clone(),
        finish_reason: Some("stop".into()),
        completion_token_ids: completion.clone(),
        logprobs: Some(logprobs.clone()),
        choices: vec![Choice {
            index: 0,
            message: answer,
            finish_reason: Some("stop".into()),
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
    r.identity.session_id = Some(format!("bench-session-{}", n / 32));
    r
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("STORE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    sqlite(n).await;
    if let Ok(server) = std::env::var("STORE_BENCH_POSTGRES") {
        backends(&server, n).await;
    }
}

/// The SQLite run `bench/run.sh` parses.
async fn sqlite(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let store = Store::open(
        &tracegate::store::Database::from(&*db),
        StoreOptions::default(),
        Default::default(),
        "test",
    )
    .unwrap();
    let records: Vec<TraceRecord> = (0..n).map(record).collect();
    let started = Instant::now();
    for r in records {
        store.writer.reserve().submit(r, None).await;
    }
    store.writer.flush().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    store.close().await.unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: i64 = conn
        .query_row("select count(*) from traces", [], |row| row.get(0))
        .unwrap();
    assert_eq!(stored, n as i64, "records stored vs records handed over");
    println!(
        "store: {n} records in {seconds:.2} s: {:.0} records/s",
        n as f64 / seconds
    );
}

/// Hands `records` to `store` and flushes: the seconds it took.
async fn push(store: &Store, records: Vec<TraceRecord>) -> f64 {
    let started = Instant::now();
    for r in records {
        store.writer.reserve().submit(r, None).await;
    }
    store.writer.flush().await.unwrap();
    started.elapsed().as_secs_f64()
}

/// The median milliseconds from submitting a lone record to its commit.
async fn commit_latency(store: &Store, first: usize) -> f64 {
    let mut took = Vec::new();
    for i in 0..200 {
        let started = Instant::now();
        store.writer.reserve().submit(record(first + i), None).await;
        store.writer.flush().await.unwrap();
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    took[took.len() / 2]
}

/// A fresh database on the PostgreSQL server `server` (a URL ending in
/// its admin database): its URL.
fn fresh_database(server: &str) -> String {
    let name = format!("tg_bench_{}", uuid::Uuid::new_v4().simple());
    let server = server.to_string();
    std::thread::spawn(move || {
        let mut admin = postgres::Client::connect(&server, postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        format!("{base}/{name}")
    })
    .join()
    .unwrap()
}

/// Stores of `replicas` replicas on `db`.
fn stores(db: &tracegate::store::Database, replicas: usize) -> Vec<Store> {
    (0..replicas)
        .map(|i| {
            Store::open(
                db,
                StoreOptions::default(),
                Default::default(),
                &format!("bench{i}"),
            )
            .unwrap()
        })
        .collect()
}

/// SQLite, PostgreSQL with one replica and with three, side by side.
async fn backends(server: &str, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "sqlite",
            tracegate::store::Database::from(&*dir.path().join("side.db")),
            1,
        ),
        (
            "postgres",
            tracegate::store::Database::parse(&fresh_database(server)),
            1,
        ),
        (
            "postgres",
            tracegate::store::Database::parse(&fresh_database(server)),
            3,
        ),
    ];
    for (name, db, replicas) in cases {
        let stores = stores(&db, replicas);
        let share = n / replicas;
        let pushes = stores.iter().enumerate().map(|(i, store)| {
            let records: Vec<TraceRecord> = (i * share..(i + 1) * share).map(record).collect();
            push(store, records)
        });
        let seconds = futures_util::future::join_all(pushes)
            .await
            .into_iter()
            .fold(0.0, f64::max);
        let latency = commit_latency(&stores[0], n + 1).await;
        for store in stores {
            store.close().await.unwrap();
        }
        let total = share * replicas;
        let reading = db.clone();
        let stored = tokio::task::spawn_blocking(move || {
            tracegate::store::Reader::open(&reading)
                .unwrap()
                .count_traces(&Default::default())
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(stored, (total + 200) as u64, "{name}: records stored");
        println!(
            "store_backends: {name} x{replicas}: {total} records in {seconds:.2} s: {:.0} records/s; \
             commit latency p50 {latency:.2} ms",
            total as f64 / seconds
        );
    }
}
