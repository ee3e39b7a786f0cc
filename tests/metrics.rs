//! `GET /metrics` over a real socket: each metric moves with the calls, the
//! store and the export that should move it; and the Grafana dashboards in
//! `dashboards/` query only metrics a scrape really returns.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::dashboard::{Variables, dashboard, prometheus_queries, promql};
use common::otlp::{Receiver, Transport};
use common::raw::RawConnection;
use common::{Gateway, Setup, TestGateway, chat_body, rest_of_stream, start_mock, until, within};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tracegate::config::ServeArgs;

/// One sample: its metric name, its labels and its value.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One scrape: every sample by its series (`name{labels}`), and the metric
/// families with their types.
struct Scrape {
    samples: BTreeMap<String, f64>,
    parsed: Vec<Sample>,
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

    /// The samples of metric `name` whose labels have these values; a label
    /// whose value is `""` must be absent (Prometheus reads them alike).
    fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.parsed
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(label, value)| s.labels.get(*label).map_or("", String::as_str) == *value)
            })
            .collect()
    }

    /// The value of the one series of metric `name` with these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.matching(name, labels).as_slice() {
            [one] => one.value,
            other => panic!(
                "{} series of {name} with {labels:?}: {:#?}",
                other.len(),
                self.samples.keys()
            ),
        }
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

