//! rLLM's newest gateway client against the real binary.
//!
//! The `GatewayClient` / `AsyncGatewayClient` of rLLM's default and
//! `terminal-rl` branches (`rllm-model-gateway/src/rllm_model_gateway/
//! client.py`; not on PyPI) is replayed here call by call — the same
//! methods, paths and bodies, the answers read the way it reads them — in
//! front of the mock upstream as a vLLM route, with an agent making its
//! OpenAI-style calls on the session URL the client hands out. What it
//! checks are values: the weight versions recorded, the sampling
//! parameters the upstream received, namespaced (slash) session ids, batch
//! delete counts, and the compact trace graph rebuilding every call.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::{Running, Serve};
use common::start_mock;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;

/// The client's `gateway_url` and its HTTP session.
struct Client {
    url: String,
    http: reqwest::Client,
}

impl Client {
    fn new(gateway: &Running) -> Client {
        let url = gateway.url("").trim_end_matches('/').to_string();
        Client {
            url,
            http: reqwest::Client::new(),
        }
    }

    /// `resp.raise_for_status(); resp.json()`.
    async fn json(&self, request: reqwest::RequestBuilder) -> Value {
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        self.json(self.http.post(format!("{}{path}", self.url)).json(body))
            .await
    }

    /// A GET with query parameters (httpx's `params=`).
    async fn get(&self, path: &str, params: &[(&str, String)]) -> Value {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.url)).unwrap();
        for (key, value) in params {
            url.query_pairs_mut().append_pair(key, value);
        }
        self.json(self.http.get(url)).await
    }

    /// `create_session(session_id, metadata, sampling_params)`.
    async fn create_session(&self, sid: &str, metadata: Value, sampling: Value) -> String {
        let body = json!({"session_id": sid, "metadata": metadata, "sampling_params": sampling});
        let answer = self.post("/sessions", &body).await;
        answer["session_id"].as_str().unwrap().to_string()
    }

    /// `get_session_url(session_id)`: the id as it is, never escaped.
    fn session_url(&self, sid: &str) -> String {
        format!("{}/sessions/{sid}/v1", self.url)
    }

    /// `set_weight_version(v)` → `resp.json()["weight_version"]`.
    async fn set_weight_version(&self, version: i64) -> Value {
        let answer = self
            .post("/admin/weight_version", &json!({"weight_version": version}))
            .await;
        answer["weight_version"].clone()
    }

    /// `get_weight_version()` → `resp.json().get("weight_version")`.
    async fn get_weight_version(&self) -> Value {
        self.get("/admin/weight_version", &[]).await["weight_version"].clone()
    }

    /// `flush()` → `status == "flushed"`.
    async fn flush(&self) -> bool {
        self.post("/admin/flush", &json!(null)).await["status"] == "flushed"
    }

    /// `get_session_traces(session_id, since, limit, format)`: the raw JSON.
    async fn session_traces(&self, sid: &str, params: &[(&str, String)]) -> Value {
        self.get(&format!("/sessions/{sid}/traces"), params).await
    }

    /// `delete_sessions(session_ids)` (async client) → `deleted`.
    async fn delete_sessions(&self, ids: &[&str]) -> Value {
        let body = json!({"session_ids": ids});
        self.post("/sessions/batch_delete", &body).await["deleted"].clone()
    }
}

/// The agent: an OpenAI-style chat call on the session URL. The mock lays
/// the prompt out like a chat template, so each turn's prompt ids extend the
/// previous prompt and answer (as vLLM's do).
async fn agent_call(client: &Client, sid: &str, messages: &[Value]) -> Value {
    let body =
        json!({"model": "policy", "messages": messages, "temperature": 1.0, "max_tokens": 16});
    let request = client
        .http
        .post(format!("{}/chat/completions", client.session_url(sid)))
        .header("x-mock-chat-template", "1")
        .json(&body);
    client.json(request).await
}

/// Three turns of one episode, with the weight version set to 3, 3, 4
/// before each; returns every call's messages.
async fn episode(client: &Client, sid: &str) -> Vec<Vec<Value>> {
    let mut messages = vec![
        json!({"role": "system", "content": "You solve tasks."}),
        json!({"role": "user", "content": "Say hello to the world"}),
    ];
    let mut sent = Vec::new();
    for (turn, version) in [3, 3, 4].into_iter().enumerate() {
        assert_eq!(client.set_weight_version(version).await, json!(version));
        assert_eq!(client.get_weight_version().await, json!(version));
        sent.push(messages.clone());
        let answer = agent_call(client, sid, &messages).await;
        messages.push(answer["choices"][0]["message"].clone());
        messages.push(json!({"role": "user", "content": format!("Now step {turn} again")}));
    }
    sent
}

