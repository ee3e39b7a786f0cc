//! The web UI at `/ui`: its files, its `/ui/api/` endpoints, and a real
//! browser walking it.
//!
//! Every test records a `tracegate demo` episode (one run, two sessions,
//! three steps each, each step's parent the previous step) with the real
//! binary, then serves that database with `tracegate serve` in front of an
//! in-process mock model. The harness-span tests add an episode whose
//! harness sent its own OpenTelemetry spans (`POST /v1/traces`, OTLP/JSON)
//! and made its calls with `traceparent`.
//!
//! The browser tests run `tests/browser/*.test.mjs` with Node, Debian's
//! `chromium` and `playwright-core` (`npm ci --prefix tests/browser`). A
//! plain `cargo test` reports them as ignored;
//! `TRACEGATE_REQUIRE_BROWSER_TESTS=1 cargo test` (what `.ci/run` runs) or
//! `cargo test --test ui -- --ignored` runs them, and then a missing tool
//! fails them with the command that installs it (see `build.rs`). The walk
//! saves screenshots next to the build directory and prints their paths
//! (`UI screenshot: ...`) to the log.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::{BIN, Running, Serve, tracegate};
use common::{Gateway, Request, chat_body, start_mock, stream_body};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};
use tempfile::TempDir;
use tracegate::mock_upstream::MockServer;

/// A gateway serving a database that holds one demo episode.
struct DemoGateway {
    gateway: Running,
    run_id: String,
    _mock: MockServer,
    _dir: TempDir,
}

impl Gateway for DemoGateway {
    fn at(&self, path: &str) -> String {
        self.gateway.at(path)
    }
}

/// Records a demo episode with `tracegate demo`, then serves it.
async fn demo_gateway() -> DemoGateway {
    demo_gateway_with(&[]).await
}

/// The same, with extra environment for `tracegate serve`.
async fn demo_gateway_with(env: &[(&str, &str)]) -> DemoGateway {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ui.db");
    let demo = tracegate(dir.path())
        .args(["demo", "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&demo.stdout);
    assert!(demo.status.success(), "tracegate demo failed: {report}");
    // The report starts "run <run_id> · ...".
    let run_id = report
        .split_whitespace()
        .nth(1)
        .expect("the demo names its run")
        .to_string();
    let mock = start_mock().await;
    let gateway = Serve::new(dir.path())
        .args(["--db", db.to_str().unwrap()])
        .upstream(&mock.base_url())
        .envs(env)
        .spawn();
    DemoGateway {
        gateway,
        run_id,
        _mock: mock,
        _dir: dir,
    }
}

/// `GET path`: the status and the body, which is JSON.
async fn get(gw: &DemoGateway, path: &str) -> (u16, Value) {
    let answer = gw.get(path).answer().await;
    (answer.status.as_u16(), answer.json())
}

/// The headers that put a call in `session` (without a run) at `step`.
fn in_session<'a>(session: &'a str, step: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("x-rllm-session-id", session),
        ("x-rllm-step-id", step),
        ("x-rllm-harness", "solo-harness"),
    ]
}

/// Sends a chat call with `headers`; returns its trace id.
async fn chat_with(gw: &DemoGateway, body: &Value, headers: &[(&str, &str)]) -> String {
    let answer = gw.chat(body).headers(headers).answer().await;
    assert!(answer.status.is_success() || answer.status.is_server_error());
    answer.trace_id()
}

/// What [`record_solo_session`] recorded.
struct Solo {
    /// Step 1's trace id.
    step1: String,
    /// Step 2's three attempts: two 500s, then an answer.
    step2: [String; 3],
    /// Step 3's trace id (a stream hanging under step 2).
    step3: String,
    /// The calls without a model: a model list and a token count.
    others: [String; 2],
    /// A call without any identity.
    loose: String,
}

/// Records, beside the demo, a session without a run as an agent with an
/// SDK makes one: step 1; a model list and an Anthropic token count (calls
/// without a model, sent with the SDK's default identity headers); step 2,
/// which fails twice with a 500 and is retried with the same request; step
/// 3, streamed, whose parent is step 2. And one call without any identity.
async fn record_solo_session(gw: &DemoGateway, session: &str) -> Solo {
    let step1 = chat_with(gw, &chat_body("solo step one"), &in_session(session, "1")).await;
    let models = gw
        .get("/v1/models")
        .headers(&in_session(session, "1"))
        .answer()
        .await;
    assert_eq!(models.status, 200);
    let count_body =
        json!({"model": "mock-model", "messages": [{"role": "user", "content": "count me"}]});
    let count = gw
        .post("/v1/messages/count_tokens")
        .json(&count_body)
        .headers(&in_session(session, "2"))
        .answer()
        .await;
    assert_eq!(count.status, 200);
    let mut step2 = Vec::new();
    let two = chat_body("solo step two");
    for status in [Some("500"), Some("500"), None] {
        let mut headers = in_session(session, "2").to_vec();
        headers.push(("x-rllm-parent-span-id", &step1));
        if let Some(status) = status {
            headers.push(("x-mock-status", status));
        }
        step2.push(chat_with(gw, &two, &headers).await);
    }
    let mut headers = in_session(session, "3").to_vec();
    headers.push(("x-rllm-parent-span-id", &step2[2]));
    let step3 = chat_with(gw, &stream_body("solo step three"), &headers).await;
    let loose = chat_with(gw, &chat_body("no identity at all"), &[]).await;
    gw.flush().await;
    Solo {
        step1,
        step2: step2.try_into().unwrap(),
        step3,
        others: [models.trace_id(), count.trace_id()],
        loose,
    }
}

