//! The one writer: a dedicated thread that owns the write connection.
//!
//! Request tasks never touch the disk. A finished call's record is handed to
//! the writer through a bounded channel; the writer thread takes everything
//! that is waiting (up to `batch_max`) and commits it in one transaction —
//! group commit: at low load each record commits at once, under load the
//! batches grow on their own, with no timer adding latency.
//!
//! **Nothing is ever dropped.** When the channel is full, the task handing a
//! record over waits for room. That task is the capture task of a call whose
//! response has already been sent, so a slow disk delays only the bookkeeping,
//! never a client — until memory for waiting captures runs out, which is the
//! point where dropping would be the only alternative and we choose
//! backpressure instead.
//!
//! **Flush** (`POST /admin/flush`, shutdown) must cover every call whose
//! response has ended, even if its record is still being assembled. So a call
//! takes a *reservation* the moment its response ends, before the client can
//! see the end, and releases it when its record is in the channel. A flush
//! waits for every reservation taken before it, then sends a barrier through
//! the same channel and returns when the writer has committed up to it.

use crate::metrics::Metrics;
use crate::record::{Span, TopLogprob, TraceRecord};
use crate::store::codec;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot};

/// A cloneable handle for sending work to the writer thread.
#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Command>,
    pending: Arc<Pending>,
}

/// What the writer thread is asked to do.
pub(crate) enum Command {
    Record(Box<Row>),
    CreateSession {
        session_id: String,
        metadata: Map<String, Value>,
        ack: oneshot::Sender<Result<(), String>>,
    },
    DeleteSession {
        session_id: String,
        ack: oneshot::Sender<Result<usize, String>>,
    },
    Flush(oneshot::Sender<Result<(), String>>),
    Shutdown(oneshot::Sender<Result<(), String>>),
    ExportProgress(ExportProgress),
}

/// What the exporter reports after an export attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportProgress {
    /// The last span id the collector accepted (the new cursor).
    pub cursor: i64,
    /// How many spans this attempt exported.
    pub exported: u64,
    /// The attempt's error, if it failed (the cursor then stays).
    pub error: Option<String>,
}

impl StoreWriter {
    pub(crate) fn new(tx: mpsc::Sender<Command>) -> Self {
        Self {
            tx,
            pending: Arc::new(Pending::default()),
        }
    }

    /// Reserves a place for a record that is being assembled: flushes wait
    /// for it. Call this when the call's response ends, then [`Reservation::submit`].
    pub fn reserve(&self) -> Reservation {
        Reservation {
            writer: self.clone(),
            ticket: Some(self.pending.open()),
        }
    }

    /// Returns once every record whose reservation was taken before this call
    /// is committed.
    pub async fn flush(&self) -> Result<(), String> {
        self.pending
            .wait_for_tickets_before(self.pending.high_water())
            .await;
        let (ack, done) = oneshot::channel();
        self.send(Command::Flush(ack)).await?;
        done.await
            .map_err(|_| "the store writer stopped".to_string())?
    }

    /// Creates a session (or updates its metadata), committed on return.
    pub async fn create_session(
        &self,
        session_id: String,
        metadata: Map<String, Value>,
    ) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.send(Command::CreateSession {
            session_id,
            metadata,
            ack,
        })
        .await?;
        done.await
            .map_err(|_| "the store writer stopped".to_string())?
    }

    /// Deletes a session and its traces; returns the number of traces deleted.
    pub async fn delete_session(&self, session_id: String) -> Result<usize, String> {
        // Records already on their way must not resurrect the session.
        self.flush().await?;
        let (ack, done) = oneshot::channel();
        self.send(Command::DeleteSession { session_id, ack })
            .await?;
        done.await
            .map_err(|_| "the store writer stopped".to_string())?
    }

    /// Flushes everything, then stops the writer thread.
    pub async fn shutdown(&self) -> Result<(), String> {
        self.flush().await?;
        let (ack, done) = oneshot::channel();
        self.send(Command::Shutdown(ack)).await?;
        done.await
            .map_err(|_| "the store writer stopped".to_string())?
    }

    /// Saves the exporter's progress (its cursor, counts, last error).
    pub async fn export_progress(&self, progress: ExportProgress) -> Result<(), String> {
        self.send(Command::ExportProgress(progress)).await
    }

    /// Records waiting in the channel for the writer.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    async fn send(&self, command: Command) -> Result<(), String> {
        self.tx
            .send(command)
            .await
            .map_err(|_| "the store writer stopped".to_string())
    }
}

