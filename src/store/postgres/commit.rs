//! The writer thread on PostgreSQL: the same contract as SQLite's
//! (`store::commit`) — group commit, nothing dropped, `/health` degraded
//! while the database cannot take records — over a network connection.
//!
//! **A round.** The thread takes everything waiting in the channel (up to
//! `batch_max`). Records join the *held* queue, which is committed from its
//! front in transactions of at most `batch_max` rows; then the other
//! commands run, each in its own transaction; flushes are answered once
//! nothing is held. At normal load the queue holds just this round's
//! records and one transaction commits them all.
//!
//! **When the database cannot commit** — unreachable, restarting, out of
//! space, read-only ([`StoreFault`]) — the connection is dropped, the store
//! is degraded and the records stay held, in memory, with every record that
//! arrives meanwhile; the front is tried again (on a new connection) after
//! a wait that doubles up to [`RETRY_WAIT_MAX`]. Held records past
//! `store.backlog_memory` stop the thread from taking more: the channel
//! fills and capture tasks wait (backpressure, never a drop). Session
//! changes are refused meanwhile (`StoreError::Unavailable`, a 503) and
//! export progress is kept for later. A row the database refuses for what
//! it holds (a constraint, a value out of range) is rejected alone, logged
//! and counted: its batch is retried one row at a time.
//!
//! **Shutdown** makes a last attempt, then writes what is still held to the
//! spill file (`store.spill_file`, JSON lines); the next start commits the
//! file first. Rows are idempotent on their trace id, so a batch that did
//! commit before its connection broke is not counted twice on retry.

use super::connect::Server;
use super::row::Row;
use super::spill;
use super::{feedback, harness};
use crate::metrics::Metrics;
use crate::store::error::{StoreError, StoreFault, StoreResult};
use crate::store::health::{BacklogStatus, Condition, Degradation, Published, StoreStatus};
use crate::store::writer::{Command, ExportProgress};
use postgres::Client;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, mpsc, oneshot};

/// The first wait before a failed commit is tried again; it doubles after
/// each failure, up to [`RETRY_WAIT_MAX`].
const RETRY_WAIT_FIRST: Duration = Duration::from_millis(100);
const RETRY_WAIT_MAX: Duration = Duration::from_secs(2);

/// What the writer thread starts from.
pub(crate) struct Start {
    /// The database.
    pub server: Server,
    /// This replica's instance id (each row's `replica`).
    pub instance: String,
    /// The connection `open` made (the thread reconnects when it breaks).
    pub client: Client,
    /// Records a previous run left in the spill file.
    pub held: Vec<Row>,
    /// The spill file.
    pub spill: PathBuf,
    /// What the handles see.
    pub condition: Arc<Condition>,
    /// Notified after each commit that queued spans.
    pub spans_committed: Arc<Notify>,
    /// Commit timings and counts.
    pub metrics: Arc<Metrics>,
    /// Most records per transaction.
    pub batch_max: usize,
    /// Most bytes of held records before the thread takes no more.
    pub backlog_memory: usize,
}

/// A command's answer channel.
type Ack = oneshot::Sender<StoreResult<()>>;

/// A record waiting for its commit, and since when.
struct Held {
    row: Row,
    since: SystemTime,
    bytes: usize,
}

/// The writer thread's state.
struct Writer {
    server: Server,
    instance: String,
    /// `None` after a fault: the next attempt connects again.
    client: Option<Client>,
    held: VecDeque<Held>,
    held_bytes: usize,
    spill: PathBuf,
    condition: Arc<Condition>,
    spans_committed: Arc<Notify>,
    metrics: Arc<Metrics>,
    batch_max: usize,
    backlog_memory: usize,
    degraded: Option<Degradation>,
    retry_wait: Duration,
    retry_at: Instant,
    flushes: Vec<Ack>,
    /// Export progress the database could not save yet.
    progress: Vec<ExportProgress>,
}

/// The writer thread's loop: receive, commit, answer, until shutdown.
pub(crate) fn run(start: Start, mut rx: mpsc::Receiver<Command>, runtime: Runtime) {
    let mut writer = Writer::new(start);
    writer.round(Vec::new());
    loop {
        let Some(commands) = writer.receive(&mut rx, &runtime) else {
            return writer.stop(None);
        };
        if let Some(ack) = writer.round(commands) {
            return writer.stop(Some(ack));
        }
    }
}

impl Held {
    fn new(row: Row, since: SystemTime) -> Held {
        let bytes = row.blobs.record.len() + row.span.as_ref().map_or(0, String::len) + 512;
        Held { row, since, bytes }
    }
}

