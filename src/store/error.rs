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
//! ([`StoreError::sqlite`], also behind `?` on a `rusqlite::Error`): prune
//! reports a busy database as such.
//!
//! The writer asks one more question of an error: is it the store's
//! condition — a lock, a full disk or database, a read-only file, an I/O
//! error — or this record's own fault? [`StoreError::fault`] answers with a
//! [`StoreFault`] for the first: the records are then kept (the writer's
//! backlog) and committed once the condition passes, however long that
//! takes. Only the second (a row SQLite refuses for what it holds) rejects a
//! record, and only that one.

use crate::store::codec::CodecError;
use crate::store::health::StoreStatus;
use std::path::PathBuf;

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
    /// A PostgreSQL statement failed, or the server could not be reached.
    #[error("{context}: {source}")]
    Postgres {
        /// What the store was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: postgres::Error,
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
    /// The store cannot commit now (or did not within the flush timeout):
    /// what the writer's backlog looked like when it was asked.
    #[error("{}", .0.explain())]
    Unavailable(Box<StoreStatus>),
    /// The gateway stopped while the store could not commit, and these
    /// records could not be written to the spill file either.
    #[error(
        "{count} records lost at shutdown: the store could not commit them and \
         the spill file {} could not be written: {reason}", spill.display()
    )]
    RecordsLost {
        /// How many.
        count: u64,
        /// The spill file that refused them.
        spill: PathBuf,
        /// Why the spill file refused them.
        reason: String,
    },
    /// A column holds a value outside its fixed set (a row written by
    /// something else than tracegate).
    #[error("the store holds an unknown {what}: {value:?}")]
    Unreadable {
        /// The column.
        what: &'static str,
        /// What it holds.
        value: String,
    },
    /// A read started inside another on the same PostgreSQL connection (a
    /// bug in the caller).
    #[error("a store read started inside another on the same connection")]
    NestedRead,
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

    /// Turns a PostgreSQL error met while doing `context` into a store
    /// error. Made for `map_err`.
    pub(crate) fn postgres(context: impl Into<String>) -> impl Fn(postgres::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Postgres {
            context: context.clone(),
            source,
        }
    }

    /// Whether the error is another process holding the lock.
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Busy { .. })
    }

    /// The store's condition behind the error, when it is one (the records
    /// are kept until it passes); `None` when the error is the record's
    /// own fault or not about the database at all.
    pub fn fault(&self) -> Option<StoreFault> {
        match self {
            StoreError::Busy { .. } => Some(StoreFault::Locked),
            StoreError::Sqlite { source, .. } => sqlite_fault(source),
            StoreError::Io { .. } => Some(StoreFault::Io),
            StoreError::Postgres { source, .. } => postgres_fault(source),
            _ => None,
        }
    }
}

crate::wire_enum! {
    /// Why the store cannot commit: the `reason` `/health` gives.
    pub enum StoreFault {
        /// Another connection holds the database's lock past the busy timeout.
        Locked = "locked",
        /// The disk is full, or the database reached `store.max_size`.
        Full = "full",
        /// The database file cannot be written.
        ReadOnly = "read_only",
        /// The disk or the file failed another way (I/O error, a file that
        /// cannot be opened, corruption).
        Io = "io_error",
        /// The database server cannot be reached (PostgreSQL: down,
        /// restarting, or the connection dropped).
        Unreachable = "unreachable",
    }
}

/// The fault behind an SQLite error; `None` for the errors a record causes
/// (a constraint, a value too big, a type mismatch), which retrying cannot
/// cure. Anything else SQLite reports is taken as the store's condition:
/// keeping a record too long is better than dropping it.
fn sqlite_fault(e: &rusqlite::Error) -> Option<StoreFault> {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code()? {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Some(StoreFault::Locked),
        ErrorCode::DiskFull => Some(StoreFault::Full),
        ErrorCode::ReadOnly => Some(StoreFault::ReadOnly),
        ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch => None,
        _ => Some(StoreFault::Io),
    }
}

/// The fault behind a PostgreSQL error: `None` for what a record causes (a
/// constraint, a value out of range, bad data), which retrying cannot cure;
/// a server that cannot be reached, is shutting down, or is out of space is
/// the store's condition, like anything else it reports.
fn postgres_fault(e: &postgres::Error) -> Option<StoreFault> {
    use postgres::error::SqlState;
    let Some(code) = e.code() else {
        return Some(StoreFault::Unreachable);
    };
    let class = &code.code()[..2];
    if *code == SqlState::DISK_FULL || *code == SqlState::PROGRAM_LIMIT_EXCEEDED {
        Some(StoreFault::Full)
    } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        Some(StoreFault::ReadOnly)
    } else if matches!(class, "22" | "23") {
        // Data exceptions and integrity constraint violations.
        None
    } else if matches!(class, "08" | "57") {
        // Connection exceptions; operator intervention (shutdown, restart).
        Some(StoreFault::Unreachable)
    } else {
        Some(StoreFault::Io)
    }
}

impl From<postgres::Error> for StoreError {
    fn from(source: postgres::Error) -> Self {
        StoreError::postgres("store query failed")(source)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(source: rusqlite::Error) -> Self {
        StoreError::sqlite("store query failed")(source)
    }
}

/// Whether SQLite gave up waiting for another connection's lock.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    sqlite_fault(e) == Some(StoreFault::Locked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// The error of inserting `blob_size` bytes into a table whose database
    /// may not grow past `max_pages`.
    fn insert_error(max_pages: u32, blob_size: i64) -> StoreError {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB); INSERT INTO t VALUES (1, x'00');",
        )
        .unwrap();
        conn.query_row(&format!("PRAGMA max_page_count = {max_pages}"), [], |_| {
            Ok(())
        })
        .unwrap();
        let e = conn
            .execute("INSERT INTO t (b) VALUES (zeroblob(?1))", [blob_size])
            .unwrap_err();
        StoreError::sqlite("inserting")(e)
    }

    #[test]
    fn a_full_database_is_the_stores_condition_not_the_records() {
        assert_eq!(insert_error(3, 1 << 20).fault(), Some(StoreFault::Full));
    }

    #[test]
    fn a_record_sqlite_refuses_is_the_records_own_fault() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
            .unwrap();
        let e = conn.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
        assert_eq!(StoreError::sqlite("inserting")(e).fault(), None);
    }

    #[test]
    fn a_lock_and_a_failing_file_are_the_stores_condition() {
        let fault = |code| {
            let failure = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
            StoreError::sqlite("x")(failure).fault()
        };
        assert_eq!(fault(rusqlite::ffi::SQLITE_BUSY), Some(StoreFault::Locked));
        assert_eq!(fault(rusqlite::ffi::SQLITE_IOERR), Some(StoreFault::Io));
        assert_eq!(
            fault(rusqlite::ffi::SQLITE_READONLY),
            Some(StoreFault::ReadOnly)
        );
    }
}
