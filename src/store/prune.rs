//! Pruning: deleting what is older than a cutoff, then reclaiming the space.
//!
//! A long RL run records millions of calls; once they are exported or no
//! longer wanted, `tracegate prune --older-than 30d` removes them. What goes:
//!
//! 1. every trace that started before the cutoff;
//! 2. sessions and runs left without traces whose last activity is before the
//!    cutoff (a session created by `POST /sessions` and never used counts);
//! 3. then the counters (`trace_count`, `error_count`, `tokens`,
//!    `first_seen`, `last_seen`) of the sessions and runs that lost some
//!    traces but keep others are recomputed from the traces that remain;
//! 4. then the shared content (message nodes, token runs, tool lists, raw
//!    references) that no remaining trace uses is swept: each deleted trace
//!    released its references as it went (the schema's triggers), and what is left
//!    unreferenced goes, in short transactions too — a kept call of a
//!    session whose first calls went keeps every message and token id it
//!    needs, since it still references them;
//! 5. then `VACUUM` gives the freed pages back to the file system.
//!
//! The deletions are a list, [`DOOMED`]: a table and an SQL predicate saying
//! which of its rows are old. The same predicate counts rows for a dry run
//! and deletes them for a real one, so a dry run reports exactly what the
//! real run would delete (on a store nobody writes to meanwhile).
//!
//! Pruning is safe while a gateway writes: deletes go in chunks of
//! [`CHUNK_ROWS`] rows, one short transaction each, so the gateway's writer
//! thread gets the write lock between them and never waits long. `VACUUM` is
//! different: it holds the write lock for as long as it rewrites the file,
//! which on a large store is longer than the gateway's writer waits (its
//! busy timeout, 5 s by default). Hence [`Pruner::vacuum`] is a separate step
//! that the caller may skip, and a busy database is reported as such rather
//! than as a failure to prune.
//!
//! [`Pruner`] is the store's maintenance handle: `tracegate prune` opens one
//! on an existing file, read-only for a dry run so that it cannot change
//! anything even by mistake.

use crate::config::StoreOptions;
use crate::store::content::{self, Shared};
use crate::store::error::{StoreError, StoreResult};
use crate::store::{Database, connection, migrate};
use rusqlite::{Connection, ToSql};
use serde::Serialize;
use std::path::Path;

/// Rows deleted per transaction, so a concurrent gateway is never blocked
/// for long.
pub const CHUNK_ROWS: usize = 1000;

/// One table prune deletes from, and which of its rows are old. The
/// predicate may use `:cutoff` (RFC 3339 text, the form every stored time
/// takes) and `:force` (1 when `--force` was given).
pub(crate) struct Doomed {
    pub table: &'static str,
    pub old: &'static str,
}

/// What prune deletes, in order: children before parents, since a session's
/// or run's fate depends on the traces that remain. The `spans` outbox goes
/// first: only spans already exported (at or before the export cursor),
/// unless `--force`, so pruning never loses a span a collector has not had.
pub(crate) const DOOMED: &[Doomed] = &[
    Doomed {
        table: "spans",
        old: "created_at < :cutoff AND (:force \
              OR id <= COALESCE((SELECT cursor FROM export_state WHERE exporter = 'otlp'), 0))",
    },
    Doomed {
        table: "traces",
        old: "started_at < :cutoff",
    },
    Doomed {
        table: "sessions",
        old: "created_at < :cutoff AND COALESCE(last_seen, created_at) < :cutoff \
              AND NOT EXISTS (SELECT 1 FROM traces t \
                              WHERE t.session_id = sessions.session_id \
                                AND t.started_at >= :cutoff)",
    },
    Doomed {
        table: "runs",
        old: "last_seen < :cutoff \
              AND NOT EXISTS (SELECT 1 FROM traces t \
                              WHERE t.run_id = runs.run_id AND t.started_at >= :cutoff)",
    },
];

/// The tables whose per-row counters summarise traces, and the trace column
/// that links a trace to a row. A row is recounted when its `first_seen` is
/// before the cutoff and it was not deleted: it may have lost traces.
pub(crate) const COUNTED: &[(&str, &str)] = &[("sessions", "session_id"), ("runs", "run_id")];

/// What to prune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneOptions {
    /// Rows older than this (RFC 3339, UTC, microseconds) go.
    pub cutoff: String,
    /// Count what would go, change nothing.
    pub dry_run: bool,
    /// Also delete what is not exported yet (spans, once they exist).
    pub force: bool,
}

/// A number of rows of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableRows {
    /// The table.
    pub table: &'static str,
    /// How many of its rows.
    pub rows: u64,
}

/// What a prune deleted and recounted (or, in a dry run, would have).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Rows deleted, per table, in the order they were deleted.
    pub deleted: Vec<TableRows>,
    /// Kept rows whose counters were recomputed, per table.
    pub recounted: Vec<TableRows>,
}

