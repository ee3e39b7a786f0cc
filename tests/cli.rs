//! The real `tracegate` binary: configuration precedence and errors,
//! graceful shutdown on SIGTERM, the demo, the mock upstream.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::{Running, Serve, free_port, refused_serve, tracegate};
use common::{Gateway, count, first_chunk, rest_of_stream, start_mock_with, stream_body};
use std::process::{Command, Output};
use tracegate::mock_upstream::MockOptions;

fn run_to_end(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

#[test]
fn listen_precedence_is_flag_then_env_then_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let config = dir.path().join("tracegate.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:{file_port}\"\n")).unwrap();

    let mut cmd = tracegate(dir.path());
    cmd.args(["serve", "--config", config.to_str().unwrap()]);
    drop(Running::spawn(cmd, file_port));

    let mut cmd = tracegate(dir.path());
    cmd.args(["serve", "--config", config.to_str().unwrap()])
        .env("TRACEGATE_LISTEN", format!("127.0.0.1:{env_port}"));
    drop(Running::spawn(cmd, env_port));

    let mut cmd = tracegate(dir.path());
    cmd.args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{flag_port}")])
        .env("TRACEGATE_LISTEN", format!("127.0.0.1:{env_port}"));
    drop(Running::spawn(cmd, flag_port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_and_db_follow_the_same_precedence() {
    let file_mock = start_mock_with(MockOptions::default()).await;
    let env_mock = start_mock_with(MockOptions::default()).await;
    let flag_mock = start_mock_with(MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracegate.toml");
    std::fs::write(
        &config,
        format!(
            "upstream = [\"{}\"]\ndb = \"file.db\"\n",
            file_mock.base_url()
        ),
    )
    .unwrap();
    let cases = [
        (None, None, &file_mock, "file.db"),
        (Some(&env_mock), None, &env_mock, "env.db"),
        (Some(&env_mock), Some(&flag_mock), &flag_mock, "flag.db"),
    ];
    for (env, flag, expected, db) in cases {
        let mut serve = Serve::new(dir.path()).args(["--config", config.to_str().unwrap()]);
        if let Some(env) = env {
            serve = serve.envs(&[
                ("TRACEGATE_UPSTREAM", &env.base_url()),
                ("TRACEGATE_DB", "env.db"),
            ]);
        }
        if let Some(flag) = flag {
            serve = serve.upstream(&flag.base_url()).args(["--db", "flag.db"]);
        }
        let running = serve.spawn();
        let before = expected.state.received().len();
        running.get("/v1/models").send().await;
        assert_eq!(expected.state.received().len(), before + 1);
        running.terminate();
        assert!(running.wait().success());
        assert_eq!(
            count(&dir.path().join(db), "SELECT COUNT(*) FROM traces"),
            1,
            "{db}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_uses_openai_base_url_and_the_default_db() {
    let mock = start_mock_with(MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = tracegate(dir.path());
    // Only the port is chosen (the default 9090 may be taken on a shared box).
    cmd.arg("serve")
        .env("TRACEGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("OPENAI_BASE_URL", mock.base_url());
    let running = Running::spawn(cmd, port);
    let answer = running.get_json("/v1/models").await;
    assert_eq!(answer["data"][0]["id"], "mock-model");
    running.terminate();
    assert!(running.wait().success());
    assert!(dir.path().join("tracegate.db").exists());
}

#[test]
fn bad_configuration_is_one_line_naming_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\nlisten_adress = \"x\"\n").unwrap();
    let syntax = dir.path().join("syntax.toml");
    std::fs::write(&syntax, "listen = \n").unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--listen", "nowhere"], vec![], "listen"),
        (vec!["--upstream", "ftp://x"], vec![], "upstream"),
        (vec!["--kind", "llama"], vec![], "kind"),
        (
            vec![],
            vec![("TRACEGATE_STRIP_VLLM_FIELDS", "maybe")],
            "strip_vllm_fields",
        ),
        (
            vec![],
            vec![("TRACEGATE_MAX_BODY_BYTES", "lots")],
            "max_body_bytes",
        ),
        (
            vec![],
            vec![("TRACEGATE_CONNECT_TIMEOUT", "soon")],
            "connect_timeout",
        ),
        (
            vec!["--config", file.to_str().unwrap()],
            vec![],
            "listen_adress",
        ),
        (vec!["--config", syntax.to_str().unwrap()], vec![], "line 1"),
        (vec!["--config", "/does/not/exist.toml"], vec![], "config"),
    ];
    for (args, env, key) in cases {
        let stderr = refused_serve(dir.path(), &args, &env);
        assert!(stderr.contains(key), "{stderr} should name {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_streams_finish_and_commits_them() {
    let mock = start_mock_with(MockOptions {
        chunks: 10,
        chunk_delay_ms: 100,
        ..MockOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let running = Serve::new(dir.path()).upstream(&mock.base_url()).spawn();
    let mut response = running.chat(&stream_body("a slow stream")).send().await;
    first_chunk(&mut response).await;
    running.terminate();
    assert!(
        rest_of_stream(response).await.ends_with("data: [DONE]\n\n"),
        "the stream finished after SIGTERM"
    );
    assert!(running.exited().await.success(), "exit 0 after draining");
    let db = dir.path().join("tracegate.db");
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM traces WHERE status = 'ok'"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_period_records_what_it_cut() {
    let mock = start_mock_with(MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let running = Serve::new(dir.path())
        .upstream(&mock.base_url())
        .args(["--shutdown-grace", "300ms"])
        .spawn();
    let mut response = running
        .chat(&stream_body("held forever"))
        .header("x-mock-hold", "1")
        .send()
        .await;
    first_chunk(&mut response).await;
    running.terminate();
    assert!(running.exited().await.success());
    let db = dir.path().join("tracegate.db");
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM traces WHERE status = 'client_closed'"
        ),
        1
    );
}

#[test]
fn demo_prints_the_run_tree_and_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_to_end(tracegate(dir.path()).args(["demo", "--db", "demo.db"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("run demo-run-"), "{stdout}");
    assert!(
        stdout.contains("2 sessions · 6 calls · 0 errors"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("── session ").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("── step ").count(), 6, "{stdout}");
    assert_eq!(stdout.matches("(stream)").count(), 2, "{stdout}");
    assert_eq!(
        stdout.matches("tool call search_docs").count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("demo.db"), "{stdout}");
    let db = dir.path().join("demo.db");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM traces"), 6);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM traces WHERE parent_span_id IS NOT NULL"
        ),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_upstream_serves_models_and_chat() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = tracegate(dir.path());
    cmd.args([
        "mock-upstream",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--chunks",
        "3",
    ]);
    let running = Running::spawn(cmd, port);
    let models = running.get_json("/v1/models").await;
    assert_eq!(models["data"][0]["id"], "mock-model");
    let text = running.chat(&stream_body("hi")).answer().await.text();
    // role chunk + 3 content chunks + finish chunk + [DONE]
    assert_eq!(text.matches("data: ").count(), 6, "{text}");
}
