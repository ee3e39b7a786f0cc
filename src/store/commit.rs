//! The writer thread: it owns the write connection and commits what the
//! [`StoreWriter`](crate::store::StoreWriter) hands it, a batch per
//! transaction.
//!
//! The thread takes everything waiting in the channel (up to `batch_max`),
//! runs it in one transaction, and only then answers the commands that wait
//! for an answer (flushes, session changes). A transaction that fails — the
//! database is locked by a `VACUUM` or another writer past the busy
//! timeout, the disk is full — is retried whole, with a growing wait in
//! between; records are not dropped for a passing problem. Only after
//! [`RETRY_ATTEMPTS`] is a batch given up, loudly.
//!
//! A record's row is encoded before it reaches this thread (`row`); here its
//! shared content is placed after what its session already stored
//! (`session_log`, the writer's memory of recent calls), the row is
//! inserted, and the counters of its session and run are brought up to
//! date in the same transaction, so `runs` and `sessions` always agree with
//! the traces they count. Deleting a session sweeps the shared rows only it
//! used.

use crate::metrics::Metrics;
use crate::record::Status;
use crate::store::content;
use crate::store::error::{StoreError, StoreResult};
use crate::store::raw::References;
use crate::store::row::EncodedRow;
use crate::store::session_log::{Announcement, Pending, SessionLog};
use crate::store::writer::{Command, ExportProgress};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, named_params};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// The writer thread's loop: batch, commit, acknowledge, until shutdown.
pub(crate) fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    batch_max: usize,
    spans_committed: Arc<Notify>,
    metrics: &Metrics,
    references: &Arc<References>,
) {
    let mut log = SessionLog::new(references.clone());
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let spans = batch
            .iter()
            .any(|c| matches!(c, Command::Record(row) if row.span().is_some()));
        let stop = commit(&mut conn, &mut log, batch, metrics);
        if spans {
            // Wake the exporter: there is something new past its cursor.
            spans_committed.notify_one();
        }
        if stop {
            break;
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!("final WAL checkpoint failed: {e}");
    }
}

/// What a command answers once its transaction is committed.
enum Answer {
    None,
    Unit(StoreResult<()>),
    Count(StoreResult<usize>),
}

/// How often a batch is tried before it is given up. Each attempt waits up
/// to the connection's busy timeout for a lock, and the wait between
/// attempts doubles up to [`RETRY_WAIT_MAX`].
const RETRY_ATTEMPTS: u32 = 30;
const RETRY_WAIT_MAX: Duration = Duration::from_secs(2);

/// Commits one batch, retrying a failed transaction, and answers its
/// commands; returns true when the batch asked the writer to stop.
fn commit(
    conn: &mut Connection,
    log: &mut SessionLog,
    batch: Vec<Command>,
    metrics: &Metrics,
) -> bool {
    let stop = batch.iter().any(|c| matches!(c, Command::Shutdown(_)));
    let answers = match commit_with_retries(conn, log, &batch, metrics) {
        Ok(answers) => answers,
        Err((attempts, e)) => {
            let records = batch
                .iter()
                .filter(|c| matches!(c, Command::Record(_)))
                .count();
            tracing::error!("store commit failed {attempts} times, {records} records lost: {e}");
            let cause = Arc::new(e);
            let failed = || StoreError::CommitFailed {
                attempts,
                source: cause.clone(),
            };
            batch.iter().map(|_| Answer::Unit(Err(failed()))).collect()
        }
    };
    for (command, answer) in batch.into_iter().zip(answers) {
        // A requester that gave up waiting is not an error.
        match (command, answer) {
            (
                Command::CreateSession { ack, .. } | Command::Flush(ack) | Command::Shutdown(ack),
                Answer::Unit(result),
            ) => {
                let _ = ack.send(result);
            }
            (Command::DeleteSession { ack, .. }, Answer::Count(result)) => {
                let _ = ack.send(result);
            }
            (Command::DeleteSession { ack, .. }, Answer::Unit(result)) => {
                let _ = ack.send(result.map(|()| 0));
            }
            _ => {}
        }
    }
    stop
}

/// Runs the batch's transaction until it commits or the attempts run out
/// (then: how many were made, and the last error).
fn commit_with_retries(
    conn: &mut Connection,
    log: &mut SessionLog,
    batch: &[Command],
    metrics: &Metrics,
) -> Result<Vec<Answer>, (u32, StoreError)> {
    let mut wait = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        match apply(conn, log, batch) {
            Ok((answers, written)) => {
                metrics.observe_commit(started.elapsed(), written);
                return Ok(answers);
            }
            Err(e) if attempt < RETRY_ATTEMPTS => {
                metrics.commit_failed();
                tracing::warn!("store commit failed (attempt {attempt}), retrying: {e}");
                std::thread::sleep(wait);
                wait = (wait * 2).min(RETRY_WAIT_MAX);
                attempt += 1;
            }
            Err(e) => {
                metrics.commit_failed();
                return Err((attempt, e));
            }
        }
    }
}