/// A place reserved for one record; see [`StoreWriter::reserve`].
pub struct Reservation {
    writer: StoreWriter,
    ticket: Option<u64>,
}

impl Reservation {
    /// Encodes the record and hands it to the writer, waiting for room in the
    /// channel if it is full. Never drops the record unless the writer has
    /// stopped (shutdown), which is logged.
    pub async fn submit(mut self, record: TraceRecord, span: Option<Span>) {
        let trace_id = record.trace_id.clone();
        match Row::from_record(record, span.as_ref()) {
            Ok(row) => {
                if self
                    .writer
                    .send(Command::Record(Box::new(row)))
                    .await
                    .is_err()
                {
                    tracing::error!(%trace_id, "store writer stopped; record lost");
                }
            }
            Err(e) => tracing::error!(%trace_id, "cannot encode record: {e}"),
        }
        if let Some(ticket) = self.ticket.take() {
            self.writer.pending.close(ticket);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // A capture that failed before submitting must not block flushes.
        if let Some(ticket) = self.ticket.take() {
            self.writer.pending.close(ticket);
        }
    }
}

/// Open reservations, by ticket number.
#[derive(Default)]
struct Pending {
    state: Mutex<PendingState>,
    changed: Notify,
}

#[derive(Default)]
struct PendingState {
    next: u64,
    open: BTreeSet<u64>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        crate::sync::lock(&self.state)
    }

    fn open(&self) -> u64 {
        let mut state = self.lock();
        let ticket = state.next;
        state.next += 1;
        state.open.insert(ticket);
        ticket
    }

    fn close(&self, ticket: u64) {
        self.lock().open.remove(&ticket);
        self.changed.notify_waiters();
    }

    /// The number of the next ticket: every ticket below it exists already.
    fn high_water(&self) -> u64 {
        self.lock().next
    }

    async fn wait_for_tickets_before(&self, mark: u64) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self
                .lock()
                .open
                .first()
                .is_none_or(|oldest| *oldest >= mark)
            {
                return;
            }
            notified.await;
        }
    }
}

/// A record encoded for its row: the record (for its indexed columns, with
/// its bulky parts moved out), its JSON, and its compact blobs.
pub(crate) struct Row {
    record: TraceRecord,
    json: String,
    prompt_token_ids: Option<Vec<u8>>,
    completion_token_ids: Option<Vec<u8>>,
    logprobs: Option<Vec<u8>>,
    top_logprobs: Option<Vec<u8>>,
    raw_request: Option<Vec<u8>>,
    raw_response: Option<Vec<u8>>,
    /// The call's span as JSON, for the export outbox (when export is on).
    span: Option<String>,
}

/// Record fields stored in their own compact columns rather than the JSON.
/// (`completion_token_ids` and `logprobs` are the first choice's, rebuilt
/// from the per-choice columns on read.)
pub(crate) const BLOB_FIELDS: &[&str] = &[
    "prompt_token_ids",
    "completion_token_ids",
    "logprobs",
    "raw_request",
    "raw_response",
];

