//! The resilience of one call; each test prints the figure it measured.
//!
//! Every test here breaks something on purpose around a single call — a
//! client that gives up, an upstream that is slow, silent, throttled,
//! unreachable or cut off, a tunnel that would cut an idle connection —
//! against the real binary or the in-process router over real sockets, with
//! the mock upstream (`src/mock_upstream`) or a small purpose-built upstream
//! when the mock cannot misbehave that way. It then checks what the client
//! got and what the record says, and prints the figure (`figure: ...`) a
//! release note can quote. The server's own edge (deadlines, limits, loops)
//! is `tests/faults.rs`.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::Serve;
use common::{
    Gateway, Setup, TestGateway, chat_body, eventually, records_in, start_mock, start_mock_with,
    stream_body, within,
};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracegate::config::ServeArgs;
use tracegate::mock_upstream::MockOptions;
use tracegate::record::{ErrorKind, RetryReason, Status, TraceRecord};

/// A client that gives up after `timeout`.
fn impatient(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

/// The records of the gateway at `gw` (database `db`) once there are `n`.
async fn records_once(gw: &impl Gateway, db: &Path, n: usize) -> Vec<TraceRecord> {
    eventually(&format!("{n} records"), async || {
        gw.flush().await;
        let records = records_in(db);
        (records.len() >= n).then_some(records)
    })
    .await
}

/// The only record of `gw`, once it is there.
async fn the_record(gw: &TestGateway) -> TraceRecord {
    let mut records = records_once(gw, &gw.db, 1).await;
    assert_eq!(records.len(), 1, "one call, one record");
    records.remove(0)
}

/// `error.kind` and `error.message` of a record.
fn error_of(record: &TraceRecord) -> (ErrorKind, String) {
    let e = record.error.clone().expect("the record has an error");
    (e.kind, e.message)
}

/// An upstream that reads one request, sends `start` (if any) and never
/// anything more; the receiver learns when the gateway closes that
/// connection (the request cancelled).
async fn silent_upstream(start: &'static str) -> (String, tokio::sync::oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let (closed, learnt) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let mut started = false;
        while let Ok(n) = socket.read(&mut buf).await {
            if n == 0 {
                let _ = closed.send(());
                return;
            }
            if !started && !start.is_empty() {
                started = true;
                socket.write_all(start.as_bytes()).await.unwrap();
            }
        }
    });
    (url, learnt)
}

/// A gateway in front of a [`silent_upstream`], which serves one connection
/// and is no model server: `generic`, so no start-up probe takes it.
async fn in_front_of_silent(upstream: &str) -> TestGateway {
    TestGateway::start_with(ServeArgs {
        upstream: vec![upstream.to_string()],
        kind: Some("generic".into()),
        ..ServeArgs::default()
    })
    .await
}

