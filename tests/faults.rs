//! The fault-injection suite: the gateway under the clients, upstreams and
//! mistakes that break gateways in long rollouts — heads that trickle in or
//! never come, idle connections, heads a parser must refuse, more
//! connections than the gateway serves, a forwarding loop — driven over
//! real sockets, through the real binary or the real router in this
//! process.
//!
//! Each test prints the figure it measured (a deadline, a wait, a count of
//! records) on a line of its own starting `fault:`, so that
//! `cargo test --test faults -- --nocapture --test-threads 1` is the suite's
//! report. Assertions stay on what must hold whatever the machine's speed:
//! a deadline is never early, a limit is kept, a count is exact.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::{Serve, refused_serve};
use common::raw::RawConnection;
use common::{Gateway, Setup, chat_body, records_in, start_mock};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// `tracegate.toml` in `dir`, holding `toml`.
fn config_file(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("tracegate.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// The mock and a gateway in this process with these `[server]` settings;
/// the directory holds the configuration file.
async fn with_server(settings: &str) -> (Setup, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &format!("[server]\n{settings}\n"));
    let gw = Setup::with(|args| args.config = Some(path)).await;
    (gw, dir)
}

/// A request head that never ends: a request line and one header whose
/// value keeps coming.
const ENDLESS_HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_head_is_cut_at_the_header_read_deadline() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "[server]\nheader_read_timeout = \"2s\"\n");
    let gw = Serve::new(dir.path())
        .upstream(&mock.base_url())
        .args(["--db", "traces.db", "--config"])
        .args([&config])
        .spawn();
    let deadline = Duration::from_secs(2);
    let every = Duration::from_secs(1);

    // A new connection: the deadline runs from its opening.
    let start = Instant::now();
    let slow = RawConnection::open(&gw).await;
    let (sent, _) = slow.trickle_until_closed(ENDLESS_HEAD, every).await;
    let open_for = start.elapsed();
    assert!(open_for >= deadline, "cut early: {open_for:?}");
    assert!(
        sent < ENDLESS_HEAD.len(),
        "cut before the head was sent whole"
    );
    println!(
        "fault: slowloris at 1 byte/s, header_read_timeout {deadline:?}: cut after {open_for:.3?} \
         ({sent} bytes sent; default 30s)"
    );

    // A keep-alive connection: the deadline runs from the next head's
    // first byte.
    let mut kept = RawConnection::open(&gw).await;
    kept.send(HEALTH).await;
    assert_eq!(kept.response().await.status, 200);
    let (_, open_for) = kept.trickle_until_closed(ENDLESS_HEAD, every).await;
    assert!(open_for >= deadline, "cut early: {open_for:?}");
    println!(
        "fault: slowloris on a keep-alive connection: cut {open_for:.3?} after its first byte"
    );

    // A connection that sends nothing at all.
    let start = Instant::now();
    let silent = RawConnection::open(&gw).await;
    silent.closed().await;
    let open_for = start.elapsed();
    assert!(open_for >= deadline, "cut early: {open_for:?}");
    println!("fault: a connection that sends nothing: closed after {open_for:.3?}");

    assert!(mock.state.received().is_empty(), "nothing was forwarded");
    gw.stop().await;
    assert!(records_in(&dir.path().join("traces.db")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let (gw, _dir) = with_server("idle_timeout = \"1s\"").await;
    let mut conn = RawConnection::open(&*gw).await;
    let before_request = Instant::now();
    conn.send(HEALTH).await;
    assert_eq!(conn.response().await.status, 200);
    let idle_for = conn.closed().await;
    assert!(
        before_request.elapsed() >= Duration::from_secs(1),
        "closed early"
    );
    println!(
        "fault: idle keep-alive connection, idle_timeout 1s: closed {idle_for:.3?} after its answer"
    );

    // A call in flight holds the connection open past the idle timeout.
    let (response, _first) = gw.held_stream(&common::stream_body("long")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.mock.state.release();
    let rest = common::rest_of_stream(response).await;
    assert!(rest.contains("[DONE]"), "the stream ended whole: {rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_large_headers_get_431_in_the_error_shape() {
    let gw = Setup::new().await;
    let many: Vec<(String, String)> = (0..101).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();

    let answer = gw.chat(&chat_body("hi")).headers(&many).answer().await;
    assert_eq!(answer.status, 431);
    let body = answer.json();
    assert_eq!(body["error"]["code"], "headers_too_large");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("server.max_headers"), "{message}");

    let big = "v".repeat(70 * 1024);
    let answer = gw
        .chat(&chat_body("hi"))
        .header("x-big", big.as_str())
        .answer()
        .await;
    assert_eq!(answer.status, 431);
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("server.max_header_bytes"), "{message}");

    let answer = gw
        .post("/v1/messages")
        .headers(&many)
        .json(&chat_body("hi"))
        .answer()
        .await;
    assert_eq!(answer.status, 431);
    let body = answer.json();
    assert_eq!(body["type"], "error", "Anthropic's shape: {body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // Beyond hyper's own limit (twice the gateway's), hyper answers; the
    // answer still carries the JSON.
    let mut head = String::from("POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n");
    for i in 0..300 {
        head.push_str(&format!("x-h{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = RawConnection::open(&*gw).await;
    conn.send(head.as_bytes()).await;
    let response = conn.response().await;
    assert_eq!(response.status, 431);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json()["error"]["code"], "headers_too_large");
    println!(
        "fault: 101 headers, a 70 KiB header, 300 headers: 431 with the error JSON each \
         (limits 100 fields, 64 KiB)"
    );

    assert!(gw.received().is_empty(), "nothing was forwarded");
    assert!(
        gw.records().await.is_empty(),
        "refused heads are not recorded"
    );
}

/// Sends `head` on a fresh connection and reads the answer.
async fn answer_to(gw: &impl Gateway, head: &[u8]) -> (u16, Value) {
    let mut conn = RawConnection::open(gw).await;
    conn.send(head).await;
    let response = conn.response().await;
    assert_eq!(response.header("content-type"), Some("application/json"));
    (response.status, response.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_hyper_cannot_parse_get_400_or_414_in_the_error_shape() {
    let gw = Setup::new().await;
    let bad_heads: [&[u8]; 4] = [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-Id: a\0b\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-Id: a\x01b\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    ];
    for head in bad_heads {
        let (status, body) = answer_to(&*gw, head).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(head));
        assert_eq!(body["error"]["code"], "bad_request");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }

    let (status, body) = answer_to(
        &*gw,
        b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nX-Id: a\0b\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "error", "Anthropic's shape: {body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let long = format!(
        "GET /v1/models?q={} HTTP/1.1\r\nHost: gw\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let (status, body) = answer_to(&*gw, long.as_bytes()).await;
    assert_eq!(status, 414);
    assert_eq!(body["error"]["code"], "uri_too_long");
    println!(
        "fault: NUL, control byte, bad and conflicting Content-Length: 400 with the error JSON; \
         a 70 KiB target: 414 with it"
    );

    assert!(gw.received().is_empty(), "nothing was forwarded");
    assert!(
        gw.records().await.is_empty(),
        "unparsable heads are not recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_new_connection_waits_for_a_slot() {
    let (gw, _dir) = with_server("max_connections = 2").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = RawConnection::open(&*gw).await;
        conn.send(HEALTH).await;
        assert_eq!(conn.response().await.status, 200);
        held.push(conn);
    }
    let mut third = RawConnection::open(&*gw).await;
    third.send(HEALTH).await;
    let waited = Instant::now();
    let early = tokio::time::timeout(Duration::from_millis(500), third.response()).await;
    assert!(early.is_err(), "answered while both slots were held");
    let freed = Instant::now();
    drop(held.pop());
    assert_eq!(third.response().await.status, 200);
    println!(
        "fault: max_connections 2, a third connection: unanswered while both were held \
         ({:.3?}), answered {:.3?} after one closed",
        freed - waited,
        freed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_comes_back_is_refused_with_508_and_recorded_once() {
    let gw = Setup::new().await;
    assert_eq!(gw.chat(&chat_body("first")).answer().await.status, 200);
    let via = gw.received()[0].header("via").unwrap().to_string();
    assert!(via.starts_with("1.1 tracegate-"), "{via}");

    let answer = gw
        .chat(&chat_body("again"))
        .header("via", format!("1.1 proxy, {via}"))
        .answer()
        .await;
    assert_eq!(answer.status, 508);
    assert_eq!(answer.json()["error"]["code"], "loop_detected");
    assert_eq!(gw.received().len(), 1, "the loop went no further");

    let records = gw.records().await;
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r.error.as_ref().is_some_and(|e| e.kind == "loop_detected"))
        .collect();
    assert_eq!(refused.len(), 1, "recorded once");
    assert_eq!(refused[0].http_status, Some(508));
    println!(
        "fault: a request carrying this gateway's Via ({via}): 508, {} record",
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cannot_remove_or_replace_the_hop_entry() {
    let gw =
        Setup::with_route(json!({"name": "r", "model_prefix": "*", "allow_caller_headers": true}))
            .await;
    let answer = gw
        .chat(&chat_body("hi"))
        .header("via", "1.1 caller-proxy")
        .header("connection", "via")
        .header(
            "x-tracegate-provider-data",
            json!({"r_extra_headers": {"via": "1.1 spoofed"}}).to_string(),
        )
        .answer()
        .await;
    assert_eq!(answer.status, 200);
    let received = &gw.received()[0];
    let via: Vec<&str> = received
        .headers
        .iter()
        .filter(|(name, _)| name == "via")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(via.len(), 1, "{via:?}");
    assert!(via[0].starts_with("1.1 tracegate-"), "{via:?}");
    println!("fault: Via with Connection: via and spoofed provider data: the upstream saw {via:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_through_two_gateways_ends_at_the_second_visit() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A written kind: no start-up probe, which each gateway would send
    // through the other and record.
    let a = Serve::new(dir_a.path()).args(["--db", "traces.db", "--kind", "generic"]);
    let b = Serve::new(dir_b.path()).args(["--db", "traces.db", "--kind", "generic"]);
    let (port_a, port_b) = (a.port(), b.port());
    let a = a.upstream(&format!("http://127.0.0.1:{port_b}/v1")).spawn();
    let b = b.upstream(&format!("http://127.0.0.1:{port_a}/v1")).spawn();

    let answer = common::within("the looping call", a.chat(&chat_body("round")).answer()).await;
    assert_eq!(answer.status, 508);
    assert_eq!(answer.json()["error"]["code"], "loop_detected");
    a.stop().await;
    b.stop().await;
    let (at_a, at_b) = (
        records_in(&dir_a.path().join("traces.db")),
        records_in(&dir_b.path().join("traces.db")),
    );
    let kinds = |records: &[tracegate::record::TraceRecord]| -> Vec<String> {
        let mut kinds: Vec<String> = records
            .iter()
            .map(|r| r.error.as_ref().map_or("ok".into(), |e| e.kind.to_string()))
            .collect();
        kinds.sort();
        kinds
    };
    assert_eq!(kinds(&at_a), ["loop_detected", "upstream_http_error"]);
    assert_eq!(kinds(&at_b), ["upstream_http_error"]);
    println!(
        "fault: a loop through two gateways: answered 508, {} records in all (A {}, B {})",
        at_a.len() + at_b.len(),
        at_a.len(),
        at_b.len()
    );
}

#[test]
fn a_gateway_pointed_at_itself_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::process::free_port();
    let listen = format!("127.0.0.1:{port}");
    for upstream in [
        format!("http://localhost:{port}/v1"),
        format!("http://127.0.0.1:{port}"),
        format!("http://0.0.0.0:{port}/v1"),
    ] {
        let stderr = refused_serve(
            dir.path(),
            &["--listen", &listen, "--upstream", &upstream],
            &[],
        );
        assert!(
            stderr.contains("invalid configuration: upstream: ")
                && stderr.contains("own listen address")
                && stderr.trim_end().ends_with("(--upstream)"),
            "{stderr}"
        );
    }
    let own = format!("http://{listen}/v1");
    let stderr = refused_serve(
        dir.path(),
        &["--listen", &listen],
        &[("OPENAI_BASE_URL", &own)],
    );
    assert!(stderr.trim_end().ends_with("(OPENAI_BASE_URL)"), "{stderr}");
    let routes = format!(
        r#"[{{"name": "pool", "model_prefix": "*", "workers": ["http://10.0.0.1:8000", "{own}"]}}]"#
    );
    let stderr = refused_serve(
        dir.path(),
        &["--listen", &listen],
        &[("TRACEGATE_ROUTES", &routes)],
    );
    assert!(
        stderr.contains("routes[0] (pool): workers[1].url: ")
            && stderr.contains("(TRACEGATE_ROUTES)"),
        "{stderr}"
    );
    println!(
        "fault: an upstream on the gateway's own address {listen}: refused at start, naming the key"
    );
}
