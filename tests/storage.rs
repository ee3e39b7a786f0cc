//! Session-linear storage: a session's calls share what they repeat, and
//! every call still reads back exactly — through the real gateway, the
//! store's own API, deletions and prune, and a migration from the previous
//! schema. Each test ends with the layout's invariants checked in plain SQL
//! (`assert_consistent`): every reference counted, none dangling, nothing
//! orphaned.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Gateway, Setup, count, process, records_in};
use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::{Duration, SystemTime};
use tracegate::config::{Config, ServeArgs, StoreOptions};
use tracegate::record::{Choice, Status, TopLogprob, TraceRecord, rfc3339};
use tracegate::store::prune::PruneOptions;
use tracegate::store::{Pruner, Reader, Store};

// ---- what a client sent and received ----

/// One call as its client saw it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Seen {
    trace_id: String,
    messages: Vec<Value>,
    prompt_token_ids: Vec<Value>,
    completion_token_ids: Vec<Value>,
    logprobs: Vec<Value>,
    answer: String,
}

/// Sends `messages` to a vLLM-kind gateway that does not strip token data,
/// streamed or not, and reads what came back as a client does.
async fn call(
    gw: &impl Gateway,
    session: &str,
    messages: &[Value],
    answer: &str,
    stream: bool,
) -> Seen {
    let mut body = json!({"model": "qwen3", "messages": messages, "max_tokens": 256});
    if stream {
        body["stream"] = json!(true);
    }
    let reply = gw
        .chat(&body)
        .headers(&[("x-rllm-session-id", session), ("x-mock-content", answer)])
        .answer()
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut seen = Seen {
        trace_id: reply.trace_id(),
        messages: messages.to_vec(),
        ..Seen::default()
    };
    let mut read = |chunk: &Value, content: &str| {
        if let Some(ids) = chunk["prompt_token_ids"].as_array() {
            seen.prompt_token_ids.extend(ids.iter().cloned());
        }
        let choice = &chunk["choices"][0];
        seen.completion_token_ids.extend(
            choice["token_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .cloned(),
        );
        let entries = choice["logprobs"]["content"]
            .as_array()
            .into_iter()
            .flatten();
        seen.logprobs.extend(entries.map(|e| e["logprob"].clone()));
        seen.answer.push_str(content);
    };
    if stream {
        for line in reply.text().lines() {
            let Some(data) = line.strip_prefix("data: ").filter(|d| *d != "[DONE]") else {
                continue;
            };
            let chunk: Value = serde_json::from_str(data).unwrap();
            let content = chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string();
            read(&chunk, &content);
        }
    } else {
        let chunk = reply.json();
        let content = chunk["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        read(&chunk, &content);
    }
    seen
}

/// The conversation after `seen`: its answer and a tool result.
fn next_turn(seen: &Seen, turn: usize, words: usize) -> Vec<Value> {
    let mut messages = seen.messages.clone();
    messages.push(json!({"role": "assistant", "content": seen.answer}));
    messages.push(json!({"role": "tool", "tool_call_id": format!("call_{turn}"), "content": text(turn, words)}));
    messages
}

/// Deterministic words.
fn text(seed: usize, words: usize) -> String {
    const WORDS: [&str; 16] = [
        "the", "test", "fails", "because", "line", "returns", "none", "patch", "diff", "cargo",
        "error", "value", "module", "fixed", "again", "output",
    ];
    (0..words)
        .map(|i| WORDS[(seed * 7 + i * 13 + i * i) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a stored record against what its client saw.
fn assert_seen(record: &Value, seen: &Seen) {
    let id = &seen.trace_id;
    assert_eq!(record["messages"], json!(seen.messages), "{id}: messages");
    assert_eq!(
        record["prompt_token_ids"],
        json!(seen.prompt_token_ids),
        "{id}: prompt ids"
    );
    assert_eq!(
        record["completion_token_ids"],
        json!(seen.completion_token_ids),
        "{id}: completion ids"
    );
    assert_eq!(record["logprobs"], json!(seen.logprobs), "{id}: logprobs");
    assert_eq!(
        record["response_message"]["content"],
        json!(seen.answer),
        "{id}: answer"
    );
}

async fn vllm_gateway() -> Setup {
    Setup::with(|a| {
        a.kind = Some("vllm".into());
        a.strip_vllm_fields = Some("false".into());
    })
    .await
}

// ---- the layout's invariants, in plain SQL ----

/// Every shared row's `refs` is what points at it, nothing points at a
/// missing row, and no row is left that nothing points at.
fn assert_consistent(db: &Path) {
    if common::sqlite_only("the SQLite layout's invariants") {
        return;
    }
    let checks = [
        (
            "message_nodes refs",
            "SELECT COUNT(*) FROM message_nodes n WHERE refs !=
                (SELECT COUNT(*) FROM traces t WHERE t.messages_node = n.id)
              + (SELECT COUNT(*) FROM traces t WHERE t.answer_node = n.id)
              + (SELECT COUNT(*) FROM message_nodes c WHERE c.parent_id = n.id)",
        ),
        (
            "token_runs refs",
            "SELECT COUNT(*) FROM token_runs r WHERE refs !=
                (SELECT COUNT(*) FROM traces t WHERE t.prompt_run = r.id)
              + (SELECT COUNT(*) FROM completions c WHERE c.token_run = r.id)
              + (SELECT COUNT(*) FROM token_runs c WHERE c.parent_id = r.id)",
        ),
        (
            "tool_lists refs",
            "SELECT COUNT(*) FROM tool_lists l WHERE refs != (SELECT COUNT(*) FROM traces t WHERE t.tools = l.id)",
        ),
        (
            "raw_references refs",
            "SELECT COUNT(*) FROM raw_references r WHERE refs != (SELECT COUNT(*) FROM traces t WHERE t.raw_ref = r.id)",
        ),
        (
            "dangling call references",
            "SELECT COUNT(*) FROM traces t WHERE
                (t.messages_node IS NOT NULL AND t.messages_node NOT IN (SELECT id FROM message_nodes))
             OR (t.answer_node IS NOT NULL AND t.answer_node NOT IN (SELECT id FROM message_nodes))
             OR (t.prompt_run IS NOT NULL AND t.prompt_run NOT IN (SELECT id FROM token_runs))
             OR (t.tools IS NOT NULL AND t.tools NOT IN (SELECT id FROM tool_lists))
             OR (t.raw_ref IS NOT NULL AND t.raw_ref NOT IN (SELECT id FROM raw_references))",
        ),
        (
            "dangling parents",
            "SELECT (SELECT COUNT(*) FROM message_nodes WHERE parent_id IS NOT NULL
                        AND parent_id NOT IN (SELECT id FROM message_nodes))
                  + (SELECT COUNT(*) FROM token_runs WHERE parent_id IS NOT NULL
                        AND parent_id NOT IN (SELECT id FROM token_runs))",
        ),
        (
            "dangling completions",
            "SELECT COUNT(*) FROM completions c WHERE c.trace NOT IN (SELECT id FROM traces)
                OR (c.token_run IS NOT NULL AND c.token_run NOT IN (SELECT id FROM token_runs))",
        ),
        (
            "orphan message_nodes",
            "SELECT COUNT(*) FROM message_nodes WHERE refs <= 0",
        ),
        ("orphan token_runs", "SELECT COUNT(*) FROM token_runs WHERE refs <= 0"),
        ("orphan tool_lists", "SELECT COUNT(*) FROM tool_lists WHERE refs <= 0"),
        (
            "orphan raw_references",
            "SELECT COUNT(*) FROM raw_references WHERE refs <= 0",
        ),
    ];
    for (what, sql) in checks {
        assert_eq!(count(db, sql), 0, "{what}");
    }
}

// ---- through the gateway ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_a_forty_turn_session_reads_back_as_its_client_saw_it() {
    let gw = vllm_gateway().await;
    let mut messages = vec![
        json!({"role": "system", "content": text(1, 300)}),
        json!({"role": "user", "content": "Fix the failing test."}),
    ];
    let mut seen = Vec::new();
    for turn in 0..40 {
        let answer = text(turn + 100, 20 + turn % 30);
        let call = call(&*gw, "forty", &messages, &answer, turn % 2 == 1).await;
        messages = next_turn(&call, turn, 150 + (turn * 37) % 250);
        seen.push(call);
    }
    gw.flush().await;
    for call in &seen {
        let record = gw.get_json(&format!("/traces/{}", call.trace_id)).await;
        assert_seen(&record, call);
    }
    // The export reads the same records.
    let exported = process::tracegate(gw.db.parent().unwrap())
        .args([
            "export",
            "--db",
            &common::db_arg(&gw.db),
            "--session",
            "forty",
            "--out",
            "-",
        ])
        .output()
        .unwrap();
    assert!(exported.status.success());
    let lines: Vec<Value> = String::from_utf8(exported.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 40);
    for (line, call) in lines.iter().zip(&seen) {
        assert_eq!(line["trace_id"], json!(call.trace_id));
        assert_seen(line, call);
    }
    // Linear: each token id is stored about once. The mock's prompts extend
    // the previous prompt (not its completion: it re-tokenizes the answer),
    // so the runs hold the final prompt and every completion — and a few ids
    // twice when a call's record reaches the writer before its
    // predecessor's (runs are shared whole).
    let last = seen.last().unwrap();
    let completions: usize = seen.iter().map(|c| c.completion_token_ids.len()).sum();
    let unique = (last.prompt_token_ids.len() + completions) as i64;
    if common::sqlite_only("the session-linear layout's sizes") {
        return;
    }
    let stored = gw.count("SELECT SUM(length(token_ids)) / 4 FROM token_runs");
    assert!(
        stored >= unique && stored * 10 <= unique * 11,
        "{stored} ids stored for {unique}"
    );
    // The system prompt and task, 40 answers, 39 tool results sent back.
    assert_eq!(gw.count("SELECT COUNT(*) FROM message_nodes"), 2 + 40 + 39);
    assert_consistent(&gw.db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_branching_calls_of_one_session_read_back_exactly() {
    let gw = vllm_gateway().await;
    let start = vec![
        json!({"role": "system", "content": text(2, 120)}),
        json!({"role": "user", "content": "Try four fixes at once."}),
    ];
    let root = call(&*gw, "branches", &start, "I will try four.", false).await;
    // Four branches from the same call, in flight together: they reach the
    // writer in any order.
    let branches = futures_util::future::join_all((0..4).map(|b| {
        let messages = next_turn(&root, 10 + b, 40 + b * 10);
        let gw = &*gw;
        async move { call(gw, "branches", &messages, &text(b, 12), b % 2 == 0).await }
    }))
    .await;
    // Each branch goes on, concurrently again; one drops back to the start
    // (a sub-agent with the bare task), one summarises its context.
    let mut next: Vec<(Vec<Value>, bool)> = branches
        .iter()
        .enumerate()
        .map(|(b, seen)| (next_turn(seen, 20 + b, 30), b % 2 == 1))
        .collect();
    next.push((start.clone(), false));
    next.push((
        vec![
            start[0].clone(),
            json!({"role": "user", "content": "Summary: two fixes failed."}),
        ],
        true,
    ));
    let followers =
        futures_util::future::join_all(next.iter().enumerate().map(|(i, (messages, stream))| {
            let gw = &*gw;
            async move { call(gw, "branches", messages, &text(40 + i, 9), *stream).await }
        }))
        .await;
    gw.flush().await;
    for seen in std::iter::once(&root).chain(&branches).chain(&followers) {
        let record = gw.get_json(&format!("/traces/{}", seen.trace_id)).await;
        assert_seen(&record, seen);
    }
    assert_consistent(&gw.db);
}

// ---- through the store ----

/// A call of `session` at `age` before now, with these messages and token
/// data (two choices, the second without logprobs).
fn record(
    session: &str,
    step: i64,
    messages: Vec<Value>,
    prompt: Vec<u32>,
    age: Duration,
) -> TraceRecord {
    let started = SystemTime::now() - age;
    let answer: Map<String, Value> = serde_json::from_value(
        json!({"role": "assistant", "content": format!("answer {step} of {session}")}),
    )
    .unwrap();
    let choices = vec![
        Choice {
            index: 0,
            message: answer.clone(),
            finish_reason: Some("stop".into()),
            token_ids: vec![900 + step as u32, 901, 902],
            logprobs: Some(vec![-0.25, -0.5, -0.125 * step as f64]),
            top_logprobs: Some(vec![vec![TopLogprob {
                token: "a".into(),
                logprob: -0.25,
            }]]),
        },
        Choice {
            index: 1,
            message: serde_json::from_value(json!({"role": "assistant", "content": "other"}))
                .unwrap(),
            finish_reason: Some("length".into()),
            token_ids: vec![7, 8],
            ..Choice::default()
        },
    ];
    let mut r = TraceRecord {
        trace_id: format!("{session}-{step:03}"),
        span_id: "00f067aa0ba902b7".into(),
        otel_trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        upstream: "http://127.0.0.1:8000/v1".into(),
        model: Some("qwen3".into()),
        stream: step % 2 == 0,
        raw_request: Some(json!({"model": "qwen3", "messages": messages, "temperature": 0.5})),
        raw_response: Some(
            json!({"id": format!("chatcmpl-{step}"), "choices": [], "prompt_token_ids": prompt}),
        ),
        request_headers: serde_json::from_value(json!({"content-type": "application/json"}))
            .unwrap(),
        request_params: serde_json::from_value(json!({"temperature": 0.5})).unwrap(),
        messages,
        prompt_token_ids: prompt,
        response_message: answer,
        finish_reason: Some("stop".into()),
        finish_reasons: vec!["stop".into(), "length".into()],
        completion_token_ids: choices[0].token_ids.clone(),
        logprobs: choices[0].logprobs.clone(),
        choices,
        timestamp: tracegate::record::epoch_seconds(started),
        started_at: rfc3339(started),
        ended_at: rfc3339(started + Duration::from_millis(5)),
        latency_ms: 5.0,
        status: Status::Ok,
        http_status: Some(200),
        ..TraceRecord::default()
    };
    r.identity.session_id = Some(session.into());
    r.identity.run_id = Some("store-run".into());
    r.identity.step_id = Some(step);
    r
}

/// Turns of a session: each extends the previous messages + answer and
/// prompt + completion (except where `resets`), over a shared system prompt.
fn session(name: &str, turns: usize, age: impl Fn(usize) -> Duration) -> Vec<TraceRecord> {
    let mut messages = vec![json!({"role": "system", "content": text(3, 80)})];
    let mut prompt: Vec<u32> = (1..=40).collect();
    let mut records: Vec<TraceRecord> = Vec::new();
    for turn in 0..turns {
        messages.push(json!({"role": "user", "content": format!("{name} turn {turn}")}));
        let r = record(
            name,
            turn as i64,
            messages.clone(),
            prompt.clone(),
            age(turn),
        );
        messages.push(Value::Object(r.response_message.clone()));
        prompt.extend(&r.completion_token_ids);
        prompt.extend([5000 + turn as u32, 5001]);
        if turn == 3 {
            // A chat template that re-tokenizes: the prompt changes inside.
            prompt[20] = 77_777;
        }
        records.push(r);
    }
    records
}

async fn store_with(db: &Path, records: &[TraceRecord]) {
    let store = Store::open(
        &tracegate::store::Database::from(db),
        StoreOptions::default(),
        Default::default(),
        "test",
    )
    .unwrap();
    for record in records {
        store.writer.reserve().submit(record.clone(), None).await;
    }
    store.close().await.unwrap();
}

fn read_all(db: &Path) -> Vec<TraceRecord> {
    let mut records = records_in(db);
    records.sort_by(|a, b| a.trace_id.cmp(&b.trace_id));
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_arriving_out_of_order_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let mut records = session("late", 12, |_| Duration::ZERO);
    // The writer sees turn 5 first, then the rest backwards, then again
    // some of them as retries of the same prompt.
    records.rotate_left(5);
    records[1..].reverse();
    let mut retry = records[3].clone();
    retry.trace_id = "late-retry".into();
    records.push(retry);
    store_with(&db, &records).await;
    records.sort_by(|a, b| a.trace_id.cmp(&b.trace_id));
    assert_eq!(read_all(&db), records);
    assert_consistent(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_leaves_out_only_itself_and_no_shared_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let records = session("refused", 6, |_| Duration::ZERO);
    // A second record with turn 2's id, and other messages of its own: the
    // unique trace id refuses it, in the same batch as the calls around it.
    let mut twin = records[4].clone();
    twin.trace_id = records[2].trace_id.clone();
    twin.messages
        .push(json!({"role": "user", "content": "only in the twin"}));
    let mut sent = records.clone();
    sent.insert(3, twin);
    store_with(&db, &sent).await;
    assert_eq!(read_all(&db), records);
    assert_consistent(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_middle_sessions_calls_and_pruning_keep_every_other_call_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    // Three sessions share their system prompt and their kinds of raw parts
    // (one raw reference for streamed calls, one for the others); B's calls
    // sit between A's and C's.
    let a = session("a", 6, |t| {
        Duration::from_secs(86_400 * 40) - Duration::from_secs(t as u64 * 86_400 * 3)
    });
    let b = session("b", 6, |_| Duration::from_secs(60));
    let c = session("c", 6, |_| Duration::ZERO);
    let all: Vec<TraceRecord> = a.iter().chain(&b).chain(&c).cloned().collect();
    store_with(&db, &all).await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM raw_references"), 2);
    let store = Store::open(
        &tracegate::store::Database::from(&*db),
        StoreOptions::default(),
        Default::default(),
        "test",
    )
    .unwrap();
    assert_eq!(store.writer.delete_session("b".into()).await.unwrap(), 6);
    // And the writer goes on placing calls after the deletion.
    let more = session("c2", 3, |_| Duration::ZERO);
    for record in &more {
        store.writer.reserve().submit(record.clone(), None).await;
    }
    store.close().await.unwrap();
    let kept: Vec<TraceRecord> = a.iter().chain(&c).chain(&more).cloned().collect();
    let mut expected = kept.clone();
    expected.sort_by(|x, y| x.trace_id.cmp(&y.trace_id));
    assert_eq!(read_all(&db), expected);
    assert_consistent(&db);
    // Prune A's first calls (older than 30 days): its later calls still
    // read whole, the shared rows they use stay, the rest goes.
    let mut pruner = Pruner::open(&db).unwrap();
    let options = PruneOptions {
        cutoff: rfc3339(SystemTime::now() - Duration::from_secs(86_400 * 30)),
        dry_run: false,
        force: false,
    };
    let report = pruner.prune(&options).unwrap();
    assert_eq!(report.deleted[1].rows, 4, "{report:?}");
    expected.retain(|r| {
        r.trace_id != "a-000"
            && r.trace_id != "a-001"
            && r.trace_id != "a-002"
            && r.trace_id != "a-003"
    });
    assert_eq!(read_all(&db), expected);
    assert_consistent(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_references_go_with_their_last_call_and_their_kinds_get_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let references = "SELECT COUNT(*) FROM raw_references";
    // One session, two kinds of raw parts (streamed or not): one reference
    // each, used by that session's calls only.
    let store = Store::open(
        &tracegate::store::Database::from(&*db),
        StoreOptions::default(),
        Default::default(),
        "test",
    )
    .unwrap();
    for record in session("gone", 2, |_| Duration::ZERO) {
        store.writer.reserve().submit(record, None).await;
    }
    store.writer.flush().await.unwrap();
    assert_eq!(count(&db, references), 2);
    assert_eq!(store.writer.delete_session("gone".into()).await.unwrap(), 2);
    assert_eq!(count(&db, references), 0);
    // The same writer's next calls of those kinds become their new
    // references.
    for record in session("next", 2, |_| Duration::ZERO) {
        store.writer.reserve().submit(record, None).await;
    }
    store.close().await.unwrap();
    assert_eq!(count(&db, references), 2);
    assert_consistent(&db);
    // Pruning every call takes their references too.
    let options = PruneOptions {
        cutoff: rfc3339(SystemTime::now() + Duration::from_secs(3600)),
        dry_run: false,
        force: false,
    };
    let report = Pruner::open(&db).unwrap().prune(&options).unwrap();
    let swept = report.deleted.iter().find(|d| d.table == "raw_references");
    assert_eq!(swept.map(|d| d.rows), Some(2), "{report:?}");
    assert_eq!(count(&db, references), 0);
    assert_consistent(&db);
}

// ---- the previous schema ----

/// Builds a database as the previous version of tracegate did: schema
/// 0001 + 0002 only, and rows encoded its way.
mod previous {
    use super::*;
    use rusqlite::{Connection, params};

    /// Packs lists the previous way: a u32 count, then per list its u32
    /// length (`u32::MAX`: absent) and its values.
    fn lists<T>(items: &[Option<Vec<T>>], bytes: impl Fn(&T) -> Vec<u8>) -> Option<Vec<u8>> {
        if items
            .iter()
            .all(|i| i.as_ref().is_none_or(|l| l.is_empty()))
        {
            return None;
        }
        let mut out = (items.len() as u32).to_le_bytes().to_vec();
        for item in items {
            match item {
                Some(list) => {
                    out.extend((list.len() as u32).to_le_bytes());
                    list.iter().for_each(|v| out.extend(bytes(v)));
                }
                None => out.extend(u32::MAX.to_le_bytes()),
            }
        }
        Some(out)
    }

    fn zstd_json(value: Option<&Value>) -> Option<Vec<u8>> {
        value.map(|v| zstd::bulk::compress(v.to_string().as_bytes(), 3).unwrap())
    }

    /// Inserts `record` as version 1 stored it.
    fn insert(conn: &Connection, record: &TraceRecord) {
        let mut json = serde_json::to_value(record).unwrap();
        for field in [
            "prompt_token_ids",
            "completion_token_ids",
            "logprobs",
            "raw_request",
            "raw_response",
        ] {
            json.as_object_mut().unwrap().shift_remove(field);
        }
        for choice in json["choices"].as_array_mut().unwrap() {
            choice["token_ids"] = json!([]);
            choice["logprobs"] = Value::Null;
            choice["top_logprobs"] = Value::Null;
        }
        let ids: Vec<Option<Vec<u32>>> = record
            .choices
            .iter()
            .map(|c| Some(c.token_ids.clone()))
            .collect();
        let lps: Vec<Option<Vec<f64>>> =
            record.choices.iter().map(|c| c.logprobs.clone()).collect();
        let tops: Vec<Option<Vec<Vec<TopLogprob>>>> = record
            .choices
            .iter()
            .map(|c| c.top_logprobs.clone())
            .collect();
        let tops = tops
            .iter()
            .any(Option::is_some)
            .then(|| serde_json::to_value(&tops).unwrap());
        let prompt = (!record.prompt_token_ids.is_empty()).then(|| {
            record
                .prompt_token_ids
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
        });
        let i = &record.identity;
        conn.execute(
            "INSERT INTO traces (trace_id, session_id, run_id, harness, step_id, parent_span_id, project,
                 experiment, span_type, route, upstream, protocol, operation, method, path, model,
                 response_model, stream, status, http_status, error_kind, started_at, ended_at, latency_ms,
                 ttft_ms, input_tokens, output_tokens, tokens, record, prompt_token_ids,
                 completion_token_ids, logprobs, top_logprobs, raw_request, raw_response)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                 ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34, ?35)",
            params![
                record.trace_id, i.session_id, i.run_id, i.harness, i.step_id, i.parent_span_id, i.project,
                i.experiment, record.span_type, record.route, record.upstream, record.protocol.as_str(),
                record.operation.as_str(), record.method, record.path, record.model, record.response_model,
                record.stream, record.status.as_str(), record.http_status,
                record.error.as_ref().map(|e| e.kind.as_str()), record.started_at, record.ended_at,
                record.latency_ms, record.ttft_ms, record.usage.input_tokens.map(|n| n as i64),
                record.usage.output_tokens.map(|n| n as i64), record.usage.tokens().map(|n| n as i64),
                json.to_string(), prompt, lists(&ids, |v| v.to_le_bytes().to_vec()),
                lists(&lps, |v| v.to_le_bytes().to_vec()), zstd_json(tops.as_ref()),
                zstd_json(record.raw_request.as_ref()), zstd_json(record.raw_response.as_ref()),
            ],
        )
        .unwrap();
    }

    /// A version-2 database at `db` holding `records`, their sessions and
    /// run, and a span per record.
    pub fn build(db: &Path, records: &[TraceRecord]) {
        let conn = Connection::open(db).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);",
        )
        .unwrap();
        for (version, name, sql) in [
            (
                1,
                "0001_initial.sql",
                include_str!("../schema/0001_initial.sql"),
            ),
            (
                2,
                "0002_spans.sql",
                include_str!("../schema/0002_spans.sql"),
            ),
        ] {
            conn.execute_batch(sql).unwrap();
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?1, ?2, '2026-11-01T00:00:00.000000Z')",
                params![version, name],
            )
            .unwrap();
        }
        for record in records {
            insert(&conn, record);
            conn.execute(
                "INSERT INTO spans (trace_id, created_at, span) VALUES (?1, ?2, '{}')",
                params![record.trace_id, record.ended_at],
            )
            .unwrap();
            if let Some(session) = &record.identity.session_id {
                conn.execute(
                    "INSERT INTO sessions (session_id, run_id, created_at, first_seen, last_seen, trace_count, tokens)
                     VALUES (?1, ?2, ?3, ?3, ?3, 1, 0)
                     ON CONFLICT (session_id) DO UPDATE SET trace_count = trace_count + 1, last_seen = excluded.last_seen",
                    params![session, record.identity.run_id, record.started_at],
                )
                .unwrap();
            }
        }
    }
}

/// Records of every shape the previous version stored: token data, a
/// stream's raw SSE, an error, embeddings, extra usage, no session.
fn previous_records() -> Vec<TraceRecord> {
    let mut records = session("old", 5, |t| Duration::from_secs(3600 - t as u64));
    let mut error = record(
        "old-error",
        0,
        vec![json!({"role": "user", "content": "boom"})],
        vec![],
        Duration::ZERO,
    );
    error.status = Status::Error;
    error.http_status = Some(500);
    error.error = Some(tracegate::record::CallError::new(
        tracegate::record::ErrorKind::UpstreamHttpError,
        "the upstream answered HTTP 500",
    ));
    error.raw_response = Some(
        json!({"content_type": "text/event-stream", "encoding": "utf8", "body": "data: {}\n\n"}),
    );
    error.usage.cached_input_tokens = Some(3);
    error.first_chunk_at = Some("not a time".into());
    error.identity.session_id = None;
    error.tools = vec![json!({"type": "function", "function": {"name": "f"}})];
    error.embeddings = Some(tracegate::record::Embeddings {
        input_count: 2,
        dimensions: Some(8),
        encoding_format: None,
    });
    error.metadata = serde_json::from_value(json!({"k": [1, 2.5, "x"]})).unwrap();
    records.push(error);
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_version_database_opens_migrates_and_reads_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let records = previous_records();
    previous::build(&db, &records);
    let sessions_before = count(&db, "SELECT SUM(trace_count) FROM sessions");
    // The commands read only what the gateway migrated.
    let refused = Reader::open(&tracegate::store::Database::from(&*db))
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("schema version 2"), "{refused}");
    let store = Store::open(
        &tracegate::store::Database::from(&*db),
        StoreOptions::default(),
        Default::default(),
        "test",
    )
    .unwrap();
    store.close().await.unwrap();
    let mut expected = records.clone();
    expected.sort_by(|a, b| a.trace_id.cmp(&b.trace_id));
    assert_eq!(read_all(&db), expected);
    // Migrated to the newest version this binary knows (4 when this test
    // was written; each new migration moves it).
    let newest = tracegate::store::migrate::MIGRATIONS
        .last()
        .unwrap()
        .version;
    assert_eq!(
        count(&db, "SELECT MAX(version) FROM schema_migrations"),
        newest
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'traces_v2'"
        ),
        0
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM spans"),
        records.len() as i64
    );
    assert_eq!(
        count(&db, "SELECT SUM(trace_count) FROM sessions"),
        sessions_before
    );
    // The migrated calls share their session's content like new ones: the
    // session's system prompt, five questions and five answers, and the
    // error call's question and answer.
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM message_nodes"),
        1 + 5 + 5 + 2
    );
    assert_consistent(&db);
    // And the real binary serves them as they were.
    let gw = process::Serve::new(dir.path())
        .args(["--db", "traces.db", "--upstream", &common::nowhere("/v1")])
        .spawn();
    for record in &records {
        let served = gw.get_json(&format!("/traces/{}", record.trace_id)).await;
        assert_eq!(served, serde_json::to_value(record).unwrap());
    }
    gw.stop().await;
}

