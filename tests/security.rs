//! Header security over the real binary: per-route upstream auth (and
//! failing closed), route headers from the environment, inbound auth, and a
//! scan proving no credential is stored, exported or logged.

mod common;

use common::otlp::{Receiver, Transport};
use common::process::{Running, free_port, tracegate};
use common::{chat_body, start_mock};
use serde_json::{Value, json};
use std::path::Path;
use tracegate::mock_upstream::MockServer;

/// A gateway process with `routes` and extra environment and arguments.
fn gateway(dir: &Path, routes: Value, env: &[(&str, &str)], args: &[&str]) -> Running {
    let port = free_port();
    let mut cmd = tracegate(dir);
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--db",
        "traces.db",
    ])
    .args(args)
    .env("TRACEGATE_ROUTES", routes.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running::spawn(cmd, port)
}

async fn post(url: String, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(url).json(&body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

fn records(dir: &Path) -> Vec<Value> {
    let store = tracegate::store::Reader::open(&dir.join("traces.db")).unwrap();
    store
        .traces(&Default::default())
        .unwrap()
        .into_iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

async fn stop(gw: Running) -> String {
    gw.terminate();
    tokio::task::spawn_blocking(move || gw.wait_output())
        .await
        .unwrap()
}

fn one_route(mock: &MockServer, extra: Value) -> Value {
    let mut route = json!({"name": "r", "model_prefix": "*", "upstream": mock.base_url()});
    route
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!([route])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_route_key_fails_closed_without_contacting_the_upstream() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        dir.path(),
        one_route(&mock, json!({"auth": "env:TRACEGATE_TEST_UNSET_KEY"})),
        &[],
        &[],
    );
    let r = post(
        gw.url("/v1/chat/completions"),
        chat_body("hi"),
        &[("authorization", "Bearer caller")],
    )
    .await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_credentials_unavailable");
    assert!(
        !body.to_string().contains("TRACEGATE_TEST_UNSET_KEY"),
        "the variable is not named: {body}"
    );
    assert!(
        mock.state.received().is_empty(),
        "the upstream was never contacted"
    );
    stop(gw).await;
    let recorded = records(dir.path());
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0]["error"]["kind"],
        "upstream_credentials_unavailable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_key_replaces_the_callers_credentials_openai_style() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        dir.path(),
        one_route(&mock, json!({"auth": "env:ROUTE_KEY"})),
        &[("ROUTE_KEY", "sk-route-secret-1")],
        &[],
    );
    post(
        gw.url("/v1/chat/completions"),
        chat_body("hi"),
        &[
            ("authorization", "Bearer caller-key"),
            ("x-api-key", "caller-x"),
            ("api-key", "caller-azure"),
            ("cookie", "session=caller"),
            ("proxy-authorization", "Basic caller"),
        ],
    )
    .await
    .bytes()
    .await
    .unwrap();
    let received = &mock.state.received()[0];
    assert_eq!(
        received.header("authorization"),
        Some("Bearer sk-route-secret-1")
    );
    assert_eq!(received.header("x-api-key"), None);
    assert_eq!(received.header("api-key"), None);
    assert_eq!(received.header("cookie"), None);
    assert_eq!(received.header("proxy-authorization"), None);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_key_goes_as_x_api_key_to_anthropic() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let routes = json!([{"name": "claude", "model_prefix": "claude", "protocol": "anthropic",
        "upstream": format!("http://{}", mock.addr), "auth": "env:ANTHROPIC_KEY"}]);
    let gw = gateway(
        dir.path(),
        routes,
        &[("ANTHROPIC_KEY", "sk-ant-secret-2")],
        &[],
    );
    let r = post(
        gw.url("/v1/messages"),
        json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        &[("x-api-key", "caller-key"), ("anthropic-version", "2023-06-01")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let received = &mock.state.received()[0];
    assert_eq!(received.header("x-api-key"), Some("sk-ant-secret-2"));
    assert_eq!(received.header("authorization"), None);
    assert_eq!(received.header("anthropic-version"), Some("2023-06-01"));
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_forwards_the_callers_credentials() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        dir.path(),
        one_route(&mock, json!({"auth": "passthrough"})),
        &[],
        &[],
    );
    post(
        gw.url("/v1/chat/completions"),
        chat_body("hi"),
        &[
            ("authorization", "Bearer caller-key"),
            ("cookie", "session=caller"),
            ("proxy-authorization", "Basic for-the-gateway"),
        ],
    )
    .await
    .bytes()
    .await
    .unwrap();
    let received = &mock.state.received()[0];
    assert_eq!(received.header("authorization"), Some("Bearer caller-key"));
    assert_eq!(received.header("cookie"), Some("session=caller"));
    assert_eq!(
        received.header("proxy-authorization"),
        None,
        "addressed to the gateway, not the provider"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_headers_come_from_the_environment_and_fail_closed_without_it() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let routes = json!([
        {"name": "ok", "model_prefix": "ok", "upstream": mock.base_url(), "headers": {"X-Org": "acme", "X-Key": "env:ORG_KEY"}},
        {"name": "missing", "model_prefix": "missing", "upstream": mock.base_url(), "headers": {"X-Key": "env:TRACEGATE_TEST_UNSET_ORG"}},
    ]);
    let gw = gateway(dir.path(), routes, &[("ORG_KEY", "org-secret-3")], &[]);
    let mut body = chat_body("hi");
    body["model"] = json!("ok-model");
    post(
        gw.url("/v1/chat/completions"),
        body.clone(),
        &[("x-org", "caller-spoof")],
    )
    .await
    .bytes()
    .await
    .unwrap();
    let received = &mock.state.received()[0];
    assert_eq!(received.header("x-org"), Some("acme"));
    assert_eq!(received.header("x-key"), Some("org-secret-3"));
    body["model"] = json!("missing-model");
    let r = post(gw.url("/v1/chat/completions"), body, &[]).await;
    assert_eq!(r.status(), 502);
    assert_eq!(mock.state.received().len(), 1, "the second call never left");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_auth_guards_everything_but_health() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        dir.path(),
        one_route(&mock, json!({"auth": "env:ROUTE_KEY"})),
        &[
            ("ROUTE_KEY", "sk-route-4"),
            ("TRACEGATE_AUTH_TOKENS", "gw-token-a,gw-token-b"),
        ],
        &[],
    );
    let client = reqwest::Client::new();
    let chat = |auth: Option<&str>| {
        let mut r = client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("hi"));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    for (auth, status) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some("Basic gw-token-a"), 401),
        (Some("gw-token-a"), 401),
        (Some("Bearer gw-token-a"), 200),
        (Some("bearer gw-token-b"), 200),
        (Some("BEARER gw-token-a"), 200),
    ] {
        let r = chat(auth).await.unwrap();
        assert_eq!(r.status(), status, "{auth:?}");
        if status == 401 {
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["type"], "authentication_error");
        } else {
            r.bytes().await.unwrap();
        }
    }
    assert_eq!(
        mock.state.received().len(),
        3,
        "refused calls never reached the upstream"
    );
    for received in mock.state.received() {
        assert_eq!(
            received.header("authorization"),
            Some("Bearer sk-route-4"),
            "the gateway token stays home"
        );
    }
    let health = client.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "health is exempt");
    let health: Value = health.json().await.unwrap();
    assert_eq!(
        health["auth"],
        json!({"enabled": true, "header": "authorization", "scheme": "Bearer"}),
        "health tells clients how to present a token, never the token"
    );
    for path in [
        "/sessions",
        "/runs",
        "/admin/workers",
        "/admin/routes",
        "/health/workers",
        "/ui/api/runs",
        "/metrics",
    ] {
        assert_eq!(
            client.get(gw.url(path)).send().await.unwrap().status(),
            401,
            "{path}"
        );
        let ok = client
            .get(gw.url(path))
            .bearer_auth("gw-token-a")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{path}");
    }
    let flush = client.post(gw.url("/admin/flush")).send().await.unwrap();
    assert_eq!(flush.status(), 401);
    stop(gw).await;
    assert_eq!(
        records(dir.path()).len(),
        3,
        "unauthenticated calls are not recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_auth_header_lets_the_callers_authorization_pass_through() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        dir.path(),
        one_route(&mock, json!({"auth": "passthrough"})),
        &[
            ("TRACEGATE_AUTH_TOKENS", "gw-token-5"),
            ("TRACEGATE_AUTH_HEADER", "x-tracegate-key"),
        ],
        &[],
    );
    let r = post(
        gw.url("/v1/chat/completions"),
        chat_body("hi"),
        &[("authorization", "Bearer gw-token-5")],
    )
    .await;
    assert_eq!(r.status(), 401, "the token is expected in its own header");
    let r = post(
        gw.url("/v1/chat/completions"),
        chat_body("hi"),
        &[
            ("x-tracegate-key", "gw-token-5"),
            ("authorization", "Bearer provider-key"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let received = &mock.state.received()[0];
    assert_eq!(
        received.header("authorization"),
        Some("Bearer provider-key")
    );
    assert_eq!(
        received.header("x-tracegate-key"),
        None,
        "the gateway token is never forwarded"
    );
    let health: Value = reqwest::get(gw.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        health["auth"],
        json!({"enabled": true, "header": "x-tracegate-key", "scheme": null})
    );
    stop(gw).await;
}

#[test]
fn risky_configurations_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            json!([{"name": "open", "model_prefix": "*", "upstream": "http://h/v1"}]),
            vec![("TRACEGATE_AUTH_TOKENS", "t")],
            "routes (open): auth",
        ),
        (
            json!([{"name": "r", "model_prefix": "*", "upstream": "http://h/v1", "headers": {"Authorization": "Bearer x"}}]),
            vec![],
            "routes[0] (r): headers.Authorization",
        ),
        (
            json!([{"name": "r", "model_prefix": "*", "upstream": "http://h/v1", "headers": {"x-api-key": "env:K"}}]),
            vec![],
            "routes[0] (r): headers.x-api-key",
        ),
        (
            json!([{"name": "r", "upstream": "http://h/v1"}]),
            vec![],
            "routes[0] (r): model_prefix",
        ),
    ];
    for (routes, env, key) in cases {
        let mut cmd = tracegate(dir.path());
        cmd.arg("serve").env("TRACEGATE_ROUTES", routes.to_string());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(key), "{stderr} should name {key}");
        assert_eq!(stderr.trim().lines().count(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_store_the_spans_the_logs_or_the_admin_api() {
    let mock = start_mock().await;
    let receiver = Receiver::start(Transport::Http).await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = [
        ("ROUTE_KEY", "sk-route-SECRET-0001"),
        ("ANTHROPIC_KEY", "sk-ant-SECRET-0002"),
        ("ORG_KEY", "org-SECRET-0003"),
    ];
    let caller = [
        ("authorization", "Bearer caller-SECRET-0004"),
        ("x-api-key", "caller-SECRET-0005"),
        ("api-key", "caller-SECRET-0006"),
        ("cookie", "session=caller-SECRET-0007"),
        ("proxy-authorization", "Basic caller-SECRET-0008"),
    ];
    let gateway_token = "gw-SECRET-0009";
    let routes = json!([
        {"name": "openai", "model_prefix": "gpt", "upstream": mock.base_url(), "auth": "env:ROUTE_KEY",
         "headers": {"X-Org-Key": "env:ORG_KEY"}, "allow_caller_headers": true},
        {"name": "claude", "model_prefix": "claude", "protocol": "anthropic", "upstream": format!("http://{}", mock.addr),
         "auth": "env:ANTHROPIC_KEY"},
        {"name": "open", "model_prefix": "*", "upstream": mock.base_url(), "auth": "passthrough"},
    ]);
    let mut env: Vec<(&str, &str)> = secrets.to_vec();
    env.push(("TRACEGATE_AUTH_TOKENS", gateway_token));
    env.push(("TRACEGATE_AUTH_HEADER", "x-tracegate-key"));
    env.push(("RUST_LOG", "debug"));
    let gw = gateway(
        dir.path(),
        routes,
        &env,
        &[
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "http/protobuf",
            "--export-include-content",
            "true",
        ],
    );
    let mut headers: Vec<(&str, &str)> = caller.to_vec();
    headers.push(("x-tracegate-key", gateway_token));
    let provider_data =
        json!({"openai_extra_headers": {"X-Sub": "caller-SECRET-0010"}}).to_string();
    headers.push(("x-tracegate-provider-data", &provider_data));
    // A caller pasting the route key into a prompt, and every route, streamed or not.
    let leaky = "please use sk-route-SECRET-0001 for this";
    for (model, stream) in [("gpt-4o", false), ("gpt-4o", true), ("local", false)] {
        let mut body = chat_body(leaky);
        body["model"] = json!(model);
        body["stream"] = json!(stream);
        post(gw.url("/v1/chat/completions"), body, &headers)
            .await
            .bytes()
            .await
            .unwrap();
    }
    post(
        gw.url("/v1/messages"),
        json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": leaky}]}),
        &headers,
    )
    .await
    .bytes()
    .await
    .unwrap();
    let failing: Vec<(&str, &str)> = headers
        .iter()
        .copied()
        .chain([("x-mock-status", "500")])
        .collect();
    post(gw.url("/v1/chat/completions"), chat_body(leaky), &failing)
        .await
        .bytes()
        .await
        .unwrap();
    let admin = reqwest::Client::new()
        .get(gw.url("/admin/routes"))
        .header("x-tracegate-key", gateway_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spans = receiver.wait_for(5).await;
    let logs = stop(gw).await;

    let mut haystacks = vec![("admin routes", admin.clone()), ("logs", logs)];
    let db_files = ["traces.db", "traces.db-wal"];
    for f in db_files {
        if let Ok(bytes) = std::fs::read(dir.path().join(f)) {
            haystacks.push((f, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    haystacks.push((
        "records",
        serde_json::to_string(&records(dir.path())).unwrap(),
    ));
    haystacks.push((
        "spans",
        format!("{:?}", spans.iter().map(|s| &s.span).collect::<Vec<_>>()),
    ));
    let all_secrets: Vec<&str> = secrets
        .iter()
        .map(|(_, v)| *v)
        .chain(
            caller
                .iter()
                .map(|(_, v)| v.split(' ').next_back().unwrap_or(v)),
        )
        .chain([gateway_token, "caller-SECRET-0010"])
        .collect();
    for (name, text) in &haystacks {
        for secret in &all_secrets {
            let bare = secret.trim_start_matches("session=");
            assert!(!text.contains(bare), "{bare} leaked into {name}");
        }
    }
    assert_eq!(records(dir.path()).len(), 5);
    assert!(
        admin.contains("env:ROUTE_KEY"),
        "the admin API names the variable: {admin}"
    );
    // What the upstream got is what it needed: the keys did reach it.
    let got: Vec<String> = mock
        .state
        .received()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert!(got.contains(&"Bearer sk-route-SECRET-0001".to_string()));
}
