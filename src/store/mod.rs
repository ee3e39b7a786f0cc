//! The store: every TraceRecord in one local SQLite file, or in a
//! PostgreSQL database several gateway replicas share ([`Database`]).
//!
//! SQLite by default because users already have `sqlite3`, a single file is
//! easy to copy off a training node, and WAL gives one writer plus many
//! readers without a server. PostgreSQL (`postgres/`) when one machine is
//! not enough: stateless replicas behind a balancer, one database.
//!
//! **The seam.** The rest of the gateway talks to the store through four
//! handles, and only through their methods — no SQL and no connection leaves
//! this module:
//!
//! * [`Store`] opens (creating and migrating) the file for a gateway and
//!   holds the other two: [`StoreWriter`] (record submit, flush, sessions,
//!   export progress) and [`StoreReader`] (traces, summaries, sessions, runs,
//!   the UI's pages and chart points, the export outbox — async);
//! * [`Reader`] answers the same questions on the calling thread, on a file a
//!   command opens read-only; [`Pruner`] prunes one.
//!
//! Their arguments are the filters of [`query`] and their answers the plain
//! data of [`summary`] (and records), with [`StoreError`] for what went
//! wrong. Both backends answer the same methods: [`Store::open`] starts
//! the writer thread of the one [`Database`] names, and the read handles
//! hold a connection of either (an enum, matched once per method).
//!
//! **Inside**, one concept per file (SQLite's here, PostgreSQL's in
//! `postgres/`, described there):
//!
//! * [`migrate`] brings the file to the schema in `schema/` (forward only;
//!   `legacy` reads the rows of older layouts it converts); `connection`
//!   opens it, with the pragmas the store relies on;
//! * `row` is the `traces` row: its column list, a record encoded into named
//!   parameters and decoded back; `record_json` the part of a record no
//!   column holds; [`codec`] the compact encodings (raw little-endian token
//!   ids and logprobs, zstd); `raw` the request and response blobs,
//!   compressed against the call's own content;
//! * `content` is the content calls share — message nodes, token runs,
//!   tool lists, per-choice completions — with reference counts and the
//!   sweep of what nothing uses; `session_log` is the writer's memory of
//!   recent calls, which places a new call's content after the longest
//!   prefix it shares with them (schema/storage.md describes the layout);
//! * [`writer`] is the handle to the single writer thread, fed through a
//!   bounded channel; `commit` is that thread, committing in batches —
//!   request tasks never wait on disk;
//! * `backlog` holds what the writer cannot commit yet (a locked, full or
//!   read-only database, an I/O error), in the `spill` file next to the
//!   database and then in memory, until it can; `health` is the condition
//!   the writer publishes for `/health` and `/metrics`;
//! * `query` builds every read's SQL from a filter; `traces`, `runs`,
//!   `stats`, [`feedback`] and [`outbox`] are the reads (feedback is
//!   written by `commit` too), run by `reader`'s handles on
//!   read-only connections; `attempts` decides which calls retry a step;
//! * `harness` is the `harness_spans` table: the spans a harness sent to
//!   the OTLP receiver, committed by the writer like records (and queued
//!   in the outbox beside them), read by session and by span;
//! * [`prune`] deletes what is older than a cutoff and reclaims the space
//!   (`tracegate prune`, run from another process while a gateway writes).
//!
//! **What can be lost.** A record is kept from the moment its call's answer
//! ends: in the channel, in a transaction, in the backlog — for as long as
//! the store cannot commit, a minute or an hour. A graceful stop leaves the
//! backlog in the spill file, which the next start commits first. Only a
//! kill -9 or a power cut loses records: those in the channel and the
//! transaction of the moment (one commit window, at most `store.batch_max`
//! plus `store.queue_capacity` records under full load, a few at a normal
//! one), plus, while the store was degraded, the backlog's records held in
//! memory because the spill file could not be written either.

mod attempts;
mod backlog;
pub mod codec;
mod commit;
mod connection;
mod content;
mod database;
mod error;
pub mod feedback;
mod harness;
mod health;
mod legacy;
pub mod migrate;
pub mod outbox;
mod postgres;
pub mod prune;
pub mod query;
mod raw;
mod reader;
mod record_json;
mod row;
mod runs;
mod session_log;
mod spill;
mod stats;
pub mod summary;
mod traces;
mod vocabulary;
pub mod writer;

