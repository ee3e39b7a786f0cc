//! End-to-end tests with the official Python SDKs (and rLLM's own
//! `GatewayClient`) against the real binary and the built-in mock upstream.
//!
//! The Python side lives in `tests/python/`. It needs a virtualenv with
//! `tests/python/requirements.txt` installed, at `.venv/` (what `.ci/run`
//! creates) or at `$TRACEGATE_TEST_PYTHON`. A plain `cargo test` reports
//! these tests as ignored; `TRACEGATE_REQUIRE_SDK_TESTS=1 cargo test` (what
//! `.ci/run` runs) or `cargo test --test sdk -- --ignored` runs them, and
//! then a missing virtualenv fails them with the command that makes it
//! (see `build.rs`).

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::Serve;
use common::start_mock;
use std::path::PathBuf;
use std::process::Command;

/// The virtualenv's Python; fails the test, saying how to make it, when
/// there is none.
fn python() -> PathBuf {
    let python = std::env::var_os("TRACEGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(
        python.exists(),
        "no Python for the SDK tests at {}: run `python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt`",
        python.display()
    );
    python
}

/// Runs one pytest file against a fresh gateway in front of the mock.
async fn pytest(file: &str) {
    pytest_with(file, &[]).await;
}

/// Runs one pytest file against a fresh gateway in front of the mock,
/// started with `args`; the test also gets the binary (`TRACEGATE_BIN`) and
/// the gateway's database (`TRACEGATE_DB`), for the CLI.
async fn pytest_with(file: &str, args: &[&str]) {
    let python = python();
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    // The OTLP/gRPC receiver is on too, for the harness's gRPC exporter.
    let grpc = format!("127.0.0.1:{}", common::process::free_port());
    let gateway = Serve::new(dir.path())
        .upstream(&mock.base_url())
        .args(["--otlp-grpc-listen", &grpc])
        .args(args)
        .spawn();
    let url = gateway.url("");
    let db = dir.path().join("tracegate.db");
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(file);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(file)
            .env("TRACEGATE_URL", url)
            .env("TRACEGATE_OTLP_GRPC", grpc)
            .env("TRACEGATE_BIN", common::process::BIN)
            .env("TRACEGATE_DB", db)
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
#[cfg_attr(
    not(sdk_tests),
    ignore = "needs the Python SDKs in .venv (docs/development.md, \"Tests\"); run with TRACEGATE_REQUIRE_SDK_TESTS=1, as CI does"
)]
async fn openai_sdk_end_to_end() {
    pytest("test_openai_sdk.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(sdk_tests),
    ignore = "needs the Python SDKs in .venv (docs/development.md, \"Tests\"); run with TRACEGATE_REQUIRE_SDK_TESTS=1, as CI does"
)]
async fn anthropic_sdk_end_to_end() {
    pytest("test_anthropic_sdk.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(sdk_tests),
    ignore = "needs the Python SDKs in .venv (docs/development.md, \"Tests\"); run with TRACEGATE_REQUIRE_SDK_TESTS=1, as CI does"
)]
async fn opentelemetry_harness_spans_end_to_end() {
    pytest("test_harness_spans.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(sdk_tests),
    ignore = "needs the Python SDKs in .venv (docs/development.md, \"Tests\"); run with TRACEGATE_REQUIRE_SDK_TESTS=1, as CI does"
)]
async fn parquet_export_read_by_pyarrow() {
    let vllm = ["--kind", "vllm", "--strip-vllm-fields", "false"];
    pytest_with("test_parquet_export.py", &vllm).await;
}
