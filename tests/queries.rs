//! The query commands over the database file, run as the real binary:
//! `runs`, `sessions`, `traces list`, `traces show`, `export`, `stats` and
//! `prune`.
//!
//! Two kinds of data feed them. `tracegate demo` gives a realistic store (one
//! run, two sessions, plain, tool-call and streamed calls) whose every
//! number can be checked against SQL or the HTTP API. Hand-built stores,
//! written through the real store writer with chosen times, latencies,
//! models and errors, give exact expectations for filters, statistics and
//! pruning — numbers known before the command runs, not recomputed from its
//! own output.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::{Running, free_port, tracegate};
use common::{chat_body, client, start_mock, within};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime};
use tempfile::TempDir;
use tracegate::config::StoreOptions;
use tracegate::record::{
    CallError, ErrorKind, Identity, Operation, Protocol, Status, TraceRecord, Usage, epoch_seconds,
    rfc3339,
};
use tracegate::store::Store;

// ---- running the binary ----

/// Runs `tracegate args...` in `dir` to the end.
fn run(dir: &Path, args: &[&str]) -> Output {
    tracegate(dir).args(args).output().unwrap()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command with `--format json` and parses its output.
fn json_of(dir: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    serde_json::from_str(&ok(dir, &args)).unwrap()
}

/// Runs a command with `--format jsonl` and parses each line.
fn jsonl_of(dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut args = args.to_vec();
    args.extend(["--format", "jsonl"]);
    lines_as_json(&ok(dir, &args))
}

fn lines_as_json(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A table's body rows, cells split where columns are (two or more spaces).
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip(1)
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

fn query_i64(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn query_strings(db: &Path, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every row of the three tables, as text: to see that nothing changed.
fn dump(db: &Path) -> Vec<String> {
    query_strings(
        db,
        "SELECT 't ' || trace_id || ' ' || COALESCE(session_id, '-') || ' ' || started_at FROM traces
         UNION ALL SELECT 's ' || session_id || ' ' || trace_count || ' ' || error_count || ' '
             || tokens || ' ' || COALESCE(first_seen, '-') || ' ' || COALESCE(last_seen, '-') FROM sessions
         UNION ALL SELECT 'r ' || run_id || ' ' || trace_count || ' ' || error_count || ' '
             || tokens || ' ' || first_seen || ' ' || last_seen FROM runs
         ORDER BY 1",
    )
}

// ---- data ----

/// A store filled by `tracegate demo`, in its own directory.
struct Demo {
    dir: TempDir,
    run_id: String,
}

impl Demo {
    fn new() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        ok(dir.path(), &["demo", "--db", "demo.db"]);
        let run_id =
            query_strings(&dir.path().join("demo.db"), "SELECT run_id FROM runs").remove(0);
        Demo { dir, run_id }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("demo.db")
    }

    /// `args` followed by `--db demo.db`.
    fn ok(&self, args: &[&str]) -> String {
        ok(self.dir(), &[args, &["--db", "demo.db"]].concat())
    }

    fn json(&self, args: &[&str]) -> Value {
        json_of(self.dir(), &[args, &["--db", "demo.db"]].concat())
    }

    fn jsonl(&self, args: &[&str]) -> Vec<Value> {
        jsonl_of(self.dir(), &[args, &["--db", "demo.db"]].concat())
    }

    /// The trace id of `step` in session `n` (1 or 2).
    fn step(&self, n: u32, step: u32) -> String {
        query_strings(
            &self.db(),
            &format!(
                "SELECT trace_id FROM traces WHERE session_id = '{}-session-{n}' AND step_id = {step}",
                self.run_id
            ),
        )
        .remove(0)
    }
}

/// One hand-built call.
#[derive(Clone)]
struct Call {
    run: Option<&'static str>,
    session: Option<&'static str>,
    model: &'static str,
    harness: &'static str,
    route: Option<&'static str>,
    /// How long before "now" it started.
    age: Duration,
    latency_ms: f64,
    ttft_ms: Option<f64>,
    error: bool,
    input_tokens: u64,
    output_tokens: u64,
}

impl Default for Call {
    fn default() -> Self {
        Call {
            run: Some("run-a"),
            session: Some("session-a"),
            model: "model-a",
            harness: "harness-a",
            route: None,
            age: Duration::from_secs(60),
            latency_ms: 10.0,
            ttft_ms: Some(5.0),
            error: false,
            input_tokens: 3,
            output_tokens: 4,
        }
    }
}

impl Call {
    fn record(&self, now: SystemTime) -> TraceRecord {
        let started = now - self.age;
        TraceRecord {
            trace_id: uuid::Uuid::now_v7().to_string(),
            span_id: "0123456789abcdef".into(),
            otel_trace_id: "0123456789abcdef0123456789abcdef".into(),
            identity: Identity {
                session_id: self.session.map(str::to_string),
                run_id: self.run.map(str::to_string),
                harness: Some(self.harness.to_string()),
                ..Identity::default()
            },
            span_type: "llm.call".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            route: self.route.map(str::to_string),
            upstream: "http://127.0.0.1:9/v1".into(),
            protocol: Protocol::Openai,
            operation: Operation::Chat,
            model: Some(self.model.to_string()),
            messages: vec![json!({"role": "user", "content": "hi"})],
            usage: Usage {
                input_tokens: Some(self.input_tokens),
                output_tokens: Some(self.output_tokens),
                ..Usage::default()
            },
            timestamp: epoch_seconds(started),
            started_at: rfc3339(started),
            ended_at: rfc3339(started + Duration::from_secs_f64(self.latency_ms / 1000.0)),
            latency_ms: self.latency_ms,
            ttft_ms: self.ttft_ms,
            // A time to first token is a streamed call's.
            stream: self.ttft_ms.is_some(),
            status: if self.error {
                Status::Error
            } else {
                Status::Ok
            },
            http_status: Some(if self.error { 500 } else { 200 }),
            error: self
                .error
                .then(|| CallError::new(ErrorKind::UpstreamError, "the upstream answered 500")),
            ..TraceRecord::default()
        }
    }
}

/// Writes `calls` into a new store at `dir/traces.db` through the real
/// writer; returns their records (trace ids, times) in the same order.
async fn build_store(dir: &Path, calls: &[Call]) -> Vec<TraceRecord> {
    build_store_with_spans(dir, calls, None).await
}

/// Like [`build_store`], with a span per record in the export outbox, the
/// first `exported` of them marked as exported, when `exported` is given.
async fn build_store_with_spans(
    dir: &Path,
    calls: &[Call],
    exported: Option<i64>,
) -> Vec<TraceRecord> {
    let now = SystemTime::now();
    let records: Vec<TraceRecord> = calls.iter().map(|c| c.record(now)).collect();
    let store = Store::open(
        &tracegate::store::Database::from(&*dir.join("traces.db")),
        StoreOptions::default(),
        Default::default(),
        "test",
    )
    .unwrap();
    for record in &records {
        let span = exported.map(|_| tracegate::record::Span {
            name: record.trace_id.clone(),
            ..Default::default()
        });
        store.writer.reserve().submit(record.clone(), span).await;
    }
    if let Some(cursor) = exported {
        store
            .writer
            .export_progress(tracegate::store::ExportProgress {
                cursor,
                exported: 0,
                claim: None,
                error: None,
            })
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    records
}

fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

fn days(n: u64) -> Duration {
    hours(n * 24)
}

fn ids<'a>(records: impl IntoIterator<Item = &'a TraceRecord>) -> BTreeSet<String> {
    records.into_iter().map(|r| r.trace_id.clone()).collect()
}

fn listed_ids(values: &[Value]) -> BTreeSet<String> {
    values
        .iter()
        .map(|v| v["trace_id"].as_str().unwrap().to_string())
        .collect()
}

/// A gateway process serving the store at `db` (its upstream is never
/// called: it is only there to answer the HTTP API).
fn gateway_on(dir: &Path, db: &Path, upstream: &str) -> Running {
    let port = free_port();
    let mut cmd = tracegate(dir);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", upstream])
        .arg("--db")
        .arg(db);
    Running::spawn(cmd, port)
}

async fn api_get(gateway: &Running, path: &str) -> Value {
    let response = client().get(gateway.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

// ---- runs and sessions ----

#[test]
fn runs_lists_the_demo_run_in_every_format() {
    let demo = Demo::new();
    let tokens = query_i64(&demo.db(), "SELECT SUM(tokens) FROM traces");

    let rows = table_rows(&demo.ok(&["runs"]));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0][..5],
        [&demo.run_id, "2", "6", "0", &tokens.to_string()]
    );

    let runs = demo.json(&["runs"]);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    let run = &runs[0];
    assert_eq!(run["run_id"], demo.run_id.as_str());
    assert_eq!(
        (
            &run["session_count"],
            &run["trace_count"],
            &run["error_count"]
        ),
        (&json!(2), &json!(6), &json!(0))
    );
    assert_eq!(run["tokens"], tokens);
    assert_eq!(demo.jsonl(&["runs"]), vec![run.clone()]);
}

#[test]
fn sessions_lists_the_demo_sessions_and_filters_by_run() {
    let demo = Demo::new();
    let rows = table_rows(&demo.ok(&["sessions"]));
    // Newest first, like runs and traces.
    let expected: Vec<String> = (1..=2)
        .rev()
        .map(|n| format!("{}-session-{n}", demo.run_id))
        .collect();
    assert_eq!(
        rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        expected
    );
    for row in &rows {
        assert_eq!(row[1..4], [&demo.run_id, "3", "0"], "{row:?}");
    }

    let sessions = demo.json(&["sessions", "--run", &demo.run_id]);
    assert_eq!(sessions.as_array().unwrap().len(), 2);
    for (session, id) in sessions.as_array().unwrap().iter().zip(&expected) {
        assert_eq!(session["session_id"], id.as_str());
        assert_eq!(session["trace_count"], 3);
        assert_eq!(session["run_id"], demo.run_id.as_str());
    }
    assert_eq!(demo.jsonl(&["sessions"]).len(), 2);
    assert_eq!(demo.json(&["sessions", "--run", "no-such-run"]), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_json_is_what_the_http_api_answers() {
    let demo = Demo::new();
    let gateway = gateway_on(demo.dir(), &demo.db(), "http://127.0.0.1:9/v1");
    assert_eq!(demo.json(&["runs"]), api_get(&gateway, "/runs").await);
    assert_eq!(
        demo.json(&["sessions"]),
        api_get(&gateway, "/sessions").await
    );
    assert_eq!(
        demo.json(&["sessions", "--run", &demo.run_id]),
        api_get(&gateway, &format!("/sessions?run_id={}", demo.run_id)).await
    );
}

// ---- traces list ----

#[test]
fn traces_list_shows_the_demo_calls_newest_first_in_every_format() {
    let demo = Demo::new();
    let all = query_strings(
        &demo.db(),
        "SELECT trace_id FROM traces ORDER BY started_at DESC",
    );

    let rows = table_rows(&demo.ok(&["traces", "list"]));
    assert_eq!(rows.len(), 6);
    let listed: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(listed, all);
    assert_eq!(
        rows.iter()
            .filter(|r| r[4] == "mock-model (stream)")
            .count(),
        2
    );

    let traces = demo.json(&["traces", "list"]);
    let traces = traces.as_array().unwrap();
    let listed: Vec<&str> = traces
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, all);
    for t in traces {
        assert_eq!(t["run_id"], demo.run_id.as_str());
        assert_eq!(t["model"], "mock-model");
        assert_eq!(t["status"], "ok");
        assert_eq!(t["http_status"], 200);
        assert!(t["usage"]["input_tokens"].as_i64().unwrap() > 0);
    }
    assert_eq!(&demo.jsonl(&["traces", "list"]), traces);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_list_filters_by_run_session_model_harness_errors_since_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let calls = [
        Call {
            age: hours(240),
            ..Call::default()
        },
        Call {
            age: hours(200),
            model: "model-b",
            ..Call::default()
        },
        Call {
            age: hours(150),
            session: Some("session-b"),
            harness: "harness-b",
            error: true,
            ..Call::default()
        },
        Call {
            age: hours(100),
            session: Some("session-b"),
            harness: "harness-b",
            ..Call::default()
        },
        Call {
            age: hours(50),
            run: Some("run-b"),
            session: Some("session-c"),
            model: "model-b",
            error: true,
            ..Call::default()
        },
        Call {
            age: hours(2),
            run: Some("run-b"),
            session: Some("session-c"),
            ..Call::default()
        },
    ];
    let records = build_store(dir.path(), &calls).await;
    let expect = |picks: &[usize]| ids(picks.iter().map(|&i| &records[i]));
    let list = |args: &[&str]| {
        listed_ids(&jsonl_of(
            dir.path(),
            &[&["traces", "list", "--db", "traces.db"], args].concat(),
        ))
    };

    assert_eq!(list(&[]), expect(&[0, 1, 2, 3, 4, 5]));
    assert_eq!(list(&["--run", "run-a"]), expect(&[0, 1, 2, 3]));
    assert_eq!(list(&["--session", "session-b"]), expect(&[2, 3]));
    assert_eq!(list(&["--model", "model-b"]), expect(&[1, 4]));
    assert_eq!(list(&["--harness", "harness-b"]), expect(&[2, 3]));
    assert_eq!(list(&["--errors"]), expect(&[2, 4]));
    assert_eq!(list(&["--errors", "--run", "run-b"]), expect(&[4]));
    assert_eq!(list(&["--limit", "2"]), expect(&[4, 5]));
    assert_eq!(list(&["--since", "1d"]), expect(&[5]));
    assert_eq!(list(&["--since", "3d"]), expect(&[4, 5]));
    // A date is midnight UTC: 125 hours back falls between the 150h and the
    // 100h calls whatever the time of day.
    let date = rfc3339(SystemTime::now() - hours(125))[..10].to_string();
    assert_eq!(list(&["--since", &date]), expect(&[3, 4, 5]));
    // An RFC 3339 time selects what started strictly after it, in any offset.
    let third = &records[2].started_at;
    assert_eq!(list(&["--since", third]), expect(&[3, 4, 5]));
    let instant = humantime::parse_rfc3339(third).unwrap() + hours(2);
    let plus_two = rfc3339(instant).replace('Z', "+02:00");
    assert_eq!(list(&["--since", &plus_two]), expect(&[3, 4, 5]));

    let errors = json_of(
        dir.path(),
        &[
            "traces",
            "list",
            "--db",
            "traces.db",
            "--errors",
            "--limit",
            "1",
        ],
    );
    assert_eq!(errors[0]["trace_id"], records[4].trace_id.as_str());
    assert_eq!(errors[0]["error"]["kind"], "upstream_error");
    assert_eq!(errors[0]["error"]["message"], "the upstream answered 500");
}

// ---- traces show ----

#[test]
fn traces_show_prints_the_messages_the_tool_call_and_the_answer() {
    let demo = Demo::new();
    let tool_step = demo.ok(&["traces", "show", &demo.step(1, 2)]);
    for expected in [
        "Find why the nightly build is red",
        "tools offered: search_docs",
        "tool call search_docs({\"query\":\"Go on.\"})",
        "finish: tool_calls",
        "harness tracegate-demo",
        &format!("session {}-session-1 · step 2", demo.run_id),
        "status     ok · HTTP 200",
    ] {
        assert!(tool_step.contains(expected), "{expected}:\n{tool_step}");
    }

    let streamed = demo.ok(&["traces", "show", &demo.step(1, 3)]);
    for expected in [
        "[tool] (result of call_",
        "3 results found",
        "This is the tracegate mock answering: Go on.",
        "finish: stop",
        "streamed",
        "ttft",
    ] {
        assert!(streamed.contains(expected), "{expected}:\n{streamed}");
    }
}

#[test]
fn traces_show_raw_prints_the_request_and_response_bodies() {
    let demo = Demo::new();
    let tool_step = demo.ok(&["traces", "show", "--raw", &demo.step(2, 2)]);
    let (request, response) = tool_step.split_once("\nresponse: HTTP 200\n").unwrap();
    assert!(request.contains("\"messages\""), "{request}");
    assert!(request.contains("Summarise the open pull requests"));
    assert!(request.contains("x-rllm-step-id: 2"));
    assert!(response.contains("\"tool_calls\""), "{response}");
    assert!(response.contains("search_docs"));

    let streamed = demo.ok(&["traces", "show", "--raw", &demo.step(2, 3)]);
    let (_, response) = streamed.split_once("\nresponse: HTTP 200\n").unwrap();
    assert!(response.contains("content-type: text/event-stream"));
    assert!(response.contains("data: [DONE]"), "{response}");
}

#[test]
fn traces_show_of_an_unknown_id_is_one_line_and_exit_1() {
    let demo = Demo::new();
    let out = run(
        demo.dir(),
        &["traces", "show", "no-such-id", "--db", "demo.db"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no-such-id"), "{stderr}");
}

// ---- export ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_round_trips_every_record_as_the_api_serves_it() {
    let demo = Demo::new();
    let printed = demo.ok(&["export", "--out", "all.jsonl"]);
    assert_eq!(printed, "exported 6 traces to all.jsonl\n");
    let text = std::fs::read_to_string(demo.dir().join("all.jsonl")).unwrap();
    let lines = lines_as_json(&text);
    assert_eq!(
        lines.len() as i64,
        query_i64(&demo.db(), "SELECT COUNT(*) FROM traces")
    );

    let gateway = gateway_on(demo.dir(), &demo.db(), "http://127.0.0.1:9/v1");
    for line in &lines {
        let id = line["trace_id"].as_str().unwrap();
        assert_eq!(line, &api_get(&gateway, &format!("/traces/{id}")).await);
    }
    // Token data and raw bodies are there, as arrays and JSON.
    assert!(lines.iter().all(|l| l["prompt_token_ids"].is_array()));
    assert!(
        lines
            .iter()
            .all(|l| l["raw_request"]["messages"].is_array())
    );

    // To stdout: the same lines, and nothing else on either stream (no
    // progress bar when not on a terminal).
    let out = run(demo.dir(), &["export", "--db", "demo.db", "--out", "-"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn export_takes_the_run_and_session_filters() {
    let demo = Demo::new();
    let session = format!("{}-session-2", demo.run_id);
    demo.ok(&["export", "--session", &session, "--out", "s.jsonl"]);
    let lines = lines_as_json(&std::fs::read_to_string(demo.dir().join("s.jsonl")).unwrap());
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["session_id"] == session.as_str()));

    demo.ok(&["export", "--run", &demo.run_id, "--out", "r.jsonl"]);
    let text = std::fs::read_to_string(demo.dir().join("r.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 6);
    demo.ok(&["export", "--run", "no-such-run", "--out", "none.jsonl"]);
    assert_eq!(
        std::fs::read_to_string(demo.dir().join("none.jsonl")).unwrap(),
        ""
    );
}

// ---- stats ----

#[test]
fn stats_prints_the_demo_calls() {
    let demo = Demo::new();
    let stats = demo.json(&["stats"]);
    let group = &stats[0];
    assert_eq!(stats.as_array().unwrap().len(), 1);
    assert_eq!(group["model"], "mock-model");
    assert_eq!(group["route"], "default");
    assert_eq!(group["calls"], 6);
    assert_eq!(group["error_rate"], 0.0);
    assert_eq!(
        group["input_tokens"],
        query_i64(&demo.db(), "SELECT SUM(input_tokens) FROM traces")
    );
    assert_eq!(
        group["output_tokens"],
        query_i64(&demo.db(), "SELECT SUM(output_tokens) FROM traces")
    );
    let rows = table_rows(&demo.ok(&["stats"]));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][..4], ["mock-model", "default", "6", "0 (0.0%)"]);
    assert_eq!(demo.jsonl(&["stats"]), vec![group.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_are_exact_nearest_rank_percentiles_per_model_and_route() {
    let dir = tempfile::tempdir().unwrap();
    // model-a: latencies 1..=100 ms (stored out of order), TTFT half of it,
    // five errors, tokens i in and 2i out.
    let mut calls: Vec<Call> = (1..=100u64)
        .map(|i| {
            let i = (i * 37) % 100 + 1; // a permutation of 1..=100
            Call {
                latency_ms: i as f64,
                ttft_ms: Some(i as f64 / 2.0),
                error: i % 20 == 0,
                input_tokens: i,
                output_tokens: 2 * i,
                age: Duration::from_secs(1000 - i),
                ..Call::default()
            }
        })
        .collect();
    // model-b on route "fast", in its own run: four calls, no first byte.
    for latency in [40.0, 10.0, 30.0, 20.0] {
        calls.push(Call {
            run: Some("run-b"),
            model: "model-b",
            route: Some("fast"),
            latency_ms: latency,
            ttft_ms: None,
            input_tokens: 1,
            output_tokens: 1,
            ..Call::default()
        });
    }
    build_store(dir.path(), &calls).await;

    let stats = json_of(dir.path(), &["stats", "--db", "traces.db"]);
    assert_eq!(
        stats,
        json!([
            {
                "model": "model-a", "route": null, "calls": 100, "errors": 5, "error_rate": 0.05,
                "latency_ms": {"p50": 50.0, "p95": 95.0, "p99": 99.0},
                "ttft_ms": {"p50": 25.0, "p95": 47.5, "p99": 49.5},
                "input_tokens": 5050, "output_tokens": 10100,
            },
            {
                "model": "model-b", "route": "fast", "calls": 4, "errors": 0, "error_rate": 0.0,
                "latency_ms": {"p50": 20.0, "p95": 40.0, "p99": 40.0},
                "ttft_ms": null,
                "input_tokens": 4, "output_tokens": 4,
            },
        ])
    );
    assert_eq!(
        json_of(
            dir.path(),
            &["stats", "--db", "traces.db", "--run", "run-b"]
        ),
        json!([stats[1]])
    );

    let rows = table_rows(&ok(dir.path(), &["stats", "--db", "traces.db"]));
    assert_eq!(
        rows[0],
        [
            "model-a", "-", "100", "5 (5.0%)", "50.0", "95.0", "99.0", "25.0", "47.5", "49.5",
            "5050", "10100"
        ]
    );
    assert_eq!(
        rows[1],
        [
            "model-b", "fast", "4", "0 (0.0%)", "20.0", "40.0", "40.0", "-", "-", "-", "4", "4"
        ]
    );
}

// ---- prune ----

/// Old and new calls: `run-old` entirely before the cutoff (30 days), and
/// `run-mixed` whose session `straddle` has calls on both sides.
fn prune_dataset() -> Vec<Call> {
    let old = |run, session, age, error| Call {
        run: Some(run),
        session: Some(session),
        age: days(age),
        error,
        ..Call::default()
    };
    vec![
        old("run-old", "old-1", 60, false),
        old("run-old", "old-1", 59, true),
        old("run-old", "old-2", 45, false),
        old("run-mixed", "straddle", 40, true),
        old("run-mixed", "straddle", 39, false),
        Call {
            run: None,
            session: None,
            age: days(35),
            ..Call::default()
        },
        Call {
            input_tokens: 10,
            output_tokens: 20,
            ..old("run-mixed", "straddle", 1, false)
        },
        Call {
            input_tokens: 100,
            output_tokens: 200,
            ..old("run-mixed", "straddle", 0, false)
        },
        old("run-mixed", "fresh", 2, false),
    ]
}

/// `tracegate prune --older-than 30d` on `dir/traces.db`, with `extra` flags.
fn prune_30d(dir: &Path, extra: &[&str]) -> String {
    let args = ["prune", "--db", "traces.db", "--older-than", "30d"];
    ok(dir, &[&args[..], extra].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_dry_run_reports_what_would_go_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    build_store(dir.path(), &prune_dataset()).await;
    let db = dir.path().join("traces.db");
    let before = dump(&db);
    let out = prune_30d(dir.path(), &["--dry-run", "--force"]);
    assert!(
        out.contains("would delete: spans 0, traces 6, sessions 2, runs 1"),
        "{out}"
    );
    assert!(out.contains("would recount: sessions 1, runs 1"), "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert_eq!(dump(&db), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_exactly_the_old_rows_and_recounts_what_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let records = build_store(dir.path(), &prune_dataset()).await;
    let db = dir.path().join("traces.db");
    let out = prune_30d(dir.path(), &[]);
    assert!(
        out.contains("deleted: spans 0, traces 6, sessions 2, runs 1"),
        "{out}"
    );
    assert!(out.contains("recounted: sessions 1, runs 1"), "{out}");
    assert!(out.contains("reclaimed"), "{out}");

    let kept: BTreeSet<String> = query_strings(&db, "SELECT trace_id FROM traces")
        .into_iter()
        .collect();
    assert_eq!(kept, ids(&records[6..]));
    assert_eq!(
        query_strings(&db, "SELECT session_id FROM sessions ORDER BY session_id"),
        ["fresh", "straddle"]
    );
    assert_eq!(query_strings(&db, "SELECT run_id FROM runs"), ["run-mixed"]);
    // Counters describe the calls that remain: straddle keeps its two new
    // calls (30 + 300 tokens), its old error is gone.
    let (new, newest) = (&records[6].started_at, &records[7].started_at);
    assert_eq!(
        query_strings(
            &db,
            "SELECT trace_count || ' ' || error_count || ' ' || tokens || ' ' || first_seen \
             || ' ' || last_seen FROM sessions WHERE session_id = 'straddle'"
        ),
        [format!("2 0 330 {new} {newest}")]
    );
    assert_eq!(
        query_strings(
            &db,
            "SELECT trace_count || ' ' || error_count || ' ' || tokens || ' ' || first_seen \
             || ' ' || last_seen FROM runs"
        ),
        [format!("3 0 337 {} {newest}", records[8].started_at)]
    );
    // And the listings agree.
    let runs = json_of(dir.path(), &["runs", "--db", "traces.db"]);
    assert_eq!(runs[0]["session_count"], 2);
    assert_eq!(runs[0]["trace_count"], 3);

    // Nothing older is left: a second prune deletes nothing.
    let again = prune_30d(dir.path(), &["--no-vacuum"]);
    assert!(
        again.contains("deleted: spans 0, traces 0, sessions 0, runs 0"),
        "{again}"
    );
    assert!(!again.contains("reclaimed"), "{again}");
}

// ---- the database file ----

#[test]
fn a_missing_database_is_one_line_and_exit_2_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let commands: [&[&str]; 8] = [
        &["runs"],
        &["sessions"],
        &["traces", "list"],
        &["traces", "show", "some-id"],
        &["export", "--out", "x.jsonl"],
        &["stats"],
        &["prune", "--older-than", "30d"],
        &["prune", "--older-than", "30d", "--dry-run"],
    ];
    for command in commands {
        let out = run(dir.path(), &[command, &["--db", "missing.db"]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("no database at missing.db"), "{stderr}");
        assert!(!dir.path().join("missing.db").exists(), "{command:?}");
    }
    // The default is ./tracegate.db, as for `serve`.
    let out = run(dir.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("./tracegate.db"));
}

#[test]
fn the_database_comes_from_tracegate_db_too() {
    let demo = Demo::new();
    let out = tracegate(demo.dir())
        .args(["runs", "--format", "jsonl"])
        .env("TRACEGATE_DB", "demo.db")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&demo.run_id));
}

#[test]
fn a_file_that_is_not_a_tracegate_database_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a database at all").unwrap();
    rusqlite::Connection::open(dir.path().join("other.db"))
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    for file in ["notes.txt", "other.db"] {
        let out = run(dir.path(), &["traces", "list", "--db", file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("is not a tracegate database"), "{stderr}");
    }
}

#[test]
fn bad_flags_are_usage_errors_with_exit_2() {
    let demo = Demo::new();
    for args in [
        &["traces", "list", "--since", "last tuesday"][..],
        &["traces", "list", "--format", "xml"],
        &["prune", "--older-than", "a while"],
        &["prune"],
    ] {
        let out = run(demo.dir(), &[args, &["--db", "demo.db"]].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_output_quietly_with_success() {
    let dir = tempfile::tempdir().unwrap();
    let calls = vec![Call::default(); 3000];
    build_store(dir.path(), &calls).await;
    for args in [
        &["traces", "list", "--format", "jsonl"][..],
        &["traces", "list"],
        &["export", "--out", "-"],
    ] {
        let mut child = tracegate(dir.path())
            .args(args)
            .args(["--db", "traces.db"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        // The reader is gone now, like `| head -1`.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_read_a_store_while_a_gateway_writes_to_it() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let gateway = gateway_on(dir.path(), &db, &mock.base_url());
    let calls = 60;
    let url = gateway.url("/v1/chat/completions");
    let writing = tokio::spawn(async move {
        for i in 0..calls {
            let response = client()
                .post(&url)
                .header("x-rllm-run-id", "live-run")
                .header("x-rllm-session-id", format!("live-{}", i % 3))
                .json(&chat_body(&format!("call {i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
        }
    });
    // Read in a loop for as long as the gateway writes (at least once).
    let path = dir.path().to_path_buf();
    let mut rounds = 0;
    let mut seen = 0;
    loop {
        let finished = writing.is_finished();
        let dir = path.clone();
        let (listed, exported) = tokio::task::spawn_blocking(move || {
            json_of(&dir, &["runs", "--db", "live.db"]);
            json_of(&dir, &["stats", "--db", "live.db"]);
            let listed = jsonl_of(&dir, &["traces", "list", "--db", "live.db"]).len();
            let exported = ok(&dir, &["export", "--db", "live.db", "--out", "-"]);
            (listed, lines_as_json(&exported).len())
        })
        .await
        .unwrap();
        assert!(listed >= seen, "the store never goes back");
        assert!(
            exported >= listed,
            "an export sees at least what was listed before"
        );
        seen = listed;
        rounds += 1;
        if finished {
            break;
        }
    }
    within("the calls", writing).await.unwrap();
    client()
        .post(gateway.url("/admin/flush"))
        .send()
        .await
        .unwrap();
    let exported = ok(&path, &["export", "--db", "live.db", "--out", "-"]);
    assert_eq!(lines_as_json(&exported).len(), calls);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM traces"), calls as i64);
    assert!(rounds >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_unexported_spans_unless_forced() {
    // Nine records with a span each; the first four spans were exported.
    // Six records are older than 30 days: the first five of them have spans
    // in order, so four old spans are exported and two are not.
    let dir = tempfile::tempdir().unwrap();
    build_store_with_spans(dir.path(), &prune_dataset(), Some(4)).await;
    let db = dir.path().join("traces.db");
    let out = prune_30d(dir.path(), &["--no-vacuum"]);
    assert!(out.contains("deleted: spans 4,"), "{out}");
    let left: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM spans", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 5, "unexported old spans stay for the exporter");
    let forced = prune_30d(dir.path(), &["--force", "--no-vacuum"]);
    assert!(forced.contains("deleted: spans 2,"), "{forced}");
}
