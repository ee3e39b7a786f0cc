//! The OTLP receiver (`POST /v1/traces`) of the real binary: harness spans
//! decoded from protobuf and OTLP/JSON (gzip or not), answered per the
//! OTLP/HTTP spec, stored beside the calls and linked to those made under
//! them with `traceparent`, bounded by the `[otlp]` limits, counted in
//! `/metrics`, refused with a retryable 503 while the store cannot commit,
//! and forwarded to the collector through the outbox (losing none while it
//! is down).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::otlp::{Receiver, Transport};
use common::process::{Running, Serve};
use common::{Answer, Request, chat_body, eventually, start_mock};
use http::Method;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{Value, json};
use std::io::Write;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const AGENT: &str = "00f067aa0ba902b7";
const TOOL: &str = "b7ad6b7169203331";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Any::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

fn span(span_id: &str, parent: &str, name: &str, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: unhex(TRACE),
        span_id: unhex(span_id),
        parent_span_id: unhex(parent),
        name: name.into(),
        kind: 1,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_001_000_000_000,
        attributes,
        status: Some(Status {
            message: String::new(),
            code: 1,
        }),
        ..Span::default()
    }
}

/// One request of `spans` from a harness resource naming the session.
fn request(session: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attr("service.name", "my-harness"),
                    attr("session.id", session),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// An agent step with one tool call under it.
fn episode(session: &str) -> ExportTraceServiceRequest {
    let agent = span(
        AGENT,
        "",
        "invoke_agent solver",
        vec![
            attr("rllm.run_id", "run-1"),
            attr("gen_ai.agent.name", "solver"),
        ],
    );
    let tool = span(
        TOOL,
        AGENT,
        "execute_tool bash",
        vec![attr("gen_ai.tool.name", "bash")],
    );
    request(session, vec![agent, tool])
}

async fn post(gw: &Running, content_type: &str, body: Vec<u8>, extra: &[(&str, &str)]) -> Answer {
    Request::new(Method::POST, gw.url("/v1/traces"))
        .header("content-type", content_type)
        .headers(extra)
        .body(body)
        .answer()
        .await
}

async fn get(gw: &Running, path: &str) -> Value {
    let answer = Request::new(Method::GET, gw.url(path)).answer().await;
    assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    answer.json()
}

async fn flush(gw: &Running) {
    let answer = Request::new(Method::POST, gw.url("/admin/flush"))
        .answer()
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// A chat call of `session` made under the tool span (`traceparent`), once
/// it is stored: its trace id.
async fn call_under_tool(gw: &Running, session: &str) -> String {
    let path = format!("/sessions/{session}/v1/chat/completions");
    let call = Request::new(Method::POST, gw.url(&path))
        .header("traceparent", format!("00-{TRACE}-{TOOL}-01"))
        .json(&chat_body("which files?"))
        .answer()
        .await;
    assert_eq!(call.status, 200, "{}", call.text());
    let trace_id = call.trace_id();
    flush(gw).await;
    trace_id
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_spans_are_stored_and_linked_to_the_calls_made_under_them() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Serve::new(dir.path()).upstream(&mock.base_url()).spawn();
    let answer = post(
        &gw,
        "application/x-protobuf",
        episode("ep-1").encode_to_vec(),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "application/x-protobuf");
    let response = ExportTraceServiceResponse::decode(answer.body.clone()).unwrap();
    assert_eq!(response.partial_success, None, "nothing rejected or cut");

    // The LLM call the tool step made, under its span.
    let trace_id = call_under_tool(&gw, "ep-1").await;
    let tree = get(&gw, "/sessions/ep-1/spans").await;
    let spans = tree["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2, "{tree:#}");
    let agent = &spans[0];
    assert_eq!(agent["name"], "invoke_agent solver");
    assert_eq!(agent["trace_id"], TRACE);
    assert_eq!(agent["parent_span_id"], Value::Null);
    assert_eq!(agent["kind"], "internal");
    assert_eq!(agent["status_code"], "ok");
    assert_eq!(agent["identity"]["session_id"], "ep-1", "from the resource");
    assert_eq!(agent["identity"]["run_id"], "run-1", "from the span");
    assert_eq!(agent["resource"]["service.name"], "my-harness");
    assert_eq!(agent["start"], "2023-11-14T22:13:20.000000Z");
    let tool = &spans[1];
    assert_eq!(tool["name"], "execute_tool bash");
    assert_eq!(tool["parent_span_id"], AGENT);
    assert_eq!(tool["attributes"]["gen_ai.tool.name"], "bash");
    assert_eq!(tool["calls"], json!([trace_id]), "the span lists its call");
    assert_eq!(agent["calls"], json!([]));
    let calls = tree["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["trace_id"], trace_id.as_str());
    assert_eq!(calls[0]["harness_span_id"], TOOL, "the call names its span");

    let record = get(&gw, &format!("/traces/{trace_id}")).await;
    assert_eq!(record["otel_trace_id"], TRACE);
    assert_eq!(record["otel_parent_span_id"], TOOL);
    assert_eq!(record["harness_span"]["name"], "execute_tool bash");
    assert_eq!(record["harness_span"]["span_id"], TOOL);
    let schema = serde_json::from_str(include_str!("../schema/trace_record.schema.json")).unwrap();
    let errors: Vec<String> = jsonschema::validator_for(&schema)
        .unwrap()
        .iter_errors(&record)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the schema describes harness_span: {errors:#?}"
    );
    // The CLI names the enclosing span too.
    let shown = common::process::tracegate(dir.path())
        .args(["traces", "show", &trace_id])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!(
            "within     execute_tool bash (internal, span {TOOL})"
        )),
        "{shown}"
    );
    // A call under no stored span carries no harness_span.
    let lone = Request::new(Method::POST, gw.url("/sessions/ep-1/v1/chat/completions"))
        .json(&chat_body("alone"))
        .answer()
        .await;
    flush(&gw).await;
    let lone = get(&gw, &format!("/traces/{}", lone.trace_id())).await;
    assert!(lone.get("harness_span").is_none(), "{lone:#}");
    // Lists serve the same records, spans joined.
    let listed = get(&gw, "/traces?session_id=ep-1").await;
    let under = listed["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trace_id"] == trace_id.as_str())
        .unwrap();
    assert_eq!(under["harness_span"]["span_id"], TOOL, "{listed:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_gzip_bodies_are_taken_and_answered_in_their_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Serve::new(dir.path()).spawn();
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "gen_ai.conversation.id", "value": {"stringValue": "ep-json"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": TRACE, "spanId": AGENT, "name": "invoke_agent json",
            "kind": 1, "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000002000000000",
            "attributes": [{"key": "rllm.step_id", "value": {"intValue": "3"}}],
            "events": [{"timeUnixNano": "1700000001000000000", "name": "reward",
                        "attributes": [{"key": "value", "value": {"doubleValue": 0.5}}]}],
            "status": {"code": 2, "message": "tool failed"}
        }]}]
    }]});
    let answer = post(&gw, "application/json", body.to_string().into_bytes(), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "application/json");
    assert!(
        answer
            .json()
            .get("partialSuccess")
            .is_none_or(Value::is_null),
        "{}",
        answer.text()
    );

    let mut other_trace = episode("ep-gzip");
    for span in &mut other_trace.resource_spans[0].scope_spans[0].spans {
        span.trace_id[0] ^= 0xff;
    }
    let gzipped = gzip(&other_trace.encode_to_vec());
    let answer = post(
        &gw,
        "application/x-protobuf",
        gzipped,
        &[("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    let tree = get(&gw, "/sessions/ep-json/spans").await;
    let span = &tree["spans"][0];
    assert_eq!(span["name"], "invoke_agent json");
    assert_eq!(span["identity"]["session_id"], "ep-json");
    assert_eq!(span["identity"]["step_id"], 3);
    assert_eq!(span["status_code"], "error");
    assert_eq!(span["status_message"], "tool failed");
    assert_eq!(span["events"][0]["name"], "reward");
    assert_eq!(span["events"][0]["attributes"]["value"], 0.5);
    let gz = get(&gw, "/sessions/ep-gzip/spans").await;
    assert_eq!(gz["spans"].as_array().unwrap().len(), 2, "{gz:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_get_the_otlp_errors_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Serve::new(dir.path()).spawn();
    let answer = post(&gw, "text/plain", b"hello".to_vec(), &[]).await;
    assert_eq!(answer.status, 415);

    let answer = post(&gw, "application/x-protobuf", vec![0xff, 0xff, 0xff], &[]).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.headers["content-type"], "application/x-protobuf");
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    let status = RpcStatus::decode(answer.body.clone()).unwrap();
    assert_eq!(status.code, 3, "INVALID_ARGUMENT");
    assert!(!status.message.is_empty());

    let answer = post(
        &gw,
        "application/json",
        b"{\"resourceSpans\": 7}".to_vec(),
        &[],
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["code"], 3);

    // A span with a broken id is rejected alone; the others are kept.
    let mut broken = episode("ep-partial");
    broken.resource_spans[0].scope_spans[0].spans[1].span_id = vec![1, 2, 3];
    let answer = post(&gw, "application/x-protobuf", broken.encode_to_vec(), &[]).await;
    assert_eq!(answer.status, 200);
    let partial = ExportTraceServiceResponse::decode(answer.body.clone())
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("span_id"), "{partial:?}");

    let metrics = Request::new(Method::GET, gw.url("/metrics"))
        .answer()
        .await
        .text();
    assert!(
        metrics.contains("tracegate_otlp_received_spans_total 1"),
        "{metrics}"
    );
    for reason in ["malformed\"} 2", "content_type\"} 1", "invalid_span\"} 1"] {
        let line = format!("tracegate_otlp_rejected_total{{reason=\"{reason}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    // Other methods on the path are the proxy's, as before.
    let answer = Request::new(Method::GET, gw.url("/v1/traces"))
        .answer()
        .await;
    assert_ne!(answer.status, 405, "{}", answer.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_is_behind_the_inbound_auth() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Serve::new(dir.path())
        .args(["--auth-tokens", "secret", "--upstream-auth", "none"])
        .spawn();
    let body = episode("ep-auth").encode_to_vec();
    let refused = post(&gw, "application/x-protobuf", body.clone(), &[]).await;
    assert_eq!(refused.status, 401);
    let taken = post(
        &gw,
        "application/x-protobuf",
        body,
        &[("authorization", "Bearer secret")],
    )
    .await;
    assert_eq!(taken.status, 200, "{}", taken.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_cut_spans_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracegate.toml");
    std::fs::write(
        &config,
        "[otlp]\nmax_spans_per_request = 2\nmax_attributes_per_span = 2\nmax_attribute_bytes = 8\n",
    )
    .unwrap();
    let gw = Serve::new(dir.path())
        .args(["--config", config.to_str().unwrap()])
        .spawn();
    let mut big = episode("ep-lim");
    let spans = &mut big.resource_spans[0].scope_spans[0].spans;
    spans[1].attributes = vec![
        attr("gen_ai.tool.name", "a-very-long-tool-name"),
        attr("second", "x"),
        attr("third", "y"),
    ];
    let third = span("1111111111111111", AGENT, "execute_tool extra", Vec::new());
    spans.push(third);
    let answer = post(&gw, "application/x-protobuf", big.encode_to_vec(), &[]).await;
    assert_eq!(answer.status, 200);
    let partial = ExportTraceServiceResponse::decode(answer.body.clone())
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(partial.rejected_spans, 1, "the third span is one too many");
    assert!(
        partial.error_message.contains("tracegate.truncated"),
        "{partial:?}"
    );
    let tree = get(&gw, "/sessions/ep-lim/spans").await;
    let tool = &tree["spans"][1];
    assert_eq!(tool["attributes"]["gen_ai.tool.name"], "a-very-l");
    assert!(tool["attributes"].get("third").is_none());
    assert_eq!(
        tool["attributes"]["tracegate.truncated"],
        json!(["attributes: 1 dropped", "gen_ai.tool.name"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_commit_answers_a_retryable_503() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracegate.toml");
    std::fs::write(&config, "[store]\nbusy_timeout = \"100ms\"\n").unwrap();
    let gw = Serve::new(dir.path())
        .args(["--config", config.to_str().unwrap(), "--db", "t.db"])
        .spawn();
    let db = dir.path().join("t.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let body = episode("ep-locked").encode_to_vec();
    let answer = post(&gw, "application/x-protobuf", body.clone(), &[]).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(answer.headers.contains_key("retry-after"));
    conn.execute_batch("COMMIT").unwrap();
    // The sender retries, and the spans are taken once the store commits.
    let taken = eventually("the store to take the spans again", async || {
        let answer = post(&gw, "application/x-protobuf", body.clone(), &[]).await;
        (answer.status == 200).then_some(answer)
    })
    .await;
    assert_eq!(taken.status, 200);
    let tree = get(&gw, "/sessions/ep-locked/spans").await;
    assert_eq!(tree["spans"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_spans_are_forwarded_and_a_collector_outage_loses_none() {
    let mut collector = Receiver::start(Transport::Http).await;
    collector.kill();
    let dir = tempfile::tempdir().unwrap();
    let gw = Serve::new(dir.path())
        .args([
            "--otlp-endpoint",
            &collector.endpoint(),
            "--otlp-protocol",
            collector.protocol(),
        ])
        .spawn();
    let answer = post(
        &gw,
        "application/x-protobuf",
        episode("ep-fwd").encode_to_vec(),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "accepted while the collector is down");
    eventually("a failed export attempt", async || {
        let health = get(&gw, "/health").await;
        health["export"]["last_error"].as_str().map(|_| ())
    })
    .await;
    collector.revive().await;
    let spans = collector.wait_for(2).await;
    assert_eq!(spans.len(), 2, "each span once");
    let agent = spans.iter().find(|s| s.span_id() == AGENT).unwrap();
    assert_eq!(agent.trace_id(), TRACE);
    assert_eq!(agent.span.name, "invoke_agent solver");
    assert_eq!(agent.attr("rllm.run_id"), "run-1");
    assert_eq!(
        agent.resource["service.name"], "my-harness",
        "its own resource"
    );
    let tool = spans.iter().find(|s| s.span_id() == TOOL).unwrap();
    assert_eq!(tool.parent_span_id(), AGENT);
    assert_eq!(tool.span.kind, 1, "INTERNAL, as sent");
}

// --- OTLP/gRPC (`otlp.grpc_listen`) ---

/// A gateway whose OTLP/gRPC receiver listens on a free port, with these
/// arguments too; and that port.
fn with_grpc<'a>(dir: &std::path::Path, args: impl IntoIterator<Item = &'a str>) -> (Running, u16) {
    let port = common::process::free_port();
    let listen = format!("127.0.0.1:{port}");
    let gw = Serve::new(dir)
        .args(["--otlp-grpc-listen", listen.as_str()])
        .args(args)
        .envs(&[("RUST_LOG", "info")])
        .spawn();
    (gw, port)
}

type GrpcClient = TraceServiceClient<tonic::transport::Channel>;

async fn grpc_client(port: u16) -> GrpcClient {
    TraceServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
}

/// One export over gRPC, with `authorization` metadata when given.
async fn export(
    client: &mut GrpcClient,
    request: ExportTraceServiceRequest,
    token: Option<&str>,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let mut request = tonic::Request::new(request);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    client
        .export(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_spans_are_stored_like_http_ones_and_linked_to_their_calls() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, port) = with_grpc(dir.path(), ["--upstream", &mock.base_url()]);
    let mut client = grpc_client(port).await;
    let response = export(&mut client, episode("ep-grpc"), None).await.unwrap();
    assert_eq!(response.partial_success, None, "nothing rejected or cut");
    // gzip-compressed messages are taken too.
    let mut other = episode("ep-grpc-gz");
    for span in &mut other.resource_spans[0].scope_spans[0].spans {
        span.trace_id[0] ^= 0xff;
    }
    let mut gzipped = grpc_client(port)
        .await
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    export(&mut gzipped, other, None).await.unwrap();

    let trace_id = call_under_tool(&gw, "ep-grpc").await;
    let tree = get(&gw, "/sessions/ep-grpc/spans").await;
    let spans = tree["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2, "{tree:#}");
    assert_eq!(spans[0]["name"], "invoke_agent solver");
    assert_eq!(spans[0]["identity"]["run_id"], "run-1");
    assert_eq!(spans[0]["resource"]["service.name"], "my-harness");
    assert_eq!(spans[1]["name"], "execute_tool bash");
    assert_eq!(spans[1]["parent_span_id"], AGENT);
    assert_eq!(spans[1]["calls"], json!([trace_id]));
    assert_eq!(tree["calls"][0]["harness_span_id"], TOOL);
    let gz = get(&gw, "/sessions/ep-grpc-gz/spans").await;
    assert_eq!(gz["spans"].as_array().unwrap().len(), 2, "{gz:#}");
    let metrics = Request::new(Method::GET, gw.url("/metrics"))
        .answer()
        .await
        .text();
    assert!(
        metrics.contains("tracegate_otlp_received_spans_total 4"),
        "both transports count in the same metric: {metrics}"
    );
    // SIGTERM drains the receiver with the gateway: a clean exit.
    let (status, log) = gw.stop_with_status().await;
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("OTLP/gRPC receiver listening"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_partial_success_invalid_argument_and_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracegate.toml");
    std::fs::write(
        &config,
        "[otlp]\nmax_spans_per_request = 2\nmax_attribute_bytes = 8\n[store]\nbusy_timeout = \"100ms\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (gw, port) = with_grpc(dir.path(), ["--config", config, "--db", "t.db"]);
    let mut client = grpc_client(port).await;

    // Limits: the third span is one too many, a long value is cut.
    let mut big = episode("ep-grpc-lim");
    let spans = &mut big.resource_spans[0].scope_spans[0].spans;
    spans[1].attributes = vec![attr("gen_ai.tool.name", "a-very-long-tool-name")];
    spans.push(span(
        "1111111111111111",
        AGENT,
        "execute_tool extra",
        Vec::new(),
    ));
    let partial = export(&mut client, big, None)
        .await
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(partial.rejected_spans, 1, "{partial:?}");
    assert!(
        partial.error_message.contains("more than 2 spans"),
        "{partial:?}"
    );
    assert!(
        partial.error_message.contains("tracegate.truncated"),
        "{partial:?}"
    );

    // A message that does not decode: INVALID_ARGUMENT, counted.
    let raw = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut framed = vec![0u8, 0, 0, 0, 3];
    framed.extend([0xff, 0xff, 0xff]);
    let answer = raw
        .post(format!(
            "http://127.0.0.1:{port}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(framed)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["grpc-status"], "3", "INVALID_ARGUMENT");

    // A store that cannot commit: UNAVAILABLE, which exporters retry.
    let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let refused = export(&mut client, episode("ep-lock"), None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    conn.execute_batch("COMMIT").unwrap();
    eventually("the store to take the spans again", async || {
        export(&mut client, episode("ep-lock"), None).await.ok()
    })
    .await;

    let metrics = Request::new(Method::GET, gw.url("/metrics"))
        .answer()
        .await
        .text();
    for reason in [
        "malformed\"} 1",
        "too_many_spans\"} 1",
        "store_unavailable\"} ",
    ] {
        let line = format!("tracegate_otlp_rejected_total{{reason=\"{reason}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    let tree = get(&gw, "/sessions/ep-lock/spans").await;
    assert_eq!(tree["spans"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_is_behind_the_inbound_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, port) = with_grpc(
        dir.path(),
        ["--auth-tokens", "secret", "--upstream-auth", "none"],
    );
    let mut client = grpc_client(port).await;
    let refused = export(&mut client, episode("ep-grpc-auth"), None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let wrong = export(&mut client, episode("ep-grpc-auth"), Some("guess"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated, "{wrong:?}");
    export(&mut client, episode("ep-grpc-auth"), Some("secret"))
        .await
        .unwrap();
    let tree = Request::new(Method::GET, gw.url("/sessions/ep-grpc-auth/spans"))
        .header("authorization", "Bearer secret")
        .answer()
        .await
        .json();
    assert_eq!(tree["spans"].as_array().unwrap().len(), 2, "{tree:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_is_off_by_default_and_a_taken_port_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // Off: OTLP's gRPC port stays free (when it was free to begin with),
    // and nothing says a receiver listens.
    let default_port_free = std::net::TcpListener::bind("127.0.0.1:4317").is_ok();
    let gw = Serve::new(dir.path()).envs(&[("RUST_LOG", "info")]).spawn();
    get(&gw, "/health").await;
    if default_port_free {
        assert!(std::net::TcpListener::bind("127.0.0.1:4317").is_ok());
    }
    let log = gw.stop().await;
    assert!(log.contains("tracegate listening on"), "{log}");
    assert!(!log.contains("OTLP/gRPC"), "{log}");

    // A port that is taken: a clear start error naming it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = common::process::tracegate(dir.path())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", common::process::free_port()),
        ])
        .args(["--otlp-grpc-listen", &addr])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

/// `episode`, under another trace id (its first byte set to `n`).
fn episode_in_trace(session: &str, n: u8) -> ExportTraceServiceRequest {
    let mut request = episode(session);
    for span in &mut request.resource_spans[0].scope_spans[0].spans {
        span.trace_id[0] = n;
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_outage_mid_run_delivers_every_received_span_exactly_once() {
    let mut collector = Receiver::start(Transport::Grpc).await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, port) = with_grpc(
        dir.path(),
        [
            "--otlp-endpoint",
            &collector.endpoint(),
            "--otlp-protocol",
            collector.protocol(),
        ],
    );
    let mut client = grpc_client(port).await;
    // Before the outage: forwarded as they come.
    export(&mut client, episode_in_trace("ep-out", 1), None)
        .await
        .unwrap();
    collector.wait_for(2).await;
    // During it: received and stored, waiting in the outbox. (The port
    // closes; a connection the gateway already holds is refused.)
    collector.refuse(true);
    collector.kill();
    export(&mut client, episode_in_trace("ep-out", 2), None)
        .await
        .unwrap();
    eventually("a failed export attempt", async || {
        let health = get(&gw, "/health").await;
        health["export"]["last_error"].as_str().map(|_| ())
    })
    .await;
    // After it: the backlog goes out, then what comes next.
    collector.refuse(false);
    collector.revive().await;
    export(&mut client, episode_in_trace("ep-out", 3), None)
        .await
        .unwrap();
    let mut expected: Vec<(String, String)> = (1..=3u8)
        .flat_map(|n| {
            let trace = format!("{n:02x}{}", &TRACE[2..]);
            [
                (trace.clone(), AGENT.to_string()),
                (trace, TOOL.to_string()),
            ]
        })
        .collect();
    expected.sort();
    let received = eventually("every received span at the collector", async || {
        let mut ids: Vec<(String, String)> = collector
            .spans()
            .iter()
            .map(|s| (s.trace_id(), s.span_id()))
            .collect();
        ids.sort();
        let all = expected.iter().all(|id| ids.binary_search(id).is_ok());
        all.then_some(ids)
    })
    .await;
    // The outbox sends in order, so a span sent twice would have arrived
    // before (or with) the last batch: none did.
    assert_eq!(received, expected, "each span exactly once");
}