impl Writer {
    fn new(start: Start) -> Writer {
        let now = SystemTime::now();
        let held: VecDeque<Held> = start.held.into_iter().map(|r| Held::new(r, now)).collect();
        if !held.is_empty() {
            tracing::info!(spill = %start.spill.display(), "committing {} records a previous run kept", held.len());
        }
        Writer {
            server: start.server,
            instance: start.instance,
            client: Some(start.client),
            held_bytes: held.iter().map(|h| h.bytes).sum(),
            held,
            spill: start.spill,
            condition: start.condition,
            spans_committed: start.spans_committed,
            metrics: start.metrics,
            batch_max: start.batch_max.max(1),
            backlog_memory: start.backlog_memory,
            degraded: None,
            retry_wait: RETRY_WAIT_FIRST,
            retry_at: Instant::now(),
            flushes: Vec::new(),
            progress: Vec::new(),
        }
    }

    /// Waits for commands (or for the next retry, while records are held)
    /// and takes what is waiting, up to `batch_max`; `None` once every
    /// handle is gone.
    fn receive(
        &mut self,
        rx: &mut mpsc::Receiver<Command>,
        runtime: &Runtime,
    ) -> Option<Vec<Command>> {
        let full = self.held_bytes >= self.backlog_memory && !self.condition.closing();
        let retry = (!self.held.is_empty()).then_some(self.retry_at);
        let condition = self.condition.clone();
        let first = runtime.block_on(async {
            let retry_at = tokio::time::Instant::from_std(retry.unwrap_or_else(Instant::now));
            tokio::select! {
                command = rx.recv(), if !full => Some(command),
                _ = tokio::time::sleep_until(retry_at), if retry.is_some() => None,
                _ = condition.wake.notified() => None,
            }
        });
        let mut commands = match first {
            Some(None) => return None,
            Some(Some(command)) => vec![command],
            None => Vec::new(),
        };
        while commands.len() < self.batch_max {
            match rx.try_recv() {
                Ok(command) => commands.push(command),
                Err(_) => break,
            }
        }
        Some(commands)
    }

    /// One round: hold the records, commit what is held, run the other
    /// commands, answer the flushes this allows, publish. Returns the
    /// shutdown's answer channel when the round ends with one.
    fn round(&mut self, commands: Vec<Command>) -> Option<Ack> {
        let now = SystemTime::now();
        let mut stop = None;
        let mut others = Vec::new();
        for command in commands {
            match command {
                Command::Flush(ack) => self.flushes.push(ack),
                Command::Shutdown(ack) => stop = Some(ack),
                Command::PostgresRecord(row) => self.hold(Held::new(*row, now)),
                other => others.push(other),
            }
        }
        self.commit_held();
        for command in others {
            self.run_command(command);
        }
        self.save_progress();
        if self.held.is_empty() && self.degraded.is_none() {
            for ack in self.flushes.drain(..) {
                let _ = ack.send(Ok(()));
            }
        }
        self.publish();
        stop
    }

    fn hold(&mut self, held: Held) {
        self.held_bytes += held.bytes;
        self.held.push_back(held);
    }

    /// Commits the held records from the front, `batch_max` a transaction,
    /// unless the store is degraded and its retry is not due.
    fn commit_held(&mut self) {
        if self.degraded.is_some() && Instant::now() < self.retry_at {
            return;
        }
        while !self.held.is_empty() {
            let n = self.held.len().min(self.batch_max);
            match self.commit_front(n) {
                Ok(()) => self.recovered(),
                Err(e) if e.fault().is_some() => return self.degrade(e),
                Err(_) => self.commit_one_by_one(n),
            }
        }
    }

    /// Commits the first `n` held records in one transaction and lets them go.
    fn commit_front(&mut self, n: usize) -> StoreResult<()> {
        let started = Instant::now();
        let rows: Vec<&Row> = self.held.iter().take(n).map(|h| &h.row).collect();
        let mut client = match self.client.take() {
            Some(client) => client,
            None => self.server.connect(&self.instance)?,
        };
        let inserted = insert_rows(&mut client, &rows, &self.instance);
        if !client.is_closed() {
            self.client = Some(client);
        }
        let spans = inserted?;
        self.metrics.observe_commit(started.elapsed(), n);
        if spans {
            self.spans_committed.notify_one();
        }
        for held in self.held.drain(..n) {
            self.held_bytes -= held.bytes;
        }
        Ok(())
    }