fn gateway(dir: &Path, mock: &str) -> Running {
    Serve::new(dir)
        .upstream(mock)
        .args(["--kind", "vllm"])
        .spawn()
}

/// Rebuilds every call of a compact graph from its parents, as rLLM's
/// `TraceGraph.flatten` does: (messages, prompt ids) per trace id.
fn flatten(graph: &Value) -> HashMap<String, (Vec<Value>, Vec<Value>)> {
    let mut full: HashMap<String, (Vec<Value>, Vec<Value>)> = HashMap::new();
    let deltas = graph["deltas"].as_array().unwrap();
    let by_id: HashMap<&str, &Value> = deltas
        .iter()
        .map(|d| (d["trace_id"].as_str().unwrap(), d))
        .collect();
    for delta in deltas {
        let (mut messages, mut prompt) = match delta["parent_trace_id"].as_str() {
            None => (Vec::new(), Vec::new()),
            Some(parent) => {
                let (m, p) = full[parent].clone();
                let parent = by_id[parent];
                let mut m = m;
                m.push(parent["response_message"].clone());
                let mut p = p;
                p.extend(parent["completion_token_ids"].as_array().unwrap().clone());
                (m, p)
            }
        };
        messages.extend(delta["messages_suffix"].as_array().unwrap().clone());
        prompt.extend(delta["prompt_ids_suffix"].as_array().unwrap().clone());
        full.insert(
            delta["trace_id"].as_str().unwrap().to_string(),
            (messages, prompt),
        );
    }
    full
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_rllm_client_works_unchanged() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), &mock.base_url());
    let client = Client::new(&gw);
    assert_eq!(client.get("/health", &[]).await["status"], "ok");

    // A namespaced task id, with the trainer's sampling parameters.
    let sid = "harbor/hello-world:0";
    let created = client
        .create_session(
            sid,
            json!({"task": "hello"}),
            json!({"temperature": 0.3, "top_p": 0.95}),
        )
        .await;
    assert_eq!(created, sid);
    let sent = episode(&client, sid).await;
    assert!(client.flush().await);

    // Versions [3, 3, 4], stamped when each call arrived.
    let records = client.session_traces(sid, &[]).await;
    let records = records.as_array().unwrap();
    let versions: Vec<&Value> = records.iter().map(|r| &r["weight_version"]).collect();
    assert_eq!(versions, [&json!(3), &json!(3), &json!(4)]);
    for (record, messages) in records.iter().zip(&sent) {
        assert_eq!(record["session_id"], sid);
        assert_eq!(record["messages"], json!(messages));
        assert!(record["lineage_id"].is_null());
        assert!(!record["prompt_token_ids"].as_array().unwrap().is_empty());
    }

    // The upstream got the session's parameters over the agent's, and the
    // session pinned to one replica.
    let received: Vec<_> = mock
        .state
        .received()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .collect();
    assert_eq!(received.len(), 3);
    for request in &received {
        let body = request.json().unwrap();
        assert_eq!(
            (&body["temperature"], &body["top_p"]),
            (&json!(0.3), &json!(0.95))
        );
        assert_eq!(
            (&body["logprobs"], &body["return_token_ids"]),
            (&json!(true), &json!(true))
        );
        assert_eq!(request.header("x-session-affinity"), Some(sid));
        assert_eq!(request.header("x-multi-turn-session-id"), Some(sid));
    }

    // The session by its slash id.
    let info = client.get(&format!("/sessions/{sid}"), &[]).await;
    assert_eq!(
        (&info["session_id"], &info["trace_count"]),
        (&json!(sid), &json!(3))
    );

    // The compact graph: a chain, whose suffixes rebuild every call.
    let graph = client
        .session_traces(sid, &[("format", "compact".to_string())])
        .await;
    assert_eq!(
        (&graph["format"], &graph["version"]),
        (&json!("compact"), &json!(1))
    );
    let deltas = graph["deltas"].as_array().unwrap();
    let ids: Vec<&Value> = records.iter().map(|r| &r["trace_id"]).collect();
    let parents: Vec<&Value> = deltas.iter().map(|d| &d["parent_trace_id"]).collect();
    assert_eq!(parents, [&Value::Null, ids[0], ids[1]]);
    assert_eq!(deltas[1]["messages_suffix"].as_array().unwrap().len(), 1);
    let full = flatten(&graph);
    for record in records {
        let (messages, prompt) = &full[record["trace_id"].as_str().unwrap()];
        assert_eq!(&json!(messages), &record["messages"]);
        assert_eq!(&json!(prompt), &record["prompt_token_ids"]);
        let delta = deltas
            .iter()
            .find(|d| d["trace_id"] == record["trace_id"])
            .unwrap();
        for field in [
            "completion_token_ids",
            "logprobs",
            "weight_version",
            "finish_reason",
            "model",
        ] {
            assert_eq!(delta[field], record[field], "{field}");
        }
    }
    // A window without the first call: the second becomes a root.
    let since = records[0]["timestamp"].as_f64().unwrap();
    let sliced = client
        .session_traces(
            sid,
            &[("format", "compact".into()), ("since", since.to_string())],
        )
        .await;
    let sliced_deltas = sliced["deltas"].as_array().unwrap();
    assert_eq!(sliced_deltas.len(), 2);
    assert!(sliced_deltas[0]["parent_trace_id"].is_null());
    assert_eq!(sliced_deltas[1]["parent_trace_id"], *ids[1]);
    let full = flatten(&sliced);
    assert_eq!(
        json!(full[ids[1].as_str().unwrap()].1),
        records[1]["prompt_token_ids"]
    );

    // Batch delete counts traces over sessions, and forgets the parameters.
    let other = "harbor/other-task:1";
    client
        .create_session(other, json!({}), json!({"temperature": 0.0}))
        .await;
    agent_call(&client, other, &sent[0]).await;
    assert_eq!(client.delete_sessions(&[sid, other]).await, json!(4));
    let gone = reqwest::get(format!("{}/sessions/{sid}", client.url))
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    agent_call(&client, sid, &sent[0]).await;
    let last = mock.state.received().pop().unwrap().json().unwrap();
    assert_eq!(
        last["temperature"],
        json!(1.0),
        "the deleted session's parameters are gone"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_versions_are_validated_and_sampling_parameters_survive_a_restart() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), &mock.base_url());
    let client = Client::new(&gw);
    let url = format!("{}/admin/weight_version", client.url);
    for body in [
        json!({}),
        json!({"weight_version": null}),
        json!({"weight_version": "x"}),
        json!({"weight_version": 2.5}),
    ] {
        let answer = client.http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(answer.status(), 400, "{body}");
    }
    assert_eq!(client.get_weight_version().await, Value::Null);
    // A run's own version wins over the gateway's; a harness's own stamp
    // wins over both; the upstream's stamp fills a call nobody named.
    client
        .post(
            "/admin/weight_version",
            &json!({"weight_version": "7", "run_id": "run-a"}),
        )
        .await;
    let run = client
        .get("/admin/weight_version", &[("run_id", "run-a".into())])
        .await;
    assert_eq!(run["weight_version"], 7);
    let chat = |headers: &[(&str, &str)]| {
        let mut request = client
            .http
            .post(format!("{}/v1/chat/completions", client.url))
            .header("x-mock-weight-version", "11")
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send()
    };
    chat(&[("x-rllm-run-id", "run-a")]).await.unwrap();
    chat(&[("x-rllm-run-id", "run-a"), ("x-rllm-weight-version", "5")])
        .await
        .unwrap();
    chat(&[]).await.unwrap();
    client
        .create_session("persist/a", json!({}), json!({"temperature": 0.3}))
        .await;
    assert!(client.flush().await);
    gw.stop().await;
    let received: Vec<Value> = mock
        .state
        .received()
        .iter()
        .filter_map(|r| r.json())
        .collect();
    assert!(received.iter().all(|b| b.get("rllm").is_none()));

    let gw = gateway(dir.path(), &mock.base_url());
    let client = Client::new(&gw);
    agent_call(
        &client,
        "persist/a",
        &[json!({"role": "user", "content": "hi"})],
    )
    .await;
    let last = mock.state.received().pop().unwrap().json().unwrap();
    assert_eq!(last["temperature"], json!(0.3), "kept across the restart");
    assert_eq!(
        client.post("/admin/reload", &json!(null)).await,
        json!({"status": "ok"})
    );
    gw.stop().await;
    let versions: Vec<Option<i64>> = common::records_in(&dir.path().join("tracegate.db"))
        .iter()
        .filter(|r| r.identity.session_id.is_none())
        .map(|r| r.identity.weight_version)
        .collect();
    assert_eq!(versions, [Some(7), Some(5), Some(11)]);
}