// ---- raw bodies ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bodies_errors_keeps_only_failed_calls_bodies_and_never_none() {
    let gw = Setup::with(|a| a.raw_bodies = Some("errors".into())).await;
    gw.chat(&common::chat_body("fine")).answer().await;
    gw.chat(&common::chat_body("broken"))
        .header("x-mock-status", "500")
        .answer()
        .await;
    let records = gw.records().await;
    let (ok, failed) = (&records[0], &records[1]);
    assert_eq!(ok.status, Status::Ok);
    assert!(ok.raw_request.is_none() && ok.raw_response.is_none());
    assert!(!ok.request_headers.is_empty() && !ok.response_headers.is_empty());
    assert_eq!(
        ok.messages[0]["content"], "fine",
        "what capture read is kept"
    );
    assert_eq!(failed.status, Status::Error);
    assert!(failed.raw_request.is_some() && failed.raw_response.is_some());

    let never =
        Setup::with_route(json!({"name": "lean", "model_prefix": "*", "raw_bodies": "never"}))
            .await;
    never
        .chat(&common::chat_body("x"))
        .header("x-mock-status", "500")
        .answer()
        .await;
    let record = never.only_record().await;
    assert!(record.raw_request.is_none() && record.raw_response.is_none());

    let wrong = Config::load(&ServeArgs {
        raw_bodies: Some("sometimes".into()),
        ..ServeArgs::default()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        wrong.contains("raw_bodies") && wrong.contains("always"),
        "{wrong}"
    );
}