    /// After a batch the database refused for a row's content: commits the
    /// first `n` records one at a time, rejecting those it refuses.
    fn commit_one_by_one(&mut self, n: usize) {
        for _ in 0..n {
            match self.commit_front(1) {
                Ok(()) => {}
                Err(e) if e.fault().is_some() => return self.degrade(e),
                Err(e) => {
                    if let Some(held) = self.held.pop_front() {
                        self.held_bytes -= held.bytes;
                        tracing::error!(trace_id = %held.row.record.trace_id, "record rejected: {e}");
                        self.metrics.records_rejected(1);
                    }
                }
            }
        }
    }

    /// The connection, opened again after a fault.
    fn client(&mut self) -> StoreResult<&mut Client> {
        match &mut self.client {
            Some(client) => Ok(client),
            slot @ None => Ok(slot.insert(self.server.connect(&self.instance)?)),
        }
    }

    /// Runs one non-record command in its own transaction and answers it;
    /// refused (503) while the store is degraded.
    fn run_command(&mut self, command: Command) {
        if self.degraded.is_some() {
            self.publish();
            let status = self.condition.status(0);
            return refuse(command, status, &mut self.progress);
        }
        match command {
            Command::CreateSession {
                session_id,
                metadata,
                sampling_params,
                ack,
            } => {
                let result = self.create_session(&session_id, &metadata, sampling_params.as_ref());
                let _ = ack.send(self.settle(result));
            }
            Command::DeleteSession { session_id, ack } => {
                let result = self.delete_session(&session_id);
                let _ = ack.send(self.settle(result));
            }
            Command::ExportProgress(progress) => self.progress.push(progress),
            Command::ShareSetting { key, value, ack } => {
                let result = self.share_setting(&key, &value);
                let _ = ack.send(self.settle(result));
            }
            Command::Feedback { items, spans, ack } => {
                let queued = spans.iter().any(Option::is_some);
                let result = self.in_transaction(|tx| feedback::post(tx, &items, &spans));
                let _ = ack.send(self.settle_queued(result, queued));
            }
            Command::HarnessSpans {
                spans,
                forward,
                ack,
            } => {
                let result = self.in_transaction(|tx| harness::insert(tx, &spans, forward));
                let _ = ack.send(self.settle_queued(result, forward));
            }
            Command::Record(_)
            | Command::PostgresRecord(_)
            | Command::Flush(_)
            | Command::Shutdown(_) => {}
        }
    }