/// What [`record_harness_episode`] recorded: the harness's span ids and
/// the calls' trace ids.
struct Episode {
    /// `invoke_agent solver`, the episode's one agent step.
    agent: &'static str,
    /// `execute_tool ls` under it, with a call made inside the tool.
    tool_ls: &'static str,
    /// `execute_tool pytest` under it, failed, with no call under it.
    tool_test: &'static str,
    /// The calls: under the agent, under `ls`, under the agent again, and
    /// one made without `traceparent` after the agent step ended.
    calls: [String; 4],
}

/// The OTel trace of the harness episode.
const EPISODE_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4737";

/// A session that only a harness span names (no call was made in it).
const SPAN_ONLY_SESSION: &str = "span-only-session";

/// Now, in nanoseconds since the epoch, as OTLP/JSON writes times.
fn now_nanos() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    now.as_nanos().to_string()
}

/// One OTLP/JSON span of the episode's trace.
fn otlp_span(id: &str, parent: &str, name: &str, times: (&str, &str), extra: Value) -> Value {
    let mut span = json!({
        "traceId": EPISODE_TRACE, "spanId": id, "parentSpanId": parent, "name": name,
        "kind": 1, "startTimeUnixNano": times.0, "endTimeUnixNano": times.1,
        "status": {"code": 1},
    });
    for (key, value) in extra.as_object().unwrap() {
        span[key] = value.clone();
    }
    span
}

/// A string attribute in OTLP/JSON.
fn otlp_attr(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

/// Records a harness episode in `session` as an OpenTelemetry-instrumented
/// harness makes one: an `invoke_agent` step whose LLM calls carry its
/// `traceparent`; inside it an `execute_tool ls` that makes a call of its
/// own, and an `execute_tool pytest` that fails and makes none; after it,
/// a call without `traceparent`. The spans are sent last, as OTLP/JSON
/// (a batch exporter sends spans once they end), with, from another
/// harness process, an `evaluate` span of another trace in a session of
/// its own that has no calls.
async fn record_harness_episode(gw: &DemoGateway, session: &str) -> Episode {
    let (agent, tool_ls, tool_test) = ("a1a2a3a4a5a6a7a8", "b1b2b3b4b5b6b7b8", "c1c2c3c4c5c6c7c8");
    let call = async |content: &str, parent: Option<&str>| {
        let mut headers = vec![("x-rllm-session-id", session.to_string())];
        if let Some(span) = parent {
            headers.push(("traceparent", format!("00-{EPISODE_TRACE}-{span}-01")));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        chat_with(gw, &chat_body(content), &headers).await
    };
    let agent_start = now_nanos();
    let first = call("plan the fix", Some(agent)).await;
    let ls_start = now_nanos();
    let inside = call("summarise the listing", Some(tool_ls)).await;
    let ls_end = now_nanos();
    let test_start = now_nanos();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let test_end = now_nanos();
    let last = call("explain the failure", Some(agent)).await;
    let agent_end = now_nanos();
    let loose = call("no span around me", None).await;
    let spans = [
        otlp_span(
            agent,
            "",
            "invoke_agent solver",
            (&agent_start, &agent_end),
            json!({"attributes": [otlp_attr("gen_ai.operation.name", "invoke_agent"),
                                   otlp_attr("gen_ai.agent.name", "solver")]}),
        ),
        otlp_span(
            tool_ls,
            agent,
            "execute_tool ls",
            (&ls_start, &ls_end),
            json!({"attributes": [otlp_attr("gen_ai.tool.name", "ls")]}),
        ),
        otlp_span(
            tool_test,
            agent,
            "execute_tool pytest",
            (&test_start, &test_end),
            json!({
                "attributes": [otlp_attr("gen_ai.tool.name", "pytest"),
                               otlp_attr("tool.command", "pytest -x tests/")],
                "events": [{"timeUnixNano": test_end, "name": "exit",
                            "attributes": [{"key": "code", "value": {"intValue": "1"}}]}],
                "status": {"code": 2, "message": "exit code 1"},
            }),
        ),
    ];
    let mut evaluate = otlp_span(
        "d1d2d3d4d5d6d7d8",
        "",
        "evaluate reward",
        (&agent_start, &agent_end),
        json!({}),
    );
    evaluate["traceId"] = json!("6cf92f3577b34da6a3ce929d0e0e4738");
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [otlp_attr("service.name", "ui-harness"),
                                    otlp_attr("session.id", session)]},
        "scopeSpans": [{"spans": spans}],
    }, {
        "resource": {"attributes": [otlp_attr("service.name", "ui-grader"),
                                    otlp_attr("session.id", SPAN_ONLY_SESSION)]},
        "scopeSpans": [{"spans": [evaluate]}],
    }]});
    let answer = gw.post("/v1/traces").json(&body).answer().await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    gw.flush().await;
    Episode {
        agent,
        tool_ls,
        tool_test,
        calls: [first, inside, last, loose],
    }
}

