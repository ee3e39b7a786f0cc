#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What an open stream costs the gateway in heap: a guard on the buffers
//! each one holds, counted in bytes allocated, not in RSS (issue 14,
//! point 9: 1000 slow streams within 64 MiB).
//!
//! The gateway runs in this process, under an allocator that counts the
//! bytes live; the mock upstream is the real binary in a process of its
//! own, so its buffers are not counted. Streams are opened on raw sockets
//! (a client of a few hundred bytes each), held by the mock after their
//! first chunk, and the heap is read with all of them open. An open stream
//! holds hyper's buffers — the client connection's read and write buffers,
//! the upstream connection's, 8 KiB each, and the upstream connection's
//! request queue (a block of 32 requests, ~8.6 KiB) — and the call's own
//! state. Before the gateway peeked at a connection's first bytes itself
//! (`server/connection.rs`, `sniff`), the client connection's read buffer
//! was 16 KiB: 49.7 KiB of buffers and 65.5 KiB of heap a stream (this
//! test, debug build), 41.5 and 57.5 KiB since.

mod common;

use common::process::{Running, free_port, tracegate};
use common::{Gateway, TestGateway, within};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The system allocator, counting the bytes live, and apart the buffers:
/// allocations of [`BUFFER`] bytes or more.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static BUFFERS: AtomicUsize = AtomicUsize::new(0);
static BUFFER_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The size from which an allocation counts as a buffer (hyper's are
/// 8 KiB and more; a connection's task is a few KiB).
const BUFFER: usize = 6 * 1024;

fn allocated(size: usize) {
    LIVE.fetch_add(size, Ordering::Relaxed);
    if size >= BUFFER {
        BUFFERS.fetch_add(1, Ordering::Relaxed);
        BUFFER_BYTES.fetch_add(size, Ordering::Relaxed);
    }
}

fn freed(size: usize) {
    LIVE.fetch_sub(size, Ordering::Relaxed);
    if size >= BUFFER {
        BUFFERS.fetch_sub(1, Ordering::Relaxed);
        BUFFER_BYTES.fetch_sub(size, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocated(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        freed(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        allocated(new_size);
        freed(layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The heap live now: all of it, the buffers' count and their bytes.
fn heap() -> [usize; 3] {
    [&LIVE, &BUFFERS, &BUFFER_BYTES].map(|n| n.load(Ordering::Relaxed))
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How many streams are held open at once.
const STREAMS: usize = 100;

/// The most heap an open stream may hold (57.5 KiB measured; 65.5 KiB with
/// a 16 KiB read buffer).
const MOST_PER_STREAM: usize = 60 * 1024;

/// The most bytes an open stream may hold in buffers: hyper's four 8 KiB
/// buffers and the upstream connection's request queue (41.5 KiB
/// measured; 49.7 KiB with a 16 KiB read buffer).
const MOST_BUFFER_BYTES: usize = 44 * 1024;

/// A streamed call the mock holds after its first chunk: its head and its
/// body.
fn held_request(port: u16) -> (String, &'static [u8]) {
    let body = br#"{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"a slow stream a slow stream a slow stream"}]}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\
         x-mock-hold: 1\r\nx-mock-chunks: 4\r\nconnection: close\r\n\r\n",
        body.len()
    );
    (head, body)
}

/// Opens a held stream and waits for its first event.
async fn open_stream(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The head, then the body, in two writes, as SDKs send them: hyper
    // reads the body into the buffer the head was read into.
    let (head, body) = held_request(port);
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    stream.write_all(body).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 2048];
    while !seen.windows(6).any(|w| w == b"data: ") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "the stream ended early: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

/// Reads a stream to its end.
async fn read_to_end(mut stream: TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    stream.read_to_end(&mut all).await.unwrap();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_holds_a_bounded_heap() {
    let dir = tempfile::tempdir().unwrap();
    let mock_port = free_port();
    let mut cmd = tracegate(dir.path());
    cmd.args([
        "mock-upstream",
        "--listen",
        &format!("127.0.0.1:{mock_port}"),
    ]);
    let mock = Running::spawn(cmd, mock_port);
    let gw = TestGateway::start(&mock.url("/v1")).await;
    let port: u16 = gw.at("").rsplit(':').next().unwrap().parse().unwrap();

    // Warm up: what the first calls allocate, every later call reuses.
    for _ in 0..10 {
        let first = open_stream(port).await;
        mock_release(mock_port).await;
        read_to_end(first).await;
    }
    gw.records().await;

    let before = heap();
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(within("a held stream opens", open_stream(port)).await);
    }
    let open = heap();
    let [per_stream, buffers, buffer_bytes] =
        [0, 1, 2].map(|i| open[i].saturating_sub(before[i]) as f64 / STREAMS as f64);
    mock_release(mock_port).await;
    for stream in streams {
        let answer = within("a stream ends", read_to_end(stream)).await;
        assert!(answer.ends_with(b"\r\n0\r\n\r\n"), "a stream was cut");
    }
    assert_eq!(gw.records().await.len(), 10 + STREAMS);
    eprintln!(
        "per open stream: {per_stream:.0} bytes of heap, {buffers:.2} buffers of {BUFFER} \
         bytes or more holding {buffer_bytes:.0}"
    );
    assert!(
        buffer_bytes <= MOST_BUFFER_BYTES as f64,
        "an open stream holds {buffer_bytes:.0} bytes in {buffers:.2} buffers \
         (at most {MOST_BUFFER_BYTES})"
    );
    assert!(
        per_stream <= MOST_PER_STREAM as f64,
        "an open stream holds {per_stream:.0} bytes of heap (at most {MOST_PER_STREAM})"
    );
    mock.stop().await;
}

/// Lets every held stream of the mock go on.
async fn mock_release(port: u16) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "POST /mock/release HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 2"), "{answer:?}");
}
