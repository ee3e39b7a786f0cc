//! Identity over real sockets: the precedence table of docs/recording.md, every
//! combination of carriers, and the stripping as the upstream sees it.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Gateway, Setup, chat_body};
use serde_json::{Value, json};
use tracegate::record::TraceRecord;

/// The carriers a field can travel in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Carrier {
    Header,
    MetadataRllm,
    TopRllm,
    Path,
}

/// The text fields and their headers (step_id is tested on its own).
const TEXT_FIELDS: &[(&str, &str)] = &[
    ("session_id", "X-RLLM-Session-Id"),
    ("run_id", "X-RLLM-Run-Id"),
    ("harness", "X-RLLM-Harness"),
    ("parent_span_id", "X-RLLM-Parent-Span-Id"),
    ("project", "X-RLLM-Project"),
    ("experiment", "X-RLLM-Experiment"),
];

fn value_of(carrier: Carrier) -> &'static str {
    match carrier {
        Carrier::Header => "from-header",
        Carrier::MetadataRllm => "from-metadata-rllm",
        Carrier::TopRllm => "from-rllm",
        Carrier::Path => "from-path",
    }
}

fn field(record: &TraceRecord, name: &str) -> Option<String> {
    match name {
        "session_id" => record.identity.session_id.clone(),
        "run_id" => record.identity.run_id.clone(),
        "harness" => record.identity.harness.clone(),
        "parent_span_id" => record.identity.parent_span_id.clone(),
        "project" => record.identity.project.clone(),
        "experiment" => record.identity.experiment.clone(),
        "step_id" => record.identity.step_id.map(|s| s.to_string()),
        _ => unreachable!(),
    }
}

/// Sends one call with `field` in each of `carriers`, returns its record id.
async fn send(gw: &Setup, name: &str, header: &str, carriers: &[Carrier]) -> String {
    let mut body = chat_body("who am I");
    let mut path = "/v1/chat/completions".to_string();
    let mut headers = Vec::new();
    for carrier in carriers {
        let value = value_of(*carrier);
        match carrier {
            Carrier::Header => headers.push((header, value)),
            Carrier::MetadataRllm => body["metadata"] = json!({"rllm": {name: value}}),
            Carrier::TopRllm => body["rllm"] = json!({name: value}),
            Carrier::Path => path = format!("/sessions/{value}/v1/chat/completions"),
        }
    }
    let answer = gw.post(&path).headers(&headers).json(&body).answer().await;
    assert_eq!(answer.status, 200);
    answer.trace_id()
}

