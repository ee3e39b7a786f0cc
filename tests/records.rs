//! What gets recorded: every call, whatever happened, with its content.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    Gateway, Setup, TestGateway, chat_body, client, eventually, nowhere, start_mock, stream_body,
};
use serde_json::json;
use tracegate::config::{Config, ServeArgs};
use tracegate::record::Status;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_streamed_chat_call_is_recorded_whole() {
    let gw = Setup::new().await;
    let body = json!({
        "model": "mock-model",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        "temperature": 0.25, "max_tokens": 64, "seed": 7,
        "logprobs": true, "top_logprobs": 1, "return_token_ids": true,
    });
    let answer = gw
        .chat(&body)
        .header("authorization", "Bearer sk-never-stored")
        .header("x-rllm-session-id", "sess-1")
        .answer()
        .await
        .json();
    let r = gw.only_record().await;

    assert_eq!(r.status, Status::Ok);
    assert_eq!(r.http_status, Some(200));
    assert_eq!(r.operation, "chat");
    assert_eq!(r.protocol, "openai");
    assert_eq!(r.model.as_deref(), Some("mock-model"));
    assert_eq!(r.response_model.as_deref(), Some("mock-model"));
    assert_eq!(r.response_id.as_deref(), answer["id"].as_str());
    assert!(!r.stream);
    assert_eq!(r.messages, body["messages"].as_array().unwrap().clone());
    assert_eq!(r.request_params["temperature"], 0.25);
    assert_eq!(r.request_params["max_tokens"], 64);
    assert_eq!(r.request_params["seed"], 7);
    assert_eq!(json!(r.response_message), answer["choices"][0]["message"]);
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(json!(r.prompt_token_ids), answer["prompt_token_ids"]);
    assert_eq!(
        json!(r.completion_token_ids),
        answer["choices"][0]["token_ids"]
    );
    let logprobs: Vec<f64> = answer["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["logprob"].as_f64().unwrap())
        .collect();
    assert_eq!(r.logprobs, Some(logprobs));
    assert_eq!(
        r.usage.input_tokens,
        answer["usage"]["prompt_tokens"].as_u64()
    );
    assert_eq!(
        r.usage.output_tokens,
        answer["usage"]["completion_tokens"].as_u64()
    );
    assert_eq!(r.token_counts["prompt"], answer["usage"]["prompt_tokens"]);
    assert!(r.ttft_ms.is_some() && r.latency_ms >= r.ttft_ms.unwrap());
    assert_eq!(r.raw_response.as_ref().unwrap(), &answer);
    assert_eq!(r.raw_request.as_ref().unwrap(), &body);
    assert_eq!(r.request_headers["authorization"], "[REDACTED]");
    assert!(
        !serde_json::to_string(&r)
            .unwrap()
            .contains("sk-never-stored")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_chat_call_is_assembled() {
    let gw = Setup::new().await;
    let mut body = stream_body("stream me something");
    body["stream_options"] = json!({"include_usage": true});
    body["return_token_ids"] = json!(true);
    body["logprobs"] = json!(true);
    let streamed = gw
        .chat(&body)
        .header("x-mock-chunks", "5")
        .answer()
        .await
        .text();
    // The same request without streaming gives the reference answer.
    body["stream"] = json!(false);
    body.as_object_mut().unwrap().remove("stream_options");
    let whole = gw.direct_chat(&body).answer().await.json();

    let r = gw.only_record().await;
    assert!(r.stream);
    assert_eq!(r.status, Status::Ok);
    assert_eq!(
        r.response_message["content"],
        whole["choices"][0]["message"]["content"]
    );
    assert_eq!(r.response_message["role"], "assistant");
    assert_eq!(
        json!(r.completion_token_ids),
        whole["choices"][0]["token_ids"]
    );
    assert_eq!(json!(r.prompt_token_ids), whole["prompt_token_ids"]);
    assert_eq!(
        r.logprobs.as_ref().unwrap().len(),
        r.completion_token_ids.len()
    );
    assert_eq!(
        r.usage.output_tokens,
        whole["usage"]["completion_tokens"].as_u64()
    );
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    // The raw stream is kept, byte for byte.
    let raw = r.raw_response.unwrap();
    assert_eq!(raw["content_type"], "text/event-stream");
    assert_eq!(raw["body"], streamed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_tool_call_is_merged() {
    let gw = Setup::new().await;
    let mut body = stream_body("look it up");
    body["tools"] = json!([{"type": "function", "function": {"name": "lookup", "parameters": {}}}]);
    gw.chat(&body).header("x-mock-chunks", "7").answer().await;
    let r = gw.only_record().await;
    assert_eq!(r.tools, body["tools"].as_array().unwrap().clone());
    let call = &r.response_message["tool_calls"][0];
    assert_eq!(call["function"]["name"], "lookup");
    assert_eq!(call["function"]["arguments"], r#"{"query":"look it up"}"#);
    assert!(call["id"].as_str().unwrap().starts_with("call_mock"));
    assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_identity_are_recorded_too() {
    let gw = Setup::new().await;
    gw.get("/v1/models").send().await;
    let r = gw.only_record().await;
    assert_eq!(r.identity.session_id, None);
    assert_eq!(r.operation, "other");
    assert_eq!(r.method, "GET");
    assert_eq!(r.raw_response.unwrap()["data"][0]["id"], "mock-model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_500_is_recorded_as_an_error() {
    let gw = Setup::new().await;
    let answer = gw
        .chat(&chat_body("fail please"))
        .header("x-mock-status", "500")
        .answer()
        .await;
    assert_eq!(answer.status, 500);
    let r = gw.only_record().await;
    assert_eq!(r.status, Status::Error);
    assert_eq!(r.http_status, Some(500));
    let error = r.error.unwrap();
    assert_eq!(error.kind, "upstream_http_error");
    assert_eq!(error.message, "mock failure with status 500");
    assert_eq!(
        r.messages[0]["content"], "fail please",
        "the request is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_recorded() {
    let upstream = nowhere("/v1");
    let gw = TestGateway::start(&upstream).await;
    gw.chat(&chat_body("hello?"))
        .header("x-rllm-run-id", "run-down")
        .send()
        .await;
    let r = gw.only_record().await;
    assert_eq!(r.status, Status::Error);
    assert_eq!(r.http_status, Some(502));
    assert_eq!(r.error.unwrap().kind, "upstream_unreachable");
    assert_eq!(r.identity.run_id.as_deref(), Some("run-down"));
    assert_eq!(r.messages[0]["content"], "hello?");
    assert_eq!(r.upstream, upstream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_is_recorded_as_client_closed() {
    let gw = Setup::new().await;
    let (response, first) = gw.held_stream(&stream_body("I will not wait")).await;
    drop(response); // the client goes away mid-stream
    // Recorded without the upstream ever finishing: the gateway noticed.
    let r = eventually("the client_closed record", async || {
        gw.records().await.into_iter().next()
    })
    .await;
    assert_eq!(r.status, Status::ClientClosed);
    assert_eq!(r.error.as_ref().unwrap().kind, "client_closed");
    assert_eq!(
        r.raw_response.unwrap()["body"],
        String::from_utf8_lossy(&first).as_ref()
    );
    assert_eq!(
        r.response_message["role"], "assistant",
        "what arrived is assembled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_breaks_mid_stream_is_recorded() {
    let gw = Setup::new().await;
    let result = gw
        .chat(&stream_body("break after two chunks"))
        .header("x-mock-drop-after", "2")
        .header("x-mock-chunk-delay-ms", "30")
        .send()
        .await
        .text()
        .await;
    assert!(result.is_err(), "the client sees the stream break too");
    let r = gw.only_record().await;
    assert_eq!(r.status, Status::Error);
    assert_eq!(r.error.as_ref().unwrap().kind, "upstream_stream_error");
    assert_eq!(r.http_status, Some(200));
    assert!(
        r.response_message["content"]
            .as_str()
            .unwrap()
            .starts_with("This")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_wait_out_a_locked_database() {
    let mock = start_mock().await;
    // The writer gives up on a lock after 200 ms (and retries the batch).
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::load(&ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        db: Some(dir.path().join("traces.db").display().to_string()),
        upstream: vec![mock.base_url()],
        ..ServeArgs::default()
    })
    .unwrap();
    config.store.busy_timeout = BUSY_TIMEOUT;
    let gw = TestGateway::start_config(config, dir).await;
    // Another process (a `tracegate prune` VACUUM, say) holds the write lock
    // for longer than the writer's busy timeout.
    let db = gw.db.clone();
    let (locked, lock_taken) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked.send(()).unwrap();
        std::thread::sleep(BUSY_TIMEOUT * 5);
        conn.execute_batch("COMMIT").unwrap();
    });
    lock_taken.recv().unwrap();
    let response = client()
        .post(gw.at("/v1/chat/completions"))
        .json(&chat_body("while locked"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "the call itself never waits on the disk"
    );
    holder.join().unwrap();
    let r = gw.only_record().await;
    assert_eq!(r.messages[0]["content"], "while locked");
}

/// The busy timeout of the locked-database test's gateway.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(200);
