//! The first hour of a new user, over the real binary: zero configuration
//! that follows each SDK's protocol, a keyless upstream behind inbound auth,
//! forgiving `--listen` forms and errors that name their source, the start
//! banner and the log lines, and a read-only store that still answers.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::{Mocked, Running, Serve, cli_json, free_port, refused_serve, tracegate};
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
    assert!(
        records
            .iter()
            .all(|r| r.route.as_deref() == Some("default"))
    );
    assert_eq!(records[1].upstream.trim_end_matches('/'), anthropic_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_upstream_behind_bearer_auth_starts_with_one_setting() {
    let fixture = Mocked::start().await;
    for args in [
        vec!["--upstream-auth", "none"],
        vec![], // the same, from the environment
    ] {
        let gw = fixture
            .serve()
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
    let received = fixture.mock.state.received();
    assert_eq!(received.len(), 2);
    for request in received {
        for name in ["authorization", "x-api-key", "api-key"] {
            assert_eq!(request.header(name), None, "{name} went upstream");
        }
        assert!(
            !request
                .headers
                .iter()
                .any(|(_, v)| v.contains("gateway-token") || v.contains("sk-caller-key")),
            "{:?}",
            request.headers
        );
    }
}

#[test]
fn listen_takes_a_port_a_colon_port_and_localhost() {
    let dir = tempfile::tempdir().unwrap();
    for form in [":{port}", "{port}", "localhost:{port}"] {
        let port = free_port();
        let listen = form.replace("{port}", &port.to_string());
        let mut cmd = tracegate(dir.path());
        cmd.args(["serve", "--db", "traces.db", "--listen", &listen]);
        // Running::spawn waits until 127.0.0.1:port accepts connections.
        let running = Running::spawn(cmd, port);
        drop(running);
    }
}

/// A refused start: the arguments, the environment, and what the one line
/// on stderr must contain.
type Refusal<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn value_errors_name_their_source_and_the_expected_form() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tracegate.toml"), "\nread_timeout = 30\n").unwrap();
    let cases: [Refusal; 4] = [
        (
            &[],
            &[("OPENAI_BASE_URL", "localhost:8000")],
            &[
                "upstream:",
                "'localhost:8000'",
                "http://",
                "(OPENAI_BASE_URL)",
            ],
        ),
        (
            &["--config", "tracegate.toml"],
            &[],
            &[
                "read_timeout:",
                "a duration like 10s",
                "tracegate.toml line 2",
            ],
        ),
        (
            &["--listen", "example.com:80"],
            &[],
            &["listen:", ":9090 or 9090", "(--listen)"],
        ),
        (
            &[],
            &[("TRACEGATE_LISTEN", "nine")],
            &["'nine'", "(TRACEGATE_LISTEN)"],
        ),
    ];
    for (args, env, expected) in cases {
        let line = refused_serve(dir.path(), args, env);
        for part in expected {
            assert!(line.contains(part), "{part}: {line}");
        }
    }
}

#[test]
fn an_unopenable_database_says_why_the_os_refused() {
    let dir = tempfile::tempdir().unwrap();
    // /sys refuses new files even to root, where chmod would not.
    let out = tracegate(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--db", "/sys/tracegate-test.db"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("permission denied"),
        "{stderr}"
    );
}

/// Runs `tracegate args` as a user who cannot write to `dir`: this one,
/// unless it is root (whom no file mode stops), then `nobody`.
fn as_reader(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    let root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
    let mut cmd = if root {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(common::process::BIN);
        cmd
    } else {
        std::process::Command::new(common::process::BIN)
    };
    cmd.current_dir(dir).env("RUST_LOG", "warn").args(args);
    cmd.output().unwrap()
}

#[test]
fn the_query_commands_read_a_store_they_cannot_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let demo = tracegate(&store).args(["demo"]).output().unwrap();
    assert!(demo.status.success());
    // A store copied without its WAL index, in a directory nobody may
    // write to: SQLite cannot create the index to read through it.
    for side in ["tracegate.db-wal", "tracegate.db-shm"] {
        let _ = std::fs::remove_file(store.join(side));
    }
    let mode = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(&store.join("tracegate.db"), 0o444);
    mode(&store, 0o555);
    mode(dir.path(), 0o755);
    for args in [
        &["stats"][..],
        &["runs"],
        &["sessions"],
        &["traces", "list"],
        &["export", "--out", "-"],
    ] {
        let out = as_reader(&store, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
    assert!(
        !store.join("tracegate.db-shm").exists(),
        "nothing was written"
    );
    mode(&store, 0o755);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banner_says_where_everything_is_and_every_call_is_logged() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Serve::new(dir.path())
        .args(["--db", "traces.db"])
        .envs(&[("OPENAI_BASE_URL", &mock.base_url()), ("RUST_LOG", "info")])
        .spawn();
    let root = common::Request::without_redirects(reqwest::Method::GET, gw.url("/"))
        .answer()
        .await;
    assert_eq!(root.status, 307);
    assert_eq!(root.headers["location"], "/ui/");
    let ok = gw.chat(&chat_body("logged")).answer().await;
    assert_eq!(ok.status, 200);
    gw.flush().await;
    let ok_id = ok.trace_id();
    let url = gw.url("");
    let log = gw.stop().await;

    let db = std::fs::canonicalize(dir.path()).unwrap().join("traces.db");
    for line in [
        format!("tracegate listening on {url}"),
        format!("UI:      {url}/ui/"),
        format!("metrics: {url}/metrics"),
        format!("db:      {}", db.display()),
        format!(
            "route default → {} (openai; from OPENAI_BASE_URL)",
            mock.base_url()
        ),
        "route default → https://api.anthropic.com/ (anthropic; from the built-in default)".into(),
    ] {
        assert!(log.contains(&line), "{line}:\n{log}");
    }
    assert!(
        !log.contains('\u{1b}'),
        "no colour in a redirected log:\n{log}"
    );
    let call = log
        .lines()
        .find(|l| l.contains(&ok_id))
        .expect("the call's line");
    for field in [
        "INFO",
        "method=POST",
        "path=/v1/chat/completions",
        "model=\"mock-model\"",
        "status=200",
        "latency_ms=",
        "input_tokens=",
        "output_tokens=",
    ] {
        assert!(call.contains(field), "{field}: {call}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_object_a_line_and_failures_warn() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tracegate.toml"), "log_format = \"json\"\n").unwrap();
    let gw = Serve::new(dir.path())
        .upstream(&common::nowhere("/v1"))
        .args(["--db", "traces.db", "--config", "tracegate.toml"])
        .envs(&[("RUST_LOG", "info")])
        .spawn();
    let answer = gw.chat(&chat_body("nobody home")).answer().await;
    assert_eq!(answer.status, 502);
    gw.flush().await;
    let trace_id = answer.trace_id();
    let log = gw.stop().await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| l["fields"]["trace_id"] == trace_id.as_str())
        .expect("the failed call's line");
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["fields"]["error"], "upstream_unreachable");
    assert_eq!(failed["fields"]["status"], 502);
    assert_eq!(failed["fields"]["model"], "mock-model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttft_counts_streamed_calls_only_in_stats_and_listings() {
    let fixture = Mocked::start().await;
    let gw = fixture.serve().args(["--db", "traces.db"]).spawn();
    let plain = gw.chat(&chat_body("plain")).answer().await;
    assert_eq!(plain.status, 200);
    gw.flush().await;
    let query = |args: &[&str]| cli_json(fixture.dir.path(), "traces.db", args);
    let stats = query(&["stats"]);
    assert_eq!(stats[0]["calls"], 1);
    assert_eq!(stats[0]["route"], "default");
    assert_eq!(stats[0]["ttft_ms"], serde_json::Value::Null, "{stats}");
    assert_eq!(
        query(&["traces", "list"])[0]["ttft_ms"],
        serde_json::Value::Null
    );

    let mut streamed = gw.chat(&common::stream_body("streamed")).send().await;
    common::first_chunk(&mut streamed).await;
    common::rest_of_stream(streamed).await;
    gw.flush().await;
    let stats = query(&["stats"]);
    assert_eq!(stats[0]["calls"], 2);
    assert!(stats[0]["ttft_ms"]["p50"].is_number(), "{stats}");
}