/// A series (`name{a="x",b="y"}`) as its name and labels. Label values
/// here hold no quotes, commas or escapes.
fn parse_series(series: &str) -> (String, BTreeMap<String, String>) {
    let Some((name, labels)) = series.split_once('{') else {
        return (series.to_string(), BTreeMap::new());
    };
    let labels = labels
        .trim_end_matches('}')
        .split(',')
        .map(|pair| {
            let (label, value) = pair.split_once('=').unwrap();
            (label.to_string(), value.trim_matches('"').to_string())
        })
        .collect();
    (name.to_string(), labels)
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
    let mut parsed = Vec::new();
    let mut families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap();
            samples.insert(series.to_string(), value);
            let (name, labels) = parse_series(series);
            parsed.push(Sample {
                name,
                labels,
                value,
            });
        }
    }
    Scrape {
        samples,
        parsed,
        families,
    }
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
const TIME_TO_FIRST_CHUNK: &str = "gen_ai_client_operation_time_to_first_chunk_seconds";
const TOKEN_USAGE: &str = "gen_ai_client_token_usage";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_by_model_route_operation_and_error_type() {
    let gw = Setup::new().await;
    chat(&gw, model_body("alpha", false), &[]).await;
    chat(&gw, model_body("alpha", false), &[]).await;
    chat(&gw, model_body("beta", true), &[]).await;
    chat(&gw, model_body("alpha", false), &[("x-mock-status", "500")]).await;
    gw.flush().await;
    let m = scrape(&gw).await;
    let port = gw.mock.addr.port().to_string();
    let count = |model: &str, error_type: &str| {
        m.value(
            &format!("{DURATION}_count"),
            &[
                ("gen_ai_request_model", model),
                ("tracegate_route", "default"),
                ("gen_ai_operation_name", "chat"),
                ("gen_ai_provider_name", "openai"),
                ("server_address", "127.0.0.1"),
                ("server_port", &port),
                ("error_type", error_type),
            ],
        )
    };
    assert_eq!(count("alpha", ""), 2.0);
    assert_eq!(count("beta", ""), 1.0);
    assert_eq!(count("alpha", "upstream_http_error"), 1.0);
    let records = gw.records().await;
    let total: f64 = records.iter().map(|r| r.latency_ms / 1000.0).sum();
    let summed: f64 = m
        .matching(&format!("{DURATION}_sum"), &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert!(
        (summed - total).abs() < 1e-6,
        "durations are the records' latencies: {summed} vs {total}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_first_chunk_is_observed_for_streamed_calls_only() {
    let gw = Setup::new().await;
    chat(&gw, model_body("alpha", false), &[]).await;
    chat(&gw, model_body("beta", true), &[]).await;
    gw.flush().await;
    let m = scrape(&gw).await;
    let ttfc = |model: &str| {
        m.matching(
            &format!("{TIME_TO_FIRST_CHUNK}_count"),
            &[
                ("gen_ai_request_model", model),
                ("tracegate_route", "default"),
                ("gen_ai_operation_name", "chat"),
            ],
        )
        .iter()
        .map(|s| s.value)
        .collect::<Vec<_>>()
    };
    assert_eq!(ttfc("beta"), [1.0]);
    assert!(ttfc("alpha").is_empty());
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
        m.value(
            &format!("{TOKEN_USAGE}_sum"),
            &[
                ("gen_ai_request_model", "alpha"),
                ("tracegate_route", "default"),
                ("gen_ai_token_type", kind),
            ],
        )
    };
    assert_eq!(tokens("input"), input as f64);
    assert_eq!(tokens("output"), output as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_calls_are_counted_by_error_type_with_their_model() {
    let gw = Setup::new().await;
    chat(&gw, model_body("alpha", false), &[("x-mock-status", "503")]).await;
    chat(&gw, model_body("alpha", false), &[("x-mock-status", "429")]).await;
    gw.mock.stop();
    chat(&gw, model_body("alpha", false), &[]).await;
    gw.flush().await;
    let m = scrape(&gw).await;
    let failed = |error_type: &str| {
        m.value(
            &format!("{DURATION}_count"),
            &[
                ("tracegate_route", "default"),
                ("gen_ai_request_model", "alpha"),
                ("error_type", error_type),
            ],
        )
    };
    assert_eq!(failed("upstream_http_error"), 2.0);
    assert_eq!(failed("upstream_unreachable"), 1.0);
}

/// `GET /metrics` with `accept` (none when `None`): its content type and body.
async fn metrics_as(gw: &TestGateway, accept: Option<&str>) -> (String, String) {
    let mut connection = RawConnection::open(gw).await;
    let accept = accept.map_or(String::new(), |a| format!("accept: {a}\r\n"));
    let request = format!("GET /metrics HTTP/1.1\r\nhost: gw\r\n{accept}connection: close\r\n\r\n");
    connection.send(request.as_bytes()).await;
    let response = connection.response().await;
    assert_eq!(response.status, 200);
    let content_type = response.header("content-type").unwrap().to_string();
    (content_type, String::from_utf8(response.body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_format_follows_the_accept_header() {
    let gw = Setup::new().await;
    chat(&gw, model_body("alpha", true), &[]).await;
    gw.flush().await;
    let (content_type, text) = metrics_as(&gw, Some("text/plain; version=0.0.4")).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    assert!(text.contains("# TYPE tracegate_store_records_written_total counter\n"));
    assert!(text.contains("# TYPE gen_ai_client_operation_duration_seconds histogram\n"));
    let openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    for accept in [
        Some("application/openmetrics-text; version=1.0.0"),
        // What Prometheus 2 sends: OpenMetrics first.
        Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ),
        None,
    ] {
        let (content_type, text) = metrics_as(&gw, accept).await;
        assert_eq!(content_type, openmetrics, "{accept:?}");
        assert!(text.ends_with("# EOF\n"), "{accept:?}");
        assert!(text.contains("# TYPE tracegate_store_records_written counter\n"));
    }
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
            r#"tracegate_worker_up{{tracegate_route="pool",worker="{w}"}}"#
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
/// it parses as PromQL).
fn metrics_of(query: &str) -> BTreeSet<String> {
    let query = promql(query, &Variables::ALL);
    let expr = parser::parse(&query).unwrap_or_else(|e| panic!("bad PromQL {query}: {e}"));
    let mut names = MetricNames(BTreeSet::new());
    walk_expr(&mut names, &expr).unwrap();
    names.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_dashboard_queries_only_exported_metrics() {
    // Priced, and retrying, so that spending and retries have series too.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracegate.toml");
    std::fs::write(
        &config,
        "[[prices]]\nmodel_prefix = \"alpha\"\ninput = 1\noutput = 2\n\n\
         [retry]\nmax_attempts = 2\nbackoff = \"10ms\"\n",
    )
    .unwrap();
    let gw = Setup::with(|args| args.config = Some(config)).await;
    // One call of each outcome (the failed one retried first), so every
    // labelled family has a series.
    chat(&gw, model_body("alpha", true), &[]).await;
    chat(&gw, model_body("alpha", false), &[("x-mock-status", "503")]).await;
    // The Responses API reports cached input and reasoning tokens.
    let responses = json!({"model": "alpha", "input": "measure me"});
    gw.post("/v1/responses").json(&responses).answer().await;
    gw.flush().await;
    let exported = scrape(&gw).await.queryable_names();
    let board = dashboard("tracegate-gateway.json");
    let queries = prometheus_queries(&board);
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
