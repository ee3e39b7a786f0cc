//! The proxy, end to end over real sockets: what reaches the upstream, what
//! reaches the client, and how failures are answered.

mod common;

use common::{TestGateway, chat_body, client, start_mock, within};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_body_is_forwarded_byte_for_byte() {
    let mock = start_mock().await;
    let gw = TestGateway::start(&mock.base_url()).await;
    let body: Vec<u8> = (0u8..=255).cycle().take(4096).collect();
    let response = client()
        .post(gw.at("/v1/files"))
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        body.as_slice(),
        "echoed back"
    );
    assert_eq!(mock.state.received()[0].raw_body.as_ref(), body.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_without_identity_is_not_reserialised() {
    let mock = start_mock().await;
    let gw = TestGateway::start(&mock.base_url()).await;
    // Odd spacing, key order and number forms: re-serialising would change them.
    let body = "{\"z\": 1,   \"model\":\"mock-model\",\n \"a\": 1.50, \"messages\": [{\"role\":\"user\",\"content\":\"hi\"}],\"metadata\":{\"user\":\"u\"}}";
    client()
        .post(gw.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(mock.state.received()[0].body, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripping_identity_keeps_the_rest_of_the_body_in_order() {
    let mock = start_mock().await;
    let gw = TestGateway::start(&mock.base_url()).await;
    let body = r#"{"z":1,"model":"mock-model","rllm":{"run_id":"r"},"messages":[{"role":"user","content":"hi"}],"metadata":{"rllm":{"step_id":2},"user":"u"}}"#;
    client()
        .post(gw.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        mock.state.received()[0].body,
        r#"{"z":1,"model":"mock-model","messages":[{"role":"user","content":"hi"}],"metadata":{"user":"u"}}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bytes_equal_the_upstream_bytes() {
    let mock = start_mock().await;
    let gw = TestGateway::start(&mock.base_url()).await;
    for body in [
        chat_body("exact bytes please"),
        json!({"model": "mock-model", "stream": true, "logprobs": true, "top_logprobs": 2,
               "return_token_ids": true, "messages": [{"role": "user", "content": "stream them"}]}),
    ] {
        let direct = client()
            .post(format!("{}/chat/completions", mock.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let proxied = client()
            .post(gw.at("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(proxied, direct);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_is_not_buffered() {
    let mock = start_mock().await;
    let gw = TestGateway::start(&mock.base_url()).await;
    let mut body = chat_body("hold after the first chunk");
    body["stream"] = json!(true);
    let mut response = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-mock-hold", "1")
        .json(&body)
        .send()
        .await
        .unwrap();
    // The mock holds the stream open after its first chunk until released:
    // a buffering gateway could not deliver this chunk yet.
    let first = within("the first chunk", response.chunk())
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    mock.state.release();
    let mut rest = Vec::new();
    while let Some(chunk) = within("the rest of the stream", response.chunk())
        .await
        .unwrap()
    {
        rest.extend_from_slice(&chunk);
    }
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_paths_and_query_strings_are_kept() {
    let mock = start_mock().await;
    let gw = TestGateway::start(&mock.base_url()).await;
    let response = client()
        .delete(gw.at("/v1/files/file-1?purpose=batch&x=a%20b"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-mock-method"], "DELETE");
    assert_eq!(response.headers()["x-mock-path"], "/v1/files/file-1");
    assert_eq!(response.headers()["x-mock-query"], "purpose=batch&x=a%20b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_base_path_is_joined_without_doubling_v1() {
    let mock = start_mock().await;
    for base in [
        format!("http://{}/v1", mock.addr),
        format!("http://{}", mock.addr),
    ] {
        let gw = TestGateway::start(&base).await;
        let response = client().get(gw.at("/v1/models")).send().await.unwrap();
        assert_eq!(response.status(), 200, "base {base}");
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
    let mock = start_mock().await;
    let gw = TestGateway::start(&mock.base_url()).await;
    let response = client()
        .post(gw.at("/sessions/s-1/v1/chat/completions"))
        .json(&chat_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.state.received()[0].path, "/v1/chat/completions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_do_not_cross_and_end_to_end_headers_do() {
    let mock = start_mock().await;
    let gw = TestGateway::start(&mock.base_url()).await;
    client()
        .post(gw.at("/v1/chat/completions"))
        .header("connection", "keep-alive, x-connection-scoped")
        .header("x-connection-scoped", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .header("authorization", "Bearer sk-caller")
        .json(&chat_body("hi"))
        .send()
        .await
        .unwrap();
    let received = &mock.state.received()[0];
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
    let mock = start_mock().await;
    let gw = TestGateway::start(&mock.base_url()).await;
    let response = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-mock-status", "429")
        .json(&chat_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["content-type"], "application/json");
    let trace_id = response.headers()["x-rllm-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "mock_failure");
    let record = gw.only_record().await;
    assert_eq!(record.trace_id, trace_id);
    assert_eq!(record.http_status, Some(429));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_its_trace_id() {
    let mock = start_mock().await;
    let gw = TestGateway::start(&mock.base_url()).await;
    let ok = client().get(gw.at("/v1/models")).send().await.unwrap();
    let id = ok.headers()["x-rllm-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    mock.stop();
    let down = client().get(gw.at("/v1/models")).send().await.unwrap();
    assert_eq!(down.status(), 502);
    assert!(down.headers().contains_key("x-rllm-trace-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_refused_with_413_and_recorded() {
    let mock = start_mock().await;
    let gw = TestGateway::start_with(tracegate::config::ServeArgs {
        upstream: vec![mock.base_url()],
        max_body_bytes: Some("1KiB".into()),
        ..Default::default()
    })
    .await;
    let big = "x".repeat(2048);
    let response = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-rllm-session-id", "big-one")
        .json(&chat_body(&big))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains("1024"));
    assert!(
        mock.state.received().is_empty(),
        "the upstream was not called"
    );
    let record = gw.only_record().await;
    assert_eq!(record.http_status, Some(413));
    assert_eq!(record.identity.session_id.as_deref(), Some("big-one"));
    assert_eq!(record.error.unwrap().kind, "request_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_chunked_body_is_refused_too() {
    let mock = start_mock().await;
    let gw = TestGateway::start_with(tracegate::config::ServeArgs {
        upstream: vec![mock.base_url()],
        max_body_bytes: Some("1KiB".into()),
        ..Default::default()
    })
    .await;
    // No Content-Length: the limit must hold while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'x'; 512])).collect();
    let response = client()
        .post(gw.at("/v1/files"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_in_the_openai_shape() {
    // A port nothing listens on: bind, take the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = TestGateway::start(&format!("http://127.0.0.1:{port}/v1")).await;
    let response = client()
        .post(gw.at("/v1/chat/completions"))
        .json(&chat_body("anyone there?"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_error");
    assert_eq!(body["error"]["code"], "upstream_unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504_after_the_idle_read_timeout() {
    let mock = start_mock().await;
    let gw = TestGateway::start_with(tracegate::config::ServeArgs {
        upstream: vec![mock.base_url()],
        read_timeout: Some("200ms".into()),
        ..Default::default()
    })
    .await;
    let response = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-mock-latency-ms", "3000")
        .json(&chat_body("take your time"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert_eq!(
        gw.only_record().await.error.unwrap().kind,
        "upstream_timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_get_a_json_404() {
    let mock = start_mock().await;
    let gw = TestGateway::start(&mock.base_url()).await;
    let response = client().get(gw.at("/nope")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_on_the_anthropic_api_use_anthropics_shape() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = TestGateway::start(&format!("http://127.0.0.1:{port}")).await;
    let response = client()
        .post(gw.at("/v1/messages"))
        .json(&json!({"model": "claude", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
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
