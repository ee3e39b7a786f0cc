//! The web UI at `/ui`: its files, its `/ui/api/` endpoints, and a real
//! browser walking it.
//!
//! Every test records a `tracegate demo` episode (one run, two sessions,
//! three steps each, each step's parent the previous step) with the real
//! binary, then serves that database with `tracegate serve` in front of an
//! in-process mock model.
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
use common::{Gateway, Request, chat_body, start_mock};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
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
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    println!("{stdout}{stderr}");
    // The screenshot paths go to the real stderr, past the test harness's
    // capture, so that CI logs show them whether the test passes or not.
    let mut log = std::io::stderr().lock();
    for line in stdout.lines().filter(|l| l.contains("screenshot: ")) {
        let _ = writeln!(log, "{line}");
    }
    assert!(run.passed, "the browser test failed:\n{stdout}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(browser_tests),
    ignore = "needs node, chromium and playwright-core (docs/development.md, \"Tests\"); run with TRACEGATE_REQUIRE_BROWSER_TESTS=1, as CI does"
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
