//! One vocabulary for the HTTP API and the CLI, on a real gateway and the
//! real binary: `GET /traces` with filters and keyset pages that neither
//! repeat nor skip a trace while calls arrive; `since`/`until` in each form
//! (RFC 3339, epoch seconds, a duration back from now) and the 400 for any
//! other; every time in the JSON answers as RFC 3339 UTC; listings newest
//! first; `tracegate export` to a pipe with `--limit` and `--format`; the
//! CLI's times with their zone; and `tracegate stats` without the calls
//! that have no model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::tracegate;
use common::{Gateway, Setup, chat_body};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};
use tracegate::record::{epoch_seconds, rfc3339};

/// Makes `n` chat calls in `run` (session `{run}-s`), then flushes; returns
/// their trace ids.
async fn calls(gw: &Setup, run: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let answer = gw
            .chat(&chat_body(&format!("call {i}")))
            .header("x-rllm-run-id", run)
            .header("x-rllm-session-id", format!("{run}-s"))
            .answer()
            .await;
        assert_eq!(answer.status, 200);
        ids.push(answer.trace_id());
    }
    gw.flush().await;
    ids
}

/// `GET path` answered 200, as JSON.
async fn ok_json(gw: &Setup, path: &str) -> Value {
    let answer = gw.get(path).answer().await;
    assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    answer.json()
}

