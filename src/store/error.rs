//! What can go wrong in the store, as values a caller can tell apart.
//!
//! Every store operation returns a [`StoreError`]; strings appear only at the
//! edges, where the HTTP API answers any of them with a 500 (and logs it) and
//! the CLI turns a missing or foreign database file into a usage error (exit
//! 2) and everything else into a run-time failure (exit 1).
//!
//! SQLite failures carry what the store was doing (`context`) beside
//! SQLite's own error. A lock held by another process past the busy timeout
//! is its own variant, [`StoreError::Busy`], decided in one place
//! ([`StoreError::sqlite`], also behind `?` on a `rusqlite::Error`): the
//! writer retries a busy batch, prune reports a busy database as such.

use crate::store::codec::CodecError;
use std::path::PathBuf;
use std::sync::Arc;

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A command was pointed at a database file that does not exist (read
    /// paths never create one).
    #[error("no database at {}", .0.display())]
    Missing(PathBuf),
    /// The file exists but is not a tracegate store.
    #[error("{} is not a tracegate database: {reason}", path.display())]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The database was written by a newer tracegate.
    #[error(
        "the database has schema version {found}, newer than this tracegate \
         understands ({known}); upgrade tracegate"
    )]
    NewerSchema {
        /// The newest migration the database has.
        found: i64,
        /// The newest migration this binary knows.
        known: i64,
    },
    /// The database has an older schema: the gateway migrates it when it
    /// opens it, the commands do not.
    #[error(
        "{} has schema version {found}, older than this tracegate's ({known}); \
         start `tracegate serve --db {}` on it once to upgrade it in place",
        path.display(), path.display()
    )]
    OlderSchema {
        /// The file.
        path: PathBuf,
        /// The newest migration the database has.
        found: i64,
        /// The newest migration this binary knows.
        known: i64,
    },
    /// An SQLite statement failed.
    #[error("{context}: {source}")]
    Sqlite {
        /// What the store was doing.
        context: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Another process held the database's lock for longer than the busy
    /// timeout.
    #[error("{context}: the database stayed locked by another process: {source}")]
    Busy {
        /// What the store was doing.
        context: String,
        /// SQLite's error (`SQLITE_BUSY` or `SQLITE_LOCKED`).
        #[source]
        source: rusqlite::Error,
    },
    /// `VACUUM` could not get the write lock; the pruned rows are gone but
    /// the file keeps its size.
    #[error(
        "could not get the lock to reclaim space: another process (a running gateway, \
         or a long read) holds the database; the old rows are deleted, run prune again \
         when it is idle to shrink the file"
    )]
    VacuumLocked,
    /// A stored value cannot be decoded.
    #[error("stored {what} is corrupt: {source}")]
    Corrupt {
        /// Which part of the row.
        what: &'static str,
        /// Why it cannot be read.
        #[source]
        source: CodecError,
    },
    /// The writer remembered a shared row that is not there any more (it
    /// then forgets what it remembers and places the call again).
    #[error("the writer remembered a row of {0} that is gone")]
    StaleMemory(&'static str),
    /// A record cannot be encoded for its row.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// Which part of the record.
        what: &'static str,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The writer thread has stopped (the store is closing or closed).
    #[error("the store writer stopped")]
    WriterStopped,
    /// The writer thread panicked.
    #[error("the store writer panicked")]
    WriterPanicked,
    /// A batch could not be committed, even after every retry; each command
    /// of the batch gets this (hence the shared cause).
    #[error("store commit failed {attempts} times: {source}")]
    CommitFailed {
        /// How often it was tried.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        source: Arc<StoreError>,
    },
    /// The blocking task running a query failed (it panicked).
    #[error("store query task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl StoreError {
    /// Turns an SQLite error met while doing `context` into a store error:
    /// [`StoreError::Busy`] when another process held the lock, else
    /// [`StoreError::Sqlite`]. Made for `map_err`.
    pub(crate) fn sqlite(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| {
            let context = context.into();
            if is_busy(&source) {
                StoreError::Busy { context, source }
            } else {
                StoreError::Sqlite { context, source }
            }
        }
    }

    /// Whether the error is another process holding the lock.
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Busy { .. })
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(source: rusqlite::Error) -> Self {
        StoreError::sqlite("store query failed")(source)
    }
}

/// Whether SQLite gave up waiting for another connection's lock.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
