//! The proxy, end to end over real sockets: what reaches the upstream, what
//! reaches the client, and how failures are answered.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Gateway, Setup, TestGateway, chat_body, nowhere, rest_of_stream, stream_body};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_body_is_forwarded_byte_for_byte() {
    let gw = Setup::new().await;
    let body: Vec<u8> = (0u8..=255).cycle().take(4096).collect();
    let answer = gw
        .post("/v1/files")
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .answer()
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.as_ref(), body.as_slice(), "echoed back");
    assert_eq!(gw.received()[0].raw_body.as_ref(), body.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_without_identity_is_not_reserialised() {
    let gw = Setup::new().await;
    // Odd spacing, key order and number forms: re-serialising would change them.
    let body = "{\"z\": 1,   \"model\":\"mock-model\",\n \"a\": 1.50, \"messages\": [{\"role\":\"user\",\"content\":\"hi\"}],\"metadata\":{\"user\":\"u\"}}";
    gw.post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    assert_eq!(gw.received()[0].body, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripping_identity_keeps_the_rest_of_the_body_in_order() {
    let gw = Setup::new().await;
    let body = r#"{"z":1,"model":"mock-model","rllm":{"run_id":"r"},"messages":[{"role":"user","content":"hi"}],"metadata":{"rllm":{"step_id":2},"user":"u"}}"#;
    gw.post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    assert_eq!(
        gw.received()[0].body,
        r#"{"z":1,"model":"mock-model","messages":[{"role":"user","content":"hi"}],"metadata":{"user":"u"}}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bytes_equal_the_upstream_bytes() {
    let gw = Setup::new().await;
    for body in [
        chat_body("exact bytes please"),
        json!({"model": "mock-model", "stream": true, "logprobs": true, "top_logprobs": 2,
               "return_token_ids": true, "messages": [{"role": "user", "content": "stream them"}]}),
    ] {
        let direct = gw.direct_chat(&body).answer().await.body;
        let proxied = gw.chat(&body).answer().await.body;
        assert_eq!(proxied, direct);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_is_not_buffered() {
    let gw = Setup::new().await;
    // The mock holds the stream open after its first chunk until released:
    // a buffering gateway could not deliver this chunk yet.
    let (response, first) = gw
        .held_stream(&stream_body("hold after the first chunk"))
        .await;
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    gw.mock.state.release();
    assert!(rest_of_stream(response).await.ends_with("data: [DONE]\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_paths_and_query_strings_are_kept() {
    let gw = Setup::new().await;
    let answer = gw
        .delete("/v1/files/file-1?purpose=batch&x=a%20b")
        .answer()
        .await;
    assert_eq!(answer.headers["x-mock-method"], "DELETE");
    assert_eq!(answer.headers["x-mock-path"], "/v1/files/file-1");
    assert_eq!(answer.headers["x-mock-query"], "purpose=batch&x=a%20b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_base_path_is_joined_without_doubling_v1() {
    let mock = common::start_mock().await;
    for base in [
        format!("http://{}/v1", mock.addr),
        format!("http://{}", mock.addr),
    ] {
        let gw = TestGateway::start(&base).await;
        let answer = gw.get("/v1/models").answer().await;
        assert_eq!(answer.status, 200, "base {base}");
    }
    let paths: Vec<String> = mock
        .state
        .received()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(paths, ["/v1/models", "/v1/models"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_path_is_forwarded_as_v1() {
    let gw = Setup::new().await;
    let answer = gw
        .post("/sessions/s-1/v1/chat/completions")
        .json(&chat_body("hi"))
        .answer()
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(gw.received()[0].path, "/v1/chat/completions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_do_not_cross_and_end_to_end_headers_do() {
    let gw = Setup::new().await;
    gw.chat(&chat_body("hi"))
        .headers(&[
            ("connection", "keep-alive, x-connection-scoped"),
            ("x-connection-scoped", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("x-end-to-end", "kept"),
            ("authorization", "Bearer sk-caller"),
        ])
        .send()
        .await;
    let received = &gw.received()[0];
    for gone in [
        "x-connection-scoped",
        "keep-alive",
        "proxy-connection",
        "te",
    ] {
        assert_eq!(received.header(gone), None, "{gone} crossed the gateway");
    }
    assert_eq!(received.header("x-end-to-end"), Some("kept"));
    assert_eq!(received.header("authorization"), Some("Bearer sk-caller"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_status_and_headers_reach_the_client() {
    let gw = Setup::new().await;
    let answer = gw
        .chat(&chat_body("hi"))
        .header("x-mock-status", "429")
        .answer()
        .await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.json()["error"]["code"], "mock_failure");
    let record = gw.only_record().await;
    assert_eq!(record.trace_id, answer.trace_id());
    assert_eq!(record.http_status, Some(429));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_its_trace_id() {
    let gw = Setup::new().await;
    let ok = gw.get("/v1/models").answer().await;
    let id = ok.trace_id();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    gw.mock.stop();
    let down = gw.get("/v1/models").answer().await;
    assert_eq!(down.status, 502);
    assert!(down.headers.contains_key("x-rllm-trace-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_refused_with_413_and_recorded() {
    let gw = Setup::with(|a| a.max_body_bytes = Some("1KiB".into())).await;
    let big = "x".repeat(2048);
    let answer = gw
        .chat(&chat_body(&big))
        .header("x-rllm-session-id", "big-one")
        .answer()
        .await;
    assert_eq!(answer.status, 413);
    let body = answer.json();
    assert_eq!(body["error"]["code"], "request_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains("1024"));
    assert!(gw.received().is_empty(), "the upstream was not called");
    let record = gw.only_record().await;
    assert_eq!(record.http_status, Some(413));
    assert_eq!(record.identity.session_id.as_deref(), Some("big-one"));
    assert_eq!(record.error.unwrap().kind, "request_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_chunked_body_is_refused_too() {
    let gw = Setup::with(|a| a.max_body_bytes = Some("1KiB".into())).await;
    // No Content-Length: the limit must hold while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'x'; 512])).collect();
    let response = gw
        .post("/v1/files")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    assert_eq!(response.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_in_the_openai_shape() {
    let gw = TestGateway::start(&nowhere("/v1")).await;
    let answer = gw.chat(&chat_body("anyone there?")).answer().await;
    assert_eq!(answer.status, 502);
    let body = answer.json();
    assert_eq!(body["error"]["type"], "upstream_error");
    assert_eq!(body["error"]["code"], "upstream_unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504_after_the_idle_read_timeout() {
    let gw = Setup::with(|a| a.read_timeout = Some("200ms".into())).await;
    let answer = gw
        .chat(&chat_body("take your time"))
        .header("x-mock-latency-ms", "3000")
        .answer()
        .await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.json()["error"]["code"], "upstream_timeout");
    assert_eq!(
        gw.only_record().await.error.unwrap().kind,
        "upstream_timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_get_a_json_404() {
    let gw = Setup::new().await;
    let answer = gw.get("/nope").answer().await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_on_the_anthropic_api_use_anthropics_shape() {
    let gw = TestGateway::start(&nowhere("")).await;
    let answer = gw
        .post("/v1/messages")
        .json(&json!({"model": "claude", "max_tokens": 5, "messages": []}))
        .answer()
        .await;
    assert_eq!(answer.status, 502);
    let body = answer.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "api_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connect")
    );
    assert_eq!(gw.only_record().await.protocol, "anthropic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_is_served_and_recorded() {
    let gw = Setup::new().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .post(gw.at("/v1/chat/completions"))
        .json(&chat_body("over h2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    gw.flush().await;
    let record = gw.only_record().await;
    assert_eq!(record.messages[0]["content"], "over h2");
}