/// One chat call on session `sid`, with these headers and this body
/// (`model` and `messages` added): the answer the agent got.
async fn call_with(client: &Client, sid: &str, headers: &[(&str, &str)], extra: Value) -> Value {
    let mut body =
        json!({"model": "policy", "messages": [{"role": "user", "content": "route me"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let mut request = client
        .http
        .post(format!("{}/chat/completions", client.session_url(sid)));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    client.json(request.json(&body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_matrices_are_recorded_per_token_and_hidden_from_the_agent() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), &mock.base_url());
    let client = Client::new(&gw);
    let sid = "moe/replay:0";
    client.create_session(sid, json!({}), json!({})).await;
    let answer = call_with(&client, sid, &[("x-mock-routing-matrices", "1")], json!({})).await;
    assert!(
        answer["choices"][0].get("routing_matrices").is_none(),
        "stripped from the agent's answer"
    );
    call_with(&client, sid, &[], json!({})).await;
    assert!(client.flush().await);

    let records = client.session_traces(sid, &[]).await;
    let (with, without) = (&records[0], &records[1]);
    // The mock's matrix for a token is `rm<token id>`: one per answer token.
    let expected: Vec<String> = with["completion_token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| format!("rm{id}"))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(with["routing_matrices"], json!(expected));
    assert!(
        without["routing_matrices"].is_null(),
        "none sent, none kept"
    );
    let one = client
        .get(
            &format!("/traces/{}", with["trace_id"].as_str().unwrap()),
            &[],
        )
        .await;
    assert_eq!(one["routing_matrices"], json!(expected));
    let graph = client
        .session_traces(sid, &[("format", "compact".to_string())])
        .await;
    assert_eq!(graph["deltas"][0]["routing_matrices"], json!(expected));
    assert!(graph["deltas"][1]["routing_matrices"].is_null());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_logprobs_records_null_not_an_empty_list() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), &mock.base_url());
    let client = Client::new(&gw);
    let sid = "logprobs/none:0";
    client.create_session(sid, json!({}), json!({})).await;
    // The agent says no to logprobs (its choice stands), and an answer with
    // no tokens has an empty logprobs list.
    call_with(&client, sid, &[], json!({"logprobs": false})).await;
    let empty = call_with(
        &client,
        sid,
        &[("x-mock-content", "")],
        json!({"logprobs": true}),
    )
    .await;
    assert_eq!(empty["choices"][0]["logprobs"], json!({"content": []}));
    assert!(client.flush().await);

    let records = client.session_traces(sid, &[]).await;
    for record in records.as_array().unwrap() {
        assert!(record["logprobs"].is_null(), "{}", record["logprobs"]);
        let one = client
            .get(
                &format!("/traces/{}", record["trace_id"].as_str().unwrap()),
                &[],
            )
            .await;
        assert!(one["logprobs"].is_null());
    }
    let graph = client
        .session_traces(sid, &[("format", "compact".to_string())])
        .await;
    for delta in graph["deltas"].as_array().unwrap() {
        assert!(delta["logprobs"].is_null());
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_affinity_header_the_caller_set_is_kept() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), &mock.base_url());
    let client = Client::new(&gw);
    let sid = "sticky/a:0";
    client.create_session(sid, json!({}), json!({})).await;
    call_with(
        &client,
        sid,
        &[("x-session-affinity", "replica-7")],
        json!({}),
    )
    .await;
    let request = mock.state.received().pop().unwrap();
    assert_eq!(request.header("x-session-affinity"), Some("replica-7"));
    assert_eq!(
        request.header("x-multi-turn-session-id"),
        Some(sid),
        "the one the caller did not set is added"
    );
    let all: Vec<&str> = (request.headers.iter())
        .filter(|(name, _)| name == "x-session-affinity")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(all, ["replica-7"], "not sent twice");
    gw.stop().await;
}