/// The `key` of each item of the JSON list `list` (strings).
fn each<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item[key].as_str().unwrap_or("(none)"))
        .collect()
}

// ---- the files ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_redirects_to_the_page_with_a_trailing_slash() {
    let gw = demo_gateway().await;
    let response = Request::without_redirects(Method::GET, gw.at("/ui"))
        .send()
        .await;
    assert_eq!(response.status(), 307);
    assert_eq!(response.headers()["location"], "ui/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ui_file_is_served_with_its_content_type_and_revalidation_headers() {
    let gw = demo_gateway().await;
    let files = [
        ("/ui/", "text/html"),
        ("/ui/index.html", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ];
    for (path, content_type) in files {
        let response = gw.get(path).answer().await;
        assert_eq!(response.status, 200, "{path}");
        let headers = &response.headers;
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}: {:?}",
            headers["content-type"]
        );
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert!(headers.contains_key("etag"), "{path}");
        assert!(!response.text().is_empty(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_files_answer_304_while_the_browser_copy_is_current() {
    let gw = demo_gateway().await;
    let first = gw.get("/ui/app.js").send().await;
    let etag = first.headers()["etag"].clone();
    let again = gw
        .get("/ui/app.js")
        .header("if-none-match", etag.clone())
        .answer()
        .await;
    assert_eq!(again.status, 304);
    assert_eq!(again.headers["etag"], etag);
    assert!(again.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_page_loads_nothing_from_outside_the_gateway() {
    let gw = demo_gateway().await;
    let page = gw.get("/ui/").answer().await;
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let html = page.text();
    assert!(html.contains(r#"src="app.js""#) && html.contains(r#"href="style.css""#));
    for path in ["/ui/", "/ui/app.js", "/ui/style.css"] {
        let text = gw.get(path).answer().await.text();
        // The SVG namespace is a name, not a fetch.
        let urls = text.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !urls.contains("http://") && !urls.contains("https://"),
            "{path} names an outside URL"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ui_file_is_a_json_404() {
    let gw = demo_gateway().await;
    let (status, body) = get(&gw, "/ui/missing.js").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

// ---- the endpoints ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_runs_lists_the_demo_run_with_its_counts_and_filter_values() {
    let gw = demo_gateway().await;
    let (status, page) = get(&gw, "/ui/api/runs").await;
    assert_eq!(status, 200);
    let runs = page["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["run_id"], gw.run_id.as_str());
    assert_eq!(run["session_count"], 2);
    assert_eq!(run["trace_count"], 6);
    assert_eq!(run["error_count"], 0);
    assert!(run["tokens"].as_i64().unwrap() > 0);
    assert_eq!(page["facets"]["models"], json!(["mock-model"]));
    assert_eq!(page["facets"]["harnesses"], json!(["tracegate-demo"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_runs_keeps_only_the_runs_that_match_every_filter() {
    let gw = demo_gateway().await;
    let search = format!("q={}", gw.run_id[4..12].to_uppercase());
    let cases = [
        (search.as_str(), 1),
        ("q=no-such-run", 0),
        ("model=mock-model&harness=tracegate-demo", 1),
        ("model=other-model", 0),
        ("project=demo&experiment=walkthrough", 1),
        ("errors=1", 0),
        ("since=4000000000", 0),
        ("limit=0", 0),
    ];
    for (query, expected) in cases {
        let (status, page) = get(&gw, &format!("/ui/api/runs?{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(page["runs"].as_array().unwrap().len(), expected, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_calls_gives_each_step_of_a_run_with_its_parent_link() {
    let gw = demo_gateway().await;
    let url = format!("/ui/api/calls?run_id={}", gw.run_id);
    let (status, page) = get(&gw, &url).await;
    assert_eq!(status, 200);
    assert_eq!(page["truncated"], false);
    let calls = page["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 6);
    for session in 1..=2 {
        let sid = format!("{}-session-{session}", gw.run_id);
        let steps: Vec<&Value> = calls.iter().filter(|c| c["session_id"] == *sid).collect();
        let numbers: Vec<i64> = steps
            .iter()
            .map(|c| c["step_id"].as_i64().unwrap())
            .collect();
        assert_eq!(numbers, [1, 2, 3], "{sid}");
        assert_eq!(steps[0]["parent_span_id"], Value::Null);
        assert_eq!(steps[1]["parent_span_id"], steps[0]["trace_id"]);
        assert_eq!(steps[2]["parent_span_id"], steps[1]["trace_id"]);
        assert!(
            steps[0]["preview"]
                .as_str()
                .unwrap()
                .starts_with("This is the tracegate mock answering: ")
        );
        assert_eq!(steps[1]["tool_call"], "search_docs");
        assert_eq!(steps[2]["stream"], true);
        assert!(steps[2]["ttft_ms"].as_f64().unwrap() <= steps[2]["latency_ms"].as_f64().unwrap());
        assert!(steps.iter().all(|c| c["status"] == "ok"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_calls_after_a_cursor_gives_only_the_calls_recorded_since() {
    let gw = demo_gateway().await;
    let (_, before) = get(&gw, "/ui/api/calls?limit=1").await;
    let cursor = before["cursor"].as_i64().unwrap();
    let (_, nothing) = get(&gw, &format!("/ui/api/calls?after={cursor}")).await;
    assert_eq!(nothing["calls"], json!([]));
    assert_eq!(nothing["cursor"], cursor);

    let trace_id = gw
        .chat(&chat_body("one more"))
        .header("x-rllm-run-id", &gw.run_id)
        .answer()
        .await
        .trace_id();
    gw.flush().await;

    let (_, since) = get(&gw, &format!("/ui/api/calls?after={cursor}")).await;
    let calls = since["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["trace_id"], trace_id.as_str());
    assert_eq!(since["cursor"], calls[0]["seq"]);
    assert!(since["cursor"].as_i64().unwrap() > cursor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_calls_pages_through_a_backlog_with_the_cursor() {
    let gw = demo_gateway().await;
    let mut cursor = 0;
    let mut seen = Vec::new();
    loop {
        let url = format!("/ui/api/calls?after={cursor}&limit=4");
        let (_, page) = get(&gw, &url).await;
        seen.extend(
            page["calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["seq"].clone()),
        );
        cursor = page["cursor"].as_i64().unwrap();
        if page["truncated"] == false {
            break;
        }
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(cursor, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_stats_gives_distributions_and_series_per_model() {
    let gw = demo_gateway().await;
    let url = format!("/ui/api/stats?run_id={}", gw.run_id);
    let (status, stats) = get(&gw, &url).await;
    assert_eq!(status, 200);
    assert_eq!(stats["calls"], 6);
    assert_eq!(stats["models"], json!(["mock-model"]));
    let model = &stats["per_model"][0];
    assert_eq!(
        (model["calls"].as_u64(), model["errors"].as_u64()),
        (Some(6), Some(0))
    );
    let sum = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum::<u64>()
    };
    let latency = &stats["latency_ms"];
    assert_eq!(sum(&latency["counts"]["mock-model"]), 6);
    assert_eq!(
        latency["edges"].as_array().unwrap().len(),
        latency["counts"]["mock-model"].as_array().unwrap().len() + 1
    );
    // Only the two streamed steps have a time to first token.
    assert_eq!(sum(&stats["ttft_ms"]["counts"]["mock-model"]), 2);
    let series = &stats["over_time"]["series"]["mock-model"];
    assert_eq!(sum(&series["calls"]), 6);
    assert_eq!(sum(&series["errors"]), 0);
    let tokens = sum(&series["input_tokens"]) + sum(&series["output_tokens"]);
    let (_, run) = get(&gw, &format!("/runs/{}", gw.run_id)).await;
    assert_eq!(tokens, run["tokens"].as_u64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_stats_of_an_unknown_run_are_empty() {
    let gw = demo_gateway().await;
    let (status, stats) = get(&gw, "/ui/api/stats?run_id=no-such-run").await;
    assert_eq!(status, 200);
    assert_eq!(stats["calls"], 0);
    assert_eq!(stats["models"], json!([]));
    assert_eq!(stats["latency_ms"]["edges"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_rejects_unusable_parameters_in_the_openai_error_shape() {
    let gw = demo_gateway().await;
    for query in [
        "/ui/api/calls?after=-1",
        "/ui/api/calls?after=soon",
        "/ui/api/calls?limit=many",
        "/ui/api/runs?errors=maybe",
        "/ui/api/runs?since=yesterday",
        "/ui/api/stats?buckets=0",
    ] {
        let (status, body) = get(&gw, query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{query}");
        assert_eq!(body["error"]["code"], "bad_request", "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_answers_are_never_cached() {
    let gw = demo_gateway().await;
    for path in ["/ui/api/runs", "/ui/api/calls", "/ui/api/stats"] {
        let response = gw.get(path).send().await;
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
    }
}

// ---- sessions, attempts, calls without a model, time ranges ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_sessions_lists_sessions_with_and_without_a_run_newest_first() {
    let gw = demo_gateway().await;
    record_solo_session(&gw, "solo-session").await;
    let response = gw.get("/ui/api/sessions").answer().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["cache-control"], "no-store");
    let page = response.json();
    let sessions = &page["sessions"];
    let run = gw.run_id.as_str();
    assert_eq!(
        each(sessions, "session_id"),
        [
            "solo-session".to_string(),
            format!("{run}-session-2"),
            format!("{run}-session-1")
        ]
    );
    assert_eq!(each(sessions, "run_id"), ["(none)", run, run]);
    let solo = &sessions[0];
    // 1 + the two calls without a model + 3 attempts + 1.
    assert_eq!(solo["trace_count"], 7);
    assert_eq!(solo["error_count"], 2);
    assert_eq!(solo["harness"], "solo-harness");
    assert_eq!(solo["model"], "mock-model");
    assert_eq!(sessions[1]["harness"], "tracegate-demo");
    assert_eq!(page["facets"]["models"], json!(["mock-model"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_sessions_keeps_only_the_sessions_that_match_every_filter() {
    let gw = demo_gateway().await;
    record_solo_session(&gw, "solo-session").await;
    let run = &gw.run_id;
    let demo = [format!("{run}-session-2"), format!("{run}-session-1")];
    let solo = ["solo-session".to_string()];
    let none: [String; 0] = [];
    let every = [solo[0].clone(), demo[0].clone(), demo[1].clone()];
    let by_run = format!("run_id={run}");
    let run_part = format!("q={}", run[4..12].to_uppercase());
    let cases: Vec<(&str, &[String])> = vec![
        (&by_run, &demo),
        ("no_run=1", &solo),
        ("no_run=0", &every),
        ("q=SOLO-SES", &solo),
        (&run_part, &demo),
        ("q=no-such-session", &none),
        ("model=mock-model&harness=tracegate-demo", &demo),
        ("harness=solo-harness", &solo),
        ("model=other-model", &none),
        ("errors=1", &solo),
        ("since=4000000000", &none),
        ("until=1", &none),
        ("since=1&until=4000000000&no_run=1", &solo),
        ("limit=1", &solo),
    ];
    for (query, expected) in cases {
        let (status, page) = get(&gw, &format!("/ui/api/sessions?{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(each(&page["sessions"], "session_id"), expected, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_sessions_refuses_unusable_filters() {
    let gw = demo_gateway().await;
    let both = format!("/ui/api/sessions?run_id={}&no_run=1", gw.run_id);
    for query in [
        both.as_str(),
        "/ui/api/sessions?no_run=maybe",
        "/ui/api/sessions?until=soon",
        "/ui/api/sessions?limit=many",
        "/ui/api/calls?until=later",
        "/ui/api/calls?no_session=perhaps",
        "/ui/api/runs?until=tomorrow",
        "/ui/api/stats?other=some",
    ] {
        let (status, body) = get(&gw, query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["code"], "bad_request", "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_calls_marks_the_retries_of_a_step_as_its_attempts() {
    let gw = demo_gateway().await;
    let solo = record_solo_session(&gw, "solo-session").await;
    let (_, page) = get(&gw, "/ui/api/calls?session_id=solo-session").await;
    let calls = page["calls"].as_array().unwrap();
    let call = |id: &str| calls.iter().find(|c| c["trace_id"] == id).unwrap().clone();
    let [first, second, third] = solo.step2.clone().map(|id| call(&id));
    assert_eq!(
        (first["attempt"].as_u64(), &first["retry_of"]),
        (Some(1), &Value::Null)
    );
    for (retry, number) in [(&second, 2), (&third, 3)] {
        assert_eq!(retry["attempt"], number);
        assert_eq!(retry["retry_of"], solo.step2[0].as_str());
    }
    assert_eq!(
        each(&json!([first, second, third]), "status"),
        ["error", "error", "ok"]
    );
    for id in [&solo.step1, &solo.step3, &solo.others[0], &solo.others[1]] {
        assert_eq!(call(id)["attempt"], 1, "{id}");
        assert_eq!(call(id)["retry_of"], Value::Null, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_calls_tells_a_retry_from_a_new_call_of_the_same_step() {
    let gw = demo_gateway().await;
    let failing = |session: &'static str, step: &'static str| {
        let mut headers = in_session(session, step).to_vec();
        headers.push(("x-mock-status", "503"));
        headers
    };
    let same = chat_body("the same request");
    // A different request after a failure: not a retry.
    chat_with(&gw, &same, &failing("s-a", "1")).await;
    let changed = chat_with(
        &gw,
        &chat_body("a changed request"),
        &in_session("s-a", "1"),
    )
    .await;
    // The same request after an answer: a new sample, not a retry.
    chat_with(&gw, &same, &in_session("s-a", "2")).await;
    let again = chat_with(&gw, &same, &in_session("s-a", "2")).await;
    // The same request in another session or step: not a retry.
    chat_with(&gw, &same, &failing("s-a", "3")).await;
    let elsewhere = chat_with(&gw, &same, &in_session("s-b", "3")).await;
    let other_step = chat_with(&gw, &same, &in_session("s-a", "4")).await;
    gw.flush().await;
    let (_, page) = get(&gw, "/ui/api/calls?limit=100").await;
    for id in [&changed, &again, &elsewhere, &other_step] {
        let call = page["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["trace_id"] == id.as_str())
            .unwrap();
        assert_eq!(call["attempt"], 1, "{id}");
        assert_eq!(call["retry_of"], Value::Null, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_calls_marks_a_retry_polled_after_its_first_attempt() {
    let gw = demo_gateway().await;
    let body = chat_body("retried later");
    let mut failing = in_session("s-poll", "5").to_vec();
    failing.push(("x-mock-status", "500"));
    let first = chat_with(&gw, &body, &failing).await;
    gw.flush().await;
    let (_, before) = get(&gw, "/ui/api/calls?limit=1").await;
    let cursor = before["cursor"].as_i64().unwrap();
    let retry = chat_with(&gw, &body, &in_session("s-poll", "5")).await;
    gw.flush().await;
    // The page holds the retry alone; its first attempt is older.
    let (_, since) = get(&gw, &format!("/ui/api/calls?after={cursor}")).await;
    let calls = since["calls"].as_array().unwrap();
    assert_eq!(each(&since["calls"], "trace_id"), [retry.as_str()]);
    assert_eq!(calls[0]["attempt"], 2);
    assert_eq!(calls[0]["retry_of"], first.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_marks_calls_without_a_model_other_and_leaves_them_out_of_stats() {
    let gw = demo_gateway().await;
    let run = [("x-rllm-run-id", gw.run_id.as_str())];
    let models = gw.get("/v1/models").headers(&run).answer().await;
    let count_body =
        json!({"model": "mock-model", "messages": [{"role": "user", "content": "n?"}]});
    let count = gw
        .post("/v1/messages/count_tokens")
        .json(&count_body)
        .headers(&run)
        .answer()
        .await;
    gw.flush().await;
    let (_, page) = get(&gw, &format!("/ui/api/calls?run_id={}", gw.run_id)).await;
    let calls = page["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 8);
    let found = |id: String| calls.iter().find(|c| c["trace_id"] == id.as_str()).unwrap();
    let (models, count) = (found(models.trace_id()), found(count.trace_id()));
    assert_eq!(models["operation"], "other");
    assert_eq!(
        (&models["method"], &models["path"]),
        (&json!("GET"), &json!("/v1/models"))
    );
    assert_eq!(count["operation"], "other");
    assert_eq!(count["path"], "/v1/messages/count_tokens");
    assert!(calls.iter().filter(|c| c["operation"] == "chat").count() == 6);

    let url = format!("/ui/api/stats?run_id={}", gw.run_id);
    let (_, stats) = get(&gw, &url).await;
    assert_eq!(stats["calls"], 6, "only the model calls count by default");
    assert_eq!(stats["models"], json!(["mock-model"]));
    let (_, all) = get(&gw, &format!("{url}&other=1")).await;
    assert_eq!(all["calls"], 8, "other=1 counts them too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_lists_and_charts_take_a_time_range() {
    let gw = demo_gateway().await;
    let solo = record_solo_session(&gw, "solo-session").await;
    let started = async |id: &str| {
        get(&gw, &format!("/traces/{id}")).await.1["timestamp"]
            .as_f64()
            .unwrap()
    };
    let at = started(&solo.step1).await;
    // Between step 1's start and the next call's (a whole call apart).
    let after = (at + started(&solo.others[0]).await) / 2.0;
    let before = at - 0.000_5;
    // The runs and the demo's sessions were all active before step 1.
    let cases = [
        (format!("/ui/api/runs?until={before}"), "runs", 1),
        (format!("/ui/api/runs?since={before}"), "runs", 0),
        ("/ui/api/runs?until=1".to_string(), "runs", 0),
        (format!("/ui/api/sessions?until={before}"), "sessions", 2),
        (format!("/ui/api/sessions?since={before}"), "sessions", 1),
        (
            format!("/ui/api/calls?until={before}&limit=100"),
            "calls",
            6,
        ),
        // Step 1 and everything after it.
        (
            format!("/ui/api/calls?since={before}&limit=100"),
            "calls",
            8,
        ),
        (
            format!("/ui/api/calls?since={before}&until={after}"),
            "calls",
            1,
        ),
        ("/ui/api/calls?no_session=1".to_string(), "calls", 1),
        (
            format!("/ui/api/calls?no_session=1&until={before}"),
            "calls",
            0,
        ),
    ];
    for (url, list, expected) in cases {
        let (status, page) = get(&gw, &url).await;
        assert_eq!(status, 200, "{url}");
        assert_eq!(page[list].as_array().unwrap().len(), expected, "{url}");
    }
    let (_, loose) = get(&gw, "/ui/api/calls?no_session=1").await;
    assert_eq!(loose["calls"][0]["trace_id"], solo.loose.as_str());
    let (_, stats) = get(&gw, &format!("/ui/api/stats?until={before}")).await;
    assert_eq!(stats["calls"], 6);
    let (_, stats) = get(&gw, &format!("/ui/api/stats?since={before}&other=1")).await;
    assert_eq!(stats["calls"], 8);
}

// ---- harness spans ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_session_spans_gives_each_harness_span_the_calls_made_under_it() {
    let gw = demo_gateway().await;
    let episode = record_harness_episode(&gw, "span-session").await;
    let response = gw.get("/ui/api/sessions/span-session/spans").answer().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["cache-control"], "no-store");
    let page = response.json();
    assert_eq!(page["session_id"], "span-session");
    let spans = &page["spans"];
    assert_eq!(
        each(spans, "span_id"),
        [episode.agent, episode.tool_ls, episode.tool_test],
        "by start"
    );
    let [first, inside, last, _loose] = &episode.calls;
    let calls_of = |i: usize| spans[i]["calls"].clone();
    assert_eq!(calls_of(0), json!([first, last]), "the agent's own calls");
    assert_eq!(
        calls_of(1),
        json!([inside]),
        "the call made inside the tool"
    );
    assert_eq!(calls_of(2), json!([]), "a span without calls");
    let test = &spans[2];
    assert_eq!(test["parent_span_id"], episode.agent);
    assert_eq!(test["status_code"], "error");
    assert_eq!(test["status_message"], "exit code 1");
    assert_eq!(test["attributes"]["tool.command"], "pytest -x tests/");
    assert_eq!(test["events"][0]["name"], "exit");
    assert_eq!(test["resource"]["service.name"], "ui-harness");
    assert!(test["duration_ms"].as_f64().unwrap() >= 5.0, "{test}");
    // The same links as the API's own tree, which reads the records.
    let (_, tree) = get(&gw, "/sessions/span-session/spans").await;
    for (ours, theirs) in spans
        .as_array()
        .unwrap()
        .iter()
        .zip(tree["spans"].as_array().unwrap())
    {
        assert_eq!(ours["calls"], theirs["calls"], "{}", ours["name"]);
    }
    let (_, alone) = get(&gw, &format!("/ui/api/sessions/{SPAN_ONLY_SESSION}/spans")).await;
    assert_eq!(each(&alone["spans"], "name"), ["evaluate reward"]);
    assert_eq!(alone["spans"][0]["calls"], json!([]));
    let (status, none) = get(&gw, "/ui/api/sessions/no-such-session/spans").await;
    assert_eq!(status, 200);
    assert_eq!(none["spans"], json!([]));
}

// ---- the browser ----

/// `node`, once Node, Debian's chromium and `playwright-core` are all
/// there; fails the test, saying how to install what is missing, otherwise.
fn browser_tools() -> &'static str {
    let chromium = Path::new("/usr/bin/chromium");
    let modules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing: Vec<String> = [
        (!node).then(|| "node".to_string()),
        (!chromium.exists())
            .then(|| format!("{} (apt-get install -y chromium)", chromium.display())),
        (!modules.exists())
            .then(|| format!("{} (npm ci --prefix tests/browser)", modules.display())),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(
        missing.is_empty(),
        "the browser test needs: {}",
        missing.join(", ")
    );
    "node"
}

/// The build directory (`target/`): the binary is `target/<profile>/tracegate`.
fn target_dir() -> PathBuf {
    let bin = Path::new(BIN);
    bin.parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// What a browser script did: whether it passed, and what it printed.
struct BrowserRun {
    passed: bool,
    stdout: String,
    stderr: String,
}

impl BrowserRun {
    /// Prints what the script printed; the screenshot paths also go to the
    /// real stderr, past the test harness's capture, so that CI logs show
    /// them whether the test passes or not.
    fn show_screenshots(&self) {
        println!("{}{}", self.stdout, self.stderr);
        let mut log = std::io::stderr().lock();
        for line in self.stdout.lines().filter(|l| l.contains("screenshot: ")) {
            let _ = writeln!(log, "{line}");
        }
    }
}

/// Runs a browser script from `tests/browser/` with `env`.
async fn run_browser_script(node: &str, script: &str, env: &[(&str, String)]) -> BrowserRun {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(script);
    let mut cmd = Command::new(node);
    cmd.arg(script);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    BrowserRun {
        passed: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(browser_tests),
    ignore = "needs node, chromium and playwright-core (docs/development.md, \"Tests\"); run with TRACEGATE_REQUIRE_BROWSER_TESTS=1, as CI does"
)]
async fn browser_walks_from_the_runs_to_the_run_tree_and_waterfall_to_a_call() {
    let node = browser_tools();
    let gw = demo_gateway().await;
    let screenshot = target_dir().join("ui-screenshot.png");
    let run = run_browser_script(
        node,
        "ui.test.mjs",
        &[
            ("GATEWAY_URL", gw.at("")),
            ("SCREENSHOT", screenshot.display().to_string()),
        ],
    )
    .await;
    run.show_screenshots();
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert!(run.passed, "the browser test failed:\n{stdout}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(browser_tests),
    ignore = "needs node, chromium and playwright-core (docs/development.md, \"Tests\"); run with TRACEGATE_REQUIRE_BROWSER_TESTS=1, as CI does"
)]
async fn browser_walks_from_the_sessions_to_a_session_without_a_run_and_its_steps() {
    let node = browser_tools();
    let gw = demo_gateway().await;
    let solo = record_solo_session(&gw, "solo-session").await;
    // A model list in the demo run: its page must not show it as a step.
    let demo_session = format!("{}-session-1", gw.run_id);
    let in_run = [
        ("x-rllm-run-id", gw.run_id.as_str()),
        ("x-rllm-session-id", demo_session.as_str()),
    ];
    let run_other = gw.get("/v1/models").headers(&in_run).answer().await;
    assert_eq!(run_other.status, 200);
    gw.flush().await;
    // Feedback on the session and on its first step, for its page's table.
    let feedback = json!([
        {"session_id": "solo-session", "name": "reward", "value": 0.75},
        {"trace_id": solo.step1, "name": "pass@1", "value": true},
    ]);
    let posted = gw.post("/feedback/batch").json(&feedback).answer().await;
    assert_eq!(posted.status, 200, "{}", posted.text());
    let screenshot = target_dir().join("ui-sessions-screenshot.png");
    let run = run_browser_script(
        node,
        "sessions.test.mjs",
        &[
            ("GATEWAY_URL", gw.at("")),
            ("SCREENSHOT", screenshot.display().to_string()),
            ("SESSION_ID", "solo-session".to_string()),
            ("STEP1", solo.step1),
            ("STEP2", solo.step2.join(",")),
            ("STEP3", solo.step3),
            ("OTHERS", solo.others.join(",")),
            ("LOOSE", solo.loose),
            ("RUN_ID", gw.run_id.clone()),
            ("RUN_OTHER", run_other.trace_id()),
        ],
    )
    .await;
    run.show_screenshots();
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert!(
        run.passed,
        "the sessions browser test failed:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(browser_tests),
    ignore = "needs node, chromium and playwright-core (README, \"Web UI\"); run with TRACEGATE_REQUIRE_BROWSER_TESTS=1, as CI does"
)]
async fn browser_asks_for_the_gateway_token_when_inbound_auth_is_on() {
    let node = browser_tools();
    let token = "tg-ui-token-123";
    // Bearer inbound auth needs the route to hold its own key.
    let gw = demo_gateway_with(&[
        ("TRACEGATE_AUTH_TOKENS", token),
        ("TRACEGATE_UPSTREAM_AUTH", "env:UI_TEST_UPSTREAM_KEY"),
        ("UI_TEST_UPSTREAM_KEY", "sk-ui-upstream"),
    ])
    .await;
    let run = run_browser_script(
        node,
        "auth.test.mjs",
        &[
            ("GATEWAY_URL", gw.at("")),
            ("GATEWAY_TOKEN", token.to_string()),
        ],
    )
    .await;
    assert!(
        run.passed,
        "the browser auth test failed:\n{}\n{}",
        run.stdout, run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(browser_tests),
    ignore = "needs node, chromium and playwright-core (docs/development.md, \"Tests\"); run with TRACEGATE_REQUIRE_BROWSER_TESTS=1, as CI does"
)]
async fn browser_draws_harness_spans_and_calls_as_one_tree_and_timeline() {
    let node = browser_tools();
    let gw = demo_gateway().await;
    let episode = record_harness_episode(&gw, "span-session").await;
    let screenshot = target_dir().join("ui-spans-screenshot.png");
    let run = run_browser_script(
        node,
        "spans.test.mjs",
        &[
            ("GATEWAY_URL", gw.at("")),
            ("SCREENSHOT", screenshot.display().to_string()),
            ("SESSION_ID", "span-session".to_string()),
            ("AGENT", episode.agent.to_string()),
            ("TOOL_LS", episode.tool_ls.to_string()),
            ("TOOL_TEST", episode.tool_test.to_string()),
            ("CALLS", episode.calls.join(",")),
            ("SPAN_ONLY_SESSION", SPAN_ONLY_SESSION.to_string()),
        ],
    )
    .await;
    run.show_screenshots();
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert!(
        run.passed,
        "the spans browser test failed:\n{stdout}\n{stderr}"
    );
}
