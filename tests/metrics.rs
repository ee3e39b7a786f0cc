//! `GET /metrics` over a real socket: each metric moves with the calls, the
//! store and the export that should move it; and the Grafana dashboards in
//! `dashboards/` query only metrics a scrape really returns.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::otlp::{Receiver, Transport};
use common::{Gateway, Setup, TestGateway, chat_body, rest_of_stream, start_mock, until, within};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tracegate::config::ServeArgs;

/// One scrape: every sample by its series (`name{labels}`), and the metric
/// families with their types.
struct Scrape {
    samples: BTreeMap<String, f64>,
    families: BTreeMap<String, String>,
}

impl Scrape {
    /// The sample of a series, written exactly as exposed.
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in {:#?}", self.samples.keys()))
    }

    /// The names a query may use: `name` for gauges, `name_total` for
    /// counters, `name_bucket`/`_sum`/`_count` for histograms.
    fn queryable_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (family, kind) in &self.families {
            match kind.as_str() {
                "counter" => {
                    names.insert(format!("{family}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{family}{suffix}"));
                    }
                }
                _ => {
                    names.insert(family.clone());
                }
            }
        }
        names
    }
}

async fn scrape(gw: &TestGateway) -> Scrape {
    let response = gw.get("/metrics").answer().await;
    assert_eq!(response.status, 200);
    assert!(
        response.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text();
    assert!(
        text.ends_with("# EOF\n"),
        "a complete OpenMetrics exposition"
    );
    let mut samples = BTreeMap::new();
    let mut families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').unwrap();
            samples.insert(series.to_string(), value.parse().unwrap());
        }
    }
    Scrape { samples, families }
}

async fn chat(gw: &TestGateway, body: Value, headers: &[(&str, &str)]) {
    gw.chat(&body).headers(headers).answer().await;
}

