//! End-to-end tests with the official Python SDKs (and rLLM's own
//! `GatewayClient`) against the real binary and the built-in mock upstream.
//!
//! The Python side lives in `tests/python/`. It needs a virtualenv with
//! `tests/python/requirements.txt` installed, at `.venv/` (what `.ci/run`
//! creates) or at `$TRACEGATE_TEST_PYTHON`. Without one these tests are
//! skipped with a message — unless `TRACEGATE_REQUIRE_SDK_TESTS=1` (set by
//! `.ci/run`), where a missing interpreter is a failure.

mod common;

use common::process::{Running, free_port, tracegate};
use common::start_mock;
use std::path::PathBuf;
use std::process::Command;

fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("TRACEGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    if candidate.exists() {
        return Some(candidate);
    }
    let required = std::env::var("TRACEGATE_REQUIRE_SDK_TESTS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "no Python for the SDK tests at {}: run `python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt`",
        candidate.display()
    );
    eprintln!(
        "SKIPPED: no Python SDK environment at {}",
        candidate.display()
    );
    None
}

/// Runs one pytest file against a fresh gateway in front of the mock.
async fn pytest(file: &str) {
    let Some(python) = python() else { return };
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = tracegate(dir.path());
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--upstream",
        &mock.base_url(),
    ]);
    let gateway = Running::spawn(cmd, port);
    let url = gateway.url("");
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(file);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(file)
            .env("TRACEGATE_URL", url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "pytest failed:\n{stdout}\n{stderr}"
    );
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_end_to_end() {
    pytest("test_openai_sdk.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_end_to_end() {
    pytest("test_anthropic_sdk.py").await;
}
