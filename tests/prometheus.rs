//! `/metrics` as Prometheus's own tools read it, from the real binary after
//! real traffic (a chat call, a streamed one, a failed one, an Anthropic
//! one, a Responses API one):
//!
//! * `promtool check metrics` finds nothing to say about the exposition
//!   (help text, names, suffixes, units);
//! * a real Prometheus scraping the gateway every second answers every
//!   PromQL query of the Grafana dashboard, with its variables set to "All"
//!   and to the model and route served, without an error and, for every
//!   series the traffic must have made, with a result.
//!
//! Both need Debian's `prometheus` package (`promtool` and `prometheus`).
//! Where it is missing they say so and pass, unless
//! `TRACEGATE_REQUIRE_PROMETHEUS_TESTS=1` (what `.ci/run` sets): then a
//! missing tool fails them with the command that installs it.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::dashboard::{Variables, dashboard, prometheus_queries, promql};
use common::process::{Running, Serve, free_port};
use common::{Gateway, chat_body, eventually, start_mock, stream_body, within};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use tempfile::TempDir;
use tracegate::mock_upstream::MockServer;

/// The model every call of the traffic asks for.
const MODEL: &str = "mock-model";

/// Queries whose result may be empty after the traffic served, and why.
const MAY_BE_EMPTY: [(&str, &str); 2] = [
    (
        "tracegate_retries_total",
        "no route has a retry policy: a series appears with the first retry",
    ),
    (
        "tracegate_otlp_rejected_total",
        "no OTLP request was refused: a series appears with the first refusal",
    ),
];

/// `tool` (a Prometheus binary) when installed; when not, `None` after
/// saying why the test passes without it — or a failure where the
/// Prometheus tests are required.
fn prometheus_tool(tool: &'static str) -> Option<&'static str> {
    let installed = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Some(tool);
    }
    let required = std::env::var("TRACEGATE_REQUIRE_PROMETHEUS_TESTS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "TRACEGATE_REQUIRE_PROMETHEUS_TESTS=1 and {tool} is missing (apt-get install -y prometheus)"
    );
    println!(
        "skipped: {tool} is not installed (apt-get install -y prometheus; \
         TRACEGATE_REQUIRE_PROMETHEUS_TESTS=1 makes this a failure)"
    );
    None
}

/// The real binary in front of the mock (both protocols), after it served
/// one call of each kind and recorded them.
struct Traffic {
    gateway: Running,
    _mock: MockServer,
    _dir: TempDir,
}

async fn served_traffic() -> Traffic {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let anthropic = format!("http://{}", mock.addr);
    // Priced, so that spending has a series too.
    let prices = format!("[[prices]]\nmodel_prefix = \"{MODEL}\"\ninput = 1\noutput = 2\n");
    std::fs::write(dir.path().join("tracegate.toml"), prices).unwrap();
    let gateway = Serve::new(dir.path())
        .args(["--db", "traces.db", "--config", "tracegate.toml"])
        .envs(&[
            ("OPENAI_BASE_URL", &mock.base_url()),
            ("ANTHROPIC_BASE_URL", &anthropic),
        ])
        .spawn();
    let mut streamed = stream_body("stream me");
    streamed["stream_options"] = json!({"include_usage": true});
    let answers = [
        gateway.chat(&chat_body("chat")).answer().await,
        gateway.chat(&streamed).answer().await,
        gateway
            .chat(&chat_body("fail"))
            .header("x-mock-status", "500")
            .answer()
            .await,
        gateway
            .post("/v1/messages")
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": MODEL, "max_tokens": 16,
                          "messages": [{"role": "user", "content": "anthropic"}]}))
            .answer()
            .await,
        gateway
            .post("/v1/responses")
            .json(&json!({"model": MODEL, "input": "responses"}))
            .answer()
            .await,
    ];
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 500, 200, 200]);
    gateway.flush().await;
    Traffic {
        gateway,
        _mock: mock,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_nothing_to_say_about_the_metrics() {
    let Some(promtool) = prometheus_tool("promtool") else {
        return;
    };
    let traffic = served_traffic().await;
    let exposition = traffic
        .gateway
        .get("/metrics")
        .header("accept", "text/plain; version=0.0.4")
        .answer()
        .await
        .text();
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = tokio::task::spawn_blocking(move || check.wait_with_output().unwrap())
        .await
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.is_empty(),
        "promtool check metrics ({}): {said}\n{exposition}",
        output.status
    );
}

/// A Prometheus server on a free port, scraping one target every second;
/// killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Prometheus {
    fn start(binary: &str, target_port: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n\
                 \x20 - job_name: tracegate\n\
                 \x20   static_configs: [{{targets: [\"127.0.0.1:{target_port}\"]}}]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Prometheus { child, port, dir }
    }

    /// What it logged so far (for a failure's message).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let base = format!("http://127.0.0.1:{}{path}", self.port);
        let url = reqwest::Url::parse_with_params(&base, query).unwrap();
        let response = common::client().get(url).send().await.ok()?;
        response.json().await.ok()
    }

    /// Waits until it scraped the gateway successfully; fails at once
    /// with the scrape's error if the target is down.
    async fn wait_for_the_target(&self) {
        let health = eventually("Prometheus scraping the gateway", async || {
            let targets = self.get("/api/v1/targets", &[]).await?;
            let target = targets["data"]["activeTargets"].get(0)?.clone();
            (target["health"] != "unknown").then_some(target)
        })
        .await;
        assert_eq!(health["health"], "up", "{health:#}\n{}", self.log());
    }

    /// The result of an instant query; an error fails the test.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let answer = within(
            "a query answer",
            self.get("/api/v1/query", &[("query", promql)]),
        )
        .await
        .unwrap_or_else(|| panic!("no answer to {promql}\n{}", self.log()));
        assert_eq!(answer["status"], "success", "{promql}: {answer:#}");
        answer["data"]["result"].as_array().unwrap().clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_answers_every_dashboard_query() {
    let Some(binary) = prometheus_tool("prometheus") else {
        return;
    };
    let traffic = served_traffic().await;
    let prometheus = Prometheus::start(binary, traffic.gateway.port);
    prometheus.wait_for_the_target().await;
    let queries = prometheus_queries(&dashboard("tracegate-gateway.json"));
    assert!(queries.len() >= 20, "the panels' queries were found");
    let served = Variables {
        model: MODEL,
        route: "default",
        rate_interval: "1m",
    };
    for vars in [Variables::ALL, served] {
        for query in &queries {
            let promql = promql(query, &vars);
            if let Some((_, why)) = MAY_BE_EMPTY.iter().find(|(m, _)| query.contains(m)) {
                let result = prometheus.query(&promql).await;
                println!("{promql}: {} series (may be empty: {why})", result.len());
                continue;
            }
            // A rate needs two scrapes: ask until the answer has a series.
            eventually(&format!("a result for {promql}"), async || {
                let result = prometheus.query(&promql).await;
                (!result.is_empty()).then_some(())
            })
            .await;
        }
    }
    // The scrape carried what the traffic made, by the conventions' labels.
    let anthropic = prometheus
        .query(
            r#"gen_ai_client_operation_duration_seconds_count{gen_ai_provider_name="anthropic"}"#,
        )
        .await;
    assert_eq!(anthropic.len(), 1, "{anthropic:#?}");
    let failed = prometheus
        .query(&format!(
            r#"gen_ai_client_operation_duration_seconds_count{{gen_ai_request_model="{MODEL}",error_type="upstream_http_error"}}"#
        ))
        .await;
    assert_eq!(failed.len(), 1, "{failed:#?}");
}