    /// Runs `work` in one transaction.
    fn in_transaction<T>(
        &mut self,
        work: impl FnOnce(&mut postgres::Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let failed = StoreError::postgres("cannot commit");
        let mut tx = self.client()?.transaction().map_err(&failed)?;
        let value = work(&mut tx)?;
        tx.commit().map_err(failed)?;
        Ok(value)
    }

    /// [`settle`](Self::settle), waking the exporter when the committed
    /// work `queued` spans.
    fn settle_queued<T>(&mut self, result: StoreResult<T>, queued: bool) -> StoreResult<T> {
        if result.is_ok() && queued {
            self.spans_committed.notify_one();
        }
        self.settle(result)
    }

    /// `result`, degrading the store first when it failed for the store's
    /// condition.
    fn settle<T>(&mut self, result: StoreResult<T>) -> StoreResult<T> {
        if let Err(e) = &result
            && let Some(fault) = e.fault()
        {
            self.degrade_with(fault, e.to_string());
        }
        result
    }

    fn create_session(
        &mut self,
        session_id: &str,
        metadata: &Map<String, Value>,
        sampling_params: Option<&Map<String, Value>>,
    ) -> StoreResult<()> {
        let failed = StoreError::postgres("cannot create the session");
        let now = crate::record::rfc3339(SystemTime::now());
        let metadata = Value::Object(metadata.clone()).to_string();
        let params = sampling_params.map(|p| Value::Object(p.clone()).to_string());
        let mut tx = self.client()?.transaction().map_err(&failed)?;
        if let Some(params) = params {
            tx.execute(
                "INSERT INTO session_sampling_params (session_id, sampling_params) VALUES ($1, $2)
                 ON CONFLICT (session_id) DO UPDATE SET sampling_params = EXCLUDED.sampling_params",
                &[&session_id, &params],
            )
            .map_err(&failed)?;
        }
        tx.execute(
            "INSERT INTO sessions (session_id, created_at, metadata) VALUES ($1, $2, $3)
             ON CONFLICT (session_id) DO UPDATE SET metadata = EXCLUDED.metadata
             WHERE EXCLUDED.metadata != '{}'",
            &[&session_id, &now, &metadata],
        )
        .map_err(&failed)?;
        tx.commit().map_err(failed)
    }

    /// Deletes a session's traces and the session; keeps its run's counters
    /// true to the traces that remain. Returns how many traces went.
    fn delete_session(&mut self, session_id: &str) -> StoreResult<usize> {
        let failed = StoreError::postgres("cannot delete the session");
        let mut tx = self.client()?.transaction().map_err(&failed)?;
        let run_id: Option<String> = tx
            .query_opt(
                "SELECT run_id FROM sessions WHERE session_id = $1",
                &[&session_id],
            )
            .map_err(&failed)?
            .and_then(|row| row.get(0));
        let deleted = tx
            .execute("DELETE FROM traces WHERE session_id = $1", &[&session_id])
            .map_err(&failed)?;
        tx.execute("DELETE FROM sessions WHERE session_id = $1", &[&session_id])
            .map_err(&failed)?;
        tx.execute(
            "DELETE FROM session_sampling_params WHERE session_id = $1",
            &[&session_id],
        )
        .map_err(&failed)?;
        if let Some(run_id) = run_id {
            tx.execute(
                "UPDATE runs SET
                     trace_count = (SELECT COUNT(*) FROM traces WHERE run_id = $1),
                     error_count = (SELECT COUNT(*) FROM traces WHERE run_id = $1 AND status != 'ok'),
                     tokens      = (SELECT COALESCE(SUM(tokens), 0) FROM traces WHERE run_id = $1)
                 WHERE run_id = $1",
                &[&run_id],
            )
            .map_err(&failed)?;
            tx.execute(
                "DELETE FROM runs WHERE run_id = $1 AND trace_count = 0",
                &[&run_id],
            )
            .map_err(&failed)?;
        }
        tx.commit().map_err(failed)?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    /// Stores a setting every replica follows, naming this one as its author.
    fn share_setting(&mut self, key: &str, value: &Value) -> StoreResult<()> {
        let instance = self.instance.clone();
        let value = value.to_string();
        self.client()?
            .execute(
                "INSERT INTO admin_state (key, value, changed_by) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,
                     changed_at = now(), changed_by = EXCLUDED.changed_by",
                &[&key, &value, &instance],
            )
            .map_err(StoreError::postgres("cannot share the setting"))?;
        Ok(())
    }

    /// Saves the export progress waiting, unless the store is degraded.
    fn save_progress(&mut self) {
        if self.degraded.is_some() || self.progress.is_empty() {
            return;
        }
        let progress = std::mem::take(&mut self.progress);
        for (i, p) in progress.iter().enumerate() {
            if let Err(e) = self.save_one_progress(p) {
                tracing::warn!("cannot save the export progress: {e}");
                self.progress.extend(progress[i..].iter().cloned());
                let _ = self.settle(Err::<(), _>(e));
                return;
            }
        }
    }

    /// Saves one export attempt's progress: on success the batch's claimed
    /// rows are marked exported (the outbox is shared: the mark, not the
    /// cursor, says what is done), on a failure given back; in the same
    /// transaction as the counters.
    fn save_one_progress(&mut self, p: &ExportProgress) -> StoreResult<()> {
        let exported = i64::try_from(p.exported).unwrap_or(i64::MAX);
        let now = crate::record::rfc3339(SystemTime::now());
        let failed = StoreError::postgres("cannot save the export progress");
        let mut tx = self.client()?.transaction().map_err(&failed)?;
        if let Some(claim) = &p.claim {
            let settle = match p.error {
                None => "UPDATE spans SET exported_at = now() WHERE claimed_by = $1",
                // Given back: any replica may send it again at once.
                Some(_) => {
                    "UPDATE spans SET claimed_by = NULL, claimed_until = NULL \
                     WHERE claimed_by = $1 AND exported_at IS NULL"
                }
            };
            tx.execute(settle, &[claim]).map_err(&failed)?;
        }
        tx.execute(
                "INSERT INTO export_state (exporter, cursor, exported, last_success_at, last_error, last_error_at)
                 VALUES ('otlp', $1, $2, CASE WHEN $3::text IS NULL THEN $4 END, $3,
                         CASE WHEN $3::text IS NOT NULL THEN $4 END)
                 ON CONFLICT (exporter) DO UPDATE SET
                     cursor          = GREATEST(export_state.cursor, EXCLUDED.cursor),
                     exported        = export_state.exported + EXCLUDED.exported,
                     last_success_at = COALESCE(EXCLUDED.last_success_at, export_state.last_success_at),
                     last_error      = CASE WHEN $3::text IS NULL THEN export_state.last_error ELSE $3 END,
                     last_error_at   = COALESCE(EXCLUDED.last_error_at, export_state.last_error_at)",
                &[&p.cursor, &exported, &p.error, &now],
            )
            .map_err(&failed)?;
        tx.commit().map_err(failed)
    }

    /// The store cannot commit: drop the connection, wait longer next time.
    fn degrade(&mut self, e: StoreError) {
        let fault = e.fault().unwrap_or(StoreFault::Io);
        self.degrade_with(fault, e.to_string());
    }

    fn degrade_with(&mut self, fault: StoreFault, last_error: String) {
        if self.degraded.is_none() {
            tracing::error!("the store cannot commit ({fault}); holding records: {last_error}");
        }
        self.client = None;
        let since = self
            .degraded
            .as_ref()
            .map_or_else(SystemTime::now, |d| d.since);
        self.degraded = Some(Degradation {
            fault,
            since,
            last_error,
        });
        self.retry_at = Instant::now() + self.retry_wait;
        self.retry_wait = (self.retry_wait * 2).min(RETRY_WAIT_MAX);
    }

    fn recovered(&mut self) {
        if let Some(d) = self.degraded.take() {
            let down = SystemTime::now()
                .duration_since(d.since)
                .unwrap_or_default();
            tracing::info!("the store commits again after {:.1} s", down.as_secs_f64());
        }
        self.retry_wait = RETRY_WAIT_FIRST;
    }

    /// Tells the handles the store's condition and what is held.
    fn publish(&self) {
        let full = self.held_bytes >= self.backlog_memory;
        let records = self.held.len() as u64;
        self.condition.publish(Published {
            degraded: self.degraded.clone(),
            backlog: BacklogStatus {
                records,
                spilled: 0,
                in_memory: records,
                memory_bytes: self.held_bytes as u64,
                oldest_seconds: None,
                backpressure: full && self.degraded.is_some(),
                spill_file: self.spill.clone(),
            },
            oldest: self.held.front().map(|h| h.since),
        });
    }

    /// The last round: one more attempt, then what is still held goes to
    /// the spill file for the next start.
    fn stop(mut self, ack: Option<Ack>) {
        self.retry_at = Instant::now();
        self.commit_held();
        let result = self.keep_held();
        self.publish();
        for flush in self.flushes.drain(..) {
            let _ = flush.send(Err(StoreError::WriterStopped));
        }
        if let Some(ack) = ack {
            let _ = ack.send(result);
        }
    }

    /// Writes the held records to the spill file.
    fn keep_held(&mut self) -> StoreResult<()> {
        if self.held.is_empty() {
            return spill::remove(&self.spill);
        }
        let rows: Vec<&Row> = self.held.iter().map(|h| &h.row).collect();
        match spill::write(&self.spill, &rows) {
            Ok(()) => {
                tracing::warn!(spill = %self.spill.display(), "{} records kept for the next start", rows.len());
                Ok(())
            }
            Err(e) => {
                let lost = StoreError::RecordsLost {
                    count: rows.len() as u64,
                    spill: self.spill.clone(),
                    reason: e.to_string(),
                };
                tracing::error!("{lost}");
                Err(lost)
            }
        }
    }
}

/// Inserts `rows` in one transaction; returns whether any new row queued a
/// span.
fn insert_rows(client: &mut Client, rows: &[&Row], instance: &str) -> StoreResult<bool> {
    let mut tx = client
        .transaction()
        .map_err(StoreError::postgres("cannot begin"))?;
    let (_, spans) = super::row::insert_batch(&mut tx, rows, instance)?;
    tx.commit().map_err(StoreError::postgres("cannot commit"))?;
    Ok(spans)
}

/// Answers a command the degraded store cannot run with a 503 that says
/// why (export progress waits).
fn refuse(command: Command, status: StoreStatus, progress: &mut Vec<ExportProgress>) {
    let unavailable = || StoreError::Unavailable(Box::new(status.clone()));
    match command {
        Command::CreateSession { ack, .. } | Command::HarnessSpans { ack, .. } => {
            let _ = ack.send(Err(unavailable()));
        }
        Command::DeleteSession { ack, .. } => {
            let _ = ack.send(Err(unavailable()));
        }
        Command::Feedback { ack, .. } => {
            let _ = ack.send(Err(unavailable()));
        }
        Command::ShareSetting { ack, .. } => {
            let _ = ack.send(Err(unavailable()));
        }
        Command::ExportProgress(p) => progress.push(p),
        Command::Record(_)
        | Command::PostgresRecord(_)
        | Command::Flush(_)
        | Command::Shutdown(_) => {}
    }
}
