//! The store: every TraceRecord in one local SQLite file.
//!
//! SQLite because users already have `sqlite3`, a single file is easy to copy
//! off a training node, and WAL gives one writer plus many readers without a
//! server.
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
//! wrong. A second backend (PostgreSQL, say) would be a sibling of this
//! SQLite one behind the same methods.
//!
//! **Inside**, one concept per file:
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
//! * `query` builds every read's SQL from a filter; `traces`, `runs`,
//!   `stats` and [`outbox`] are the reads, run by `reader`'s handles on
//!   read-only connections; `attempts` decides which calls retry a step;
//! * [`prune`] deletes what is older than a cutoff and reclaims the space
//!   (`tracegate prune`, run from another process while a gateway writes).

mod attempts;
pub mod codec;
mod commit;
mod connection;
mod content;
mod error;
mod legacy;
pub mod migrate;
pub mod outbox;
pub mod prune;
pub mod query;
mod raw;
mod reader;
mod record_json;
mod row;
mod runs;
mod session_log;
mod stats;
pub mod summary;
mod traces;
mod vocabulary;
pub mod writer;

pub use error::{StoreError, StoreResult};
pub use prune::Pruner;
pub use query::{CallFilter, RunFilter, SessionFilter, TraceFilter};
pub use reader::{Reader, StoreReader};
pub use stats::CHART_SAMPLE;
pub use writer::{ExportProgress, Reservation, StoreWriter};

use crate::config::StoreOptions;
use crate::metrics::Metrics;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

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
    /// Opens (creating and migrating as needed) the database at `path` and
    /// starts the writer thread.
    pub fn open(path: &Path, options: StoreOptions, metrics: Arc<Metrics>) -> StoreResult<Store> {
        let mut conn = connection::open_writable(path, options.busy_timeout)?;
        let applied = migrate::apply(&mut conn)?;
        if !applied.is_empty() {
            tracing::info!(?applied, db = %path.display(), "applied schema migrations");
        }
        let (tx, rx) = mpsc::channel(options.queue_capacity);
        let batch_max = options.batch_max;
        let spans_committed = Arc::new(Notify::new());
        let notify = spans_committed.clone();
        let references = Arc::new(raw::References::default());
        let announced = references.clone();
        let thread = std::thread::Builder::new()
            .name("tracegate-store".into())
            .spawn(move || commit::run(conn, rx, batch_max, notify, &metrics, &announced))
            .map_err(|source| StoreError::Io {
                context: "cannot start the store writer".into(),
                source,
            })?;
        Ok(Store {
            writer: StoreWriter::new(tx, references),
            reader: StoreReader::new(path.to_path_buf(), options.busy_timeout),
            spans_committed,
            thread,
        })
    }

    /// Commits everything queued, stops the writer thread and waits for it.
    pub async fn close(self) -> StoreResult<()> {
        let result = self.writer.shutdown().await;
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| StoreError::WriterPanicked)?;
        result
    }
}