/// Runs a batch in one transaction; returns each command's answer and the
/// number of records written, or the error that failed the transaction
/// (which is then rolled back, and the writer forgets what it remembered:
/// ids placed in it are gone).
fn apply(
    conn: &mut Connection,
    log: &mut SessionLog,
    batch: &[Command],
) -> StoreResult<(Vec<Answer>, usize)> {
    let result = apply_batch(conn, log, batch);
    if result.is_err() {
        log.clear();
    }
    result
}

fn apply_batch(
    conn: &mut Connection,
    log: &mut SessionLog,
    batch: &[Command],
) -> StoreResult<(Vec<Answer>, usize)> {
    // Immediate: the write lock first, so what the writer reads (the sweep
    // epoch, a session's latest calls) is the state it writes on.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    log.check_epoch(&tx)?;
    let mut answers = Vec::with_capacity(batch.len());
    let mut written = 0;
    for command in batch {
        answers.push(match command {
            Command::Record(row) => {
                match insert(&tx, log, row) {
                    Ok((pending, announcement)) => {
                        log.remember(pending);
                        log.announce(announcement);
                        written += 1;
                    }
                    // The database is not ours right now: retry the batch.
                    Err(e) if e.is_busy() => return Err(e),
                    Err(e) => {
                        let trace_id = &row.record().trace_id;
                        tracing::error!(%trace_id, "cannot store record: {e}");
                    }
                }
                Answer::None
            }
            Command::CreateSession {
                session_id,
                metadata,
                sampling_params,
                ..
            } => Answer::Unit(create_session(
                &tx,
                session_id,
                metadata,
                sampling_params.as_ref(),
            )),
            Command::DeleteSession { session_id, .. } => {
                let deleted = delete_session(&tx, log, session_id);
                if deleted.is_err() {
                    // What it swept before failing is unknown: forget all.
                    log.clear();
                }
                Answer::Count(deleted)
            }
            Command::Flush(_) | Command::Shutdown(_) => Answer::Unit(Ok(())),
            Command::ExportProgress(progress) => {
                save_export_progress(&tx, progress)?;
                Answer::None
            }
        });
    }
    tx.commit()?;
    log.committed();
    Ok((answers, written))
}

/// Inserts a record (see [`store_row`]) in a savepoint of its own: a record
/// that fails is rolled back alone, its shared rows with it (the statement
/// journal is in memory: temp_store = MEMORY). Should the writer's memory
/// prove stale, the record is placed again from what the database holds.
fn insert(
    conn: &Connection,
    log: &mut SessionLog,
    row: &EncodedRow,
) -> StoreResult<(Pending, Option<Announcement>)> {
    conn.execute_batch("SAVEPOINT record")?;
    let mut result = store_row(conn, log, row);
    if let Err(StoreError::StaleMemory(table)) = result {
        conn.execute_batch("ROLLBACK TO record")?;
        tracing::warn!("the writer's memory of {table} was stale: placing the call again");
        log.clear();
        result = store_row(conn, log, row);
    }
    if result.is_err() {
        conn.execute_batch("ROLLBACK TO record")?;
    }
    conn.execute_batch("RELEASE record")?;
    result
}

/// Inserts a record — its shared content placed after what is stored, its
/// raw blob settled, its row, its choices — and updates its session and
/// run; returns the call for the writer to remember and the raw reference
/// it stored, if any.
fn store_row(
    conn: &Connection,
    log: &mut SessionLog,
    row: &EncodedRow,
) -> StoreResult<(Pending, Option<Announcement>)> {
    let (mut placed, pending) = log.place(conn, row.content())?;
    let (raw, announcement) = log.settle_raw(conn, row)?;
    placed.raw = raw;
    row.insert(conn, &placed, None)
        .map_err(StoreError::sqlite("cannot insert the trace"))?;
    let r = row.record();
    let counts = named_params! {
        ":run_id": r.identity.run_id,
        ":at": r.started_at,
        ":errors": i64::from(r.status != Status::Ok),
        ":tokens": row.tokens().unwrap_or(0),
    };
    if let Some(session_id) = &r.identity.session_id {
        let mut params = counts.to_vec();
        params.push((":session_id", session_id));
        conn.prepare_cached(
            "INSERT INTO sessions (session_id, run_id, created_at, first_seen, last_seen,
                                   trace_count, error_count, tokens)
             VALUES (:session_id, :run_id, :at, :at, :at, 1, :errors, :tokens)
             ON CONFLICT (session_id) DO UPDATE SET
                 run_id      = COALESCE(excluded.run_id, sessions.run_id),
                 first_seen  = MIN(COALESCE(sessions.first_seen, excluded.first_seen), excluded.first_seen),
                 last_seen   = MAX(COALESCE(sessions.last_seen, excluded.last_seen), excluded.last_seen),
                 trace_count = sessions.trace_count + 1,
                 error_count = sessions.error_count + excluded.error_count,
                 tokens      = sessions.tokens + excluded.tokens",
        )?
        .execute(params.as_slice())?;
    }
    if r.identity.run_id.is_some() {
        conn.prepare_cached(
            "INSERT INTO runs (run_id, first_seen, last_seen, trace_count, error_count, tokens)
             VALUES (:run_id, :at, :at, 1, :errors, :tokens)
             ON CONFLICT (run_id) DO UPDATE SET
                 first_seen  = MIN(runs.first_seen, excluded.first_seen),
                 last_seen   = MAX(runs.last_seen, excluded.last_seen),
                 trace_count = runs.trace_count + 1,
                 error_count = runs.error_count + excluded.error_count,
                 tokens      = runs.tokens + excluded.tokens",
        )?
        .execute(counts)?;
    }
    if let Some(span) = row.span() {
        conn.prepare_cached(
            "INSERT INTO spans (trace_id, created_at, span) VALUES (:trace_id, :at, :span)",
        )?
        .execute(named_params! {":trace_id": r.trace_id, ":at": r.ended_at, ":span": span})?;
    }
    Ok((pending, announcement))
}

