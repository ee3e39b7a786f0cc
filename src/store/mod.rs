//! The store: every TraceRecord in one local SQLite file.
//!
//! SQLite because users already have `sqlite3`, a single file is easy to copy
//! off a training node, and WAL gives one writer plus many readers without a
//! server. The store has three parts, one file each:
//!
//! * [`migrate`] brings the file to the schema in `schema/` (forward only);
//! * [`writer`] is the single writer thread, fed through a bounded channel,
//!   committing in batches; request tasks never wait on disk;
//! * [`read`] answers queries on separate read-only connections;
//! * [`prune`] deletes what is older than a cutoff and reclaims the space
//!   (`tracegate prune`, run from another process while a gateway writes).
//!
//! [`codec`] holds the compact encodings of the bulky record parts.

pub mod codec;
pub mod migrate;
pub mod outbox;
pub mod prune;
pub mod read;
pub mod stats;
mod vocabulary;
pub mod writer;

pub use read::{RunInfo, SessionInfo, StoreReader, TraceFilter};
pub use writer::{ExportProgress, Reservation, StoreWriter};

use crate::config::StoreOptions;
use crate::metrics::Metrics;
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
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

/// Opens a connection for writing with the pragmas the store relies on.
pub fn open_for_writing(path: &Path) -> Result<Connection, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    let conn =
        Connection::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    // page_size (new databases only; it must come before WAL): a small
    // call's row is 2-3 KB, so on 4 KiB pages two never share a page and
    // half of each page is empty; 16 KiB pages hold six. WAL: readers never
    // block the writer. synchronous=NORMAL: a commit is durable against a
    // process crash (not against power loss until the next checkpoint),
    // without an fsync per batch.
    conn.execute_batch(
        "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(|e| format!("cannot configure {}: {e}", path.display()))?;
    Ok(conn)
}

impl Store {
    /// Opens (creating and migrating as needed) the database at `path` and
    /// starts the writer thread.
    pub fn open(
        path: &Path,
        options: StoreOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Store, String> {
        let mut conn = open_for_writing(path)?;
        let applied = migrate::apply(&mut conn)?;
        if !applied.is_empty() {
            tracing::info!(?applied, db = %path.display(), "applied schema migrations");
        }
        let (tx, rx) = mpsc::channel(options.queue_capacity);
        let batch_max = options.batch_max;
        let spans_committed = Arc::new(Notify::new());
        let notify = spans_committed.clone();
        let thread = std::thread::Builder::new()
            .name("tracegate-store".into())
            .spawn(move || writer::run(conn, rx, batch_max, notify, &metrics))
            .map_err(|e| format!("cannot start the store writer: {e}"))?;
        Ok(Store {
            writer: StoreWriter::new(tx),
            reader: StoreReader::new(path.to_path_buf()),
            spans_committed,
            thread,
        })
    }

    /// Commits everything queued, stops the writer thread and waits for it.
    pub async fn close(self) -> Result<(), String> {
        let result = self.writer.shutdown().await;
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| format!("cannot join the store writer: {e}"))?
            .map_err(|_| "the store writer panicked".to_string())?;
        result
    }
}
