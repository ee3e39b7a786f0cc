//! OTLP span export, end to end: real gRPC and HTTP/protobuf receivers in
//! this process decode what the gateway sends.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::otlp::{Received, Receiver, Transport};
use common::{Gateway, Setup, TestGateway, chat_body, process};
use serde_json::{Value, json};
use tracegate::config::ServeArgs;

/// The mock and a gateway in front of it exporting to `receiver`.
async fn exporting_to(receiver: &Receiver) -> Setup {
    Setup::with(|args| receiver.export_to(args)).await
}

fn by_record<'a>(spans: &'a [Received], trace_id: &str) -> &'a Received {
    spans
        .iter()
        .find(|s| s.attr("rllm.trace_id") == json!(trace_id))
        .unwrap_or_else(|| panic!("no span for record {trace_id}"))
}

/// A chat call with these headers; returns its record's id.
async fn call(gw: &TestGateway, body: Value, headers: &[(&str, &str)]) -> String {
    gw.chat(&body).headers(headers).answer().await.trace_id()
}

async fn attributes_for_every_kind_of_call(transport: Transport) {
    let receiver = Receiver::start(transport).await;
    let gw = exporting_to(&receiver).await;
    let identity = [
        ("x-rllm-session-id", "sess-a"),
        ("x-rllm-run-id", "run-a"),
        ("x-rllm-harness", "swe"),
        ("x-rllm-step-id", "2"),
        ("x-rllm-project", "proj"),
        ("x-rllm-experiment", "exp"),
    ];
    let mut plain = chat_body("plain");
    plain["temperature"] = json!(0.5);
    plain["max_tokens"] = json!(64);
    plain["top_p"] = json!(0.9);
    plain["seed"] = json!(11);
    plain["n"] = json!(2);
    let mut streamed = chat_body("streamed");
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let mut ids = Vec::new();
    for (body, extra) in [
        (plain, None),
        (streamed, None),
        (chat_body("failed"), Some(("x-mock-status", "503"))),
    ] {
        let mut headers = identity.to_vec();
        headers.extend(extra);
        ids.push(call(&gw, body, &headers).await);
    }
    let spans = receiver.wait_for(3).await;
    let records = gw.records().await;

    for (id, record) in ids.iter().zip(&records) {
        let s = by_record(&spans, id);
        assert_eq!(s.span.name, "chat mock-model");
        assert_eq!(s.span.kind, 3, "CLIENT");
        assert_eq!(
            s.trace_id(),
            record.otel_trace_id,
            "the record joins its span"
        );
        assert_eq!(s.span_id(), record.span_id);
        for (key, want) in [
            ("gen_ai.operation.name", json!("chat")),
            ("gen_ai.provider.name", json!("openai")),
            ("gen_ai.request.model", json!("mock-model")),
            ("server.address", json!("127.0.0.1")),
            ("server.port", json!(gw.mock.addr.port())),
            ("session.id", json!("sess-a")),
            ("gen_ai.conversation.id", json!("sess-a")),
            ("rllm.run_id", json!("run-a")),
            ("rllm.harness", json!("swe")),
            ("rllm.step_id", json!(2)),
            ("rllm.span_type", json!("llm.call")),
            ("rllm.project", json!("proj")),
            ("rllm.experiment", json!("exp")),
            ("rllm.trace_id", json!(id)),
            (
                "http.response.status_code",
                json!(record.http_status.unwrap()),
            ),
        ] {
            assert_eq!(s.attr(key), want, "{key}");
        }
        assert!(
            s.attr("gen_ai.system").is_null(),
            "the deprecated attribute is not used"
        );
        assert_eq!(s.resource["service.name"], "tracegate");
        assert_eq!(s.resource["service.version"], env!("CARGO_PKG_VERSION"));
        let nanos = s.span.end_time_unix_nano - s.span.start_time_unix_nano;
        assert!(
            (nanos as f64 / 1e6 - record.latency_ms).abs() < 0.01,
            "the span lasts as long as the call"
        );
    }

    let plain = by_record(&spans, &ids[0]);
    assert_eq!(plain.attr("gen_ai.response.model"), json!("mock-model"));
    assert!(
        plain
            .attr("gen_ai.response.id")
            .as_str()
            .unwrap()
            .starts_with("chatcmpl-mock")
    );
    assert_eq!(
        plain.attr("gen_ai.response.finish_reasons"),
        json!(["stop", "stop"])
    );
    assert_eq!(plain.attr("gen_ai.request.temperature"), json!(0.5));
    assert_eq!(plain.attr("gen_ai.request.max_tokens"), json!(64));
    assert_eq!(plain.attr("gen_ai.request.top_p"), json!(0.9));
    assert_eq!(plain.attr("gen_ai.request.seed"), json!(11));
    assert_eq!(plain.attr("gen_ai.request.choice.count"), json!(2));
    assert_eq!(plain.attr("gen_ai.request.stream"), json!(false));
    assert_eq!(
        plain.attr("gen_ai.usage.input_tokens"),
        json!(records[0].usage.input_tokens.unwrap())
    );
    assert_eq!(
        plain.attr("gen_ai.usage.output_tokens"),
        json!(records[0].usage.output_tokens.unwrap())
    );
    assert_eq!(plain.span.status.as_ref().map_or(0, |s| s.code), 0, "unset");

    let streamed = by_record(&spans, &ids[1]);
    assert_eq!(streamed.attr("gen_ai.request.stream"), json!(true));
    let ttft = streamed
        .attr("gen_ai.response.time_to_first_chunk")
        .as_f64()
        .unwrap();
    assert!((ttft * 1000.0 - records[1].ttft_ms.unwrap()).abs() < 1e-6);
    assert_eq!(
        streamed.attr("gen_ai.usage.output_tokens"),
        json!(records[1].usage.output_tokens.unwrap())
    );

    let failed = by_record(&spans, &ids[2]);
    assert_eq!(failed.attr("error.type"), json!("upstream_http_error"));
    assert_eq!(failed.attr("http.response.status_code"), json!(503));
    let status = failed.span.status.as_ref().unwrap();
    assert_eq!(status.code, 2, "error");
    assert_eq!(status.message, "mock failure with status 503");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attribute_is_exported_over_grpc() {
    attributes_for_every_kind_of_call(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attribute_is_exported_over_http_protobuf() {
    attributes_for_every_kind_of_call(Transport::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_two_sessions_is_one_trace_with_the_episode_s_parents() {
    let receiver = Receiver::start(Transport::Http).await;
    let gw = exporting_to(&receiver).await;
    let mut steps = Vec::new(); // (session, step, record id, parent record id)
    for session in ["episode-1", "episode-2"] {
        let mut parent: Option<String> = None;
        for step in 1..=3 {
            let step_text = step.to_string();
            let mut headers = vec![
                ("x-rllm-run-id", "run-tree"),
                ("x-rllm-session-id", session),
                ("x-rllm-step-id", step_text.as_str()),
            ];
            if let Some(p) = &parent {
                headers.push(("x-rllm-parent-span-id", p.as_str()));
            }
            let id = call(&gw, chat_body("next step"), &headers).await;
            steps.push((session, step, id.clone(), parent.clone()));
            parent = Some(id);
        }
    }
    let spans = receiver.wait_for(6).await;
    let traces: std::collections::BTreeSet<String> = spans.iter().map(Received::trace_id).collect();
    assert_eq!(traces.len(), 1, "one trace for the whole run");
    for (session, step, id, parent) in &steps {
        let span = by_record(&spans, id);
        match parent {
            None => assert_eq!(span.parent_span_id(), "", "{session} step {step} is a root"),
            Some(p) => assert_eq!(
                span.parent_span_id(),
                by_record(&spans, p).span_id(),
                "{session} step {step}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_traceparent_is_continued_and_propagated() {
    let receiver = Receiver::start(Transport::Grpc).await;
    let gw = exporting_to(&receiver).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = gw
        .chat(&chat_body("continue me"))
        .headers(&[
            ("traceparent", incoming),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("x-rllm-run-id", "loses-to-traceparent"),
        ])
        .answer()
        .await;
    let returned = r.headers["traceparent"].to_str().unwrap().to_string();
    assert_eq!(r.headers["tracestate"], "rojo=00f067aa0ba902b7");
    let span = receiver.wait_for(1).await.remove(0);
    assert_eq!(span.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span.parent_span_id(), "00f067aa0ba902b7");
    assert_eq!(span.span.trace_state, "rojo=00f067aa0ba902b7");
    assert_eq!(
        returned,
        format!("00-{}-{}-01", span.trace_id(), span.span_id()),
        "the response names the gateway span"
    );
    let upstream = &gw.received()[0];
    assert_eq!(
        upstream.header("traceparent"),
        Some(returned.as_str()),
        "the upstream's parent is the gateway span"
    );
    assert_eq!(upstream.header("tracestate"), Some("rojo=00f067aa0ba902b7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_can_be_turned_off() {
    let receiver = Receiver::start(Transport::Http).await;
    let gw = Setup::with(|a| {
        receiver.export_to(a);
        a.propagate_traceparent = Some("false".into());
    })
    .await;
    let r = gw
        .chat(&chat_body("quiet"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .answer()
        .await;
    assert!(
        r.headers.contains_key("traceparent"),
        "the client still learns the span"
    );
    let upstream = &gw.received()[0];
    assert_eq!(upstream.header("traceparent"), None);
    assert_eq!(upstream.header("tracestate"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_span_ids_are_kept_or_mapped_consistently() {
    let receiver = Receiver::start(Transport::Http).await;
    let gw = exporting_to(&receiver).await;
    let mut ids = Vec::new();
    for parent in ["00F067AA0BA902B7", "agent-root", "agent-root"] {
        let headers = [("x-rllm-run-id", "r"), ("x-rllm-parent-span-id", parent)];
        ids.push(call(&gw, chat_body("child"), &headers).await);
    }
    let spans = receiver.wait_for(3).await;
    let (hex, a, b) = (
        by_record(&spans, &ids[0]),
        by_record(&spans, &ids[1]),
        by_record(&spans, &ids[2]),
    );
    assert_eq!(
        hex.parent_span_id(),
        "00f067aa0ba902b7",
        "a span id is used as is"
    );
    assert_eq!(a.parent_span_id().len(), 16);
    assert_eq!(
        a.parent_span_id(),
        b.parent_span_id(),
        "the same id maps to the same parent"
    );
    assert_eq!(
        a.attr("rllm.parent_span_id"),
        json!("agent-root"),
        "the raw id is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_content_is_off_by_default_and_on_when_configured() {
    let receiver = Receiver::start(Transport::Http).await;
    let quiet = exporting_to(&receiver).await;
    call(&quiet, chat_body("private words"), &[]).await;
    let span = receiver.wait_for(1).await.remove(0);
    assert!(span.attr("gen_ai.input.messages").is_null());
    assert!(span.attr("gen_ai.output.messages").is_null());

    let mut args = ServeArgs {
        upstream: vec![quiet.mock.base_url()],
        export_include_content: Some("true".into()),
        ..ServeArgs::default()
    };
    receiver.export_to(&mut args);
    let loud = TestGateway::start_with(args).await;
    call(&loud, chat_body("shared words"), &[]).await;
    let span = receiver.wait_for(2).await.remove(1);
    let input: Value =
        serde_json::from_str(span.attr("gen_ai.input.messages").as_str().unwrap()).unwrap();
    assert_eq!(input, json!([{"role": "user", "content": "shared words"}]));
    let output: Value =
        serde_json::from_str(span.attr("gen_ai.output.messages").as_str().unwrap()).unwrap();
    assert_eq!(
        output[0]["content"],
        "This is the tracegate mock answering: shared words"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_outage_loses_no_span_and_slows_no_request() {
    let mut receiver = Receiver::start(Transport::Grpc).await;
    let gw = exporting_to(&receiver).await;
    let calls_per_phase = 40;
    let mut statuses = Vec::new();
    let run = async |phase: &str| {
        let mut statuses = Vec::new();
        for i in 0..calls_per_phase {
            let r = gw
                .chat(&chat_body(&format!("{phase} {i}")))
                .header("x-rllm-run-id", "outage")
                .answer()
                .await;
            statuses.push(r.status.as_u16());
        }
        statuses
    };
    // 1. The collector refuses (503 / UNAVAILABLE).
    receiver.refuse(true);
    statuses.extend(run("refused").await);
    // 2. The collector is gone.
    receiver.kill();
    statuses.extend(run("dead").await);
    gw.flush().await;
    let health = gw.get_json("/health").await;
    assert!(
        health["export"]["waiting"].as_i64().unwrap() > 0,
        "{health}"
    );
    assert!(health["export"]["last_error"].is_string(), "{health}");
    assert!(
        health["export"]["oldest_waiting_seconds"].is_number(),
        "{health}"
    );
    // 3. It comes back.
    receiver.revive().await;
    receiver.refuse(false);
    statuses.extend(run("back").await);

    assert_eq!(statuses.len(), 3 * calls_per_phase);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every proxied call succeeded: {statuses:?}"
    );
    let spans = receiver.wait_for(3 * calls_per_phase).await;
    let unique: std::collections::BTreeSet<String> = spans.iter().map(Received::span_id).collect();
    assert_eq!(unique.len(), 3 * calls_per_phase, "every span arrived");
    assert!(receiver.attempts() > 1, "exports were refused and retried");
    let health = gw.get_json("/health").await;
    assert_eq!(
        health["export"]["exported"],
        3 * calls_per_phase,
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_queued_before_a_restart_are_sent_after_it() {
    let mut receiver = Receiver::start(Transport::Http).await;
    receiver.kill();
    let gw = exporting_to(&receiver).await;
    for i in 0..5 {
        call(&gw, chat_body(&format!("before restart {i}")), &[]).await;
    }
    gw.flush().await;
    let gw = gw.restart(|args| receiver.export_to(args)).await;
    receiver.revive().await;
    call(&gw, chat_body("after restart"), &[]).await;
    let spans = receiver.wait_for(6).await;
    assert_eq!(
        spans.len(),
        6,
        "the five queued spans and the new one, once each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_off_unless_configured() {
    let gw = Setup::new().await;
    call(&gw, chat_body("no export"), &[]).await;
    gw.flush().await;
    let health = gw.get_json("/health").await;
    assert_eq!(health["export"], json!({"enabled": false}));
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM spans"),
        0,
        "no outbox grows without a collector"
    );
}

async fn demo_exports_one_trace_per_run(transport: Transport) {
    let receiver = Receiver::start(transport).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = process::tracegate(dir.path());
    cmd.args([
        "demo",
        "--db",
        "demo.db",
        "--otlp-endpoint",
        &receiver.endpoint(),
    ])
    .args(["--otlp-protocol", receiver.protocol()]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spans = receiver.wait_for(6).await;
    assert_eq!(spans.len(), 6);
    let traces: std::collections::BTreeSet<String> = spans.iter().map(Received::trace_id).collect();
    assert_eq!(traces.len(), 1, "one trace for the demo's run");
    for session in ["session-1", "session-2"] {
        let mut steps: Vec<&Received> = spans
            .iter()
            .filter(|s| s.attr("session.id").as_str().unwrap().ends_with(session))
            .collect();
        steps.sort_by_key(|s| s.attr("rllm.step_id").as_i64().unwrap());
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].parent_span_id(), "", "step 1 is a root");
        assert_eq!(
            steps[1].parent_span_id(),
            steps[0].span_id(),
            "step 2 hangs under step 1"
        );
        assert_eq!(
            steps[2].parent_span_id(),
            steps[1].span_id(),
            "step 3 hangs under step 2"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_exports_one_trace_over_grpc() {
    demo_exports_one_trace_per_run(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_exports_one_trace_over_http() {
    demo_exports_one_trace_per_run(Transport::Http).await;
}
