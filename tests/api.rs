//! The query and admin API, compatible with rllm-model-gateway.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Gateway, Setup, all_at_once, chat_body};
use serde_json::{Value, json};

/// `GET path`: the status and the body, which is JSON.
async fn get(gw: &Setup, path: &str) -> (u16, Value) {
    let answer = gw.get(path).answer().await;
    (answer.status.as_u16(), answer.json())
}

/// `POST path` with a JSON body: the status and the body, which is JSON.
async fn post(gw: &Setup, path: &str, body: Value) -> (u16, Value) {
    let answer = gw.post(path).json(&body).answer().await;
    (answer.status.as_u16(), answer.json())
}

/// Makes `n` chat calls in session `sid` (and run `run`).
async fn calls(gw: &Setup, sid: &str, run: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for step in 0..n {
        let answer = gw
            .chat(&chat_body(&format!("step {step}")))
            .header("x-rllm-session-id", sid)
            .header("x-rllm-run-id", run)
            .header("x-rllm-step-id", step.to_string())
            .answer()
            .await;
        ids.push(answer.trace_id());
    }
    ids
}

/// The `field` of every item of a JSON array.
fn each<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_ok() {
    let gw = Setup::new().await;
    let (status, body) = get(&gw, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_the_replica_and_the_backend() {
    let (one, other) = (Setup::new().await, Setup::new().await);
    let (_, a) = get(&one, "/health").await;
    let (_, b) = get(&other, "/health").await;
    let backend = match common::postgres::backend() {
        common::postgres::Backend::Sqlite => "sqlite",
        common::postgres::Backend::Postgres => "postgres",
    };
    assert_eq!(a["backend"], backend);
    let instance = a["instance"].as_str().unwrap();
    assert_eq!(instance.len(), 12, "{a}");
    assert!(instance.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
    assert_ne!(a["instance"], b["instance"], "each replica has its own id");
    assert_eq!(get(&one, "/health").await.1["instance"], a["instance"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_created_listed_and_read() {
    let gw = Setup::new().await;
    let (status, created) = post(
        &gw,
        "/sessions",
        json!({"session_id": "s-a", "metadata": {"task": 3}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        created,
        json!({"session_id": "s-a", "url": "/sessions/s-a/v1"})
    );
    let (_, generated) = post(&gw, "/sessions", json!({})).await;
    let generated_id = generated["session_id"].as_str().unwrap().to_string();
    assert!(!generated_id.is_empty());

    let (status, info) = get(&gw, "/sessions/s-a").await;
    assert_eq!(status, 200);
    assert_eq!(info["session_id"], "s-a");
    assert_eq!(info["trace_count"], 0);
    assert_eq!(info["metadata"], json!({"task": 3}));
    let created = info["created_at"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(created).unwrap() > std::time::UNIX_EPOCH);

    calls(&gw, "s-a", "run-1", 2).await;
    gw.flush().await;
    let info = get(&gw, "/sessions/s-a").await.1;
    assert_eq!(info["trace_count"], 2);
    assert_eq!(info["run_id"], "run-1");

    // Newest first, like runs and traces.
    let list = get(&gw, "/sessions").await.1;
    assert_eq!(each(&list, "session_id"), [generated_id.as_str(), "s-a"]);
    let limited = get(&gw, "/sessions?limit=1").await.1;
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let since = info["created_at"].as_str().unwrap();
    let later = get(&gw, &format!("/sessions?since={since}")).await.1;
    assert_eq!(
        later.as_array().unwrap().len(),
        1,
        "only the session created after s-a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_are_json_404s() {
    let gw = Setup::new().await;
    for path in ["/sessions/nope", "/traces/nope", "/runs/nope"] {
        let (status, body) = get(&gw, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(body["error"]["message"].as_str().unwrap().contains("nope"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_json_400s() {
    let gw = Setup::new().await;
    for path in [
        "/sessions?limit=-1",
        "/sessions?since=yesterday",
        "/sessions/s/traces?limit=x",
    ] {
        let (status, body) = get(&gw, path).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    let not_json = gw.post("/sessions").body("{not json").answer().await;
    assert_eq!(not_json.status, 400);
    let (status, _) = post(&gw, "/traces/query", json!({"session_ids": "s"})).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_traces_come_in_order_with_since_and_limit() {
    let gw = Setup::new().await;
    let ids = calls(&gw, "s-t", "r", 3).await;
    calls(&gw, "other", "r", 1).await;
    gw.flush().await;
    let traces = get(&gw, "/sessions/s-t/traces").await.1;
    assert_eq!(each(&traces, "trace_id"), ids);
    let first_ts = traces[0]["timestamp"].as_f64().unwrap();
    let (_, after) = get(
        &gw,
        &format!("/sessions/s-t/traces?since={first_ts}&limit=1"),
    )
    .await;
    assert_eq!(after.as_array().unwrap().len(), 1);
    assert_eq!(after[0]["trace_id"], ids[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_use_rllm_field_names_and_types() {
    let gw = Setup::new().await;
    let ids = calls(&gw, "s-r", "run-r", 1).await;
    gw.flush().await;
    let (status, t) = get(&gw, &format!("/traces/{}", ids[0])).await;
    assert_eq!(status, 200);
    // rLLM's TraceRecord fields, with rLLM's (non-null) types.
    for (field, kind) in [
        ("trace_id", "string"),
        ("session_id", "string"),
        ("model", "string"),
        ("messages", "array"),
        ("prompt_token_ids", "array"),
        ("response_message", "object"),
        ("completion_token_ids", "array"),
        ("latency_ms", "number"),
        ("token_counts", "object"),
        ("timestamp", "number"),
        ("metadata", "object"),
        ("raw_request", "object"),
        ("raw_response", "object"),
    ] {
        let v = &t[field];
        let ok = match kind {
            "string" => v.is_string(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => v.is_number(),
        };
        assert!(ok, "{field} should be a {kind}, is {v}");
    }
    assert!(t["logprobs"].is_null() || t["logprobs"].is_array());
    assert_eq!(t["finish_reason"], "stop");
    assert_eq!(t["token_counts"]["prompt"], t["usage"]["input_tokens"]);
    // ...and ours beside them.
    for field in [
        "run_id",
        "harness",
        "step_id",
        "parent_span_id",
        "span_type",
        "project",
        "experiment",
        "status",
        "ttft_ms",
    ] {
        assert!(t.get(field).is_some(), "{field} missing");
    }
    assert_eq!(t["run_id"], "run-r");
    assert_eq!(t["span_type"], "llm.call");
    assert_eq!(t["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_without_session_or_model_keeps_rllm_types() {
    let gw = Setup::new().await;
    let id = gw.get("/v1/models").answer().await.trace_id();
    gw.flush().await;
    let t = get(&gw, &format!("/traces/{id}")).await.1;
    assert_eq!(t["session_id"], "");
    assert_eq!(t["model"], "");
    assert_eq!(t["response_message"], json!({}));
    assert_eq!(t["prompt_token_ids"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_query_covers_several_sessions() {
    let gw = Setup::new().await;
    calls(&gw, "q1", "r", 2).await;
    calls(&gw, "q2", "r", 1).await;
    calls(&gw, "q3", "r", 1).await;
    gw.flush().await;
    let query = async |body: Value| post(&gw, "/traces/query", body).await.1;
    let both = query(json!({"session_ids": ["q1", "q2"]})).await;
    assert_eq!(both.as_array().unwrap().len(), 3);
    let limited = query(json!({"session_ids": ["q1", "q2"], "limit": 2})).await;
    assert_eq!(limited.as_array().unwrap().len(), 2);
    let none = query(json!({"session_ids": []})).await;
    assert_eq!(none, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_session_deletes_its_traces() {
    let gw = Setup::new().await;
    calls(&gw, "gone", "run-d", 3).await;
    calls(&gw, "kept", "run-d", 1).await;
    let deleted = gw.delete("/sessions/gone").answer().await;
    assert_eq!(deleted.json(), json!({"deleted": 3}));
    assert_eq!(get(&gw, "/sessions/gone").await.0, 404);
    assert_eq!(get(&gw, "/sessions/gone/traces").await.1, json!([]));
    let (_, run) = get(&gw, "/runs/run-d").await;
    assert_eq!(run["trace_count"], 1, "run counters follow the deletion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_their_sessions_and_counts() {
    let gw = Setup::new().await;
    calls(&gw, "r1-s1", "run-1", 2).await;
    calls(&gw, "r1-s2", "run-1", 3).await;
    calls(&gw, "r2-s1", "run-2", 1).await;
    gw.chat(&chat_body("boom"))
        .headers(&[
            ("x-rllm-session-id", "r1-s2"),
            ("x-rllm-run-id", "run-1"),
            ("x-mock-status", "500"),
        ])
        .send()
        .await;
    gw.flush().await;
    let runs = get(&gw, "/runs").await.1;
    assert_eq!(runs.as_array().unwrap().len(), 2);
    assert_eq!(runs[0]["run_id"], "run-2", "newest first");
    let (status, run) = get(&gw, "/runs/run-1").await;
    assert_eq!(status, 200);
    assert_eq!(run["session_count"], 2);
    assert_eq!(run["trace_count"], 6);
    assert_eq!(run["error_count"], 1);
    assert!(run["tokens"].as_i64().unwrap() > 0);
    assert_eq!(each(&run["sessions"], "session_id"), ["r1-s1", "r1-s2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_returns_after_every_ended_call_is_committed() {
    let gw = Setup::new().await;
    let calls = (0..150).map(|i| {
        let mut body = chat_body(&format!("call {i}"));
        body["stream"] = json!(i % 2 == 0);
        gw.chat(&body)
    });
    all_at_once(calls).await;
    let (status, body) = post(&gw, "/admin/flush", json!({})).await;
    assert_eq!((status, body), (200, json!({"status": "flushed"})));
    // Read the file directly, right after the flush returned.
    assert_eq!(gw.count("SELECT COUNT(*) FROM traces"), 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_records_still_being_assembled() {
    let gw = Setup::new().await;
    // A large conversation takes capture a while to assemble and compress;
    // the client has its answer long before the record is ready.
    let history: Vec<Value> = (0..4000)
        .map(|i| json!({"role": "user", "content": format!("message {i}: {}", "lorem ipsum ".repeat(100))}))
        .collect();
    let body = json!({"model": "mock-model", "messages": history});
    for _ in 0..3 {
        gw.chat(&body).answer().await;
    }
    let (status, _) = post(&gw, "/admin/flush", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(gw.count("SELECT COUNT(*) FROM traces"), 3);
}