/// The start of an SSE answer that never goes on: headers and one event.
const STREAM_START: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
    transfer-encoding: chunked\r\n\r\n17\r\ndata: {\"choices\": []}\n\n\r\n";

// ---- every call recorded, whenever its client leaves ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_client_that_leaves_before_the_answer_is_recorded() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Serve::new(dir.path()).upstream(&mock.base_url()).spawn();
    let early = impatient(Duration::from_secs(1));
    let mut calls = Vec::new();
    for i in 0..100 {
        let call = early
            .post(gw.url("/v1/chat/completions"))
            .header("x-mock-latency-ms", "2500")
            .header("x-rllm-session-id", format!("early-{i}"))
            .json(&chat_body("answer me within a second"))
            .send();
        calls.push(tokio::spawn(call));
    }
    // One more waits 3 s on an upstream that never sends its headers.
    let hung = impatient(Duration::from_secs(3))
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-latency-ms", "3600000")
        .header("x-rllm-session-id", "hung")
        .json(&chat_body("are you there?"))
        .send();
    assert!(hung.await.unwrap_err().is_timeout());
    for call in calls {
        assert!(call.await.unwrap().unwrap_err().is_timeout());
    }
    let sent = 101;
    let records = records_once(&gw, &dir.path().join("tracegate.db"), sent).await;
    println!(
        "figure: calls recorded / calls sent for clients that leave early: {}/{sent}",
        records.len()
    );
    assert_eq!(records.len(), sent);
    for r in &records {
        assert_eq!(r.status, Status::ClientClosed, "{}", r.trace_id);
        let (kind, message) = error_of(r);
        assert_eq!(kind, ErrorKind::ClientClosed);
        assert!(
            message.contains("before the upstream answered"),
            "{message}"
        );
        assert_eq!(r.http_status, None, "the client never got a status");
        assert!(r.client_closed_at.is_some());
        assert!(r.identity.session_id.is_some(), "the identity is kept");
        assert!(!r.messages.is_empty(), "the request is kept");
        assert_eq!(r.attempt_count, 1);
        assert_eq!(
            r.attempts[0].error.as_ref().map(|e| e.kind),
            Some(ErrorKind::ClientClosed),
            "the attempt in flight was cut short by the client"
        );
    }
    let hung = records
        .iter()
        .find(|r| r.identity.session_id.as_deref() == Some("hung"))
        .unwrap();
    println!(
        "figure: recorded latency of the client that waited 3 s for headers: {:.0} ms",
        hung.latency_ms
    );
    assert!(hung.latency_ms > 2500.0, "timed until the client left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_request_is_cancelled_when_its_client_leaves() {
    // Before the upstream answered.
    let (upstream, cancelled) = silent_upstream("").await;
    let gw = in_front_of_silent(&upstream).await;
    let gave_up = impatient(Duration::from_millis(300))
        .post(gw.at("/v1/chat/completions"))
        .json(&chat_body("nobody will read this"))
        .send()
        .await;
    assert!(gave_up.unwrap_err().is_timeout());
    within("the upstream connection to close", cancelled)
        .await
        .unwrap();
    assert_eq!(the_record(&gw).await.status, Status::ClientClosed);
    // Mid-stream.
    let (upstream, cancelled) = silent_upstream(STREAM_START).await;
    let gw = in_front_of_silent(&upstream).await;
    let mut response = gw.chat(&stream_body("stop when I go")).send().await;
    let first = within("the first event", response.chunk())
        .await
        .unwrap()
        .unwrap();
    assert!(first.starts_with(b"data: "));
    drop(response);
    within("the upstream stream to close", cancelled)
        .await
        .unwrap();
    println!("figure: upstream requests cancelled after their client left: 2/2");
    assert_eq!(the_record(&gw).await.status, Status::ClientClosed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finishing_route_reads_the_answer_of_a_client_that_left() {
    let gw = Setup::with_route(json!({
        "name": "patient", "model_prefix": "*", "finish_on_client_close": true,
    }))
    .await;
    let gave_up = impatient(Duration::from_millis(300))
        .post(gw.at("/v1/chat/completions"))
        .header("x-mock-latency-ms", "1500")
        .json(&chat_body("finish this for the record"))
        .send()
        .await;
    assert!(gave_up.unwrap_err().is_timeout());
    let r = the_record(&gw).await;
    let whole = gw
        .direct_chat(&chat_body("finish this for the record"))
        .answer()
        .await
        .json();
    println!(
        "figure: answer bytes recorded after the client left (finish_on_client_close): {}",
        serde_json::to_string(r.raw_response.as_ref().unwrap())
            .unwrap()
            .len()
    );
    assert_eq!(r.status, Status::ClientClosed);
    assert!(error_of(&r).1.contains("finish_on_client_close"));
    assert_eq!(r.http_status, Some(200));
    assert_eq!(
        r.response_message["content"],
        whole["choices"][0]["message"]["content"]
    );
    assert!(r.client_closed_at.as_deref().unwrap() < r.ended_at.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finishing_route_reads_a_stream_whose_client_left_to_its_end() {
    let gw = Setup::with_route(json!({
        "name": "patient", "model_prefix": "*", "finish_on_client_close": true,
    }))
    .await;
    let (response, _first) = gw.held_stream(&stream_body("stream it all")).await;
    drop(response);
    // The stream goes on only once the client has gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.mock.state.release();
    let r = the_record(&gw).await;
    let body = r.raw_response.as_ref().unwrap()["body"].as_str().unwrap();
    println!(
        "figure: stream bytes recorded after the client left mid-stream: {}",
        body.len()
    );
    assert_eq!(r.status, Status::ClientClosed);
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_during_its_upload_is_recorded() {
    let gw = Setup::new().await;
    let address = gw.at("").trim_start_matches("http://").to_string();
    let mut socket = TcpStream::connect(&address).await.unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n\
                content-type: application/json\r\ncontent-length: 1000\r\n\
                x-rllm-session-id: uploading\r\n\r\n{\"model\": \"mock-";
    socket.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(socket);
    let r = the_record(&gw).await;
    println!("figure: calls recorded for clients that left mid-upload: 1/1");
    assert_eq!(r.status, Status::ClientClosed);
    assert_eq!(r.identity.session_id.as_deref(), Some("uploading"));
    assert!(error_of(&r).1.contains("request body"), "{:?}", r.error);
    assert!(gw.received().is_empty(), "nothing was sent upstream");
}

// ---- timeouts that say which one fired ----

/// A listener whose accept queue is full, so that a new connection is never
/// accepted: the connect timeout's upstream. Keep the returned connections.
async fn unaccepting_upstream() -> (String, Vec<TcpStream>, tokio::net::TcpListener) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let address = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..8 {
        let connect = TcpStream::connect(address);
        match tokio::time::timeout(Duration::from_millis(200), connect).await {
            Ok(Ok(stream)) => queued.push(stream),
            _ => break,
        }
    }
    (format!("http://{address}/v1"), queued, listener)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_timeout_is_its_own_kind_and_names_its_setting() {
    // Connect: the upstream never accepts the connection.
    let (upstream, _queued, _listener) = unaccepting_upstream().await;
    let gw = TestGateway::start_with(ServeArgs {
        upstream: vec![upstream],
        connect_timeout: Some("300ms".into()),
        ..ServeArgs::default()
    })
    .await;
    let answer = gw.chat(&chat_body("connect")).answer().await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.json()["error"]["code"], "upstream_connect_timeout");
    let (kind, message) = error_of(&the_record(&gw).await);
    assert_eq!(kind, ErrorKind::UpstreamConnectTimeout);
    assert!(message.contains("(connect_timeout)"), "{message}");
    println!("figure: connect timeout -> {kind}: {message}");

    // First byte: no response headers in time.
    let gw = Setup::with(|a| a.first_byte_timeout = Some("300ms".into())).await;
    let answer = gw
        .chat(&chat_body("first byte"))
        .header("x-mock-latency-ms", "5000")
        .answer()
        .await;
    assert_eq!(answer.status, 504);
    let (kind, message) = error_of(&the_record(&gw).await);
    assert_eq!(kind, ErrorKind::UpstreamTimeout);
    assert!(
        message.ends_with("within 300ms (first_byte_timeout)"),
        "{message}"
    );
    println!("figure: first-byte timeout -> {kind}: {message}");

    // Idle: the stream goes silent mid-answer.
    let gw = Setup::with(|a| a.idle_timeout = Some("300ms".into())).await;
    let mut response = gw
        .chat(&stream_body("idle"))
        .header("x-mock-chunk-delay-ms", "2000")
        .send()
        .await;
    assert_eq!(response.status(), 200);
    let mut broke = false;
    while let Some(chunk) = within("the stream", response.chunk()).await.transpose() {
        if chunk.is_err() {
            broke = true;
            break;
        }
    }
    assert!(broke, "the client's stream is cut, as the upstream's was");
    let r = the_record(&gw).await;
    let (kind, message) = error_of(&r);
    assert_eq!(
        (r.status, kind),
        (Status::Error, ErrorKind::UpstreamIdleTimeout)
    );
    assert!(
        message.ends_with("within 300ms (idle_timeout)"),
        "{message}"
    );
    assert!(r.raw_response.is_some(), "what arrived is kept");
    println!("figure: idle timeout -> {kind}: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_timeout_fires_before_and_after_the_headers() {
    let gw = Setup::with(|a| a.request_timeout = Some("800ms".into())).await;
    let answer = gw
        .chat(&chat_body("before"))
        .header("x-mock-latency-ms", "5000")
        .answer()
        .await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.json()["error"]["code"], "upstream_total_timeout");
    let response = gw
        .chat(&stream_body("after"))
        .header("x-mock-chunks", "8")
        .header("x-mock-chunk-delay-ms", "300")
        .send()
        .await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err(), "the stream is cut");
    let records = records_once(&*gw, &gw.db, 2).await;
    for r in &records {
        let (kind, message) = error_of(r);
        assert_eq!(kind, ErrorKind::UpstreamTotalTimeout, "{message}");
        assert!(
            message.ends_with("within 800ms (request_timeout)"),
            "{message}"
        );
        println!(
            "figure: total timeout ({}) -> {kind}: {message}",
            if r.stream {
                "mid-stream"
            } else {
                "before headers"
            }
        );
    }
    assert_eq!(records[1].http_status, Some(200), "the stream had begun");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_timeout_names_the_route() {
    let gw = Setup::with_route(json!({
        "name": "slow", "model_prefix": "*", "first_byte_timeout": "300ms",
    }))
    .await;
    let answer = gw
        .chat(&chat_body("slow"))
        .header("x-mock-latency-ms", "5000")
        .answer()
        .await;
    assert_eq!(answer.status, 504);
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    println!("figure: route first-byte timeout message: {message}");
    assert!(
        message.ends_with("(routes[0] (slow): first_byte_timeout)"),
        "{message}"
    );
}

// ---- retries before anything reached the client ----

/// A gateway whose only route, `flaky`, is the mock with `retry` as its
/// retry policy.
async fn retrying(retry: Value) -> Setup {
    Setup::with_route(json!({"name": "flaky", "model_prefix": "*", "retry": retry})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_calls_are_retried_as_retry_after_says_and_every_attempt_is_kept() {
    let gw = retrying(json!({"max_attempts": 3, "max_retry_after": "200ms"})).await;
    let answer = gw
        .chat(&chat_body("third time lucky"))
        .headers(&[("x-mock-fail-first", "2"), ("x-mock-retry-after", "30")])
        .answer()
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let r = the_record(&gw).await;
    let statuses: Vec<Option<u16>> = r.attempts.iter().map(|a| a.http_status).collect();
    let reasons: Vec<Option<RetryReason>> = r.attempts.iter().map(|a| a.retry_reason).collect();
    println!(
        "figure: attempts of a call throttled twice: {} (statuses {statuses:?})",
        r.attempt_count
    );
    assert_eq!(r.attempt_count, 3);
    assert_eq!(statuses, [Some(503), Some(503), Some(200)]);
    let retried = Some(RetryReason::ServiceUnavailable);
    assert_eq!(reasons, [retried, retried, None]);
    assert_eq!((r.status, r.http_status), (Status::Ok, Some(200)));
    assert_eq!(gw.received().len(), 3);
    // Retry-After (30 s) was honoured, capped at max_retry_after.
    let gap = |a: &tracegate::record::Attempt, b: &tracegate::record::Attempt| {
        let end = humantime::parse_rfc3339_weak(&a.started_at).unwrap()
            + Duration::from_secs_f64(a.duration_ms / 1000.0);
        humantime::parse_rfc3339_weak(&b.started_at)
            .unwrap()
            .duration_since(end)
            .unwrap_or_default()
    };
    let waited = gap(&r.attempts[0], &r.attempts[1]);
    println!(
        "figure: wait before the first retry (Retry-After 30 s, capped at 200 ms): {waited:?}"
    );
    assert!(waited >= Duration::from_millis(190), "{waited:?}");
    let metrics = gw.get("/metrics").answer().await.text();
    assert!(
        metrics.contains(r#"tracegate_retries_total{tracegate_route="flaky",reason="503"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_policy_does_not_cover_is_relayed_at_once() {
    let gw = retrying(json!({"max_attempts": 3, "deadline": "500ms"})).await;
    // 500 is opt-in.
    let answer = gw
        .chat(&chat_body("500"))
        .header("x-mock-status", "500")
        .answer()
        .await;
    assert_eq!(answer.status, 500);
    // A wait past the deadline is not taken.
    let answer = gw
        .chat(&chat_body("later"))
        .headers(&[("x-mock-status", "429"), ("x-mock-retry-after", "1")])
        .answer()
        .await;
    assert_eq!(answer.status, 429);
    // Once a byte went to the client, never.
    let broken = gw
        .chat(&stream_body("cut"))
        .headers(&[("x-mock-drop-after", "2"), ("x-mock-chunk-delay-ms", "30")])
        .send()
        .await;
    assert!(broken.bytes().await.is_err());
    let records = records_once(&*gw, &gw.db, 3).await;
    let counts: Vec<u32> = records.iter().map(|r| r.attempt_count).collect();
    println!("figure: attempts of calls the policy does not retry: {counts:?}");
    assert_eq!(counts, [1, 1, 1]);
    assert_eq!(gw.received().len(), 3);
    assert_eq!(error_of(&records[2]).0, ErrorKind::UpstreamStreamError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_moves_to_another_worker_of_the_pool() {
    let busy = start_mock_with(MockOptions {
        fail_status: Some(503),
        ..MockOptions::default()
    })
    .await;
    let slow = start_mock_with(MockOptions {
        latency_ms: 60_000,
        ..MockOptions::default()
    })
    .await;
    let good = start_mock().await;
    let routes = json!([{
        "name": "pool", "model_prefix": "*", "first_byte_timeout": "300ms",
        "retry": {"max_attempts": 3, "backoff": "10ms"},
        "workers": [
            {"url": busy.base_url(), "worker_id": "busy"},
            {"url": slow.base_url(), "worker_id": "slow"},
            {"url": good.base_url(), "worker_id": "good"},
        ],
    }]);
    let gw = TestGateway::start_with(ServeArgs {
        routes: Some(routes.to_string()),
        ..ServeArgs::default()
    })
    .await;
    // Equally idle workers are picked in pool order: busy, slow, then good.
    let answer = gw.chat(&chat_body("anyone free?")).answer().await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let r = the_record(&gw).await;
    let workers: Vec<&str> = r.attempts.iter().map(|a| a.worker.as_str()).collect();
    println!("figure: workers tried by one call: {workers:?}");
    assert_eq!(workers, ["busy", "slow", "good"]);
    let kinds: Vec<Option<ErrorKind>> = r
        .attempts
        .iter()
        .map(|a| a.error.as_ref().map(|e| e.kind))
        .collect();
    assert_eq!(kinds, [None, Some(ErrorKind::UpstreamTimeout), None]);
    let reasons: Vec<Option<RetryReason>> = r.attempts.iter().map(|a| a.retry_reason).collect();
    assert_eq!(
        reasons,
        [
            Some(RetryReason::ServiceUnavailable),
            Some(RetryReason::Timeout),
            None
        ]
    );
    assert_eq!(
        r.upstream,
        good.base_url(),
        "the record names the worker that answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempt_of_a_retried_call_is_a_child_span() {
    let receiver = common::otlp::Receiver::start(common::otlp::Transport::Http).await;
    let mock = start_mock().await;
    let mut args = ServeArgs {
        routes: Some(
            json!([{"name": "flaky", "model_prefix": "*", "upstream": mock.base_url(),
                    "retry": {"backoff": "10ms"}}])
            .to_string(),
        ),
        ..ServeArgs::default()
    };
    receiver.export_to(&mut args);
    let gw = TestGateway::start_with(args).await;
    let answer = gw
        .chat(&chat_body("retry me"))
        .header("x-mock-fail-first", "1")
        .answer()
        .await;
    assert_eq!(answer.status, 200);
    let r = the_record(&gw).await;
    let spans = receiver.wait_for(3).await;
    let children: Vec<_> = spans
        .iter()
        .filter(|s| s.span.name == "upstream.attempt")
        .collect();
    println!(
        "figure: spans exported for a call retried once: {}",
        spans.len()
    );
    assert_eq!(spans.len(), 3, "the call and its two attempts");
    assert_eq!(children.len(), 2);
    for child in &children {
        assert_eq!(child.parent_span_id(), r.span_id);
        assert_eq!(child.trace_id(), r.otel_trace_id);
    }
    assert_ne!(children[0].span_id(), children[1].span_id());
    assert_eq!(children[0].attr("http.response.status_code"), json!(503));
    assert_eq!(children[0].attr("tracegate.retry_reason"), json!("503"));
}

// ---- long calls survive tunnels and proxies ----

/// A gateway whose only route beats every 100 ms after 200 ms of waiting.
async fn beating(extra: Value) -> Setup {
    let mut route = json!({
        "name": "long", "model_prefix": "*",
        "heartbeat_after": "200ms", "heartbeat_every": "100ms",
    });
    if let (Some(route), Some(extra)) = (route.as_object_mut(), extra.as_object()) {
        route.extend(extra.clone());
    }
    Setup::with_route(route).await
}

/// The leading spaces of a body, and the rest.
fn spaces(body: &[u8]) -> (usize, &[u8]) {
    let n = body.iter().take_while(|b| **b == b' ').count();
    (n, &body[n..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_comes_after_heartbeats_and_reads_as_json() {
    let gw = beating(json!({})).await;
    let answer = gw
        .chat(&chat_body("take a while"))
        .header("x-mock-latency-ms", "1000")
        .answer()
        .await;
    let (beats, json) = spaces(&answer.body);
    println!("figure: heartbeat bytes before a 1 s answer (after 200 ms, every 100 ms): {beats}");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "application/json");
    assert!(beats >= 1, "the heartbeat started");
    let parsed = answer.json(); // JSON allows the leading whitespace
    let r = the_record(&gw).await;
    assert_eq!(r.heartbeats, beats as u64, "every heartbeat is counted");
    assert_eq!(
        r.raw_response.as_ref(),
        Some(&parsed),
        "the record keeps only the upstream's bytes"
    );
    assert_eq!(serde_json::from_slice::<Value>(json).unwrap(), parsed);
    assert_eq!(r.status, Status::Ok);
    // A quick answer gets no heartbeat at all.
    let quick = gw.chat(&chat_body("quick")).answer().await;
    assert_eq!(spaces(&quick.body).0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_heartbeats_a_failure_comes_as_the_error_json() {
    let gw = beating(json!({"first_byte_timeout": "700ms"})).await;
    let answer = gw
        .chat(&chat_body("never"))
        .header("x-mock-latency-ms", "60000")
        .answer()
        .await;
    let (beats, _) = spaces(&answer.body);
    let body = answer.json();
    println!(
        "figure: after {beats} heartbeat bytes the client got status {} and {body}",
        answer.status
    );
    assert_eq!(
        answer.status, 200,
        "the status went out with the first heartbeat"
    );
    assert_eq!(body["error"]["code"], "upstream_timeout");
    let upstream_error = gw
        .chat(&chat_body("refused"))
        .headers(&[("x-mock-latency-ms", "500"), ("x-mock-status", "503")])
        .answer()
        .await;
    assert_eq!(upstream_error.status, 200);
    assert_eq!(upstream_error.json()["error"]["code"], "mock_failure");
    let records = records_once(&*gw, &gw.db, 2).await;
    assert_eq!(error_of(&records[0]).0, ErrorKind::UpstreamTimeout);
    assert!(records[0].heartbeats >= 1);
    assert_eq!(
        records[1].http_status,
        Some(503),
        "the record keeps the upstream's status"
    );
    assert_eq!(error_of(&records[1]).0, ErrorKind::UpstreamHttpError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_gets_keep_alive_comments_the_record_never_sees() {
    let gw = Setup::with_route(json!({
        "name": "long", "model_prefix": "*", "stream_keepalive": "100ms",
    }))
    .await;
    let streamed = gw
        .chat(&stream_body("pause between words"))
        .headers(&[("x-mock-chunks", "3"), ("x-mock-chunk-delay-ms", "450")])
        .answer()
        .await
        .text();
    let comments = streamed.matches(": keep-alive\n\n").count();
    println!(
        "figure: keep-alive comments in a stream silent 450 ms between chunks (every 100 ms): {comments}"
    );
    assert!(comments >= 2, "{streamed}");
    let r = the_record(&gw).await;
    let raw = r.raw_response.as_ref().unwrap()["body"].as_str().unwrap();
    assert!(!raw.contains("keep-alive"), "{raw}");
    assert_eq!(raw, streamed.replace(": keep-alive\n\n", ""));
    assert_eq!(r.heartbeats, comments as u64);
    assert_eq!(r.status, Status::Ok);
    // Each comment stands between two events, never inside one.
    for event in streamed.split("\n\n").filter(|e| !e.is_empty()) {
        assert!(
            event == ": keep-alive" || !event.contains("keep-alive"),
            "{event}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_during_the_heartbeat_is_recorded_with_its_beats() {
    let gw = beating(json!({})).await;
    let mut response = gw
        .chat(&chat_body("I will not wait"))
        .header("x-mock-latency-ms", "60000")
        .send()
        .await;
    assert_eq!(response.status(), 200);
    let first = within("a heartbeat", response.chunk())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b" ");
    drop(response);
    let r = the_record(&gw).await;
    println!(
        "figure: heartbeats recorded for a client that left during them: {}",
        r.heartbeats
    );
    assert_eq!(r.status, Status::ClientClosed);
    assert!(r.heartbeats >= 1);
}

// ---- the gateway's own work, traced ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_tracing_hangs_the_gateways_own_work_under_the_call() {
    let receiver = common::otlp::Receiver::start(common::otlp::Transport::Grpc).await;
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let routes = json!([{"name": "flaky", "model_prefix": "*", "upstream": mock.base_url(),
                         "retry": {"max_attempts": 2}}]);
    let gw = Serve::new(dir.path())
        .args([
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
        ])
        .envs(&[
            ("TRACEGATE_ROUTES", &routes.to_string()),
            ("TRACEGATE_EXPORT_SELF_TRACING", "true"),
        ])
        .spawn();
    let answer = gw
        .chat(&chat_body("trace yourself"))
        .headers(&[("x-mock-fail-first", "1"), ("x-mock-retry-after", "0.05")])
        .answer()
        .await;
    assert_eq!(answer.status, 200);
    let r = records_once(&gw, &dir.path().join("tracegate.db"), 1)
        .await
        .remove(0);
    // The call, its two attempts (outbox), and the gateway's own work:
    // two upstream attempts, one backoff, one hand-over to the store.
    receiver.wait_for(7).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // anything looping back would show now
    let spans = receiver.spans();
    let mut names: Vec<&str> = spans.iter().map(|s| s.span.name.as_str()).collect();
    names.sort();
    println!("figure: spans exported for one retried call with self-tracing: {names:?}");
    assert_eq!(
        names,
        [
            "chat mock-model",
            "tracegate.record_submit",
            "tracegate.retry_backoff",
            "tracegate.upstream_attempt",
            "tracegate.upstream_attempt",
            "upstream.attempt",
            "upstream.attempt",
        ]
    );
    for own in spans
        .iter()
        .filter(|s| s.span.name.starts_with("tracegate."))
    {
        assert_eq!(
            own.parent_span_id(),
            r.span_id,
            "{} hangs under the call",
            own.span.name
        );
        assert_eq!(own.trace_id(), r.otel_trace_id);
    }
    drop(gw);
}

/// CPU seconds the process `pid` has used (user and system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: TRACEGATE_BIN=target/release/tracegate cargo test --test resilience -- --ignored --nocapture self_tracing_cost"]
async fn self_tracing_cost_per_call() {
    let bin = std::env::var("TRACEGATE_BIN").unwrap_or(common::process::BIN.to_string());
    let bin = std::fs::canonicalize(bin).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let command = |args: &[&str]| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.current_dir(dir.path())
            .env_remove("OPENAI_BASE_URL")
            .env("RUST_LOG", "warn")
            .args(args);
        cmd
    };
    let port = common::process::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mock =
        common::process::Running::spawn(command(&["mock-upstream", "--listen", &listen]), port);
    let receiver = common::otlp::Receiver::start(common::otlp::Transport::Grpc).await;
    let client = reqwest::Client::new();
    let (calls, concurrency) = (10_000, 16);
    for self_tracing in ["false", "true", "false", "true"] {
        let port = common::process::free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = command(&["serve", "--listen", &listen, "--upstream", &mock.url("/v1")]);
        cmd.args([
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
        ])
        .args(["--db", &format!("{self_tracing}-{port}.db")])
        .env("TRACEGATE_EXPORT_SELF_TRACING", self_tracing);
        let gw = common::process::Running::spawn(cmd, port);
        let url = gw.url("/v1/chat/completions");
        let run = async |n: usize| {
            let tasks: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (client, url) = (client.clone(), url.clone());
                    tokio::spawn(async move {
                        for _ in 0..n / concurrency {
                            let r = client.post(&url).json(&chat_body("cost")).send().await;
                            r.unwrap().bytes().await.unwrap();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        };
        run(1000).await;
        let (cpu, started) = (cpu_seconds(gw.pid()), std::time::Instant::now());
        run(calls).await;
        let used = cpu_seconds(gw.pid()) - cpu;
        let took = started.elapsed();
        println!(
            "figure: self_tracing={self_tracing}: {:.0} µs of gateway CPU per call, {:.0} calls/s ({concurrency} at a time)",
            used * 1e6 / calls as f64,
            calls as f64 / took.as_secs_f64()
        );
        drop(gw);
    }
}

// ---- memory: idle upstream connections are not kept forever ----

/// An upstream that counts its connections and learns when the gateway
/// closes one. It holds the first request of each of its first `together`
/// connections until all of them arrived (so that the gateway had to open
/// that many at once), and answers every request with a small chat
/// completion on a keep-alive connection.
struct CountingUpstream {
    url: String,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    closed: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl CountingUpstream {
    async fn start(together: usize) -> CountingUpstream {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (closing, closed) = tokio::sync::mpsc::unbounded_channel();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(together));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let held = count.fetch_add(1, Ordering::SeqCst) < together;
                let barrier = held.then(|| barrier.clone());
                let closing = closing.clone();
                tokio::spawn(async move {
                    answer_until_closed(socket, barrier).await;
                    let _ = closing.send(());
                });
            }
        });
        CountingUpstream {
            url,
            accepted,
            closed,
        }
    }

    /// How many connections the gateway opened.
    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (within the hang guard) until `n` more connections closed.
    async fn closes(&mut self, n: usize, what: &str) {
        for _ in 0..n {
            within(what, self.closed.recv()).await.unwrap();
        }
    }
}

/// Answers each request on `socket` until the gateway closes it; the first
/// waits at `barrier`, if any.
async fn answer_until_closed(
    mut socket: TcpStream,
    mut barrier: Option<std::sync::Arc<tokio::sync::Barrier>>,
) {
    const BODY: &str = r#"{"id":"c","object":"chat.completion","model":"mock-model","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#;
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut buf = Vec::new();
    while read_request(&mut socket, &mut buf).await {
        if let Some(barrier) = barrier.take() {
            barrier.wait().await;
        }
        if socket.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one request (its head and `content-length` bytes of body) from
/// `socket` into `buf`, and drops it; false once the connection closed.
async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |n| n.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                buf.drain(..end + 4 + length);
                return true;
            }
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A gateway in front of `upstream` with `settings` (TOML) in its
/// configuration file; keep the directory as long as the gateway.
async fn pooled_gateway(upstream: &str, settings: &str) -> (TestGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracegate.toml");
    std::fs::write(&path, settings).unwrap();
    let gw = TestGateway::start_with(ServeArgs {
        config: Some(path),
        upstream: vec![upstream.to_string()],
        ..ServeArgs::default()
    })
    .await;
    (gw, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_past_pool_max_idle_are_closed() {
    let mut upstream = CountingUpstream::start(3).await;
    let settings = "pool_max_idle = 1\npool_idle_timeout = \"1h\"\n";
    let (gw, _dir) = pooled_gateway(&upstream.url, settings).await;
    let calls = (0..3).map(|i| gw.chat(&chat_body(&format!("call {i}"))));
    for answer in common::all_at_once(calls).await {
        assert_eq!(answer.status, 200);
    }
    assert_eq!(
        upstream.accepted(),
        3,
        "three calls at once, three connections"
    );
    upstream
        .closes(2, "the connections past pool_max_idle closed")
        .await;
    assert_eq!(gw.chat(&chat_body("again")).answer().await.status, 200);
    assert_eq!(upstream.accepted(), 3, "the one kept idle is reused");
    println!("figure: 3 upstream connections, pool_max_idle = 1 -> 2 closed, 1 reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_upstream_connection_is_closed_after_pool_idle_timeout() {
    let mut upstream = CountingUpstream::start(1).await;
    let (gw, _dir) = pooled_gateway(&upstream.url, "pool_idle_timeout = \"300ms\"\n").await;
    assert_eq!(gw.chat(&chat_body("once")).answer().await.status, 200);
    upstream
        .closes(1, "the idle connection closed after pool_idle_timeout")
        .await;
    println!("figure: pool_idle_timeout = 300ms -> the idle upstream connection was closed");
}
