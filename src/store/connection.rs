//! Opening the database file: the writable connection with the pragmas the
//! store relies on, read-only connections (which read a store they cannot
//! write to, too), and the check that a file a command was pointed at is a
//! tracegate store.
//!
//! Only the gateway creates a database (its writer, through `Store::open`).
//! The commands open an existing file and refuse a missing one or one that is
//! not ours, before they read or change anything.
//!
//! **The WAL and a full disk.** A commit appends every page it changes to
//! the WAL — for one small record, the `traces` leaf, a leaf of each of its
//! indexes, the session's and the run's rows: some twenty 8 KiB pages —
//! and a checkpoint copies the WAL into the database, growing the file by
//! the pages that are new, before the WAL can be written from its start
//! again. SQLite's default checkpoints at 1000 pages, which is 8 MiB of WAL
//! with our pages, and never gives the file's space back. So the writer
//! checkpoints at [`WAL_TARGET`] bytes of WAL (`wal_autocheckpoint`, in
//! pages), cuts the file back to that size after each checkpoint
//! (`journal_size_limit`), and checkpoints it to nothing when it is idle or
//! a backlog is committed (`commit`). What a commit then needs free on the
//! disk is its own pages in the WAL, and what a checkpoint needs is the
//! database's growth: both a few hundred KiB for a handful of records.
//!
//! `store.max_size` caps the database (`PRAGMA max_page_count`): past it a
//! commit fails as on a full disk (`SQLITE_FULL`), the store is degraded
//! and keeps the records, until a prune frees pages inside the file.

use crate::store::error::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most WAL the writer lets build up before a checkpoint, in bytes.
pub(crate) const WAL_TARGET: i64 = 4 * 1024 * 1024;

/// The gateway's database as its writer opens it (and opens it again after a
/// fault).
#[derive(Debug, Clone)]
pub(crate) struct Writable {
    /// The database file.
    pub path: PathBuf,
    /// `PRAGMA busy_timeout`.
    pub busy_timeout: Duration,
    /// `store.max_size`: the most the database may hold, in bytes.
    pub max_size: Option<u64>,
}

impl Writable {
    /// Opens (creating it if needed) the database with the store's pragmas
    /// and the size cap.
    pub fn open(&self) -> StoreResult<Connection> {
        let conn = open_writable(&self.path, self.busy_timeout)?;
        limit_size(&conn, self.max_size)?;
        Ok(conn)
    }
}

/// How many prepared statements a connection keeps.
const STATEMENT_CACHE: usize = 64;

/// Opens (creating it and its directory if needed) the database at `path`
/// for writing, with the store's pragmas.
pub(crate) fn open_writable(path: &Path, busy_timeout: Duration) -> StoreResult<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            context: format!("cannot create directory {}", dir.display()),
            source,
        })?;
    }
    let conn = Connection::open(path).map_err(|e| with_os_cause(path, "cannot open", e))?;
    conn.busy_timeout(busy_timeout)?;
    // The writer runs ~30 distinct statements a record (content, row,
    // counters); rusqlite keeps 16 prepared, so it prepared some again for
    // every record.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // page_size (new databases only; it must come before WAL): 8 KiB, the
    // smallest file measured on both of bench/storage.sh's workloads. A
    // small call's row is well under 1 KB, and every table and index has
    // at least one page, so 16 KiB pages left a small store mostly empty
    // space; on 4 KiB pages a session's messages and token runs (1-4 KB
    // each) spill into overflow pages half used. WAL: readers never
    // block the writer. synchronous=NORMAL: a commit is durable against a
    // process crash (not against power loss until the next checkpoint),
    // without an fsync per batch.
    conn.execute_batch(
        "PRAGMA page_size = 8192; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(|e| with_os_cause(path, "cannot configure", e))?;
    limit_wal(&conn).map_err(StoreError::sqlite(format!(
        "cannot configure the WAL of {}",
        path.display()
    )))?;
    Ok(conn)
}

/// Checkpoints at [`WAL_TARGET`] bytes of WAL and cuts it back to that size.
fn limit_wal(conn: &Connection) -> rusqlite::Result<()> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages = (WAL_TARGET / page_size.max(512)).max(1);
    conn.execute_batch(&format!(
        "PRAGMA wal_autocheckpoint = {pages}; PRAGMA journal_size_limit = {WAL_TARGET};"
    ))
}

/// Caps the database at `max_size` bytes (none: no cap). SQLite cannot cap
/// a file below its current size; it keeps that size as the cap then.
pub(crate) fn limit_size(conn: &Connection, max_size: Option<u64>) -> StoreResult<()> {
    let Some(max_size) = max_size else {
        return Ok(());
    };
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let page_size = u64::try_from(page_size).unwrap_or(1).max(512);
    let pages = (max_size / page_size).max(1);
    conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
        .map_err(StoreError::sqlite("cannot set store.max_size"))
}

/// Checkpoints the whole WAL into the database and truncates it to nothing,
/// waiting at most `patience` for readers of older pages to finish. Returns
/// whether it got that far.
pub(crate) fn checkpoint(conn: &Connection, patience: Duration) -> StoreResult<bool> {
    conn.busy_timeout(patience)?;
    let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    match busy {
        Ok(busy) => Ok(busy == 0),
        Err(e) if crate::store::error::is_busy(&e) => Ok(false),
        Err(e) => Err(StoreError::sqlite("cannot checkpoint the WAL")(e)),
    }
}