/// Every subset of `carriers`, in order.
fn subsets(carriers: &[Carrier]) -> Vec<Vec<Carrier>> {
    (0..1u32 << carriers.len())
        .map(|mask| {
            carriers
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, c)| *c)
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_is_header_then_body_then_path_for_every_combination() {
    let gw = Setup::new().await;
    let mut expectations = Vec::new();
    for (name, header) in TEXT_FIELDS {
        let mut carriers = vec![Carrier::Header, Carrier::MetadataRllm, Carrier::TopRllm];
        if *name == "session_id" {
            carriers.push(Carrier::Path);
        }
        for combination in subsets(&carriers) {
            let trace_id = send(&gw, name, header, &combination).await;
            // The winner is the first carrier in precedence order.
            let expected = combination.first().map(|c| value_of(*c).to_string());
            expectations.push((trace_id, *name, combination, expected));
        }
    }
    let records = gw.records().await;
    assert_eq!(records.len(), expectations.len());
    for (trace_id, name, combination, expected) in expectations {
        let record = records.iter().find(|r| r.trace_id == trace_id).unwrap();
        assert_eq!(
            field(record, name),
            expected,
            "{name} carried by {combination:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_from_different_carriers_combine() {
    let gw = Setup::new().await;
    let mut body = chat_body("mixed");
    body["metadata"] = json!({"rllm": {"harness": "swe-agent", "step_id": 4}});
    body["rllm"] = json!({"project": "p1", "harness": "loses-to-metadata"});
    gw.post("/sessions/episode-9/v1/chat/completions")
        .header("x-rllm-run-id", "run-7")
        .header("X-Rllm-Experiment", "  exp-a  ")
        .json(&body)
        .send()
        .await;
    let r = gw.only_record().await;
    assert_eq!(r.identity.session_id.as_deref(), Some("episode-9"));
    assert_eq!(r.identity.run_id.as_deref(), Some("run-7"));
    assert_eq!(r.identity.harness.as_deref(), Some("swe-agent"));
    assert_eq!(r.identity.step_id, Some(4));
    assert_eq!(r.identity.project.as_deref(), Some("p1"));
    assert_eq!(
        r.identity.experiment.as_deref(),
        Some("exp-a"),
        "values are trimmed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_id_precedence_and_types() {
    let gw = Setup::new().await;
    let cases: Vec<(Option<&str>, Option<Value>, Option<i64>)> = vec![
        (Some("3"), Some(json!(5)), Some(3)),
        (None, Some(json!(5)), Some(5)),
        (None, Some(json!("6")), Some(6)),
        (Some(" 7 "), None, Some(7)),
        (Some(""), Some(json!(8)), Some(8)),
        (None, None, None),
    ];
    let mut ids = Vec::new();
    for (header, body_value, expected) in &cases {
        let mut body = chat_body("step");
        if let Some(v) = body_value {
            body["metadata"] = json!({"rllm": {"step_id": v}});
        }
        let headers: Vec<_> = header.iter().map(|h| ("x-rllm-step-id", *h)).collect();
        let answer = gw.chat(&body).headers(&headers).answer().await;
        ids.push((answer.trace_id(), *expected));
    }
    let records = gw.records().await;
    for (id, expected) in ids {
        let r = records.iter().find(|r| r.trace_id == id).unwrap();
        assert_eq!(r.identity.step_id, expected);
        assert!(r.identity_errors.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_step_id_is_recorded_and_never_fails_the_call() {
    let gw = Setup::new().await;
    let answer = gw
        .chat(&chat_body("hi"))
        .header("x-rllm-step-id", "step-three")
        .header("x-rllm-session-id", "s")
        .answer()
        .await;
    assert_eq!(answer.status, 200);
    let r = gw.only_record().await;
    assert_eq!(r.identity.step_id, None);
    assert_eq!(r.identity.session_id.as_deref(), Some("s"));
    assert_eq!(r.identity_errors.len(), 1);
    assert!(r.identity_errors[0].contains("step-three"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_never_sees_identity() {
    let gw = Setup::new().await;
    let mut body = chat_body("secret identity");
    body["rllm"] = json!({"run_id": "r"});
    body["metadata"] = json!({"rllm": {"session_id": "s"}});
    let headers: Vec<(&str, &str)> = TEXT_FIELDS.iter().map(|(_, h)| (*h, "v")).collect();
    gw.post("/sessions/s/v1/chat/completions")
        .headers(&headers)
        .header("X-RLLM-Step-Id", "1")
        .header("x-rllm-custom-future-field", "v")
        .json(&body)
        .send()
        .await;
    let received = &gw.received()[0];
    for (name, _) in &received.headers {
        assert!(!name.starts_with("x-rllm-"), "{name} reached the upstream");
    }
    let forwarded = received.json().unwrap();
    assert!(forwarded.get("rllm").is_none());
    assert!(
        forwarded.get("metadata").is_none(),
        "emptied metadata is removed"
    );
    assert!(!received.body.contains("rllm"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_the_limit_or_with_control_characters_are_kept_out_of_the_columns() {
    let gw = Setup::new().await;
    let mut body = chat_body("hi");
    body["rllm"] = json!({"session_id": "s".repeat(100 * 1024), "harness": "swe\u{0}agent"});
    let answer = gw
        .chat(&body)
        .header("x-rllm-run-id", "run\t1")
        .header("x-rllm-project", "p".repeat(257))
        .header("x-rllm-experiment", "exp-1")
        .answer()
        .await;
    assert_eq!(answer.status, 200, "a bad identity never fails the call");
    let r = gw.only_record().await;
    assert_eq!(
        (r.identity.session_id, r.identity.harness, r.identity.run_id),
        (None, None, None)
    );
    assert_eq!(r.identity.project, None);
    assert_eq!(r.identity.experiment.as_deref(), Some("exp-1"));
    assert_eq!(r.identity_errors.len(), 4, "{:?}", r.identity_errors);
    let errors = r.identity_errors.join("\n");
    assert!(errors.contains("session_id: rllm value ssss"), "{errors}");
    assert!(
        errors.contains("is 102400 bytes, over the limit of 256"),
        "{errors}"
    );
    assert!(errors.contains("control character (U+0000)"), "{errors}");
    assert!(errors.contains("control character (U+0009)"), "{errors}");
    assert!(
        errors.len() < 1024,
        "the errors quote only the start of a value"
    );
    let stored =
        gw.count("SELECT count(*) FROM traces WHERE session_id IS NULL AND run_id IS NULL");
    assert_eq!(stored, 1, "the columns are empty");
    assert!(
        !gw.received()[0].body.contains("rllm"),
        "the carriers are stripped all the same"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_utf8_header_value_is_accepted() {
    let gw = Setup::new().await;
    let session = http::HeaderValue::from_bytes("épisode-17 · 東京".as_bytes()).unwrap();
    let answer = gw
        .chat(&chat_body("hi"))
        .header("x-rllm-session-id", session)
        .answer()
        .await;
    assert_eq!(answer.status, 200);
    let r = gw.only_record().await;
    assert_eq!(r.identity.session_id.as_deref(), Some("épisode-17 · 東京"));
    assert!(r.identity_errors.is_empty(), "{:?}", r.identity_errors);
}
