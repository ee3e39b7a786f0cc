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
//! never a client. A store that cannot commit at all does not fill the
//! channel: the writer keeps those records in its backlog (`backlog`: the
//! spill file, then memory) and commits them when it can; only when both
//! are full does the channel fill and the capture tasks wait — backpressure
//! rather than dropping.
//!
//! **Flush** (`POST /admin/flush`) must cover every call whose response has
//! ended, even if its record is still being assembled. So a call takes a
//! *reservation* the moment its response ends, before the client can see
//! the end, and releases it when its record is in the channel. A flush waits
//! for every reservation taken before it, then sends a barrier through the
//! same channel and returns when the writer has committed up to it and holds
//! no backlog. While the store cannot commit that may take long: a flush
//! waits at most `store.flush_timeout`, then fails with
//! [`StoreError::Unavailable`] and the store's status (a 503).
//!
//! **Shutdown** does not flush: it tells the writer the gateway is closing
//! (so the writer takes every record, full or not), waits for the
//! reservations, and asks the writer to stop; what the store cannot commit
//! then stays in the spill file for the next start.
//!
//! This file is the handle request tasks hold ([`StoreWriter`]); the thread
//! and its transactions are `commit`'s.

use crate::feedback::Feedback;
use crate::record::{HarnessSpan, Span, TraceRecord};
use crate::store::error::{StoreError, StoreResult};
use crate::store::feedback::Posted;
use crate::store::health::{Condition, StoreStatus};
use crate::store::postgres::row::Row as PostgresRow;
use crate::store::raw::References;
use crate::store::row::EncodedRow;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};

/// A cloneable handle for sending work to the writer thread.
#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Command>,
    pending: Arc<Pending>,
    condition: Arc<Condition>,
    flush_timeout: Option<Duration>,
    /// How a record is encoded for the writer thread's backend.
    encoding: Encoding,
}

/// How records are encoded for the writer thread, by backend.
#[derive(Clone)]
pub(crate) enum Encoding {
    /// Into a SQLite row, its raw blob compressed against these references
    /// (the writer thread stores and announces them).
    Sqlite(Arc<References>),
    /// Into a PostgreSQL row.
    Postgres,
}

/// What the writer thread is asked to do.
pub(crate) enum Command {
    /// Insert a record (and its span) into SQLite.
    Record(Box<EncodedRow>),
    /// Insert a record (and its span) into PostgreSQL.
    PostgresRecord(Box<PostgresRow>),
    /// Create a session or update its metadata (and sampling parameters).
    CreateSession {
        session_id: String,
        metadata: Map<String, Value>,
        sampling_params: Option<Map<String, Value>>,
        ack: oneshot::Sender<StoreResult<()>>,
    },
    /// Store feedback items (each with its span, when spans are exported).
    Feedback {
        items: Vec<Feedback>,
        spans: Vec<Option<Span>>,
        ack: oneshot::Sender<StoreResult<Posted>>,
    },
    /// Delete a session and its traces.
    DeleteSession {
        session_id: String,
        ack: oneshot::Sender<StoreResult<usize>>,
    },
    /// Store spans a harness sent (and, with `forward`, queue them for
    /// export); answered once committed.
    HarnessSpans {
        spans: Vec<HarnessSpan>,
        forward: bool,
        ack: oneshot::Sender<StoreResult<()>>,
    },
    /// Answer once everything before it is committed.
    Flush(oneshot::Sender<StoreResult<()>>),
    /// Keep what cannot be committed for the next start, then stop the
    /// thread.
    Shutdown(oneshot::Sender<StoreResult<()>>),
    /// Save the exporter's progress.
    ExportProgress(ExportProgress),
    /// Store a setting every replica follows (PostgreSQL's `admin_state`).
    ShareSetting {
        key: String,
        value: Value,
        ack: oneshot::Sender<StoreResult<()>>,
    },
}

/// What the exporter reports after an export attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportProgress {
    /// The last span id the collector accepted (the new cursor).
    pub cursor: i64,
    /// How many spans this attempt exported.
    pub exported: u64,
    /// The claim the batch was read under (PostgreSQL's shared outbox:
    /// its rows are marked exported, or given back on an error).
    pub claim: Option<String>,
    /// The attempt's error, if it failed (the cursor then stays).
    pub error: Option<String>,
}

impl StoreWriter {
    pub(crate) fn new(
        tx: mpsc::Sender<Command>,
        condition: Arc<Condition>,
        flush_timeout: Option<Duration>,
        encoding: Encoding,
    ) -> Self {
        Self {
            tx,
            pending: Arc::new(Pending::default()),
            condition,
            flush_timeout,
            encoding,
        }
    }

