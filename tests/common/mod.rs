//! Shared test fixtures: a mock upstream and a gateway, both in this process,
//! on real sockets on 127.0.0.1, each stopped when the test ends.
#![allow(dead_code)] // each test binary uses its own subset

pub mod otlp;
pub mod process;
pub mod replay;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use tempfile::TempDir;
use tracegate::config::{Config, ServeArgs};
use tracegate::mock_upstream::{self, MockOptions, MockServer};
use tracegate::record::TraceRecord;
use tracegate::server::Server;
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

/// A gateway served in this process, recording into a temporary database.
pub struct TestGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub url: String,
    /// The database file.
    pub db: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
    _dir: TempDir,
}

impl TestGateway {
    /// A gateway in front of `upstream`.
    pub async fn start(upstream: &str) -> TestGateway {
        Self::start_with(ServeArgs {
            upstream: vec![upstream.to_string()],
            ..ServeArgs::default()
        })
        .await
    }

    /// A gateway with these settings (listen and db are chosen here).
    pub async fn start_with(args: ServeArgs) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("traces.db");
        let config = Config::load(&ServeArgs {
            listen: Some("127.0.0.1:0".into()),
            db: Some(db.display().to_string()),
            ..args
        })
        .unwrap();
        Self::start_config(config, dir).await
    }

    /// Stops this gateway and starts another on the same database.
    pub async fn restart_with(self, args: ServeArgs) -> TestGateway {
        let TestGateway {
            db,
            stop,
            task,
            _dir: dir,
            ..
        } = self;
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        if let Some(task) = task {
            task.await.unwrap().unwrap();
        }
        let config = Config::load(&ServeArgs {
            listen: Some("127.0.0.1:0".into()),
            db: Some(db.display().to_string()),
            ..args
        })
        .unwrap();
        Self::start_config(config, dir).await
    }

    /// A gateway with this configuration, recording in `dir`.
    pub async fn start_config(config: Config, dir: TempDir) -> TestGateway {
        let db = config.db.clone();
        let server = Server::bind(&config).await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestGateway {
            addr,
            url: format!("http://{addr}"),
            db,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Waits until every ended call is recorded.
    pub async fn flush(&self) {
        let response = client().post(self.at("/admin/flush")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }

    /// Every record, oldest first (after a flush).
    pub async fn records(&self) -> Vec<TraceRecord> {
        self.flush().await;
        let store = Reader::open(&self.db).unwrap();
        store.traces(&TraceFilter::default()).unwrap()
    }

    /// The only record (after a flush); fails if there is not exactly one.
    pub async fn only_record(&self) -> TraceRecord {
        let mut records = self.records().await;
        assert_eq!(records.len(), 1, "expected exactly one record");
        records.remove(0)
    }

    /// Stops the gateway gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// A plain HTTP client.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// `GET url` as JSON.
pub async fn get_json(url: impl reqwest::IntoUrl) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A small chat request body.
pub fn chat_body(content: &str) -> Value {
    serde_json::json!({"model": "mock-model", "messages": [{"role": "user", "content": content}]})
}

/// Guards against hangs: a test step that should be quick gets this long.
pub const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`HANG_GUARD`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {HANG_GUARD:?}"))
}