/// SQLite says "unable to open database file" whatever the reason; the
/// operating system knows it ("permission denied", "read-only file
/// system"). When SQLite cannot open the file or its write-ahead log, the
/// file and its directory are tried as SQLite would use them, and the OS
/// error, if there is one, is the cause.
fn with_os_cause(path: &Path, doing: &str, e: rusqlite::Error) -> StoreError {
    let context = format!("{doing} {}", path.display());
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::CannotOpen)
        && let Err(source) = try_writing(path)
    {
        return StoreError::Io { context, source };
    }
    StoreError::sqlite(context)(e)
}

/// Opens `path` for writing (without creating it), and creates and removes
/// a file beside it, as SQLite does with its journal.
fn try_writing(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
    }
    let mut probe = path.as_os_str().to_owned();
    probe.push(format!("-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Opens the database at `path` read-only (it must exist): `mode=ro`, so
/// nothing is ever written; and when SQLite cannot even read that way —
/// the store is in WAL mode, its `-shm` file is missing, and the directory
/// or file is not writable (a copied, mounted or archived store) — as
/// `immutable`, which needs neither. No gateway can be writing to a store
/// whose log cannot be created, so `immutable` reads what is there.
pub(crate) fn open_read_only(path: &Path, busy_timeout: Duration) -> StoreResult<Connection> {
    let conn = open_uri(path, ReadOnly::Shared, busy_timeout)?;
    match conn.query_row("PRAGMA schema_version", [], |_| Ok(())) {
        Err(e) if needs_immutable(&e) => open_uri(path, ReadOnly::Immutable, busy_timeout),
        _ => Ok(conn),
    }
}

/// How a read-only connection reads the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadOnly {
    /// `mode=ro`: alongside a writer, through the write-ahead log.
    Shared,
    /// `mode=ro&immutable=1`: the file as it is, no log, no locks.
    Immutable,
}

/// The `file:` URI SQLite opens `path` with, read-only.
fn read_only_uri(path: &Path, how: ReadOnly) -> String {
    use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
    /// What a path may not carry unescaped in a URI: its query and
    /// fragment markers, and the escape itself.
    const URI_PATH: &AsciiSet = &CONTROLS.add(b'%').add(b'?').add(b'#');
    let path = utf8_percent_encode(&path.to_string_lossy(), URI_PATH).to_string();
    match how {
        ReadOnly::Shared => format!("file:{path}?mode=ro"),
        ReadOnly::Immutable => format!("file:{path}?mode=ro&immutable=1"),
    }
}

fn open_uri(path: &Path, how: ReadOnly, busy_timeout: Duration) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        read_only_uri(path, how),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(StoreError::sqlite(format!(
        "cannot open {}",
        path.display()
    )))?;
    conn.busy_timeout(busy_timeout)?;
    Ok(conn)
}

/// Whether a read failed because the write-ahead log's index could not be
/// created or opened (`SQLITE_READONLY_CANTINIT` and its kin, or
/// `SQLITE_CANTOPEN`).
fn needs_immutable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
    )
}

/// Opens an existing tracegate store: read-only, or writable (never
/// creating it). A missing file is [`StoreError::Missing`], a file that is
/// not a store [`StoreError::NotAStore`].
pub(crate) fn open_existing(
    path: &Path,
    writable: bool,
    busy_timeout: Duration,
) -> StoreResult<Connection> {
    if !path.is_file() {
        return Err(StoreError::Missing(path.to_path_buf()));
    }
    let conn = if writable {
        open_writable(path, busy_timeout)
    } else {
        open_read_only(path, busy_timeout)
    };
    let conn = conn.map_err(|e| match e {
        StoreError::Sqlite { ref source, .. } if is_not_a_database(source) => not_a_store(path),
        other => other,
    })?;
    let found = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
        [],
        |r| r.get::<_, i64>(0),
    );
    match found {
        Ok(1) => Ok(conn),
        Ok(_) => Err(StoreError::NotAStore {
            path: path.to_path_buf(),
            reason: "it has no tracegate tables",
        }),
        Err(e) if is_not_a_database(&e) => Err(not_a_store(path)),
        Err(e) => Err(StoreError::sqlite(format!(
            "cannot read {}",
            path.display()
        ))(e)),
    }
}

fn is_not_a_database(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase)
}

fn not_a_store(path: &Path) -> StoreError {
    StoreError::NotAStore {
        path: path.to_path_buf(),
        reason: "it is not an SQLite file",
    }
}

/// Runs `read` in one read transaction — everything it reads comes from the
/// same committed state — unless a transaction is open already.
pub(crate) fn snapshot<T, E: From<StoreError>>(
    conn: &Connection,
    read: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let transaction = if conn.is_autocommit() {
        let started = conn.unchecked_transaction();
        Some(started.map_err(StoreError::sqlite("cannot start a read transaction"))?)
    } else {
        None
    };
    let result = read();
    // Dropping a read transaction just ends it: nothing was written.
    drop(transaction);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_uris_escape_the_path_and_say_ro() {
        let path = Path::new("/data/runs #1/50%?.db");
        assert_eq!(
            read_only_uri(path, ReadOnly::Shared),
            "file:/data/runs %231/50%25%3F.db?mode=ro"
        );
        assert_eq!(
            read_only_uri(Path::new("t.db"), ReadOnly::Immutable),
            "file:t.db?mode=ro&immutable=1"
        );
    }
}