impl Row {
    /// Encodes a record (off the writer thread: compression is CPU work).
    pub(crate) fn from_record(mut record: TraceRecord, span: Option<&Span>) -> Result<Row, String> {
        let span = span
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| e.to_string())?;
        let prompt_token_ids = codec::pack_u32(&std::mem::take(&mut record.prompt_token_ids));
        record.completion_token_ids = Vec::new();
        record.logprobs = None;
        let ids: Vec<Vec<u32>> = record
            .choices
            .iter_mut()
            .map(|c| std::mem::take(&mut c.token_ids))
            .collect();
        let logprobs: Vec<Option<Vec<f64>>> = record
            .choices
            .iter_mut()
            .map(|c| c.logprobs.take())
            .collect();
        let top: Vec<Option<Vec<Vec<TopLogprob>>>> = record
            .choices
            .iter_mut()
            .map(|c| c.top_logprobs.take())
            .collect();
        let completion_token_ids =
            codec::pack_u32_lists(&ids.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let logprobs =
            codec::pack_f64_lists(&logprobs.iter().map(Option::as_deref).collect::<Vec<_>>());
        let top_logprobs = if top.iter().all(Option::is_none) {
            None
        } else {
            let value = serde_json::to_value(&top).map_err(|e| e.to_string())?;
            codec::compress_json(Some(&value))?
        };
        let raw_request = codec::compress_json(record.raw_request.take().as_ref())?;
        let raw_response = codec::compress_json(record.raw_response.take().as_ref())?;
        let mut value = serde_json::to_value(&record).map_err(|e| e.to_string())?;
        if let Some(object) = value.as_object_mut() {
            for field in BLOB_FIELDS {
                object.shift_remove(*field);
            }
        }
        Ok(Row {
            record,
            json: value.to_string(),
            prompt_token_ids,
            completion_token_ids,
            logprobs,
            top_logprobs,
            raw_request,
            raw_response,
            span,
        })
    }
}

/// The writer thread's loop: batch, commit, acknowledge, until shutdown.
pub(crate) fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    batch_max: usize,
    spans_committed: Arc<Notify>,
    metrics: &Metrics,
) {
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
            .any(|c| matches!(c, Command::Record(row) if row.span.is_some()));
        let stop = commit(&mut conn, batch, metrics);
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
    Unit(Result<(), String>),
    Count(Result<usize, String>),
}

/// How often a batch is retried when its transaction fails (the database is
/// locked by a `VACUUM` or another writer, the disk is full), with a wait
/// doubling up to [`RETRY_WAIT_MAX`] in between. Each attempt also waits up
/// to the connection's busy timeout for a lock. Only after all of them is a
/// batch given up, loudly: records are not dropped for a passing problem.
const RETRY_ATTEMPTS: u32 = 30;
const RETRY_WAIT_MAX: Duration = Duration::from_secs(2);

