//! The fidelity corpus: realistic exchanges of every protocol, replayed
//! through the real gateway.
//!
//! Each `tests/fixtures/*.json` holds a request, the upstream's response
//! exactly as a real server sends it (SSE split into network chunks that cut
//! events mid-JSON, errors, cut streams), what the client must receive
//! (the upstream's bytes unless a vLLM route strips fields), and the fields
//! the stored record must have. The test checks, for every fixture:
//! (a) the bytes the client received, (b) each expected record field, (c)
//! the raw upstream response kept in the record, and (d) what reached the
//! upstream when the route injects parameters. All mismatches are reported
//! together.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::replay::{Recorded, Replay};
use common::{Gateway, TestGateway, trace_id};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use tracegate::config::ServeArgs;

#[derive(Debug, Deserialize)]
struct Fixture {
    #[serde(default)]
    route: Option<Route>,
    request: FixtureRequest,
    #[serde(default)]
    expect_upstream_body: Map<String, Value>,
    upstream: Upstream,
    #[serde(default)]
    client: Option<ClientBytes>,
    record: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct Route {
    kind: String,
}

#[derive(Debug, Deserialize)]
struct FixtureRequest {
    path: String,
    #[serde(default)]
    headers: HashMap<String, String>,
    body: Value,
}

#[derive(Debug, Deserialize)]
struct Upstream {
    status: u16,
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    sse: Option<Vec<String>>,
    #[serde(default)]
    abort: bool,
}

#[derive(Debug, Deserialize)]
struct ClientBytes {
    #[serde(default)]
    sse: Option<String>,
    #[serde(default)]
    json: Option<Value>,
}

impl Upstream {
    fn recorded(&self) -> Recorded {
        match (&self.json, &self.sse) {
            (Some(json), _) => Recorded {
                status: self.status,
                content_type: "application/json".into(),
                chunks: vec![Bytes::from(serde_json::to_vec(json).unwrap())],
                abort: self.abort,
            },
            (None, Some(chunks)) => Recorded {
                status: self.status,
                content_type: "text/event-stream; charset=utf-8".into(),
                chunks: chunks.iter().map(|c| Bytes::from(c.clone())).collect(),
                abort: self.abort,
            },
            (None, None) => panic!("a fixture's upstream needs json or sse"),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        self.recorded().chunks.concat()
    }
}

fn load() -> Vec<(String, Fixture)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut fixtures: Vec<(String, Fixture)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            let fixture =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, fixture)
        })
        .collect();
    fixtures.sort_by(|a, b| a.0.cmp(&b.0));
    fixtures
}

/// The value at a dotted path (`usage.input_tokens`) of a JSON value.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |v, key| &v[key])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_round_trips_exactly() {
    let fixtures = load();
    assert!(fixtures.len() >= 20, "the corpus is there");
    let replay = Replay::start(
        fixtures
            .iter()
            .map(|(name, f)| (name.clone(), f.upstream.recorded()))
            .collect(),
    )
    .await;
    let generic = TestGateway::start(&replay.base_url()).await;
    let vllm = TestGateway::start_with(ServeArgs {
        upstream: vec![replay.base_url()],
        kind: Some("vllm".into()),
        ..ServeArgs::default()
    })
    .await;

    let mut failures = Vec::new();
    let mut traces = Vec::new();
    for (name, f) in &fixtures {
        let gw = match f.route.as_ref().map(|r| r.kind.as_str()) {
            Some("vllm") => &vllm,
            _ => &generic,
        };
        let headers: Vec<(&str, &str)> = f
            .request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut response = gw
            .post(&f.request.path)
            .header("x-fixture", name)
            .json(&f.request.body)
            .headers(&headers)
            .send()
            .await;
        if response.status().as_u16() != f.upstream.status {
            failures.push(format!("{name}: client got status {}", response.status()));
        }
        let trace_id = trace_id(response.headers());
        let mut received = Vec::new();
        let mut broke = false;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => received.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(_) => {
                    broke = true;
                    break;
                }
            }
        }
        if broke != f.upstream.abort {
            failures.push(format!(
                "{name}: connection broke: {broke}, expected {}",
                f.upstream.abort
            ));
        }

        // (a) what the client received
        match &f.client {
            Some(ClientBytes {
                sse: Some(text), ..
            }) => {
                if received != text.as_bytes() {
                    failures.push(format!(
                        "{name}: client bytes differ\n got: {}\nwant: {text}",
                        String::from_utf8_lossy(&received)
                    ));
                }
            }
            Some(ClientBytes {
                json: Some(want), ..
            }) => {
                let got: Value = serde_json::from_slice(&received).unwrap_or(Value::Null);
                if &got != want {
                    failures.push(format!(
                        "{name}: client JSON differs\n got: {got}\nwant: {want}"
                    ));
                }
            }
            _ => {
                if received != f.upstream.bytes() {
                    failures.push(format!(
                        "{name}: the client did not get the upstream's exact bytes"
                    ));
                }
            }
        }

        // (d) what reached the upstream
        let sent = replay.received(name).unwrap_or(Value::Null);
        for (key, want) in &f.expect_upstream_body {
            if &sent[key] != want {
                failures.push(format!(
                    "{name}: upstream got {key} = {}, want {want}",
                    sent[key]
                ));
            }
        }
        traces.push((name, f, trace_id, gw));
    }

    generic.flush().await;
    vllm.flush().await;
    for (name, f, trace_id, gw) in traces {
        let record = gw.get_json(&format!("/traces/{trace_id}")).await;
        // (b) the expected record fields
        for (path, want) in &f.record {
            let got = at(&record, path);
            if got != want {
                failures.push(format!("{name}: record {path}\n got: {got}\nwant: {want}"));
            }
        }
        // (c) the raw upstream response is kept
        let checks_raw = f.record.keys().any(|k| k.starts_with("raw_response"));
        if !checks_raw {
            let raw = &record["raw_response"];
            let kept = match (&f.upstream.json, &f.upstream.sse) {
                (Some(json), _) => raw == json,
                (None, Some(chunks)) => raw["body"] == Value::String(chunks.concat()),
                _ => false,
            };
            if !kept {
                failures.push(format!("{name}: raw response not kept exactly: {raw}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
