//! The code and `schema/` agree: every record the API serves validates
//! against `schema/trace_record.schema.json`, which lists every field.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Gateway, Setup, chat_body, stream_body};
use serde_json::{Value, json};

fn schema() -> Value {
    let text = include_str!("../schema/trace_record.schema.json");
    serde_json::from_str(text).unwrap()
}

/// The properties the API joins when it reads a record and leaves out
/// when there is nothing to join (so a record outside harness spans is
/// served exactly as it is stored and exported): `harness_span`.
const JOINED_WHEN_PRESENT: &[&str] = &["harness_span"];

#[test]
fn the_schema_requires_every_property_it_describes() {
    let schema = schema();
    let mut properties: Vec<&String> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|name| !JOINED_WHEN_PRESENT.contains(&name.as_str()))
        .collect();
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    properties.sort();
    required.sort();
    assert_eq!(properties, required);
    assert_eq!(schema["additionalProperties"], false);
    for name in JOINED_WHEN_PRESENT {
        assert!(
            schema["properties"].get(name).is_some(),
            "{name} is described"
        );
        assert!(!required.contains(name), "{name} is not always there");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_record_validates() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let gw = Setup::new().await;
    let mut streamed = stream_body("stream");
    streamed["return_token_ids"] = json!(true);
    streamed["logprobs"] = json!(true);
    let mut tools = chat_body("tools");
    tools["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    tools["n"] = json!(2);
    type Call<'a> = (&'a str, Option<Value>, Vec<(&'a str, &'a str)>);
    let calls: Vec<Call> = vec![
        (
            "/v1/chat/completions",
            Some(chat_body("plain")),
            vec![("x-rllm-session-id", "s"), ("x-rllm-step-id", "x")],
        ),
        (
            "/v1/chat/completions",
            Some(streamed),
            vec![("x-rllm-run-id", "r")],
        ),
        ("/v1/chat/completions", Some(tools), vec![]),
        (
            "/v1/chat/completions",
            Some(chat_body("fail")),
            vec![("x-mock-status", "500")],
        ),
        ("/v1/models", None, vec![]),
    ];
    for (path, body, headers) in calls {
        let request = match &body {
            Some(b) => gw.post(path).json(b),
            None => gw.get(path),
        };
        request.headers(&headers).answer().await;
    }
    gw.post("/v1/files")
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await;
    gw.mock.stop();
    gw.chat(&chat_body("down")).send().await;

    let records = gw.records().await;
    assert_eq!(records.len(), 7);
    for record in records {
        let served = gw.get_json(&format!("/traces/{}", record.trace_id)).await;
        let errors: Vec<String> = validator
            .iter_errors(&served)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", record.path);
    }
}