/// Commits one batch, retrying a failed transaction; returns true when the
/// batch asked the writer to stop.
fn commit(conn: &mut Connection, batch: Vec<Command>, metrics: &Metrics) -> bool {
    let stop = batch.iter().any(|c| matches!(c, Command::Shutdown(_)));
    let records = batch
        .iter()
        .filter(|c| matches!(c, Command::Record(_)))
        .count();
    let mut wait = Duration::from_millis(50);
    let mut attempt = 1;
    let answers = loop {
        let started = Instant::now();
        let applied = apply(conn, &batch);
        if applied.is_err() {
            metrics.commit_failed();
        }
        match applied {
            Ok((answers, written)) => {
                metrics.observe_commit(started.elapsed(), written);
                break answers;
            }
            Err(e) if attempt < RETRY_ATTEMPTS => {
                tracing::warn!("store commit failed (attempt {attempt}), retrying: {e}");
                std::thread::sleep(wait);
                wait = (wait * 2).min(RETRY_WAIT_MAX);
                attempt += 1;
            }
            Err(e) => {
                tracing::error!("store commit failed {attempt} times, {records} records lost: {e}");
                break batch
                    .iter()
                    .map(|_| Answer::Unit(Err(e.to_string())))
                    .collect();
            }
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

/// Runs a batch in one transaction; returns each command's answer and the
/// number of records written, or the error that failed the transaction
/// (which is then rolled back).
fn apply(
    conn: &mut Connection,
    batch: &[Command],
) -> Result<(Vec<Answer>, usize), rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut answers = Vec::with_capacity(batch.len());
    let mut written = 0;
    for command in batch {
        answers.push(match command {
            Command::Record(row) => {
                match insert(&tx, row) {
                    Ok(()) => written += 1,
                    // The database is not ours right now: retry the batch.
                    Err(e) if is_busy(&e) => return Err(e),
                    Err(e) => {
                        tracing::error!(trace_id = %row.record.trace_id, "cannot store record: {e}")
                    }
                }
                Answer::None
            }
            Command::CreateSession {
                session_id,
                metadata,
                ..
            } => Answer::Unit(create_session(&tx, session_id, metadata).map_err(|e| e.to_string())),
            Command::DeleteSession { session_id, .. } => {
                Answer::Count(delete_session(&tx, session_id).map_err(|e| e.to_string()))
            }
            Command::Flush(_) | Command::Shutdown(_) => Answer::Unit(Ok(())),
            Command::ExportProgress(progress) => {
                save_export_progress(&tx, progress)?;
                Answer::None
            }
        });
    }
    tx.commit()?;
    Ok((answers, written))
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Inserts a record and updates its session and run. No savepoint per
/// record: it would cost a statement-journal write each, and the trace insert
/// — the statement that could fail — comes first, so a failure leaves the
/// session and run counters untouched.
fn insert(conn: &Connection, row: &Row) -> Result<(), rusqlite::Error> {
    let r = &row.record;
    let tokens = r.usage.tokens().map(|t| t as i64);
    let is_error = i64::from(r.status != crate::record::Status::Ok);
    conn.prepare_cached(
        "INSERT INTO traces (
            trace_id, session_id, run_id, harness, step_id, parent_span_id, project, experiment,
            span_type, route, upstream, protocol, operation, method, path, model, response_model,
            stream, status, http_status, error_kind, started_at, ended_at, latency_ms, ttft_ms,
            input_tokens, output_tokens, tokens, record,
            prompt_token_ids, completion_token_ids, logprobs, top_logprobs,
            raw_request, raw_response
        ) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                  ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32,
                  ?33, ?34, ?35)",
    )?
    .execute(params![
        r.trace_id,
        r.identity.session_id,
        r.identity.run_id,
        r.identity.harness,
        r.identity.step_id,
        r.identity.parent_span_id,
        r.identity.project,
        r.identity.experiment,
        r.span_type,
        r.route,
        r.upstream,
        r.protocol,
        r.operation,
        r.method,
        r.path,
        r.model,
        r.response_model,
        r.stream,
        r.status.as_str(),
        r.http_status,
        r.error.as_ref().map(|e| e.kind.as_str()),
        r.started_at,
        r.ended_at,
        r.latency_ms,
        r.ttft_ms,
        r.usage.input_tokens.map(|t| t as i64),
        r.usage.output_tokens.map(|t| t as i64),
        tokens,
        row.json,
        row.prompt_token_ids,
        row.completion_token_ids,
        row.logprobs,
        row.top_logprobs,
        row.raw_request,
        row.raw_response,
    ])?;

    let tokens = tokens.unwrap_or(0);
    if let Some(session_id) = &r.identity.session_id {
        conn.prepare_cached(
            "INSERT INTO sessions (session_id, run_id, created_at, first_seen, last_seen,
                                   trace_count, error_count, tokens)
             VALUES (?1, ?2, ?3, ?3, ?3, 1, ?4, ?5)
             ON CONFLICT (session_id) DO UPDATE SET
                 run_id      = COALESCE(excluded.run_id, sessions.run_id),
                 first_seen  = MIN(COALESCE(sessions.first_seen, excluded.first_seen), excluded.first_seen),
                 last_seen   = MAX(COALESCE(sessions.last_seen, excluded.last_seen), excluded.last_seen),
                 trace_count = sessions.trace_count + 1,
                 error_count = sessions.error_count + excluded.error_count,
                 tokens      = sessions.tokens + excluded.tokens",
        )?
        .execute(params![session_id, r.identity.run_id, r.started_at, is_error, tokens])?;
    }
    if let Some(run_id) = &r.identity.run_id {
        conn.prepare_cached(
            "INSERT INTO runs (run_id, first_seen, last_seen, trace_count, error_count, tokens)
             VALUES (?1, ?2, ?2, 1, ?3, ?4)
             ON CONFLICT (run_id) DO UPDATE SET
                 first_seen  = MIN(runs.first_seen, excluded.first_seen),
                 last_seen   = MAX(runs.last_seen, excluded.last_seen),
                 trace_count = runs.trace_count + 1,
                 error_count = runs.error_count + excluded.error_count,
                 tokens      = runs.tokens + excluded.tokens",
        )?
        .execute(params![run_id, r.started_at, is_error, tokens])?;
    }
    if let Some(span) = &row.span {
        conn.prepare_cached("INSERT INTO spans (trace_id, created_at, span) VALUES (?1, ?2, ?3)")?
            .execute(params![r.trace_id, r.ended_at, span])?;
    }
    Ok(())
}