pub use database::{Database, PostgresUrl};
pub use error::{StoreError, StoreFault, StoreResult};
pub use health::{BacklogStatus, StoreState, StoreStatus};
pub use prune::Pruner;
pub use query::{CallFilter, RunFilter, SessionFilter, TraceFilter, TraceKey};
pub use reader::{Reader, StoreReader};
pub use stats::CHART_SAMPLE;
pub use writer::{ExportProgress, Reservation, StoreWriter};

use crate::config::StoreOptions;
use crate::metrics::Metrics;
use backlog::Backlog;
use connection::Writable;
use health::Condition;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

/// Which database a store keeps its records in (`/health` names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One SQLite file: the default.
    Sqlite,
    /// A PostgreSQL database, which several replicas may share.
    Postgres,
}

/// An open store: the writer handle, the reader, and the writer thread.
pub struct Store {
    /// Hands records and commands to the writer thread.
    pub writer: StoreWriter,
    /// Runs read queries.
    pub reader: StoreReader,
    /// Notified after each commit that added spans to the export outbox.
    pub spans_committed: Arc<Notify>,
    thread: std::thread::JoinHandle<()>,
}

impl Store {
    /// Opens (creating and migrating as needed) the store in `db` for the
    /// replica `instance` and starts the writer thread, which first commits
    /// what a previous run left in the spill file.
    pub fn open(
        db: &Database,
        options: StoreOptions,
        metrics: Arc<Metrics>,
        instance: &str,
    ) -> StoreResult<Store> {
        match db {
            Database::Sqlite(path) => Self::open_sqlite(path, options, metrics),
            Database::Postgres(url) => postgres::open(url, options, metrics, instance),
        }
    }

    /// [`Store::open`] on a SQLite file.
    fn open_sqlite(
        path: &Path,
        options: StoreOptions,
        metrics: Arc<Metrics>,
    ) -> StoreResult<Store> {
        let db = Writable {
            path: path.to_path_buf(),
            busy_timeout: options.busy_timeout,
            max_size: options.max_size,
        };
        let mut conn = connection::open_writable(path, options.busy_timeout)?;
        let applied = migrate::apply(&mut conn)?;
        if !applied.is_empty() {
            tracing::info!(?applied, db = %path.display(), "applied schema migrations");
        }
        connection::limit_size(&conn, options.max_size)?;
        let spill = options.spill_file.unwrap_or_else(|| spill_file_of(path));
        let backlog = Backlog::open(spill.clone(), options.backlog_memory)?;
        if !backlog.is_empty() {
            tracing::info!(spill = %spill.display(), "committing {} records a previous run kept", backlog.len());
        }
        let condition = Arc::new(Condition::new(spill));
        let (tx, rx) = mpsc::channel(options.queue_capacity);
        let spans_committed = Arc::new(Notify::new());
        let references = Arc::new(raw::References::default());
        let start = commit::Start {
            conn,
            db,
            backlog,
            condition: condition.clone(),
            spans_committed: spans_committed.clone(),
            references: references.clone(),
            metrics,
            batch_max: options.batch_max,
        };
        let thread = spawn_writer_thread(move |runtime| commit::run(start, rx, runtime))?;
        Ok(Store {
            writer: StoreWriter::new(
                tx,
                condition,
                options.flush_timeout,
                writer::Encoding::Sqlite(references),
            ),
            reader: StoreReader::new(path.to_path_buf(), options.busy_timeout),
            spans_committed,
            thread,
        })
    }

    /// Commits everything queued (or keeps it in the spill file, if the
    /// store cannot commit it), stops the writer thread and waits for it.
    pub async fn close(self) -> StoreResult<()> {
        let result = self.writer.shutdown().await;
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| StoreError::WriterPanicked)?;
        result
    }
}

/// Starts the writer thread `run`, with its own runtime for timed waits on
/// its channel.
fn spawn_writer_thread(
    run: impl FnOnce(tokio::runtime::Runtime) + Send + 'static,
) -> StoreResult<std::thread::JoinHandle<()>> {
    let cannot_start = |source| StoreError::Io {
        context: "cannot start the store writer".into(),
        source,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(cannot_start)?;
    std::thread::Builder::new()
        .name("tracegate-store".into())
        .spawn(move || run(runtime))
        .map_err(cannot_start)
}

/// The spill file next to the database: `traces.db` spills to
/// `traces.db-spill.jsonl`, beside SQLite's own `traces.db-wal`.
pub fn spill_file_of(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push("-spill.jsonl");
    db.with_file_name(name)
}