// ---- the documented reads ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(sdk_tests),
    ignore = "needs numpy in .venv (tests/python/requirements.txt); run with TRACEGATE_REQUIRE_SDK_TESTS=1, as CI does"
)]
async fn the_documented_python_snippet_reads_what_the_api_returns() {
    if common::sqlite_only("the snippet reads the SQLite file") {
        return;
    }
    let storage = include_str!("../schema/storage.md");
    let recording = include_str!("../docs/recording.md");
    let snippet = python_block(storage);
    let recording = &recording[recording.find("### Reading the store with numpy").unwrap()..];
    assert_eq!(
        python_block(recording),
        snippet,
        "docs/recording.md and schema/storage.md show the same snippet"
    );
    let gw = vllm_gateway().await;
    let mut messages = vec![json!({"role": "user", "content": "Count to five."})];
    let mut seen = Vec::new();
    for turn in 0..4 {
        let call = call(&*gw, "numpy", &messages, &text(turn, 8), turn % 2 == 0).await;
        messages = next_turn(&call, turn, 12);
        seen.push(call);
    }
    gw.flush().await;
    let python = std::env::var_os("TRACEGATE_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let snippet = snippet.replace(
        "sqlite3.connect(\"tracegate.db\")",
        &format!("sqlite3.connect({:?})", gw.db.display().to_string()),
    );
    let script = format!(
        "{snippet}\nimport json, sys\nout = {{}}\nfor trace_id in sys.argv[2:]:\n    \
         m = messages(trace_id)\n    p = prompt_token_ids(trace_id)\n    ids, lps = completion(trace_id)\n    \
         out[trace_id] = [m, p.tolist(), ids.tolist(), lps.tolist()]\nprint(json.dumps(out))\n"
    );
    let ran = std::process::Command::new(python)
        .arg("-c")
        .arg(&script)
        .arg("-")
        .args(seen.iter().map(|s| &s.trace_id))
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let out: Value = serde_json::from_slice(&ran.stdout).unwrap();
    for call in &seen {
        let got = &out[&call.trace_id];
        assert_eq!(got[0], json!(call.messages));
        assert_eq!(got[1], json!(call.prompt_token_ids));
        assert_eq!(got[2], json!(call.completion_token_ids));
        assert_eq!(got[3], json!(call.logprobs));
    }
}

