//! The first hour of a new user, over the real binary: zero configuration
//! that follows each SDK's protocol, a keyless upstream behind inbound auth,
//! forgiving `--listen` forms and errors that name their source, the start
//! banner and the log lines, and a read-only store that still answers.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::Serve;
use common::{Gateway, chat_body, records_in, start_mock};
use serde_json::json;

/// An Anthropic Messages body.
fn messages_body(content: &str) -> serde_json::Value {
    json!({"model": "claude-test", "max_tokens": 16,
           "messages": [{"role": "user", "content": content}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_routes_each_protocol_goes_to_its_own_sdk_variable() {
    let openai = start_mock().await;
    let anthropic = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let anthropic_url = format!("http://{}", anthropic.addr);
    let gw = Serve::new(dir.path())
        .args(["--db", "traces.db"])
        .envs(&[
            ("OPENAI_BASE_URL", &openai.base_url()),
            ("ANTHROPIC_BASE_URL", &anthropic_url),
        ])
        .spawn();
    let chat = gw
        .chat(&chat_body("to openai"))
        .header("authorization", "Bearer sk-caller")
        .answer()
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text());
    let messages = gw
        .post("/v1/messages")
        .header("x-api-key", "sk-ant-caller")
        .header("anthropic-version", "2023-06-01")
        .json(&messages_body("to anthropic"))
        .answer()
        .await;
    assert_eq!(messages.status, 200, "{}", messages.text());

    let to_openai = openai.state.received();
    let to_anthropic = anthropic.state.received();
    assert_eq!(to_openai.len(), 1, "{to_openai:?}");
    assert_eq!(to_openai[0].path, "/v1/chat/completions");
    assert_eq!(
        to_openai[0].header("authorization"),
        Some("Bearer sk-caller")
    );
    assert_eq!(to_anthropic.len(), 1, "{to_anthropic:?}");
    assert_eq!(to_anthropic[0].path, "/v1/messages");
    assert_eq!(to_anthropic[0].header("x-api-key"), Some("sk-ant-caller"));
    gw.flush().await;
    let records = records_in(&dir.path().join("traces.db"));
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.route.as_deref() == Some("default")));
    assert_eq!(records[1].upstream, anthropic_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_upstream_behind_bearer_auth_starts_with_one_setting() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--upstream-auth", "none"],
        vec![], // the same, from the environment
    ] {
        let gw = Serve::new(dir.path())
            .upstream(&mock.base_url())
            .args(["--db", "traces.db", "--auth-tokens", "gateway-token"])
            .args(&args)
            .envs(&[("TRACEGATE_UPSTREAM_AUTH", "none")])
            .spawn();
        let refused = gw.chat(&chat_body("no token")).answer().await;
        assert_eq!(refused.status, 401);
        let answer = gw
            .chat(&chat_body("keyless"))
            .header("authorization", "Bearer gateway-token")
            .header("x-api-key", "sk-caller-key")
            .header("api-key", "sk-caller-key")
            .answer()
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        drop(gw);
    }
    let received = mock.state.received();
    assert_eq!(received.len(), 2);
    for request in received {
        for name in ["authorization", "x-api-key", "api-key"] {
            assert_eq!(request.header(name), None, "{name} went upstream");
        }
        assert!(
            !request.headers.iter().any(|(_, v)| v.contains("gateway-token")
                || v.contains("sk-caller-key")),
            "{:?}",
            request.headers
        );
    }
}