/// The trace ids of a page of `GET /traces`.
fn page_ids(page: &Value) -> Vec<String> {
    page["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect()
}

/// The trace ids `GET /traces?query` answers (one page of up to 1000).
async fn listed(gw: &Setup, query: &str) -> BTreeSet<String> {
    let page = ok_json(gw, &format!("/traces?limit=1000&{query}")).await;
    page_ids(&page).into_iter().collect()
}

fn set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_come_in_pages_newest_first_without_repeats_or_gaps_while_calls_arrive() {
    let gw = Setup::new().await;
    let before = calls(&gw, "run-p", 7).await;
    calls(&gw, "run-other", 1).await;

    let mut seen: Vec<String> = Vec::new();
    let mut starts: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("/traces?run_id=run-p&limit=3&cursor={c}"),
            None => "/traces?run_id=run-p&limit=3".to_string(),
        };
        let page = ok_json(&gw, &query).await;
        pages += 1;
        for t in page["traces"].as_array().unwrap() {
            seen.push(t["trace_id"].as_str().unwrap().to_string());
            starts.push(t["started_at"].as_str().unwrap().to_string());
        }
        // New calls of the same run land while the client pages.
        calls(&gw, "run-p", 2).await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3, "7 traces in pages of 3");
    assert_eq!(seen.len(), 7, "no trace twice: {seen:?}");
    assert_eq!(
        set(&seen),
        set(&before),
        "every trace of the first page's time, none skipped"
    );
    let mut newest_first = starts.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(starts, newest_first);
    let mut newest = before.clone();
    newest.reverse();
    assert_eq!(seen, newest, "newest first, ties broken by id");

    // The filters, and the 400 for a cursor no page gave.
    assert_eq!(listed(&gw, "run_id=run-other").await.len(), 1);
    assert_eq!(listed(&gw, "session_id=run-p-s").await.len(), 13);
    assert_eq!(listed(&gw, "model=mock-model&status=ok").await.len(), 14);
    assert!(listed(&gw, "status=error").await.is_empty());
    assert!(listed(&gw, "errors=1").await.is_empty());
    assert!(listed(&gw, "model=another").await.is_empty());
    let bad = gw.get("/traces?cursor=not-a-cursor").answer().await;
    assert_eq!(bad.status, 400);
    let message = bad.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("cursor: "), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_and_until_take_rfc3339_epoch_seconds_and_durations() {
    let gw = Setup::new().await;
    let ids = calls(&gw, "run-t", 2).await;
    let first: Value = ok_json(&gw, &format!("/traces/{}", ids[0])).await;
    let second: Value = ok_json(&gw, &format!("/traces/{}", ids[1])).await;
    let start = |t: &Value| humantime::parse_rfc3339(t["started_at"].as_str().unwrap()).unwrap();
    let a_second_before = start(&first) - Duration::from_secs(1);
    let plus_two = rfc3339(a_second_before + Duration::from_secs(7200)).replace('Z', "+02:00");
    let everything = set(&ids);
    let only_first = set(&ids[..1]);
    let none = BTreeSet::new();
    for (query, expected) in [
        // RFC 3339, in UTC and in an offset.
        (format!("since={}", rfc3339(a_second_before)), &everything),
        (
            format!("since={}", plus_two.replace('+', "%2B")),
            &everything,
        ),
        (
            format!("since={}", first["started_at"].as_str().unwrap()),
            &set(&ids[1..]),
        ),
        (
            format!("until={}", second["started_at"].as_str().unwrap()),
            &only_first,
        ),
        // Seconds since the epoch.
        (
            format!("since={}", epoch_seconds(a_second_before)),
            &everything,
        ),
        ("since=4000000000".to_string(), &none),
        // A duration: that long ago.
        ("since=1h".to_string(), &everything),
        ("until=1h".to_string(), &none),
        ("since=2h&until=1h".to_string(), &none),
    ] {
        assert_eq!(&listed(&gw, &query).await, expected, "{query}");
    }
    // The same forms everywhere a time bound is taken.
    assert_eq!(
        ok_json(&gw, "/sessions?since=1h")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(ok_json(&gw, "/sessions?since=4000000000").await, json!([]));
    let session = ok_json(&gw, "/sessions/run-t-s/traces?since=1h").await;
    assert_eq!(session.as_array().unwrap().len(), 2);
    let queried = gw
        .post("/traces/query")
        .json(&json!({"session_ids": ["run-t-s"], "since": rfc3339(start(&first))}))
        .answer()
        .await;
    assert_eq!(queried.status, 200);
    assert_eq!(queried.json()[0]["trace_id"], ids[1].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_time_bound_is_a_400_naming_the_parameter_and_the_forms() {
    let gw = Setup::new().await;
    let refusals = [
        ("since", gw.get("/traces?since=soon")),
        ("until", gw.get("/traces?until=soon")),
        ("since", gw.get("/sessions?since=soon")),
        ("since", gw.get("/sessions/s/traces?since=-3")),
        ("until", gw.get("/ui/api/calls?until=soon")),
        (
            "since",
            gw.post("/traces/query")
                .json(&json!({"session_ids": ["s"], "since": "soon"})),
        ),
    ];
    for (parameter, request) in refusals {
        let answer = request.answer().await;
        assert_eq!(answer.status, 400, "{parameter}");
        let error = &answer.json()["error"];
        assert_eq!(error["type"], "invalid_request_error");
        let message = error["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{parameter}: ")), "{message}");
        for form in ["RFC 3339", "seconds since the epoch", "1h"] {
            assert!(message.contains(form), "{message} names {form}");
        }
    }
}

/// Whether a JSON key names a point in time.
fn is_time_key(key: &str) -> bool {
    key.ends_with("_at") || ["first_seen", "last_seen", "since", "until"].contains(&key)
}

/// Checks every time field under `value` (at `path`) and counts them.
fn check_times(value: &Value, path: &str, checked: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let at = format!("{path}.{key}");
                if is_time_key(key) && !inner.is_null() {
                    let text = inner.as_str().unwrap_or_else(|| panic!("{at} = {inner}"));
                    assert!(text.ends_with('Z'), "{at} = {text} is not UTC");
                    humantime::parse_rfc3339(text)
                        .unwrap_or_else(|e| panic!("{at} = {text} is not RFC 3339: {e}"));
                    checked.push(at);
                } else if key == "timestamp" {
                    // rLLM's field (its client reads epoch seconds): the
                    // same instant as `started_at`.
                    let started = humantime::parse_rfc3339(map["started_at"].as_str().unwrap());
                    let epoch = epoch_seconds(started.unwrap());
                    assert!((inner.as_f64().unwrap() - epoch).abs() < 1e-3, "{at}");
                } else {
                    check_times(inner, &at, checked);
                }
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                check_times(inner, &format!("{path}[{i}]"), checked);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_time_in_the_json_answers_is_rfc3339_utc() {
    let gw = Setup::new().await;
    let created = gw
        .post("/sessions")
        .json(&json!({"session_id": "made"}))
        .answer()
        .await;
    assert_eq!(created.status, 200);
    let ids = calls(&gw, "run-j", 1).await;
    let mut stream = chat_body("streamed");
    stream["stream"] = json!(true);
    gw.chat(&stream)
        .header("x-rllm-run-id", "run-j")
        .header("x-rllm-session-id", "run-j-s")
        .answer()
        .await;
    gw.flush().await;

    let mut checked = Vec::new();
    for path in [
        "/health".to_string(),
        "/health/workers".to_string(),
        "/admin/workers".to_string(),
        "/admin/routes".to_string(),
        "/admin/weight_version".to_string(),
        "/runs".to_string(),
        "/runs/run-j".to_string(),
        "/sessions".to_string(),
        "/sessions/made".to_string(),
        "/sessions/run-j-s".to_string(),
        "/sessions/run-j-s/traces".to_string(),
        "/traces".to_string(),
        format!("/traces/{}", ids[0]),
    ] {
        check_times(&ok_json(&gw, &path).await, &path, &mut checked);
    }
    let queried = gw
        .post("/traces/query")
        .json(&json!({"session_ids": ["run-j-s"]}))
        .answer()
        .await;
    check_times(&queried.json(), "/traces/query", &mut checked);
    for field in [
        "/sessions/made.created_at",
        "/sessions.[0].created_at",
        "/runs.[0].first_seen",
        "/traces.traces[0].started_at",
        "/traces.traces[0].first_chunk_at",
    ] {
        let field = field.replace(".[", "[");
        assert!(checked.contains(&field), "{field} not in {checked:?}");
    }
}

// ---- the command line ----

/// `tracegate args... --db db` with stdout piped.
fn cli(db: &Path, args: &[&str]) -> Output {
    tracegate(db.parent().unwrap())
        .args(args)
        .arg("--db")
        .arg(common::db_arg(db))
        .output()
        .unwrap()
}

/// Its stdout, after checking that it succeeded.
fn cli_ok(db: &Path, args: &[&str]) -> String {
    let out = cli(db, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn line_ids(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            record["trace_id"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_to_a_pipe_with_limit_and_format() {
    let gw = Setup::new().await;
    let ids = calls(&gw, "run-e", 3).await;
    let db = gw.db.clone();

    // No --out, stdout a pipe: the records, oldest first.
    assert_eq!(line_ids(&cli_ok(&db, &["export"])), ids);
    assert_eq!(
        line_ids(&cli_ok(&db, &["export", "--limit", "2"])),
        ids[..2]
    );
    let array: Value = serde_json::from_str(&cli_ok(&db, &["export", "--format", "json"])).unwrap();
    let listed: Vec<&str> = array
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids);
    let empty = cli_ok(&db, &["export", "--format", "json", "--limit", "0"]);
    assert_eq!(serde_json::from_str::<Value>(&empty).unwrap(), json!([]));
    // A file still works, and says how many it wrote.
    let file = db.with_file_name("out.jsonl");
    let said = cli_ok(
        &db,
        &["export", "--limit", "1", "--out", file.to_str().unwrap()],
    );
    assert!(said.contains("exported 1 traces"), "{said}");
    assert_eq!(line_ids(&std::fs::read_to_string(&file).unwrap()), ids[..1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_every_time_form_and_prints_times_with_their_zone() {
    let gw = Setup::new().await;
    let ids = calls(&gw, "run-c", 2).await;
    let db = gw.db.clone();
    let list = |args: &[&str]| -> Vec<String> {
        let args = [&["traces", "list", "--format", "jsonl"], args].concat();
        line_ids(&cli_ok(&db, &args))
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(list(&["--since", "1h"]), newest_first);
    assert_eq!(
        list(&["--since", &epoch_seconds(hour_ago).to_string()]),
        newest_first
    );
    assert_eq!(list(&["--since", &rfc3339(hour_ago)]), newest_first);
    assert!(list(&["--until", "1h"]).is_empty());
    assert_eq!(list(&["--status", "ok"]), newest_first);
    assert!(list(&["--status", "error"]).is_empty());

    let refused = cli(&db, &["traces", "list", "--since", "soon"]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("RFC 3339") && stderr.contains("1h"),
        "{stderr}"
    );

    // Tables print times with their zone.
    for command in [&["runs"][..], &["sessions"], &["traces", "list"]] {
        let table = cli_ok(&db, command);
        let row = table.lines().nth(1).unwrap();
        let today = &rfc3339(SystemTime::now())[..4];
        let time = row
            .split("  ")
            .map(str::trim)
            .find(|cell| cell.starts_with(today))
            .unwrap_or_else(|| panic!("{command:?}: no time in {row}"));
        assert!(time.ends_with('Z'), "{command:?}: {time}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_leaves_out_the_calls_without_a_model() {
    let gw = Setup::new().await;
    calls(&gw, "run-s", 2).await;
    assert_eq!(gw.get("/v1/models").answer().await.status, 200);
    gw.flush().await;
    let db = gw.db.clone();
    let calls_in = |args: &[&str]| -> u64 {
        let args = [&["stats", "--format", "json"], args].concat();
        let groups: Value = serde_json::from_str(&cli_ok(&db, &args)).unwrap();
        groups
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["calls"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(calls_in(&[]), 2, "the model list is not a step");
    assert_eq!(calls_in(&["--other"]), 3);
}