fn model_body(model: &str, stream: bool) -> Value {
    let mut body = chat_body("measure me");
    body["model"] = json!(model);
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

const DURATION: &str = "gen_ai_client_operation_duration_seconds";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_by_model_route_operation_and_status() {
    let gw = Setup::new().await;
    chat(&gw, model_body("alpha", false), &[]).await;
    chat(&gw, model_body("alpha", false), &[]).await;
    chat(&gw, model_body("beta", true), &[]).await;
    chat(&gw, model_body("alpha", false), &[("x-mock-status", "500")]).await;
    gw.flush().await;
    let m = scrape(&gw).await;
    let series = |model: &str, status: &str| {
        format!(
            r#"{DURATION}_count{{model="{model}",route="default",operation="chat",status="{status}"}}"#
        )
    };
    assert_eq!(m.get(&series("alpha", "ok")), 2.0);
    assert_eq!(m.get(&series("beta", "ok")), 1.0);
    assert_eq!(m.get(&series("alpha", "error")), 1.0);
    let records = gw.records().await;
    let total: f64 = records.iter().map(|r| r.latency_ms / 1000.0).sum();
    let summed: f64 = ["ok", "error"]
        .iter()
        .flat_map(|s| ["alpha", "beta"].map(|m| (m, *s)))
        .filter_map(|(model, status)| {
            m.samples
                .get(&series(model, status).replace("_count{", "_sum{"))
                .copied()
        })
        .sum();
    assert!(
        (summed - total).abs() < 1e-6,
        "durations are the records' latencies: {summed} vs {total}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_first_token_is_observed_for_streamed_calls_only() {
    let gw = Setup::new().await;
    chat(&gw, model_body("alpha", false), &[]).await;
    chat(&gw, model_body("beta", true), &[]).await;
    gw.flush().await;
    let m = scrape(&gw).await;
    let ttft = |model: &str| {
        format!(
            r#"tracegate_time_to_first_token_seconds_count{{model="{model}",route="default",operation="chat"}}"#
        )
    };
    assert_eq!(m.get(&ttft("beta")), 1.0);
    assert!(!m.samples.contains_key(&ttft("alpha")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_by_type_add_up_to_the_records_usage() {
    let gw = Setup::new().await;
    for stream in [false, true, false] {
        chat(&gw, model_body("alpha", stream), &[]).await;
    }
    gw.flush().await;
    let m = scrape(&gw).await;
    let records = gw.records().await;
    let input: u64 = records.iter().filter_map(|r| r.usage.input_tokens).sum();
    let output: u64 = records.iter().filter_map(|r| r.usage.output_tokens).sum();
    assert!(input > 0 && output > 0);
    let tokens = |kind: &str| {
        format!(r#"tracegate_tokens_total{{model="alpha",route="default",type="{kind}"}}"#)
    };
    assert_eq!(m.get(&tokens("input")), input as f64);
    assert_eq!(m.get(&tokens("output")), output as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_calls_are_counted_by_error_kind() {
    let gw = Setup::new().await;
    chat(&gw, model_body("alpha", false), &[("x-mock-status", "503")]).await;
    chat(&gw, model_body("alpha", false), &[("x-mock-status", "429")]).await;
    gw.mock.stop();
    chat(&gw, model_body("alpha", false), &[]).await;
    gw.flush().await;
    let m = scrape(&gw).await;
    assert_eq!(
        m.get(r#"tracegate_errors_total{route="default",kind="upstream_http_error"}"#),
        2.0
    );
    assert_eq!(
        m.get(r#"tracegate_errors_total{route="default",kind="upstream_unreachable"}"#),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_call_is_in_flight_until_it_ends() {
    let gw = Setup::new().await;
    assert_eq!(scrape(&gw).await.get("tracegate_requests_in_flight"), 0.0);
    let mut response = gw
        .chat(&model_body("alpha", true))
        .header("x-mock-hold", "1")
        .send()
        .await;
    within("the first chunk", response.chunk()).await.unwrap();
    assert_eq!(scrape(&gw).await.get("tracegate_requests_in_flight"), 1.0);
    gw.mock.state.release();
    rest_of_stream(response).await;
    gw.flush().await;
    assert_eq!(scrape(&gw).await.get("tracegate_requests_in_flight"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reports_records_written_and_commit_latency() {
    let gw = Setup::new().await;
    for _ in 0..5 {
        chat(&gw, model_body("alpha", false), &[]).await;
    }
    gw.flush().await;
    let m = scrape(&gw).await;
    assert_eq!(m.get("tracegate_store_records_written_total"), 5.0);
    assert!(m.get("tracegate_store_commit_duration_seconds_count") >= 1.0);
    assert!(m.get("tracegate_store_commit_duration_seconds_sum") > 0.0);
    assert_eq!(m.get("tracegate_store_queue_depth"), 0.0);
    assert_eq!(m.get("tracegate_store_commit_failures_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_reports_spans_sent_failures_and_lag() {
    let receiver = Receiver::start(Transport::Http).await;
    let gw = Setup::with(|args| receiver.export_to(args)).await;
    chat(&gw, model_body("alpha", false), &[]).await;
    chat(&gw, model_body("alpha", false), &[]).await;
    receiver.wait_for(2).await;
    until("the export counted", async || {
        scrape(&gw).await.get("tracegate_export_spans_total") >= 2.0
    })
    .await;
    // The collector starts refusing: the span waits, ages, and attempts fail.
    receiver.refuse(true);
    chat(&gw, model_body("alpha", false), &[]).await;
    until("a failed attempt and a waiting span", async || {
        let m = scrape(&gw).await;
        m.get("tracegate_export_failures_total") >= 1.0
            && m.get("tracegate_export_spans_waiting") == 1.0
            && m.get("tracegate_export_lag_seconds") > 0.0
    })
    .await;
    receiver.refuse(false);
    until("the backlog drained", async || {
        scrape(&gw).await.get("tracegate_export_spans_waiting") == 0.0
    })
    .await;
    let m = scrape(&gw).await;
    assert_eq!(m.get("tracegate_export_spans_total"), 3.0);
    assert_eq!(m.get("tracegate_export_lag_seconds"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_health_is_reported_per_worker() {
    let a = start_mock().await;
    let b = start_mock().await;
    let routes = json!([{"name": "pool", "model_prefix": "*", "workers": [
        {"url": a.base_url(), "worker_id": "a"}, {"url": b.base_url(), "worker_id": "b"}]}]);
    let gw = TestGateway::start_with(ServeArgs {
        routes: Some(routes.to_string()),
        health_check_interval: Some("100ms".into()),
        ..ServeArgs::default()
    })
    .await;
    let up = |m: &Scrape, w: &str| {
        m.get(&format!(
            r#"tracegate_worker_up{{route="pool",worker="{w}"}}"#
        ))
    };
    let m = scrape(&gw).await;
    assert_eq!((up(&m, "a"), up(&m, "b")), (1.0, 1.0));
    b.stop();
    until("b reported down", async || {
        up(&scrape(&gw).await, "b") == 0.0
    })
    .await;
    assert_eq!(up(&scrape(&gw).await, "a"), 1.0);
}

// ---- the dashboards ----

/// Every metric name a PromQL query selects.
struct MetricNames(BTreeSet<String>);

impl ExprVisitor for MetricNames {
    type Error = ();

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
        let selector = match expr {
            Expr::VectorSelector(v) => Some(v),
            Expr::MatrixSelector(m) => Some(&m.vs),
            _ => None,
        };
        if let Some(name) = selector.and_then(|v| v.name.clone()) {
            self.0.insert(name);
        }
        Ok(true)
    }
}

/// The metric names of one query, with Grafana's variables filled in (so
/// it parses as PromQL); `label_values(metric, label)` is Grafana's, and
/// names its metric directly.
fn metrics_of(query: &str) -> BTreeSet<String> {
    let query = query
        .replace("$__rate_interval", "5m")
        .replace("$model", ".*")
        .replace("$route", ".*");
    let query = match query.strip_prefix("label_values(") {
        Some(args) => args.split(',').next().unwrap().to_string(),
        None => query,
    };
    let expr = parser::parse(&query).unwrap_or_else(|e| panic!("bad PromQL {query}: {e}"));
    let mut names = MetricNames(BTreeSet::new());
    walk_expr(&mut names, &expr).unwrap();
    names.0
}

/// Every `expr` of a Prometheus target, and every query of a Prometheus
/// template variable, anywhere in a dashboard.
fn prometheus_queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            if map.get("type") == Some(&json!("query"))
                && let Some(query) = map["query"]["query"].as_str()
            {
                out.push(query.to_string());
            }
            map.values().for_each(|v| prometheus_queries(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| prometheus_queries(v, out)),
        _ => {}
    }
}

fn dashboard(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dashboards")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_dashboard_queries_only_exported_metrics() {
    // Priced, so that spending has a series too.
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("tracegate.toml");
    std::fs::write(
        &prices,
        "[[prices]]\nmodel_prefix = \"alpha\"\ninput = 1\noutput = 2\n",
    )
    .unwrap();
    let gw = Setup::with(|args| args.config = Some(prices)).await;
    // One call of each outcome, so every labelled family has a series.
    chat(&gw, model_body("alpha", true), &[]).await;
    chat(&gw, model_body("alpha", false), &[("x-mock-status", "500")]).await;
    gw.flush().await;
    let exported = scrape(&gw).await.queryable_names();
    let board = dashboard("tracegate-gateway.json");
    let mut queries = Vec::new();
    prometheus_queries(&board, &mut queries);
    assert!(queries.len() >= 20, "the panels' queries were found");
    let mut used = BTreeSet::new();
    for query in &queries {
        let names = metrics_of(query);
        assert!(!names.is_empty(), "{query} selects no metric");
        for name in names {
            assert!(
                exported.contains(&name),
                "{query} uses {name}, which /metrics does not export"
            );
            used.insert(name);
        }
    }
    // Every family the gateway exports has a panel.
    for family in scrape(&gw).await.families.keys() {
        assert!(
            used.iter().any(|name| name.starts_with(family.as_str())),
            "no panel shows {family}"
        );
    }
}

#[test]
fn the_tempo_dashboard_searches_by_run_and_session_with_exported_attributes() {
    let board = dashboard("tracegate-traces-tempo.json");
    let documented = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/span_attributes.md"),
    )
    .unwrap();
    let queries: Vec<String> = board["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| {
            assert_eq!(t["queryType"], "traceql");
            t["query"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        queries
            .iter()
            .any(|q| q.contains("span.rllm.run_id = \"$run_id\""))
    );
    assert!(
        queries
            .iter()
            .any(|q| q.contains("span.session.id = \"$session_id\""))
    );
    // Every span attribute a query names is one tracegate's spans carry.
    for query in &queries {
        for (i, _) in query.match_indices("span.") {
            let attribute: String = query[i + 5..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            assert!(
                documented.contains(&format!("| `{attribute}` |")),
                "{query} names span.{attribute}, which tracegate does not set"
            );
        }
    }
}
