//! A gateway served in this process ([`TestGateway`]), and the setup most
//! tests start from: the mock upstream with a gateway in front of it
//! ([`Setup`]).
//!
//! Each gateway records into a database in its own temporary directory (or,
//! with `TRACEGATE_TEST_BACKEND=postgres`, a fresh PostgreSQL database of
//! that directory: [`postgres`](super::postgres)) and listens on a free
//! port; both go away with it. Records are read back from the database
//! after a flush, so a test sees exactly what was committed.

use super::http::Gateway;
use super::postgres::Backend;
use super::{records_in, start_mock};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use tempfile::TempDir;
use tracegate::config::{Config, ServeArgs};
use tracegate::mock_upstream::{MockServer, ReceivedRequest};
use tracegate::record::TraceRecord;
use tracegate::server::Server;

/// A gateway served in this process, recording into a temporary database.
pub struct TestGateway {
    /// `http://` and where it listens.
    url: String,
    /// The database file (under the SQLite backend).
    pub db: PathBuf,
    /// The PostgreSQL database's URL, under the PostgreSQL backend.
    pub postgres: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tracegate::store::StoreError>>>,
    dir: TempDir,
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
        Self::serve(args, tempfile::tempdir().unwrap()).await
    }

    /// Stops this gateway and starts another on the same database.
    pub async fn restart_with(mut self, args: ServeArgs) -> TestGateway {
        self.shut_down().await;
        Self::serve(args, self.dir).await
    }

    /// Serves `args` on a free port, recording into `dir/traces.db` (or the
    /// directory's PostgreSQL database: [`backend`](super::postgres::backend)).
    async fn serve(args: ServeArgs, dir: TempDir) -> TestGateway {
        let postgres = match super::postgres::backend() {
            Backend::Sqlite => None,
            Backend::Postgres => Some(super::postgres::database_for(dir.path())),
        };
        let db = postgres
            .clone()
            .unwrap_or_else(|| dir.path().join("traces.db").display().to_string());
        let config = Config::load(&ServeArgs {
            listen: Some("127.0.0.1:0".into()),
            db: Some(db),
            ..args
        })
        .unwrap();
        Self::start_on(config, dir, postgres).await
    }

    /// A gateway with this configuration, recording in `dir/traces.db`.
    pub async fn start_config(config: Config, dir: TempDir) -> TestGateway {
        Self::start_on(config, dir, None).await
    }

    /// A gateway with this configuration, recording in `dir` or, when
    /// `postgres` is its URL, in that database.
    async fn start_on(config: Config, dir: TempDir, postgres: Option<String>) -> TestGateway {
        let server = Server::bind(&config).await.unwrap();
        let url = format!("http://{}", server.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestGateway {
            url,
            db: config
                .db
                .sqlite_path()
                .map_or_else(|| dir.path().join("traces.db"), Path::to_path_buf),
            postgres,
            stop: Some(stop),
            task: Some(task),
            dir,
        }
    }

    /// Every record, oldest first (after a flush).
    pub async fn records(&self) -> Vec<TraceRecord> {
        self.flush().await;
        match &self.postgres {
            None => records_in(&self.db),
            Some(url) => super::postgres::records_in(url),
        }
    }

    /// The only record (after a flush); fails if there is not exactly one.
    pub async fn only_record(&self) -> TraceRecord {
        let mut records = self.records().await;
        assert_eq!(records.len(), 1, "expected exactly one record");
        records.remove(0)
    }

    /// The single number `sql` selects, read from the database as it is.
    pub fn count(&self, sql: &str) -> i64 {
        match &self.postgres {
            None => super::count(&self.db, sql),
            Some(url) => super::postgres::count(url, sql),
        }
    }

    /// Stops the gateway gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Gateway for TestGateway {
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

/// The mock upstream and a gateway in front of it: what most tests start
/// from. It is the gateway (every [`TestGateway`] method works on it) and
/// holds the mock, to ask what reached the upstream.
pub struct Setup {
    /// The upstream.
    pub mock: MockServer,
    gateway: TestGateway,
}

impl Setup {
    /// The mock and a gateway with the default settings.
    pub async fn new() -> Setup {
        Self::with(|_| {}).await
    }

    /// The mock and a gateway with settings `tweak` changes (the upstream
    /// is the mock).
    pub async fn with(tweak: impl FnOnce(&mut ServeArgs)) -> Setup {
        let mock = start_mock().await;
        let gateway = TestGateway::start_with(Self::args(&mock, tweak)).await;
        Setup { mock, gateway }
    }

    /// The mock and a gateway whose only route is `route` (its name, model
    /// prefix and settings) to the mock.
    pub async fn with_route(route: serde_json::Value) -> Setup {
        let mock = start_mock().await;
        let mut route = route;
        route["upstream"] = serde_json::json!(mock.base_url());
        let gateway = TestGateway::start_with(ServeArgs {
            routes: Some(serde_json::json!([route]).to_string()),
            ..ServeArgs::default()
        })
        .await;
        Setup { mock, gateway }
    }

    /// A streamed chat call with `body`, which the mock holds open after its
    /// first chunk until [`release`](tracegate::mock_upstream::MockState::release):
    /// the response, and that chunk.
    pub async fn held_stream(&self, body: &serde_json::Value) -> (reqwest::Response, bytes::Bytes) {
        let mut response = self.chat(body).header("x-mock-hold", "1").send().await;
        let first = super::first_chunk(&mut response).await;
        (response, first)
    }

    /// Stops the gateway and starts another on the same database and mock,
    /// with settings `tweak` changes.
    pub async fn restart(self, tweak: impl FnOnce(&mut ServeArgs)) -> Setup {
        let args = Self::args(&self.mock, tweak);
        let gateway = self.gateway.restart_with(args).await;
        Setup {
            mock: self.mock,
            gateway,
        }
    }

    fn args(mock: &MockServer, tweak: impl FnOnce(&mut ServeArgs)) -> ServeArgs {
        let mut args = ServeArgs {
            upstream: vec![mock.base_url()],
            ..ServeArgs::default()
        };
        tweak(&mut args);
        args
    }

    /// Every request that reached the mock, in order.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.mock.state.received()
    }

    /// `POST /v1/chat/completions` with `body` straight to the mock, past
    /// the gateway: the reference answer.
    pub fn direct_chat(&self, body: &serde_json::Value) -> super::Request {
        super::Request::new(
            reqwest::Method::POST,
            format!("{}/chat/completions", self.mock.base_url()),
        )
        .json(body)
    }
}

impl Deref for Setup {
    type Target = TestGateway;

    fn deref(&self) -> &TestGateway {
        &self.gateway
    }
}