/// The first ```python block of a markdown page.
fn python_block(page: &str) -> &str {
    let start = page.find("```python\n").expect("a python block") + "```python\n".len();
    &page[start..start + page[start..].find("```").unwrap()]
}

#[test]
fn the_views_read_every_calls_messages_and_tokens() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let records = session("views", 4, |_| Duration::ZERO);
    rt.block_on(store_with(&db, &records));
    let conn = rusqlite::Connection::open(&db).unwrap();
    for r in &records {
        let messages: String = conn
            .query_row(
                "SELECT json_group_array(json(message)) FROM
                   (SELECT message FROM trace_messages WHERE trace_id = ?1 ORDER BY position)",
                [&r.trace_id],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&messages).unwrap(),
            json!(r.messages)
        );
        let mut stmt = conn
            .prepare("SELECT token_ids FROM trace_prompt_runs WHERE trace_id = ?1 ORDER BY start")
            .unwrap();
        let prompt: Vec<u32> = stmt
            .query_map([&r.trace_id], |row| row.get::<_, Vec<u8>>(0))
            .unwrap()
            .flat_map(|b| {
                b.unwrap()
                    .chunks(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(prompt, r.prompt_token_ids);
        let (ids, lps): (Vec<u8>, Vec<u8>) = conn
            .query_row(
                "SELECT token_ids, logprobs FROM trace_completions WHERE trace_id = ?1 AND choice = 0",
                [&r.trace_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(ids.len(), 4 * r.completion_token_ids.len());
        assert_eq!(lps.len(), 8 * r.logprobs.as_ref().unwrap().len());
        let answer: String = conn
            .query_row(
                "SELECT message FROM trace_answers WHERE trace_id = ?1",
                [&r.trace_id],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&answer).unwrap(),
            json!(r.response_message)
        );
    }
}
