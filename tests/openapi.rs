//! `schema/openapi.yaml` against the server: every route the API serves is
//! described and every described route is served; each operation, called on
//! a real gateway, answers with a documented status and a body its schema
//! accepts; and the file is valid OpenAPI (checked by `openapi-spec-validator`
//! from the test virtualenv: ignored by a plain `cargo test`, required in CI
//! like the SDK tests, see `build.rs`).

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Gateway, Request, Setup, chat_body};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The description, as JSON, with the TraceRecord schema file inlined where
/// it is referenced (so one JSON Schema validator resolves everything).
fn spec() -> Value {
    let text = std::fs::read_to_string(root().join("schema/openapi.yaml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    let mut spec = to_json(&docs[0]);
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schema/trace_record.schema.json")).unwrap(),
    )
    .unwrap();
    let schemas = &mut spec["components"]["schemas"];
    assert_eq!(schemas["TraceRecord"]["$ref"], "trace_record.schema.json");
    schemas["TraceRecord"] = record;
    spec
}

fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(text) => json!(text.parse::<f64>().unwrap()),
        Yaml::Integer(n) => json!(n),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(n) => n.to_string(),
                        other => panic!("unexpected key {other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("unsupported YAML node {other:?}"),
    }
}

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// Every `(METHOD, path)` the description has.
fn described(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(*method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Every `(METHOD, path)` the API router registers, read from the
/// `.route("path", get(..).post(..))` calls under `src/api/` and in
/// `src/server.rs` (where the OTLP receiver's `POST /v1/traces` sits among
/// the proxy's routes, which call no method router) — axum cannot list its
/// routes; the live test below proves each one answers.
fn served() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let api = std::fs::read_dir(root().join("src/api")).unwrap();
    let files = api.map(|entry| entry.unwrap().path());
    for file in files.chain([root().join("src/server.rs")]) {
        let source = std::fs::read_to_string(file).unwrap();
        let mut rest = source.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let open = rest.find('"').unwrap();
            let close = open + 1 + rest[open + 1..].find('"').unwrap();
            let path = rest[open + 1..close].to_string();
            // The handler chain runs to the route call's closing parenthesis.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .unwrap()
                .0;
            let chain = &rest[close..end];
            for method in METHODS {
                let called = chain.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0 || !chain[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if called {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn every_served_route_is_described_and_every_described_route_is_served() {
    let described = described(&spec());
    let served = served();
    assert!(
        served.len() >= 20,
        "the router's routes were found: {served:?}"
    );
    let undocumented: Vec<_> = served.difference(&described).collect();
    let unserved: Vec<_> = described.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in openapi.yaml but not served: {unserved:?}"
    );
}

/// Resolves a `#/components/...` reference.
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(pointer) => spec
            .pointer(pointer.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling {pointer}")),
        None => value,
    }
}

/// Checks an answer against the description of `method path`: a documented
/// status, and for JSON a body the status's schema accepts.
fn check(spec: &Value, method: &str, path: &str, status: u16, body: &str) {
    let operation = &spec["paths"][path][method.to_lowercase()];
    let responses = operation["responses"].as_object().unwrap();
    let Some(response) = responses.get(&status.to_string()) else {
        panic!("{method} {path} answered {status}, which is not documented: {body}");
    };
    let response = resolve(spec, response);
    let Some(schema) = response["content"]["application/json"].get("schema") else {
        return;
    };
    let instance: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{method} {path} {status}: not JSON ({e}): {body}"));
    // The operation's schema, with the components beside it so that its
    // `#/components/...` references resolve.
    let mut root = Map::new();
    root.insert("allOf".into(), json!([schema]));
    root.insert("components".into(), spec["components"].clone());
    let validator = jsonschema::validator_for(&Value::Object(root)).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: the body does not match openapi.yaml: {errors:#?}\n{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_described() {
    let spec = spec();
    let gw = Setup::new().await;
    // Something to read back: a run with a session, streamed and not.
    let mut trace_id = String::new();
    for stream in [false, true] {
        let mut body = chat_body("for the API");
        body["stream"] = json!(stream);
        let answer = gw
            .chat(&body)
            .header("x-rllm-run-id", "run-api")
            .header("x-rllm-session-id", "session-api")
            .answer()
            .await;
        trace_id = answer.trace_id();
    }
    gw.flush().await;

    let fill = |path: &str| {
        path.replace("{session_id}", "session-api")
            .replace("{trace_id}", &trace_id)
            .replace("{run_id}", "run-api")
            .replace("{worker_id}", "worker-api")
            .replace("{file}", "app.js")
    };
    let body_for = |method: &str, path: &str| match (method, path) {
        ("POST", "/sessions") => Some(json!({"session_id": "created-api", "metadata": {"k": "v"}})),
        ("POST", "/traces/query") => Some(json!({"session_ids": ["session-api"], "limit": 10})),
        ("POST", "/admin/weight_version") => Some(json!({"weight_version": 3})),
        ("POST", "/feedback") => Some(json!({"trace_id": trace_id, "name": "reward", "value": 1})),
        ("POST", "/feedback/batch") => {
            Some(json!([{"session_id": "session-api", "name": "pass", "value": true}]))
        }
        ("POST", "/sessions/batch_delete") => Some(json!({"session_ids": ["created-api"]})),
        ("POST", "/v1/traces") => Some(json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7",
            "name": "invoke_agent api", "kind": 1,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000"
        }]}]}]})),
        ("POST", "/admin/workers") => Some(
            json!({"url": gw.mock.base_url(), "worker_id": "worker-api", "model_name": "m", "weight": 2}),
        ),
        _ => None,
    };
    // Deletions last, so what they delete exists while the rest is read.
    let mut operations: Vec<(String, String)> = described(&spec).into_iter().collect();
    operations.sort_by_key(|(method, _)| method == "DELETE");
    for (method, path) in &operations {
        let mut request = Request::without_redirects(method.parse().unwrap(), gw.at(&fill(path)));
        if let Some(body) = body_for(method, path) {
            request = request.json(&body);
        }
        let answer = request.answer().await;
        let status = answer.status.as_u16();
        assert!(
            (200..400).contains(&status),
            "{method} {path} failed with {status}"
        );
        check(&spec, method, path, status, &answer.text());
    }
    // Errors have their documented shape too.
    for (method, path, url) in [
        ("GET", "/traces/{trace_id}", "/traces/no-such-trace"),
        ("GET", "/runs/{run_id}", "/runs/no-such-run"),
        ("GET", "/sessions", "/sessions?limit=lots"),
        ("GET", "/ui/api/calls", "/ui/api/calls?after=x"),
        ("POST", "/v1/traces", "/v1/traces"),
        (
            "DELETE",
            "/admin/workers/{worker_id}",
            "/admin/workers/worker-api",
        ),
    ] {
        let answer = gw.request(method.parse().unwrap(), url).answer().await;
        let status = answer.status.as_u16();
        assert!(status >= 400, "{method} {url}: {status}");
        check(&spec, method, path, status, &answer.text());
    }
}

/// The virtualenv's Python with `openapi-spec-validator` (as `.ci/run`
/// installs it); fails the test, saying how to install it, when there is
/// none.
fn validator_python() -> PathBuf {
    let python = std::env::var_os("TRACEGATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    let present = Command::new(&python)
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success());
    let how = "python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt";
    assert!(present, "openapi-spec-validator is missing: {how}");
    python
}

#[test]
#[cfg_attr(
    not(sdk_tests),
    ignore = "needs openapi-spec-validator in .venv (docs/development.md, \"Tests\"); run with TRACEGATE_REQUIRE_SDK_TESTS=1, as CI does"
)]
fn the_description_is_valid_openapi() {
    let file = root().join("schema/openapi.yaml");
    let output = Command::new(validator_python())
        .args(["-m", "openapi_spec_validator"])
        .arg(Path::new(&file))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openapi-spec-validator refused schema/openapi.yaml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
