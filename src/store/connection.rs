//! Opening the database file: the writable connection with the pragmas the
//! store relies on, read-only connections, and the check that a file a
//! command was pointed at is a tracegate store.
//!
//! Only the gateway creates a database (its writer, through `Store::open`).
//! The commands open an existing file and refuse a missing one or one that is
//! not ours, before they read or change anything.

use crate::store::error::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// Opens (creating it and its directory if needed) the database at `path`
/// for writing, with the store's pragmas.
pub(crate) fn open_writable(path: &Path, busy_timeout: Duration) -> StoreResult<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            context: format!("cannot create directory {}", dir.display()),
            source,
        })?;
    }
    let conn = Connection::open(path).map_err(StoreError::sqlite(format!(
        "cannot open {}",
        path.display()
    )))?;
    conn.busy_timeout(busy_timeout)?;
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
    .map_err(StoreError::sqlite(format!(
        "cannot configure {}",
        path.display()
    )))?;
    Ok(conn)
}

/// Opens the database at `path` read-only (it must exist).
pub(crate) fn open_read_only(path: &Path, busy_timeout: Duration) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(StoreError::sqlite(format!(
        "cannot open {}",
        path.display()
    )))?;
    conn.busy_timeout(busy_timeout)?;
    Ok(conn)
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
