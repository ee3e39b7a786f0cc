//! `kind = "auto"`, the default: the real binary probes each route's
//! upstream once at start (`GET /v1/models`) and treats a vLLM as
//! `kind = "vllm"` (token data asked for and recorded), anything else as
//! `generic` (the body goes upstream byte for byte). Written kinds, Anthropic
//! routes and the zero-configuration routes are never probed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::{Running, Serve, free_port};
use common::{Gateway, chat_body, records_in, start_mock_with};
use serde_json::{Value, json};
use std::path::Path;
use tracegate::mock_upstream::{self, MockOptions, MockServer};

/// The mock, answering `owned_by: "vllm"` when `vllm`.
async fn mock(vllm: bool) -> MockServer {
    start_mock_with(MockOptions {
        chunks: 4,
        vllm,
        ..MockOptions::default()
    })
    .await
}

/// `tracegate serve` in `dir` in front of `upstream`, logging at info, with
/// these arguments too.
fn gateway(dir: &Path, upstream: &str, args: &[&str]) -> Running {
    Serve::new(dir)
        .upstream(upstream)
        .args(["--db", "traces.db"])
        .args(args)
        .envs(&[("RUST_LOG", "info")])
        .spawn()
}

/// The one route `GET /admin/routes` shows: its kind and why.
async fn route_kind(gw: &Running) -> (String, String) {
    let routes = gw.get_json("/admin/routes").await;
    let route = &routes.as_array().unwrap()[0];
    let text = |key: &str| route[key].as_str().unwrap().to_string();
    (text("kind"), text("kind_reason"))
}

/// A chat body written by hand, spacing and key order as a client might.
const HANDWRITTEN: &str =
    "{ \"messages\":[{\"role\":\"user\",\"content\":\"exact\"}],  \"model\":\"mock-model\" }";

/// Sends [`HANDWRITTEN`] and returns the bytes the upstream received.
async fn sent_upstream(gw: &Running, mock: &MockServer) -> Vec<u8> {
    let answer = gw
        .post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(HANDWRITTEN)
        .answer()
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    mock.state.received().pop().unwrap().raw_body.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_in_front_of_vllm_asks_for_and_records_token_data() {
    let mock = mock(true).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), &mock.base_url(), &[]);
    assert_eq!(mock.state.probes(), 1, "probed once, at start");
    let (kind, reason) = route_kind(&gw).await;
    assert_eq!(kind, "vllm");
    assert!(reason.contains("owned_by \"vllm\""), "{reason}");

    let answer = gw.chat(&chat_body("tokens please")).answer().await;
    assert_eq!(answer.status, 200);
    let upstream = mock.state.received().pop().unwrap().json().unwrap();
    assert_eq!(upstream["logprobs"], true);
    assert_eq!(upstream["return_token_ids"], true);
    gw.flush().await;
    let log = gw.stop().await;
    let record = records_in(&dir.path().join("traces.db")).remove(0);
    assert!(!record.prompt_token_ids.is_empty(), "prompt ids recorded");
    assert!(
        !record.completion_token_ids.is_empty(),
        "answer ids recorded"
    );
    assert!(record.logprobs.is_some_and(|l| !l.is_empty()));
    let line = log.lines().find(|l| l.contains("route default →")).unwrap();
    assert!(line.contains(&mock.base_url()), "{line}");
    assert!(
        line.contains("kind vllm (auto: GET /v1/models says owned_by \"vllm\")"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_in_front_of_another_server_sends_the_body_byte_for_byte() {
    let mock = mock(false).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), &mock.base_url(), &[]);
    assert_eq!(mock.state.probes(), 1);
    assert_eq!(route_kind(&gw).await.0, "generic");
    assert_eq!(sent_upstream(&gw, &mock).await, HANDWRITTEN.as_bytes());
    let log = gw.stop().await;
    assert!(
        log.contains("kind generic (auto: GET /v1/models says owned_by \"tracegate\")"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_down_at_start_is_generic_and_the_log_says_why() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), &format!("http://127.0.0.1:{port}/v1"), &[]);
    // The vLLM comes up after the gateway: the decision made at start stays.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let vllm = mock_upstream::start(
        listener,
        MockOptions {
            vllm: true,
            ..MockOptions::default()
        },
    )
    .unwrap();
    let (kind, reason) = route_kind(&gw).await;
    assert_eq!(kind, "generic");
    assert!(reason.contains("probe failed"), "{reason}");
    assert_eq!(sent_upstream(&gw, &vllm).await, HANDWRITTEN.as_bytes());
    let log = gw.stop().await;
    let line = log.lines().find(|l| l.contains("route default →")).unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("kind generic (auto: probe failed"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_kind_is_not_probed() {
    let vllm = mock(true).await;
    let dir = tempfile::tempdir().unwrap();
    let generic = gateway(dir.path(), &vllm.base_url(), &["--kind", "generic"]);
    assert_eq!(
        route_kind(&generic).await,
        ("generic".into(), "configured".into())
    );
    assert_eq!(sent_upstream(&generic, &vllm).await, HANDWRITTEN.as_bytes());
    generic.stop().await;
    assert_eq!(vllm.state.probes(), 0);

    let other = mock(false).await;
    let dir = tempfile::tempdir().unwrap();
    let forced = gateway(dir.path(), &other.base_url(), &["--kind", "vllm"]);
    assert_eq!(route_kind(&forced).await.0, "vllm");
    let body: Value = serde_json::from_slice(&sent_upstream(&forced, &other).await).unwrap();
    assert_eq!(body["logprobs"], true);
    assert_eq!(other.state.probes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_routes_and_the_zero_configuration_routes_are_never_probed() {
    let vllm = mock(true).await;
    let dir = tempfile::tempdir().unwrap();
    let routes = json!([{"name": "claude", "model_prefix": "*", "upstream": vllm.base_url(),
                         "protocol": "anthropic"}]);
    let gw = Serve::new(dir.path())
        .args(["--db", "traces.db", "--routes", &routes.to_string()])
        .spawn();
    let (kind, reason) = route_kind(&gw).await;
    assert_eq!(kind, "generic");
    assert!(reason.contains("Anthropic-protocol"), "{reason}");
    gw.stop().await;

    // No configuration: OpenAI calls go to $OPENAI_BASE_URL, here a vLLM,
    // and still get nothing added.
    let dir = tempfile::tempdir().unwrap();
    let gw = Serve::new(dir.path())
        .args(["--db", "traces.db"])
        .envs(&[("OPENAI_BASE_URL", &vllm.base_url())])
        .spawn();
    assert_eq!(sent_upstream(&gw, &vllm).await, HANDWRITTEN.as_bytes());
    gw.stop().await;
    assert_eq!(vllm.state.probes(), 0);
}
