//! Shared test fixtures: the mock upstream, gateways (in this process, or the
//! real binary as a child), the requests a test makes and the waits it
//! needs, all on real sockets on 127.0.0.1 and stopped when the test ends.
//!
//! Most tests start from [`Setup::new`] (the mock and a gateway in front of
//! it) and talk to it through [`Gateway`]: `gw.chat(&body).answer().await`,
//! then `gw.only_record().await` and `gw.received()`.
#![allow(dead_code, unused_imports)]
// each test binary uses its own subset
// Fixtures fail a test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod dashboard;
pub mod gateway;
pub mod http;
pub mod otlp;
pub mod postgres;
pub mod process;
pub mod raw;
pub mod replay;

pub use gateway::{Setup, TestGateway};
pub use http::{
    Answer, Gateway, Request, all_at_once, client, first_chunk, rest_of_stream, trace_id,
};
pub use postgres::sqlite_only;

use serde_json::{Value, json};
use std::path::Path;
use tracegate::mock_upstream::{self, MockOptions, MockServer};
use tracegate::record::TraceRecord;
use tracegate::store::{Reader, TraceFilter};

/// Starts the built-in mock model server on a free port.
pub async fn start_mock() -> MockServer {
    start_mock_with(MockOptions {
        chunks: 4,
        ..MockOptions::default()
    })
    .await
}

/// Starts the mock with specific defaults.
pub async fn start_mock_with(options: MockOptions) -> MockServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    mock_upstream::start(listener, options).unwrap()
}

/// An upstream URL (`http://127.0.0.1:port` + `path`) nothing listens on.
pub fn nowhere(path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", process::free_port())
}

/// A small chat request body.
pub fn chat_body(content: &str) -> Value {
    json!({"model": "mock-model", "messages": [{"role": "user", "content": content}]})
}

/// A small chat request body asking for a stream.
pub fn stream_body(content: &str) -> Value {
    let mut body = chat_body(content);
    body["stream"] = json!(true);
    body
}

/// Every record in the database file `db`, oldest first; under
/// `TRACEGATE_TEST_BACKEND=postgres`, when there is no such file, in the
/// PostgreSQL database of its directory (where the fixtures recorded).
pub fn records_in(db: &Path) -> Vec<TraceRecord> {
    if let Some(url) = postgres::database_instead_of(db) {
        return postgres::records_in(&url);
    }
    let store = Reader::open(&tracegate::store::Database::from(db)).unwrap();
    store.traces(&TraceFilter::default()).unwrap()
}

/// What to pass as `--db` for the database file `db`: the file, or its
/// directory's PostgreSQL database, as for [`records_in`].
pub fn db_arg(db: &Path) -> String {
    postgres::database_instead_of(db).unwrap_or_else(|| db.display().to_string())
}

/// The single number `sql` selects from the database file `db` (or its
/// directory's PostgreSQL database, as for [`records_in`]).
pub fn count(db: &Path, sql: &str) -> i64 {
    if let Some(url) = postgres::database_instead_of(db) {
        return postgres::count(&url, sql);
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Guards against hangs: a test step that should be quick gets this long.
pub const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`HANG_GUARD`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {HANG_GUARD:?}"))
}

/// Asks `probe` again and again until it has an answer, failing the test
/// if none comes within [`HANG_GUARD`].
pub async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    within(what, async {
        loop {
            if let Some(answer) = probe().await {
                return answer;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Waits until `check` holds, failing the test if it does not within
/// [`HANG_GUARD`].
pub async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    eventually(what, async || check().await.then_some(())).await
}
