//! The code and `schema/` agree: every record the API serves validates
//! against `schema/trace_record.schema.json`, which lists every field.

mod common;

use common::{TestGateway, chat_body, client, start_mock};
use serde_json::{Value, json};

fn schema() -> Value {
    let text = include_str!("../schema/trace_record.schema.json");
    serde_json::from_str(text).unwrap()
}

#[test]
fn the_schema_requires_every_property_it_describes() {
    let schema = schema();
    let mut properties: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_record_validates() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let mock = start_mock().await;
    let gw = TestGateway::start(&mock.base_url()).await;
    let mut streamed = chat_body("stream");
    streamed["stream"] = json!(true);
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
        let mut request = match &body {
            Some(b) => client().post(gw.at(path)).json(b),
            None => client().get(gw.at(path)),
        };
        for (k, v) in headers {
            request = request.header(k, v);
        }
        request.send().await.unwrap().bytes().await.unwrap();
    }
    client()
        .post(gw.at("/v1/files"))
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .unwrap();
    mock.stop();
    client()
        .post(gw.at("/v1/chat/completions"))
        .json(&chat_body("down"))
        .send()
        .await
        .unwrap();

    let records = gw.records().await;
    assert_eq!(records.len(), 7);
    for record in records {
        let response = client()
            .get(gw.at(&format!("/traces/{}", record.trace_id)))
            .send()
            .await
            .unwrap();
        let served: Value = response.json().await.unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&served)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", record.path);
    }
}
