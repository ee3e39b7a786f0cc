//! Header security over the real binary: per-route upstream auth (and
//! failing closed), route headers from the environment, inbound auth, and a
//! scan proving no credential is stored, exported or logged.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::otlp::{Receiver, Transport};
use common::process::{Running, Serve, refused_serve};
use common::{Gateway, chat_body, records_in, start_mock};
use serde_json::{Value, json};
use std::path::Path;
use tempfile::TempDir;
use tracegate::mock_upstream::MockServer;

/// The mock, and a gateway process in front of it recording into
/// `traces.db` in a directory of its own.
struct Guarded {
    mock: MockServer,
    gateway: Running,
    dir: TempDir,
}

impl Guarded {
    /// With the routes `routes` gives for the mock, and extra environment
    /// and arguments.
    async fn start(
        routes: impl FnOnce(&MockServer) -> Value,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Guarded {
        let mock = start_mock().await;
        let dir = tempfile::tempdir().unwrap();
        let gateway = Serve::new(dir.path())
            .args(["--db", "traces.db"])
            .args(args)
            .envs(&[("TRACEGATE_ROUTES", &routes(&mock).to_string())])
            .envs(env)
            .spawn();
        Guarded { mock, gateway, dir }
    }

    /// With one catch-all route to the mock, with `extra`'s settings.
    async fn one_route(extra: Value, env: &[(&str, &str)]) -> Guarded {
        Self::start(
            |mock| {
                let mut route =
                    json!({"name": "r", "model_prefix": "*", "upstream": mock.base_url()});
                route
                    .as_object_mut()
                    .unwrap()
                    .extend(extra.as_object().unwrap().clone());
                json!([route])
            },
            env,
            &[],
        )
        .await
    }
}

impl Gateway for Guarded {
    fn at(&self, path: &str) -> String {
        self.gateway.at(path)
    }
}

/// The records in `dir/traces.db`, as the JSON they are stored as.
fn records(dir: &Path) -> Vec<Value> {
    records_in(&dir.join("traces.db"))
        .into_iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_route_key_fails_closed_without_contacting_the_upstream() {
    let gw = Guarded::one_route(json!({"auth": "env:TRACEGATE_TEST_UNSET_KEY"}), &[]).await;
    let r = gw
        .chat(&chat_body("hi"))
        .headers(&[("authorization", "Bearer caller")])
        .send()
        .await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_credentials_unavailable");
    assert!(
        !body.to_string().contains("TRACEGATE_TEST_UNSET_KEY"),
        "the variable is not named: {body}"
    );
    assert!(
        gw.mock.state.received().is_empty(),
        "the upstream was never contacted"
    );
    gw.gateway.stop().await;
    let recorded = records(gw.dir.path());
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0]["error"]["kind"],
        "upstream_credentials_unavailable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_key_replaces_the_callers_credentials_openai_style() {
    let gw = Guarded::one_route(
        json!({"auth": "env:ROUTE_KEY"}),
        &[("ROUTE_KEY", "sk-route-secret-1")],
    )
    .await;
    gw.chat(&chat_body("hi"))
        .headers(&[
            ("authorization", "Bearer caller-key"),
            ("x-api-key", "caller-x"),
            ("api-key", "caller-azure"),
            ("cookie", "session=caller"),
            ("proxy-authorization", "Basic caller"),
        ])
        .answer()
        .await;
    let received = &gw.mock.state.received()[0];
    assert_eq!(
        received.header("authorization"),
        Some("Bearer sk-route-secret-1")
    );
    assert_eq!(received.header("x-api-key"), None);
    assert_eq!(received.header("api-key"), None);
    assert_eq!(received.header("cookie"), None);
    assert_eq!(received.header("proxy-authorization"), None);
    gw.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_key_goes_as_x_api_key_to_anthropic() {
    let routes = |mock: &MockServer| {
        json!([{"name": "claude", "model_prefix": "claude", "protocol": "anthropic",
            "upstream": format!("http://{}", mock.addr), "auth": "env:ANTHROPIC_KEY"}])
    };
    let gw = Guarded::start(routes, &[("ANTHROPIC_KEY", "sk-ant-secret-2")], &[]).await;
    let r = gw
        .post("/v1/messages")
        .json(&json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .headers(&[("x-api-key", "caller-key"), ("anthropic-version", "2023-06-01")])
        .send()
        .await;
    assert_eq!(r.status(), 200);
    let received = &gw.mock.state.received()[0];
    assert_eq!(received.header("x-api-key"), Some("sk-ant-secret-2"));
    assert_eq!(received.header("authorization"), None);
    assert_eq!(received.header("anthropic-version"), Some("2023-06-01"));
    gw.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_forwards_the_callers_credentials() {
    let gw = Guarded::one_route(json!({"auth": "passthrough"}), &[]).await;
    gw.chat(&chat_body("hi"))
        .headers(&[
            ("authorization", "Bearer caller-key"),
            ("cookie", "session=caller"),
            ("proxy-authorization", "Basic for-the-gateway"),
        ])
        .answer()
        .await;
    let received = &gw.mock.state.received()[0];
    assert_eq!(received.header("authorization"), Some("Bearer caller-key"));
    assert_eq!(received.header("cookie"), Some("session=caller"));
    assert_eq!(
        received.header("proxy-authorization"),
        None,
        "addressed to the gateway, not the provider"
    );
    gw.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_headers_come_from_the_environment_and_fail_closed_without_it() {
    let routes = |mock: &MockServer| {
        json!([
            {"name": "ok", "model_prefix": "ok", "upstream": mock.base_url(), "headers": {"X-Org": "acme", "X-Key": "env:ORG_KEY"}},
            {"name": "missing", "model_prefix": "missing", "upstream": mock.base_url(), "headers": {"X-Key": "env:TRACEGATE_TEST_UNSET_ORG"}},
        ])
    };
    let gw = Guarded::start(routes, &[("ORG_KEY", "org-secret-3")], &[]).await;
    let mut body = chat_body("hi");
    body["model"] = json!("ok-model");
    gw.chat(&body)
        .headers(&[("x-org", "caller-spoof")])
        .answer()
        .await;
    let received = &gw.mock.state.received()[0];
    assert_eq!(received.header("x-org"), Some("acme"));
    assert_eq!(received.header("x-key"), Some("org-secret-3"));
    body["model"] = json!("missing-model");
    let r = gw.chat(&body).send().await;
    assert_eq!(r.status(), 502);
    assert_eq!(
        gw.mock.state.received().len(),
        1,
        "the second call never left"
    );
    gw.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_auth_guards_everything_but_health() {
    let gw = Guarded::one_route(
        json!({"auth": "env:ROUTE_KEY"}),
        &[
            ("ROUTE_KEY", "sk-route-4"),
            ("TRACEGATE_AUTH_TOKENS", "gw-token-a,gw-token-b"),
        ],
    )
    .await;
    let chat = |auth: Option<&str>| {
        let request = gw.chat(&chat_body("hi"));
        match auth {
            Some(a) => request.header("authorization", a),
            None => request,
        }
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
        let r = chat(auth).answer().await;
        assert_eq!(r.status, status, "{auth:?}");
        if status == 401 {
            assert_eq!(r.headers["www-authenticate"], "Bearer");
            assert_eq!(r.json()["error"]["type"], "authentication_error");
        }
    }
    assert_eq!(
        gw.mock.state.received().len(),
        3,
        "refused calls never reached the upstream"
    );
    for received in gw.mock.state.received() {
        assert_eq!(
            received.header("authorization"),
            Some("Bearer sk-route-4"),
            "the gateway token stays home"
        );
    }
    let health = gw.get("/health").answer().await;
    assert_eq!(health.status, 200, "health is exempt");
    assert_eq!(
        health.json()["auth"],
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
        assert_eq!(gw.get(path).send().await.status(), 401, "{path}");
        let ok = gw
            .get(path)
            .header("authorization", "Bearer gw-token-a")
            .send()
            .await;
        assert_eq!(ok.status(), 200, "{path}");
    }
    let flush = gw.post("/admin/flush").send().await;
    assert_eq!(flush.status(), 401);
    gw.gateway.stop().await;
    assert_eq!(
        records(gw.dir.path()).len(),
        3,
        "unauthenticated calls are not recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_auth_header_lets_the_callers_authorization_pass_through() {
    let gw = Guarded::one_route(
        json!({"auth": "passthrough"}),
        &[
            ("TRACEGATE_AUTH_TOKENS", "gw-token-5"),
            ("TRACEGATE_AUTH_HEADER", "x-tracegate-key"),
        ],
    )
    .await;
    let r = gw
        .chat(&chat_body("hi"))
        .headers(&[("authorization", "Bearer gw-token-5")])
        .send()
        .await;
    assert_eq!(r.status(), 401, "the token is expected in its own header");
    let r = gw
        .chat(&chat_body("hi"))
        .headers(&[
            ("x-tracegate-key", "gw-token-5"),
            ("authorization", "Bearer provider-key"),
        ])
        .answer()
        .await;
    assert_eq!(r.status, 200);
    let received = &gw.mock.state.received()[0];
    assert_eq!(
        received.header("authorization"),
        Some("Bearer provider-key")
    );
    assert_eq!(
        received.header("x-tracegate-key"),
        None,
        "the gateway token is never forwarded"
    );
    let health = gw.get_json("/health").await;
    assert_eq!(
        health["auth"],
        json!({"enabled": true, "header": "x-tracegate-key", "scheme": null})
    );
    gw.gateway.stop().await;
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
        let routes = routes.to_string();
        let env: Vec<(&str, &str)> = [("TRACEGATE_ROUTES", routes.as_str())]
            .into_iter()
            .chain(env)
            .collect();
        let stderr = refused_serve(dir.path(), &[], &env);
        assert!(stderr.contains(key), "{stderr} should name {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_store_the_spans_the_logs_or_the_admin_api() {
    let receiver = Receiver::start(Transport::Http).await;
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
    let routes = |mock: &MockServer| {
        json!([
            {"name": "openai", "model_prefix": "gpt", "upstream": mock.base_url(), "auth": "env:ROUTE_KEY",
             "headers": {"X-Org-Key": "env:ORG_KEY"}, "allow_caller_headers": true},
            {"name": "claude", "model_prefix": "claude", "protocol": "anthropic", "upstream": format!("http://{}", mock.addr),
             "auth": "env:ANTHROPIC_KEY"},
            {"name": "open", "model_prefix": "*", "upstream": mock.base_url(), "auth": "passthrough"},
        ])
    };
    let mut env: Vec<(&str, &str)> = secrets.to_vec();
    env.push(("TRACEGATE_AUTH_TOKENS", gateway_token));
    env.push(("TRACEGATE_AUTH_HEADER", "x-tracegate-key"));
    env.push(("RUST_LOG", "debug"));
    let gw = Guarded::start(
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
    )
    .await;
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
        gw.chat(&body).headers(&headers).answer().await;
    }
    gw.post("/v1/messages")
        .json(&json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": leaky}]}))
        .headers(&headers)
        .answer()
        .await;
    let failing: Vec<(&str, &str)> = headers
        .iter()
        .copied()
        .chain([("x-mock-status", "500")])
        .collect();
    gw.chat(&chat_body(leaky)).headers(&failing).answer().await;
    let admin = gw
        .get("/admin/routes")
        .header("x-tracegate-key", gateway_token)
        .answer()
        .await
        .text();
    let spans = receiver.wait_for(5).await;
    let logs = gw.gateway.stop().await;

    let mut haystacks = vec![("admin routes", admin.clone()), ("logs", logs)];
    let db_files = ["traces.db", "traces.db-wal"];
    for f in db_files {
        if let Ok(bytes) = std::fs::read(gw.dir.path().join(f)) {
            haystacks.push((f, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    haystacks.push((
        "records",
        serde_json::to_string(&records(gw.dir.path())).unwrap(),
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
    assert_eq!(records(gw.dir.path()).len(), 5);
    assert!(
        admin.contains("env:ROUTE_KEY"),
        "the admin API names the variable: {admin}"
    );
    // What the upstream got is what it needed: the keys did reach it.
    let got: Vec<String> = gw
        .mock
        .state
        .received()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert!(got.contains(&"Bearer sk-route-SECRET-0001".to_string()));
}