fn save_export_progress(conn: &Connection, p: &ExportProgress) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO export_state (exporter, cursor, exported, last_success_at, last_error, last_error_at)
         VALUES ('otlp', :cursor, :exported, CASE WHEN :error IS NULL THEN :now END, :error,
                 CASE WHEN :error IS NOT NULL THEN :now END)
         ON CONFLICT (exporter) DO UPDATE SET
             cursor          = MAX(export_state.cursor, excluded.cursor),
             exported        = export_state.exported + excluded.exported,
             last_success_at = COALESCE(excluded.last_success_at, export_state.last_success_at),
             last_error      = CASE WHEN :error IS NULL THEN export_state.last_error ELSE :error END,
             last_error_at   = COALESCE(excluded.last_error_at, export_state.last_error_at)",
        named_params! {
            ":cursor": p.cursor,
            ":exported": i64::try_from(p.exported).unwrap_or(i64::MAX),
            ":error": p.error,
            ":now": crate::record::rfc3339(std::time::SystemTime::now()),
        },
    )
    .map_err(StoreError::sqlite("cannot save the export progress"))?;
    Ok(())
}

fn create_session(
    conn: &Connection,
    session_id: &str,
    metadata: &Map<String, Value>,
    sampling_params: Option<&Map<String, Value>>,
) -> StoreResult<()> {
    if let Some(params) = sampling_params {
        conn.execute(
            "INSERT OR REPLACE INTO session_sampling_params (session_id, sampling_params)
             VALUES (?1, ?2)",
            (session_id, Value::Object(params.clone()).to_string()),
        )
        .map_err(StoreError::sqlite("cannot keep the sampling parameters"))?;
    }
    conn.execute(
        "INSERT INTO sessions (session_id, created_at, metadata) VALUES (:session_id, :now, :metadata)
         ON CONFLICT (session_id) DO UPDATE SET metadata = excluded.metadata
         WHERE excluded.metadata != '{}'",
        named_params! {
            ":session_id": session_id,
            ":now": crate::record::rfc3339(std::time::SystemTime::now()),
            ":metadata": Value::Object(metadata.clone()).to_string(),
        },
    )
    .map_err(StoreError::sqlite("cannot create the session"))?;
    Ok(())
}

/// Deletes a session's traces (their shared rows lose a reference each:
/// the schema's triggers), sweeps what nothing uses any more, and forgets
/// the session.
fn delete_session(conn: &Connection, log: &mut SessionLog, session_id: &str) -> StoreResult<usize> {
    let run_id: Option<String> = conn
        .query_row(
            "SELECT run_id FROM sessions WHERE session_id = ?1",
            [session_id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let deleted = conn.execute("DELETE FROM traces WHERE session_id = ?1", [session_id])?;
    conn.execute("DELETE FROM sessions WHERE session_id = ?1", [session_id])?;
    conn.execute(
        "DELETE FROM session_sampling_params WHERE session_id = ?1",
        [session_id],
    )?;
    let swept = content::sweep(conn)?;
    log.forget_session(conn, session_id, &swept)?;
    if let Some(run_id) = run_id {
        // Keep the run's counters true to the traces that remain.
        conn.execute(
            "UPDATE runs SET
                 trace_count = (SELECT COUNT(*) FROM traces WHERE run_id = :run_id),
                 error_count = (SELECT COUNT(*) FROM traces WHERE run_id = :run_id AND status != 'ok'),
                 tokens      = (SELECT COALESCE(SUM(tokens), 0) FROM traces WHERE run_id = :run_id)
             WHERE run_id = :run_id",
            named_params! {":run_id": run_id},
        )?;
        conn.execute(
            "DELETE FROM runs WHERE run_id = ?1 AND trace_count = 0",
            [&run_id],
        )?;
    }
    Ok(deleted)
}