fn save_export_progress(conn: &Connection, p: &ExportProgress) -> Result<(), rusqlite::Error> {
    let now = crate::record::rfc3339(std::time::SystemTime::now());
    conn.execute(
        "INSERT INTO export_state (exporter, cursor, exported, last_success_at, last_error, last_error_at)
         VALUES ('otlp', ?1, ?2, CASE WHEN ?3 IS NULL THEN ?4 END, ?3, CASE WHEN ?3 IS NOT NULL THEN ?4 END)
         ON CONFLICT (exporter) DO UPDATE SET
             cursor          = MAX(export_state.cursor, excluded.cursor),
             exported        = export_state.exported + excluded.exported,
             last_success_at = COALESCE(excluded.last_success_at, export_state.last_success_at),
             last_error      = CASE WHEN ?3 IS NULL THEN export_state.last_error ELSE ?3 END,
             last_error_at   = COALESCE(excluded.last_error_at, export_state.last_error_at)",
        params![p.cursor, i64::try_from(p.exported).unwrap_or(i64::MAX), p.error, now],
    )?;
    Ok(())
}

fn create_session(
    conn: &Connection,
    session_id: &str,
    metadata: &Map<String, Value>,
) -> Result<(), rusqlite::Error> {
    let now = crate::record::rfc3339(std::time::SystemTime::now());
    let metadata = Value::Object(metadata.clone()).to_string();
    conn.execute(
        "INSERT INTO sessions (session_id, created_at, metadata) VALUES (?1, ?2, ?3)
         ON CONFLICT (session_id) DO UPDATE SET metadata = excluded.metadata
         WHERE excluded.metadata != '{}'",
        params![session_id, now, metadata],
    )?;
    Ok(())
}

fn delete_session(conn: &Connection, session_id: &str) -> Result<usize, rusqlite::Error> {
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
    if let Some(run_id) = run_id {
        // Keep the run's counters true to the traces that remain.
        conn.execute(
            "UPDATE runs SET
                 trace_count = (SELECT COUNT(*) FROM traces WHERE run_id = ?1),
                 error_count = (SELECT COUNT(*) FROM traces WHERE run_id = ?1 AND status != 'ok'),
                 tokens      = (SELECT COALESCE(SUM(tokens), 0) FROM traces WHERE run_id = ?1)
             WHERE run_id = ?1",
            [&run_id],
        )?;
        conn.execute(
            "DELETE FROM runs WHERE run_id = ?1 AND trace_count = 0",
            [&run_id],
        )?;
    }
    Ok(deleted)
}