    /// The database the writer commits to.
    pub fn backend(&self) -> crate::store::Backend {
        match self.encoding {
            Encoding::Sqlite(_) => crate::store::Backend::Sqlite,
            Encoding::Postgres => crate::store::Backend::Postgres,
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
    /// is committed; fails with [`StoreError::Unavailable`] if that takes
    /// longer than `store.flush_timeout`.
    pub async fn flush(&self) -> StoreResult<()> {
        let flushed = self.after_reserved(Command::Flush);
        match self.flush_timeout {
            None => flushed.await,
            Some(timeout) => tokio::time::timeout(timeout, flushed)
                .await
                .unwrap_or_else(|_| Err(self.unavailable())),
        }
    }

    /// The store's condition and backlog, as the writer last published them.
    pub fn status(&self) -> StoreStatus {
        self.condition.status(self.queue_depth())
    }

    fn unavailable(&self) -> StoreError {
        StoreError::Unavailable(Box::new(self.status()))
    }

    /// Creates a session (or updates its metadata), committed on return;
    /// `sampling_params`, when given, replace the session's.
    pub async fn create_session(
        &self,
        session_id: String,
        metadata: Map<String, Value>,
        sampling_params: Option<Map<String, Value>>,
    ) -> StoreResult<()> {
        let (ack, done) = oneshot::channel();
        self.send(Command::CreateSession {
            session_id,
            metadata,
            sampling_params,
            ack,
        })
        .await?;
        done.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Stores feedback items, committed on return: all of them (those whose
    /// id is stored with the same content already are left as they are),
    /// or none when an id is stored with other content. `spans[i]`, when
    /// given, is item `i`'s span for the export outbox, stored only if the
    /// item is new.
    pub async fn post_feedback(
        &self,
        items: Vec<Feedback>,
        spans: Vec<Option<Span>>,
    ) -> StoreResult<Posted> {
        let (ack, done) = oneshot::channel();
        self.send(Command::Feedback { items, spans, ack }).await?;
        done.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Deletes a session and its traces; returns the number of traces deleted.
    /// Refused while the store cannot commit.
    pub async fn delete_session(&self, session_id: String) -> StoreResult<usize> {
        if self.status().is_degraded() {
            return Err(self.unavailable());
        }
        // Records already on their way must not resurrect the session.
        self.flush().await?;
        let (ack, done) = oneshot::channel();
        self.send(Command::DeleteSession { session_id, ack })
            .await?;
        done.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Stores spans a harness sent, committed on return (with `forward`,
    /// each is queued for export in the same transaction). Refused while
    /// the store cannot commit: the sender is told to retry instead.
    pub async fn harness_spans(&self, spans: Vec<HarnessSpan>, forward: bool) -> StoreResult<()> {
        if self.status().is_degraded() {
            return Err(self.unavailable());
        }
        let (ack, done) = oneshot::channel();
        self.send(Command::HarnessSpans {
            spans,
            forward,
            ack,
        })
        .await?;
        done.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Hands everything over, then stops the writer thread: it commits what
    /// it can and keeps the rest in the spill file.
    pub(crate) async fn shutdown(&self) -> StoreResult<()> {
        self.condition.close();
        self.after_reserved(Command::Shutdown).await
    }

    /// Waits until every record reserved before now is handed to the
    /// writer, then sends it `command` (a flush or the shutdown) and waits
    /// for its answer.
    async fn after_reserved(
        &self,
        command: fn(oneshot::Sender<StoreResult<()>>) -> Command,
    ) -> StoreResult<()> {
        self.pending
            .wait_for_tickets_before(self.pending.high_water())
            .await;
        let (ack, done) = oneshot::channel();
        self.send(command(ack)).await?;
        done.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Stores `value` under `key` for every replica sharing the database to
    /// follow (`Reader::shared_settings`), committed on return. A SQLite
    /// store has no other replica: nothing is stored.
    pub async fn share_setting(&self, key: String, value: Value) -> StoreResult<()> {
        if let Encoding::Sqlite(_) = self.encoding {
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        self.send(Command::ShareSetting { key, value, ack }).await?;
        done.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Saves the exporter's progress (its cursor, counts, last error).
    pub async fn export_progress(&self, progress: ExportProgress) -> StoreResult<()> {
        self.send(Command::ExportProgress(progress)).await
    }

    /// Records waiting in the channel for the writer.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    async fn send(&self, command: Command) -> StoreResult<()> {
        self.tx
            .send(command)
            .await
            .map_err(|_| StoreError::WriterStopped)
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
        let encoded = match &self.writer.encoding {
            Encoding::Sqlite(references) => {
                EncodedRow::encode(record, span.as_ref(), Some(references))
                    .map(|row| Command::Record(Box::new(row)))
            }
            Encoding::Postgres => PostgresRow::encode(record, span.as_ref())
                .map(|row| Command::PostgresRecord(Box::new(row))),
        };
        match encoded {
            Ok(command) => {
                if self.writer.send(command).await.is_err() {
                    tracing::error!(%trace_id, "store writer stopped; record lost");
                }
            }
            Err(e) => tracing::error!(%trace_id, "record lost: {e}"),
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