/// The file's size before and after [`vacuum`], in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Reclaimed {
    /// Bytes before.
    pub before: u64,
    /// Bytes after.
    pub after: u64,
    /// Whether the write-ahead log could be emptied too (not while another
    /// connection still reads an older snapshot: then the log keeps the
    /// rewritten pages until a later checkpoint).
    pub log_truncated: bool,
}

/// A store opened for pruning.
pub struct Pruner {
    conn: Conn,
}

/// The pruner's connection, by backend.
enum Conn {
    Sqlite(Connection),
    Postgres(Box<postgres::Client>),
}

impl Pruner {
    /// Opens the existing store in `db` to prune it (`writable: false`:
    /// for a dry run, changing nothing).
    pub fn open_database(db: &Database, writable: bool) -> StoreResult<Pruner> {
        match db {
            Database::Sqlite(path) => Self::open_with(path, writable),
            Database::Postgres(url) => {
                let client = crate::store::postgres::prune::open(url, writable)?;
                Ok(Pruner {
                    conn: Conn::Postgres(Box::new(client)),
                })
            }
        }
    }

    /// Opens the existing store at `path` to prune it. A missing file is
    /// [`StoreError::Missing`] (and is not created), a file that is not a
    /// store [`StoreError::NotAStore`].
    pub fn open(path: &Path) -> StoreResult<Pruner> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, writable: bool) -> StoreResult<Pruner> {
        let busy_timeout = StoreOptions::default().busy_timeout;
        let conn = connection::open_existing(path, writable, busy_timeout)?;
        migrate::require_current(&conn, path)?;
        Ok(Pruner {
            conn: Conn::Sqlite(conn),
        })
    }

    /// Deletes (or, with `dry_run`, counts) everything older than the
    /// cutoff and recomputes the counters of what is kept.
    pub fn prune(&mut self, options: &PruneOptions) -> StoreResult<PruneReport> {
        match &mut self.conn {
            Conn::Sqlite(conn) => prune(conn, options),
            Conn::Postgres(client) => crate::store::postgres::prune::prune(client, options),
        }
    }

    /// Rewrites the file without its free pages (`VACUUM`) and truncates the
    /// write-ahead log. Holds the write lock throughout: a gateway writing to
    /// the same file waits, and if the lock cannot be had the error
    /// ([`StoreError::VacuumLocked`]) says so.
    pub fn vacuum(&mut self) -> StoreResult<Reclaimed> {
        match &mut self.conn {
            Conn::Sqlite(conn) => vacuum(conn),
            Conn::Postgres(client) => crate::store::postgres::prune::vacuum(client),
        }
    }
}

/// Deletes (or, with `dry_run`, counts) everything older than the cutoff and
/// recomputes the counters of what is kept. `conn` must be writable unless
/// this is a dry run.
fn prune(conn: &Connection, options: &PruneOptions) -> StoreResult<PruneReport> {
    let mut report = PruneReport {
        deleted: Vec::new(),
        recounted: Vec::new(),
    };
    for doomed in DOOMED {
        let rows = if options.dry_run {
            let sql = format!("SELECT COUNT(*) FROM {} WHERE {}", doomed.table, doomed.old);
            query_count(conn, &sql, options)?
        } else {
            delete_in_chunks(conn, doomed, options)?
        };
        report.deleted.push(TableRows {
            table: doomed.table,
            rows,
        });
    }
    for (table, key) in COUNTED {
        let rows = if options.dry_run {
            let old = DOOMED
                .iter()
                .find(|d| d.table == *table)
                .map_or("0", |d| d.old);
            let sql =
                format!("SELECT COUNT(*) FROM {table} WHERE first_seen < :cutoff AND NOT ({old})");
            query_count(conn, &sql, options)?
        } else {
            recount(conn, table, key, options)?
        };
        report.recounted.push(TableRows { table, rows });
    }
    if !options.dry_run {
        let swept = sweep_in_chunks(conn)?;
        for (table, rows) in Shared::ALL.iter().zip(swept) {
            report.deleted.push(TableRows {
                table: table.table(),
                rows,
            });
        }
    }
    Ok(report)
}

