//! Cost: a `[[prices]]` table in the configuration file prices each call
//! from its usage when its record is built; the cost is in the record, the
//! `cost_usd` column, the session and run sums (API and CLI), `stats`,
//! `/metrics` and the span.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::otlp::{Receiver, Transport};
use common::process::{self, refused_serve, tracegate};
use common::{Gateway, Setup, chat_body};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Prices in whole dollars, so that the expected cost is computed exactly
/// as the gateway computes it. `mock-mod` is longer than `mock`: it wins.
const PRICES: &str = r#"
[[prices]]
model_prefix = "mock"
input = 1
output = 1

[[prices]]
model_prefix = "mock-mod"
input = 3
cached_input = 1
output = 12
"#;

/// A configuration file holding `text`, in `dir`.
fn config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("tracegate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `tracegate <args> --db <db> --format json`, parsed.
fn cli_json(db: &Path, args: &[&str]) -> Value {
    process::cli_json(db.parent().unwrap(), common::db_arg(db), args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priced_call_costs_its_usage_and_sessions_runs_and_stats_sum_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), PRICES);
    let receiver = Receiver::start(Transport::Http).await;
    let gw = Setup::with(|args| {
        args.config = Some(file);
        receiver.export_to(args);
    })
    .await;
    let who = [("x-rllm-session-id", "s-1"), ("x-rllm-run-id", "r-1")];
    let priced = gw
        .chat(&chat_body("what does this cost"))
        .headers(&who)
        .answer()
        .await;
    let mut other = chat_body("and this");
    other["model"] = json!("unpriced-model");
    let unpriced = gw.chat(&other).headers(&who).answer().await;

    // The usage the upstream reported, priced at 3 and 12 per million.
    let usage = &priced.json()["usage"];
    let (input, output) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    let expected = (input as f64 * 3.0 + output as f64 * 12.0) / 1_000_000.0;
    let records = gw.records().await;
    assert_eq!(records[0].cost_usd, Some(expected));
    assert_eq!(records[1].cost_usd, None, "no price, no cost (not zero)");
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM traces WHERE cost_usd IS NULL"),
        1
    );
    let one = gw.get_json(&format!("/traces/{}", priced.trace_id())).await;
    assert_eq!(one["cost_usd"], json!(expected));
    let none = gw
        .get_json(&format!("/traces/{}", unpriced.trace_id()))
        .await;
    assert!(none["cost_usd"].is_null());

    // Summed over the session and the run, in the API and the CLI.
    assert_eq!(
        gw.get_json("/sessions/s-1").await["cost_usd"],
        json!(expected)
    );
    assert_eq!(gw.get_json("/runs/r-1").await["cost_usd"], json!(expected));
    assert_eq!(cli_json(&gw.db, &["runs"])[0]["cost_usd"], json!(expected));
    assert_eq!(
        cli_json(&gw.db, &["sessions"])[0]["cost_usd"],
        json!(expected)
    );
    let stats = cli_json(&gw.db, &["stats"]);
    let by_model = |model: &str| {
        let row = stats
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["model"] == model);
        row.unwrap()["cost_usd"].clone()
    };
    assert_eq!(by_model("mock-model"), json!(expected));
    assert!(by_model("unpriced-model").is_null());
    let table = tracegate(dir.path())
        .args(["runs", "--db", &common::db_arg(&gw.db)])
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.lines().next().unwrap().ends_with("COST USD"),
        "{table}"
    );
    assert!(table.contains(&format!("{expected:.6}")), "{table}");

    // Counted in /metrics by model, and on the call's span.
    let metrics = gw.get("/metrics").answer().await.text();
    let line =
        format!("tracegate_cost_usd_total{{gen_ai_request_model=\"mock-model\"}} {expected}");
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
    assert!(!metrics.contains("tracegate_cost_usd_total{gen_ai_request_model=\"unpriced-model\"}"));
    let spans = receiver.wait_for(2).await;
    let span = |id: &str| {
        (spans.iter())
            .find(|s| s.attr("rllm.trace_id") == json!(id))
            .unwrap()
    };
    assert_eq!(
        span(&priced.trace_id()).attr("tracegate.cost_usd"),
        json!(expected)
    );
    assert!(
        span(&unpriced.trace_id())
            .attr("tracegate.cost_usd")
            .is_null()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prices_nothing_has_a_cost() {
    let gw = Setup::new().await;
    gw.chat(&chat_body("free?"))
        .header("x-rllm-session-id", "s-free")
        .answer()
        .await;
    assert_eq!(gw.only_record().await.cost_usd, None);
    assert!(gw.get_json("/sessions/s-free").await["cost_usd"].is_null());
}

#[test]
fn a_bad_price_names_its_entry_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[prices]]\nmodel_prefix = \"gpt-4o\"\ninput = 2.5\noutput = \"a lot\"\n";
    config(dir.path(), text);
    let stderr = refused_serve(dir.path(), &["--config", "tracegate.toml"], &[]);
    assert!(
        stderr.contains("prices[0] (gpt-4o): output: 'a lot' is not a price"),
        "{stderr}"
    );
    assert!(stderr.contains("tracegate.toml line 4"), "{stderr}");

    config(
        dir.path(),
        "[[prices]]\nmodel_prefix = \"gpt-4o\"\noutput = 10\n",
    );
    let stderr = refused_serve(dir.path(), &["--config", "tracegate.toml"], &[]);
    assert!(
        stderr.contains("prices[0] (gpt-4o): input: needed"),
        "{stderr}"
    );
}
