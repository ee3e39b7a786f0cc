//! The web UI at `/ui`: its files, its `/ui/api/` endpoints, and a real
//! browser walking it.
//!
//! Every test records a `tracegate demo` episode (one run, two sessions,
//! three steps each, each step's parent the previous step) with the real
//! binary, then serves that database with `tracegate serve` in front of an
//! in-process mock model.
//!
//! The browser test runs `tests/browser/ui.test.mjs` with Node, Debian's
//! `chromium` and `playwright-core` (`npm ci --prefix tests/browser`). Without
//! them it is skipped with a message — unless
//! `TRACEGATE_REQUIRE_BROWSER_TESTS=1` (set by `.ci/run`), where a missing
//! tool is a failure. It saves screenshots next to the build directory and
//! prints their paths (`UI screenshot: ...`) to the log.

mod common;

use common::process::{BIN, Running, free_port, tracegate};
use common::{chat_body, client, start_mock};
use serde_json::Value;
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

impl DemoGateway {
    fn url(&self, path: &str) -> String {
        self.gateway.url(path)
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
    let port = free_port();
    let mut cmd = tracegate(dir.path());
    cmd.args(["serve", "--db", db.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &mock.base_url()])
        .envs(env.iter().copied());
    DemoGateway {
        gateway: Running::spawn(cmd, port),
        run_id,
        _mock: mock,
        _dir: dir,
    }
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = client().get(url).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

// ---- the files ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_redirects_to_the_page_with_a_trailing_slash() {
    let gw = demo_gateway().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects.get(gw.url("/ui")).send().await.unwrap();
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
        let response = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
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
        assert!(!response.text().await.unwrap().is_empty(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_files_answer_304_while_the_browser_copy_is_current() {
    let gw = demo_gateway().await;
    let first = client().get(gw.url("/ui/app.js")).send().await.unwrap();
    let etag = first.headers()["etag"].clone();
    let again = client()
        .get(gw.url("/ui/app.js"))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag);
    assert!(again.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_page_loads_nothing_from_outside_the_gateway() {
    let gw = demo_gateway().await;
    let page = client().get(gw.url("/ui/")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"src="app.js""#) && html.contains(r#"href="style.css""#));
    for path in ["/ui/", "/ui/app.js", "/ui/style.css"] {
        let text = get_text(&gw.url(path)).await;
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
    let (status, body) = get_json(&gw.url("/ui/missing.js")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

// ---- the endpoints ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_runs_lists_the_demo_run_with_its_counts_and_filter_values() {
    let gw = demo_gateway().await;
    let (status, page) = get_json(&gw.url("/ui/api/runs")).await;
    assert_eq!(status, 200);
    let runs = page["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["run_id"], gw.run_id.as_str());
    assert_eq!(run["session_count"], 2);
    assert_eq!(run["trace_count"], 6);
    assert_eq!(run["error_count"], 0);
    assert!(run["tokens"].as_i64().unwrap() > 0);
    assert_eq!(page["facets"]["models"], serde_json::json!(["mock-model"]));
    assert_eq!(
        page["facets"]["harnesses"],
        serde_json::json!(["tracegate-demo"])
    );
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
        let (status, page) = get_json(&gw.url(&format!("/ui/api/runs?{query}"))).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(page["runs"].as_array().unwrap().len(), expected, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_calls_gives_each_step_of_a_run_with_its_parent_link() {
    let gw = demo_gateway().await;
    let url = gw.url(&format!("/ui/api/calls?run_id={}", gw.run_id));
    let (status, page) = get_json(&url).await;
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
    let (_, before) = get_json(&gw.url("/ui/api/calls?limit=1")).await;
    let cursor = before["cursor"].as_i64().unwrap();
    let (_, nothing) = get_json(&gw.url(&format!("/ui/api/calls?after={cursor}"))).await;
    assert_eq!(nothing["calls"], serde_json::json!([]));
    assert_eq!(nothing["cursor"], cursor);

    let answer = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-rllm-run-id", &gw.run_id)
        .json(&chat_body("one more"))
        .send()
        .await
        .unwrap();
    let trace_id = answer.headers()["x-rllm-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    answer.bytes().await.unwrap();
    let flushed = client().post(gw.url("/admin/flush")).send().await.unwrap();
    assert_eq!(flushed.status(), 200);

    let (_, since) = get_json(&gw.url(&format!("/ui/api/calls?after={cursor}"))).await;
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
        let url = gw.url(&format!("/ui/api/calls?after={cursor}&limit=4"));
        let (_, page) = get_json(&url).await;
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
    let url = gw.url(&format!("/ui/api/stats?run_id={}", gw.run_id));
    let (status, stats) = get_json(&url).await;
    assert_eq!(status, 200);
    assert_eq!(stats["calls"], 6);
    assert_eq!(stats["models"], serde_json::json!(["mock-model"]));
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
    let (_, run) = get_json(&gw.url(&format!("/runs/{}", gw.run_id))).await;
    assert_eq!(tokens, run["tokens"].as_u64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_stats_of_an_unknown_run_are_empty() {
    let gw = demo_gateway().await;
    let (status, stats) = get_json(&gw.url("/ui/api/stats?run_id=no-such-run")).await;
    assert_eq!(status, 200);
    assert_eq!(stats["calls"], 0);
    assert_eq!(stats["models"], serde_json::json!([]));
    assert_eq!(stats["latency_ms"]["edges"], serde_json::json!([]));
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
        let (status, body) = get_json(&gw.url(query)).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{query}");
        assert_eq!(body["error"]["code"], "bad_request", "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_answers_are_never_cached() {
    let gw = demo_gateway().await;
    for path in ["/ui/api/runs", "/ui/api/calls", "/ui/api/stats"] {
        let response = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
    }
}

// ---- the browser ----

/// `node`, when Node, Debian's chromium and `playwright-core` are all there.
fn browser_tools() -> Option<&'static str> {
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
    if missing.is_empty() {
        return Some("node");
    }
    let required = std::env::var("TRACEGATE_REQUIRE_BROWSER_TESTS").is_ok_and(|v| v == "1");
    assert!(!required, "the browser test needs: {}", missing.join(", "));
    eprintln!("SKIPPED: the browser test needs {}", missing.join(", "));
    None
}

/// The build directory (`target/`): the binary is `target/<profile>/tracegate`.
fn target_dir() -> PathBuf {
    let bin = Path::new(BIN);
    bin.parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Runs a browser script from `tests/browser/` with `env`.
async fn run_browser_script(
    node: &str,
    script: &str,
    env: &[(&str, String)],
) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(script);
    let mut cmd = Command::new(node);
    cmd.arg(script);
    for (key, value) in env {
        cmd.env(key, value);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_walks_from_the_runs_to_the_run_tree_and_waterfall_to_a_call() {
    let Some(node) = browser_tools() else { return };
    let gw = demo_gateway().await;
    let screenshot = target_dir().join("ui-screenshot.png");
    let output = run_browser_script(
        node,
        "ui.test.mjs",
        &[
            ("GATEWAY_URL", gw.url("")),
            ("SCREENSHOT", screenshot.display().to_string()),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    // The screenshot paths go to the real stderr, past the test harness's
    // capture, so that CI logs show them whether the test passes or not.
    let mut log = std::io::stderr().lock();
    for line in stdout.lines().filter(|l| l.contains("screenshot: ")) {
        let _ = writeln!(log, "{line}");
    }
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_asks_for_the_gateway_token_when_inbound_auth_is_on() {
    let Some(node) = browser_tools() else { return };
    let token = "tg-ui-token-123";
    // Bearer inbound auth needs the route to hold its own key.
    let gw = demo_gateway_with(&[
        ("TRACEGATE_AUTH_TOKENS", token),
        ("TRACEGATE_UPSTREAM_AUTH", "env:UI_TEST_UPSTREAM_KEY"),
        ("UI_TEST_UPSTREAM_KEY", "sk-ui-upstream"),
    ])
    .await;
    let output = run_browser_script(
        node,
        "auth.test.mjs",
        &[
            ("GATEWAY_URL", gw.url("")),
            ("GATEWAY_TOKEN", token.to_string()),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser auth test failed:\n{stdout}\n{stderr}"
    );
}