/// Sweeps the shared rows no trace uses any more, one short transaction
/// per round; returns the rows deleted per table, in [`Shared::ALL`] order.
fn sweep_in_chunks(conn: &Connection) -> StoreResult<[u64; Shared::ALL.len()]> {
    let mut total = [0u64; Shared::ALL.len()];
    loop {
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(failed("shared content"))?;
        let round = content::sweep_round(conn).and_then(|round| {
            conn.execute_batch("COMMIT")
                .map_err(failed("shared content"))?;
            Ok(round)
        });
        let round = match round {
            Ok(round) => round,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        if round.is_empty() {
            return Ok(total);
        }
        for (t, table) in total.iter_mut().zip(Shared::ALL) {
            *t += round.count(table) as u64;
        }
    }
}

/// Deletes the old rows of one table, [`CHUNK_ROWS`] per transaction.
fn delete_in_chunks(
    conn: &Connection,
    doomed: &Doomed,
    options: &PruneOptions,
) -> StoreResult<u64> {
    let sql = format!(
        "DELETE FROM {table} WHERE rowid IN \
         (SELECT rowid FROM {table} WHERE {old} LIMIT {CHUNK_ROWS})",
        table = doomed.table,
        old = doomed.old
    );
    let mut stmt = conn.prepare(&sql).map_err(failed(doomed.table))?;
    let mut total = 0u64;
    loop {
        bind(&mut stmt, options).map_err(failed(doomed.table))?;
        let deleted = stmt.raw_execute().map_err(failed(doomed.table))?;
        total += deleted as u64;
        if deleted < CHUNK_ROWS {
            return Ok(total);
        }
    }
}

/// Recomputes the counters of the kept rows of `table` that may have lost
/// traces, from the traces that remain. One statement: atomic with respect to
/// a gateway adding traces meanwhile.
fn recount(conn: &Connection, table: &str, key: &str, options: &PruneOptions) -> StoreResult<u64> {
    let sql = recount_sql(table, key);
    let mut stmt = conn.prepare(&sql).map_err(failed(table))?;
    bind(&mut stmt, options).map_err(failed(table))?;
    stmt.raw_execute().map(|n| n as u64).map_err(failed(table))
}

/// The statement recomputing the counters of `table`'s kept rows (either
/// backend's: `:cutoff` is the one parameter).
pub(crate) fn recount_sql(table: &str, key: &str) -> String {
    let of_row = format!("FROM traces t WHERE t.{key} = {table}.{key}");
    format!(
        "UPDATE {table} SET
             trace_count = (SELECT COUNT(*) {of_row}),
             error_count = (SELECT COUNT(*) {of_row} AND t.status != 'ok'),
             tokens      = (SELECT COALESCE(SUM(t.tokens), 0) {of_row}),
             first_seen  = COALESCE((SELECT MIN(t.started_at) {of_row}), {table}.first_seen),
             last_seen   = COALESCE((SELECT MAX(t.started_at) {of_row}), {table}.last_seen)
         WHERE first_seen < :cutoff"
    )
}

/// Runs a `SELECT COUNT(*)` with the prune parameters.
fn query_count(conn: &Connection, sql: &str, options: &PruneOptions) -> StoreResult<u64> {
    let count = || -> rusqlite::Result<i64> {
        let mut stmt = conn.prepare(sql)?;
        bind(&mut stmt, options)?;
        let mut rows = stmt.raw_query();
        match rows.next()? {
            Some(row) => row.get(0),
            None => Ok(0),
        }
    };
    Ok(count().map_err(failed("counting"))?.unsigned_abs())
}

/// Binds `:cutoff` and `:force` where the statement uses them (a statement
/// may use either, both or neither).
fn bind(stmt: &mut rusqlite::Statement<'_>, options: &PruneOptions) -> rusqlite::Result<()> {
    let values: [(&str, &dyn ToSql); 2] =
        [(":cutoff", &options.cutoff), (":force", &options.force)];
    for (name, value) in values {
        if let Some(index) = stmt.parameter_index(name)? {
            stmt.raw_bind_parameter(index, value)?;
        }
    }
    Ok(())
}

/// An error of the prune step on `what`.
fn failed(what: &str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    StoreError::sqlite(format!("pruning {what}"))
}

/// `VACUUM`, then a checkpoint that truncates the write-ahead log.
fn vacuum(conn: &Connection) -> StoreResult<Reclaimed> {
    let before = file_bytes(conn)?;
    conn.execute_batch("VACUUM")
        .map_err(StoreError::sqlite("VACUUM failed"))
        .map_err(|e| {
            if e.is_busy() {
                StoreError::VacuumLocked
            } else {
                e
            }
        })?;
    // After VACUUM in WAL mode the rewritten pages sit in the log; move them
    // into the file and empty the log, or the disk holds both copies.
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .map_err(StoreError::sqlite("checkpoint after VACUUM failed"))?;
    Ok(Reclaimed {
        before,
        after: file_bytes(conn)?,
        log_truncated: busy == 0,
    })
}

/// The database's size in bytes, as SQLite counts it (pages × page size).
fn file_bytes(conn: &Connection) -> StoreResult<u64> {
    conn.query_row(
        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(i64::unsigned_abs)
    .map_err(StoreError::sqlite("cannot read the database size"))
}
