//! Routing by model, worker pools, and what reaches each upstream.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Gateway, Setup, TestGateway, all_at_once, chat_body, start_mock, until};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tracegate::config::ServeArgs;
use tracegate::mock_upstream::MockServer;
use tracegate::route::rendezvous;

fn routes(json: Value) -> ServeArgs {
    ServeArgs {
        routes: Some(json.to_string()),
        ..ServeArgs::default()
    }
}

/// A chat call for `model`, with these headers.
async fn chat(gw: &TestGateway, model: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut body = chat_body("route me");
    body["model"] = json!(model);
    gw.chat(&body).headers(headers).send().await
}

/// The first session id `s0`, `s1`, ... that rendezvous hashing over
/// `workers` (equal weights) places on `worker`.
fn session_placed_on(worker: &str, workers: &[&str]) -> String {
    (0..)
        .map(|i| format!("s{i}"))
        .find(|s| rendezvous::choose(s, workers, |w| w, |_| 1) == Some(&worker))
        .unwrap()
}

/// How many requests each mock received.
fn counts(mocks: &[&MockServer]) -> Vec<usize> {
    mocks.iter().map(|m| m.state.received().len()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_matching_prefix_wins_case_insensitively_with_a_catch_all() {
    let (mini, gpt, rest) = (start_mock().await, start_mock().await, start_mock().await);
    let gw = TestGateway::start_with(routes(json!([
        {"name": "mini", "model_prefix": "gpt-4o-mini", "upstream": mini.base_url()},
        {"name": "gpt", "model_prefix": "GPT-", "upstream": gpt.base_url()},
        {"name": "rest", "model_prefix": "*", "upstream": rest.base_url()},
    ])))
    .await;
    let table = [
        ("gpt-4o-mini", "mini"),
        ("GPT-4O-MINI-2024-07-18", "mini"),
        ("gpt-4o", "gpt"),
        ("Gpt-5", "gpt"),
        ("claude-sonnet", "rest"),
        ("llama", "rest"),
    ];
    for (model, route) in table {
        let r = chat(&gw, model, &[]).await;
        assert_eq!(r.status(), 200, "{model}");
        r.bytes().await.unwrap();
        let record = gw.records().await.pop().unwrap();
        assert_eq!(record.route.as_deref(), Some(route), "{model}");
    }
    assert_eq!(counts(&[&mini, &gpt, &rest]), [2, 2, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_match_and_no_default_is_a_404_naming_the_model() {
    let gw = Setup::with_route(json!({"name": "gpt", "model_prefix": "gpt-"})).await;
    let r = chat(&gw, "llama-3", &[]).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("llama-3")
    );
    let models = gw.get("/v1/models").send().await;
    assert_eq!(models.status(), 404, "no model and no default route");
    assert!(gw.received().is_empty());
    assert_eq!(gw.records().await.len(), 2, "refused calls are recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_match_go_to_the_default_route() {
    let (gpt, fallback) = (start_mock().await, start_mock().await);
    let gw = TestGateway::start_with(routes(json!([
        {"name": "gpt", "model_prefix": "gpt-", "upstream": gpt.base_url()},
        {"name": "fallback", "model_prefix": "local-", "upstream": fallback.base_url(), "default": true},
    ])))
    .await;
    chat(&gw, "mistral", &[]).await.bytes().await.unwrap();
    gw.get("/v1/models").answer().await;
    assert_eq!(counts(&[&gpt, &fallback]), [0, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_model_renames_upstream_and_the_record_keeps_both() {
    let gw = Setup::with_route(
        json!({"name": "policy", "model_prefix": "policy", "backend_model": "Qwen/Qwen3-8B"}),
    )
    .await;
    let answer: Value = chat(&gw, "policy-v1", &[]).await.json().await.unwrap();
    assert_eq!(
        answer["model"], "Qwen/Qwen3-8B",
        "the upstream answered as the backend model"
    );
    assert_eq!(gw.received()[0].json().unwrap()["model"], "Qwen/Qwen3-8B");
    let r = gw.only_record().await;
    assert_eq!(r.model.as_deref(), Some("policy-v1"));
    assert_eq!(r.backend_model.as_deref(), Some("Qwen/Qwen3-8B"));
    assert_eq!(r.route.as_deref(), Some("policy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateway_serves_a_vllm_pool_openai_and_anthropic() {
    let (vllm_a, vllm_b, openai, anthropic) = (
        start_mock().await,
        start_mock().await,
        start_mock().await,
        start_mock().await,
    );
    let gw = TestGateway::start_with(routes(json!([
        {"name": "policy", "model_prefix": "qwen", "kind": "vllm",
         "workers": [vllm_a.base_url(), {"url": vllm_b.base_url(), "weight": 2}]},
        {"name": "judge", "model_prefix": "gpt-", "kind": "openai", "upstream": openai.base_url()},
        {"name": "claude", "model_prefix": "claude-", "kind": "anthropic", "upstream": format!("http://{}", anthropic.addr)},
    ])))
    .await;
    for session in ["s1", "s2"] {
        let r = chat(&gw, "Qwen3-8B", &[("x-rllm-session-id", session)]).await;
        let answer: Value = r.json().await.unwrap();
        assert!(
            answer["choices"][0].get("token_ids").is_none(),
            "vLLM fields are stripped for the client"
        );
    }
    chat(&gw, "gpt-4o", &[]).await.bytes().await.unwrap();
    let r = gw
        .post("/v1/messages")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}))
        .answer()
        .await;
    assert_eq!(r.status, 200);
    let records = gw.records().await;
    let by_route: BTreeMap<String, usize> = records.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.route.clone().unwrap()).or_default() += 1;
        m
    });
    assert_eq!(
        by_route,
        BTreeMap::from([
            ("claude".into(), 1),
            ("judge".into(), 1),
            ("policy".into(), 2)
        ])
    );
    let policy: Vec<_> = records
        .iter()
        .filter(|r| r.route.as_deref() == Some("policy"))
        .collect();
    assert!(
        policy.iter().all(|r| !r.completion_token_ids.is_empty()),
        "the vLLM route records token ids"
    );
    let vllm_requests: Vec<Value> = [&vllm_a, &vllm_b]
        .iter()
        .flat_map(|m| m.state.received())
        .filter_map(|r| r.json())
        .collect();
    assert_eq!(vllm_requests.len(), 2, "the pool shares the sessions");
    assert!(
        vllm_requests
            .iter()
            .all(|b| b["logprobs"] == true && b["return_token_ids"] == true)
    );
    let judge = openai.state.received()[0].json().unwrap();
    assert!(
        judge.get("logprobs").is_none(),
        "nothing is injected for OpenAI"
    );
    assert_eq!(anthropic.state.received()[0].path, "/v1/messages");
    assert_eq!(
        records
            .iter()
            .find(|r| r.route.as_deref() == Some("claude"))
            .unwrap()
            .protocol,
        "anthropic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stick_to_a_worker_and_fail_over_when_it_dies() {
    let a = start_mock().await;
    let b = start_mock().await;
    let gw = TestGateway::start_with(routes(json!([
        {"name": "pool", "model_prefix": "*", "workers": [
            {"url": a.base_url(), "worker_id": "a"}, {"url": b.base_url(), "worker_id": "b"}]},
    ])))
    .await;
    // Two sessions that rendezvous hashing places on different workers,
    // each staying on its own (in an irregular order, so that plain
    // alternation would not pass).
    let (one, two) = (
        session_placed_on("a", &["a", "b"]),
        session_placed_on("b", &["a", "b"]),
    );
    for session in [&one, &one, &two, &one, &two, &two] {
        chat(&gw, "m", &[("x-rllm-session-id", session)])
            .await
            .bytes()
            .await
            .unwrap();
    }
    assert_eq!(counts(&[&a, &b]), [3, 3], "each session kept its worker");
    let records = gw.records().await;
    for session in [&one, &two] {
        let upstreams: std::collections::BTreeSet<String> = records
            .iter()
            .filter(|r| r.identity.session_id.as_deref() == Some(session.as_str()))
            .map(|r| r.upstream.clone())
            .collect();
        assert_eq!(upstreams.len(), 1, "session {session} stayed on one worker");
    }
    // Worker a dies mid-run: its session moves to b, without a failed call.
    let on_a = records
        .iter()
        .find(|r| r.upstream.contains(&a.addr.port().to_string()))
        .unwrap()
        .identity
        .session_id
        .clone()
        .unwrap();
    a.stop();
    for _ in 0..3 {
        let r = chat(&gw, "m", &[("x-rllm-session-id", &on_a)]).await;
        assert_eq!(
            r.status(),
            200,
            "the connect failure was retried on the other worker"
        );
        r.bytes().await.unwrap();
    }
    assert_eq!(b.state.received().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_the_same_pool_send_each_session_to_the_same_worker() {
    let mocks = [start_mock().await, start_mock().await, start_mock().await];
    let pool = json!([{"name": "pool", "model_prefix": "*", "workers": mocks
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"url": m.base_url(), "worker_id": format!("w{i}")}))
        .collect::<Vec<_>>()}]);
    let replicas = [
        TestGateway::start_with(routes(pool.clone())).await,
        TestGateway::start_with(routes(pool)).await,
    ];
    // Calls without a session first, to make the replicas' loads differ.
    for _ in 0..4 {
        chat(&replicas[0], "m", &[]).await.bytes().await.unwrap();
    }
    let sessions: Vec<String> = (0..12).map(|i| format!("episode-{i}")).collect();
    for (i, session) in sessions.iter().enumerate() {
        for turn in 0..2 {
            let replica = &replicas[(i + turn) % 2];
            let sid = [("x-rllm-session-id", session.as_str())];
            chat(replica, "m", &sid).await.bytes().await.unwrap();
        }
    }
    let mut workers_used = std::collections::BTreeSet::new();
    for session in &sessions {
        let mut upstreams = std::collections::BTreeSet::new();
        for replica in &replicas {
            for record in replica.records().await {
                if record.identity.session_id.as_deref() == Some(session) {
                    upstreams.insert(record.upstream.clone());
                }
            }
        }
        assert_eq!(upstreams.len(), 1, "{session} went to {upstreams:?}");
        workers_used.extend(upstreams);
    }
    assert_eq!(workers_used.len(), 3, "the sessions spread over the pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_mark_workers_down_and_up() {
    let a = start_mock().await;
    let mut b = Some(start_mock().await);
    let b_addr = b.as_ref().unwrap().addr;
    let gw = TestGateway::start_with(ServeArgs {
        health_check_interval: Some("100ms".into()),
        ..routes(json!([
            {"name": "pool", "model_prefix": "*", "workers": [
                {"url": a.base_url(), "worker_id": "a"}, {"url": format!("http://{b_addr}/v1"), "worker_id": "b"}]},
        ]))
    })
    .await;
    let health = async || gw.get_json("/health/workers").await;
    assert_eq!(health().await["healthy"], 2);
    b.take().unwrap().stop();
    until("b marked down", async || health().await["healthy"] == 1).await;
    let workers = health().await["workers"].clone();
    assert_eq!(workers[1]["worker_id"], "b");
    assert_eq!(workers[1]["healthy"], false);
    // New calls avoid the down worker.
    for i in 0..4 {
        let r = chat(&gw, "m", &[("x-rllm-session-id", &format!("s{i}"))]).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_eq!(
        a.state
            .received()
            .iter()
            .filter(|r| r.path == "/v1/chat/completions")
            .count(),
        4
    );
    // b comes back on the same port and is marked up again.
    let listener = tokio::net::TcpListener::bind(b_addr).await.unwrap();
    let _b = tracegate::mock_upstream::start(listener, Default::default()).unwrap();
    until("b marked up", async || health().await["healthy"] == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_managed_at_run_time_like_rllm_model_gateway() {
    let a = start_mock().await;
    let b = start_mock().await;
    let gw = TestGateway::start(&a.base_url()).await;
    let added = gw
        .post("/admin/workers")
        .json(&json!({"url": format!("http://{}", b.addr), "api_path": "/v1", "weight": 3, "worker_id": "extra"}))
        .answer()
        .await
        .json();
    assert_eq!(
        added,
        json!({"worker_id": "extra", "url": format!("http://{}", b.addr), "api_path": "/v1"})
    );
    let list = gw.get_json("/admin/workers").await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[1]["weight"], 3);
    assert_eq!(list[1]["healthy"], true);
    let removed = gw.delete("/admin/workers/extra").answer().await;
    assert_eq!(removed.json(), json!({"removed": "extra"}));
    let again = gw.delete("/admin/workers/extra").send().await;
    assert_eq!(again.status(), 404);
    let no_url = gw
        .post("/admin/workers")
        .json(&json!({"weight": 1}))
        .send()
        .await;
    assert_eq!(no_url.status(), 400, "url is required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_blocked_header_in_provider_data_is_dropped() {
    let gw = Setup::with_route(json!({"name": "maas", "model_prefix": "*", "allow_caller_headers": true, "headers": {"X-Org": "acme"}})).await;
    let blocked = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "cookie",
        "set-cookie",
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "cf-connecting-ip",
        "true-client-ip",
        "x-rllm-session-id",
        "traceparent",
        "x-tracegate-anything",
    ];
    let mut extras = serde_json::Map::new();
    for name in blocked {
        extras.insert(name.to_string(), json!("smuggled"));
    }
    extras.insert("X-MAAS-Subscription".into(), json!("free-tier"));
    extras.insert("X-Org".into(), json!("spoofed"));
    let data = json!({"maas_extra_headers": extras}).to_string();
    let r = chat(
        &gw,
        "m",
        &[
            ("x-tracegate-provider-data", &data),
            ("authorization", "Bearer caller-key"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let received = &gw.received()[0];
    for (name, value) in &received.headers {
        assert_ne!(value, "smuggled", "{name} was smuggled through");
    }
    assert_eq!(received.header("x-maas-subscription"), Some("free-tier"));
    assert_eq!(
        received.header("x-org"),
        Some("acme"),
        "the route's own header wins"
    );
    assert_eq!(
        received.header("authorization"),
        Some("Bearer caller-key"),
        "the caller's real credential is intact"
    );
    assert_eq!(received.header("content-type"), Some("application/json"));
    assert!(
        received.header("x-tracegate-provider-data").is_none(),
        "never forwarded"
    );
    let r = gw.only_record().await;
    assert_eq!(
        r.request_headers["x-tracegate-provider-data"], "[REDACTED]",
        "never stored with its values"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_data_is_ignored_for_routes_that_do_not_opt_in() {
    let gw = Setup::with_route(json!({"name": "closed", "model_prefix": "*"})).await;
    let data = json!({"closed_extra_headers": {"X-Extra": "1"}}).to_string();
    chat(&gw, "m", &[("x-tracegate-provider-data", &data)])
        .await
        .bytes()
        .await
        .unwrap();
    let received = &gw.received()[0];
    assert!(received.header("x-extra").is_none());
    assert!(received.header("x-tracegate-provider-data").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_provider_data_is_a_400_and_recorded() {
    let gw = Setup::with_route(
        json!({"name": "maas", "model_prefix": "*", "allow_caller_headers": true}),
    )
    .await;
    let cases = [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (
            r#"{"maas_extra_headers": ["x"]}"#,
            "maas_extra_headers must be a JSON object",
        ),
        (
            r#"{"maas_extra_headers": {"bad name": "v"}}"#,
            "'bad name' is not a valid header name",
        ),
        (
            r#"{"maas_extra_headers": {"x-ok": "line\nbreak"}}"#,
            "not a valid header value",
        ),
        (r#"{"maas_extra_headers": {"x-ok": 5}}"#, "must be a string"),
    ];
    for (data, message) in cases {
        let r = chat(&gw, "m", &[("x-tracegate-provider-data", data)]).await;
        assert_eq!(r.status(), 400, "{data}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_provider_data");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(message),
            "{data}: {body}"
        );
    }
    assert!(gw.received().is_empty(), "nothing was sent upstream");
    let records = gw.records().await;
    assert_eq!(records.len(), cases.len());
    assert!(
        records.iter().all(|r| r.http_status == Some(400)
            && r.error.as_ref().unwrap().kind == "invalid_provider_data")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_never_see_each_others_extra_headers() {
    let gw = Setup::with_route(
        json!({"name": "maas", "model_prefix": "*", "allow_caller_headers": true}),
    )
    .await;
    let n = 100;
    let calls = (0..n).map(|i| {
        let data = json!({"maas_extra_headers": {"X-Caller": format!("caller-{i}")}}).to_string();
        let mut body = chat_body(&format!("call {i}"));
        body["stream"] = json!(i % 2 == 0);
        gw.chat(&body).header("x-tracegate-provider-data", data)
    });
    all_at_once(calls).await;
    let received = gw.received();
    assert_eq!(received.len(), n);
    for request in received {
        let body = request.json().unwrap();
        let i = body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .trim_start_matches("call ")
            .to_string();
        let callers: Vec<&str> = request
            .headers
            .iter()
            .filter(|(k, _)| k == "x-caller")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(
            callers,
            [format!("caller-{i}")],
            "request {i} carries only its own header"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_multi_provider_example_is_a_valid_config() {
    let page = include_str!("../docs/routing.md");
    let section = &page[page.find("# Routing").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let toml = &section[start..start + section[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracegate.toml");
    std::fs::write(&path, toml).unwrap();
    let gw = TestGateway::start_with(ServeArgs {
        config: Some(path),
        ..ServeArgs::default()
    })
    .await;
    let routes = gw
        .get("/admin/routes")
        .header("x-tracegate-key", "tg-team-token")
        .answer()
        .await
        .json();
    let names: Vec<&str> = routes
        .as_array()
        .unwrap_or_else(|| panic!("{routes}"))
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["policy", "judge", "claude", "local"]);
    gw.stop().await;
}
