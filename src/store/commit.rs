//! The writer thread: it owns the write connection and commits what the
//! [`StoreWriter`](crate::store::StoreWriter) hands it, a batch per
//! transaction, and keeps every record the store cannot take yet.
//!
//! **A round.** The thread takes everything waiting in the channel (up to
//! `batch_max`), runs it in one transaction, and only then answers the
//! commands that wait for an answer (session changes; flushes, once nothing
//! is held back). A record's row is encoded before it reaches this thread
//! (`row`); here its shared content is placed after what its session already
//! stored (`session_log`, the writer's memory of recent calls), the row is
//! inserted, and the counters of its session and run are brought up to date
//! in the same transaction, so `runs` and `sessions` always agree with the
//! traces they count. Deleting a session sweeps the shared rows only it
//! used.
//!
//! **When the store cannot commit** — the database is locked past the busy
//! timeout, the disk or the database is full, the file is read-only, an I/O
//! error ([`StoreFault`]) — the store is *degraded*: the batch's records go
//! to the `backlog` (the spill file, else memory) and so does every record
//! that arrives until it commits again; session changes are refused
//! (`StoreError::Unavailable`, a 503), export progress is kept for later.
//! Nothing is given up: the front of the backlog is tried again after a
//! wait that doubles up to [`RETRY_WAIT_MAX`], for as long as it takes, and
//! `/health` shows the fault, the last error and the backlog meanwhile. A
//! record is rejected (logged, counted in `records_rejected`) only for its
//! own fault: SQLite refuses the row itself.
//!
//! **Recovery in pieces.** The backlog is committed from its front in
//! transactions of `piece` records. A piece that does not fit (the disk has
//! only a little room again) is halved until one does, down to a single
//! record, and doubled back after each that fits: a backlog bigger than the
//! space freed commits as far as that space goes instead of failing whole
//! forever. Records arriving meanwhile are committed directly, in their own
//! transactions. Replayed records the database holds already (a spill file
//! left by a crash after its lines were committed) are skipped by trace id.
//! A read-only or failing file is opened again before each attempt (SQLite
//! opens a write-protected file read-only and stays so).
//!
//! **The WAL.** A commit appends the pages it changes to the WAL, and only a
//! checkpoint moves them into the database so the WAL can be reused; with
//! 8 KiB pages SQLite's default lets it grow to 8 MiB first. The
//! connection keeps it near 4 MiB (`connection`), and the thread
//! checkpoints it to nothing (`TRUNCATE`) once a backlog is committed and
//! whenever it has been idle for [`IDLE_CHECKPOINT`], so a quiet gateway
//! holds no WAL on a disk that fills up.
//!
//! **Shutdown.** The last round commits or keeps what was handed over; the
//! backlog's lines held in memory go to the spill file, and the next start
//! commits the file's records before anything else. Lines the file refuses
//! too are committed if the store takes them now, else lost and reported
//! ([`StoreError::RecordsLost`]): the only way a stopped gateway loses a
//! record is a disk that takes neither the database nor the spill file.

use crate::feedback::Feedback;
use crate::metrics::Metrics;
use crate::record::{Span, Status};
use crate::store::backlog::{self, Backlog, Scratch};
use crate::store::connection::{self, Writable};
use crate::store::content;
use crate::store::error::{StoreError, StoreFault, StoreResult};
use crate::store::feedback::{self, Posted};
use crate::store::harness;
use crate::store::health::{Condition, Degradation, Published};
use crate::store::raw::References;
use crate::store::row::EncodedRow;
use crate::store::session_log::{Announcement, Pending, SessionLog};
use crate::store::writer::{Command, ExportProgress};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, named_params};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, mpsc, oneshot};

/// The first wait before a failed commit is tried again; it doubles after
/// each failure, up to [`RETRY_WAIT_MAX`].
const RETRY_WAIT_FIRST: Duration = Duration::from_millis(50);
const RETRY_WAIT_MAX: Duration = Duration::from_secs(2);
/// How often a store that stays degraded says so in the log.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// How long the writer waits idle before it checkpoints the WAL.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(2);

/// What the writer thread starts from.
pub(crate) struct Start {
    /// The write connection.
    pub conn: Connection,
    /// How to open it again.
    pub db: Writable,
    /// What a previous run left in the spill file.
    pub backlog: Backlog,
    /// What the handles see.
    pub condition: Arc<Condition>,
    /// Notified after each commit that added spans to the export outbox.
    pub spans_committed: Arc<Notify>,
    /// The raw references records are compressed against (stored and
    /// announced by this thread).
    pub references: Arc<References>,
    /// Commit timings and counts.
    pub metrics: Arc<Metrics>,
    /// Most records per transaction.
    pub batch_max: usize,
}

/// The writer thread's loop: receive, commit, keep what cannot be committed,
/// answer, until shutdown. `runtime` gives it timed waits on the channel.
pub(crate) fn run(start: Start, mut rx: mpsc::Receiver<Command>, runtime: Runtime) {
    let mut writer = Writer::new(start);
    writer.publish();
    loop {
        match writer.receive(&mut rx, &runtime) {
            Received::Commands(commands) => {
                if let Some(ack) = writer.round(commands) {
                    return writer.stop(Some(ack));
                }
            }
            Received::Idle => writer.checkpoint(),
            // Every handle is gone without a shutdown.
            Received::Closed => return writer.stop(None),
        }
    }
}

/// A command's answer channel.
type Ack = oneshot::Sender<StoreResult<()>>;

/// The writer thread's state.
struct Writer {
    conn: Connection,
    db: Writable,
    /// The writer's memory of recent calls, where new calls' content goes.
    log: SessionLog,
    /// What a record replayed from the backlog is compressed against.
    references: Arc<References>,
    backlog: Backlog,
    scratch: Scratch,
    condition: Arc<Condition>,
    spans_committed: Arc<Notify>,
    metrics: Arc<Metrics>,
    batch_max: usize,
    /// Records per transaction from the backlog.
    piece: usize,
    degraded: Option<Degradation>,
    retry: Retry,
    /// Flushes waiting for the backlog to be committed.
    flushes: Vec<Ack>,
    /// Export progress the store could not save yet.
    progress: Vec<ExportProgress>,
    /// Commits since the last checkpoint.
    checkpoint_due: bool,
}

/// When a degraded store is tried next, and when it last said so.
struct Retry {
    wait: Duration,
    at: Instant,
    reported: Instant,
}

/// What one receive gave.
enum Received {
    /// Commands (perhaps none: it is time to try the backlog again).
    Commands(Vec<Command>),
    /// Nothing for [`IDLE_CHECKPOINT`]: time for a checkpoint.
    Idle,
    /// The channel is closed.
    Closed,
}

/// How long the next receive may wait for a first command.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    Idle,
    Until(Instant),
    Not,
}

/// How the wait for a first command ended.
enum First {
    Got(Command),
    Closed,
    TimedOut,
    /// Woken (the gateway is closing), or not waited.
    Nothing,
}

impl Writer {
    fn new(start: Start) -> Writer {
        let now = Instant::now();
        Writer {
            conn: start.conn,
            db: start.db,
            log: SessionLog::new(start.references.clone()),
            references: start.references,
            backlog: start.backlog,
            scratch: Scratch::default(),
            condition: start.condition,
            spans_committed: start.spans_committed,
            metrics: start.metrics,
            batch_max: start.batch_max,
            piece: start.batch_max,
            degraded: None,
            retry: Retry {
                wait: RETRY_WAIT_FIRST,
                at: now,
                reported: now,
            },
            flushes: Vec::new(),
            progress: Vec::new(),
            checkpoint_due: false,
        }
    }

    /// How long to wait for the first command: until the next attempt while
    /// degraded, not at all while a backlog drains, a while when a
    /// checkpoint is due, else until something comes.
    fn wait(&self) -> Wait {
        if self.degraded.is_some() {
            Wait::Until(self.retry.at)
        } else if !self.backlog.is_empty() {
            Wait::Not
        } else if self.checkpoint_due {
            Wait::Idle
        } else {
            Wait::Forever
        }
    }

    /// Takes up to `batch_max` commands — none while the backlog's memory is
    /// full (backpressure), unless the gateway is closing.
    fn receive(&self, rx: &mut mpsc::Receiver<Command>, runtime: &Runtime) -> Received {
        let taking = self.condition.closing() || !self.backlog.is_full();
        let wait = self.wait();
        let first = match wait {
            Wait::Not => First::Nothing,
            wait => runtime.block_on(self.first(rx, taking, wait)),
        };
        let mut commands = match first {
            First::Got(command) => vec![command],
            First::Closed => return Received::Closed,
            First::TimedOut if matches!(wait, Wait::Idle) => return Received::Idle,
            First::TimedOut | First::Nothing => Vec::new(),
        };
        while taking && commands.len() < self.batch_max {
            match rx.try_recv() {
                Ok(command) => commands.push(command),
                Err(mpsc::error::TryRecvError::Disconnected) if commands.is_empty() => {
                    return Received::Closed;
                }
                Err(_) => break,
            }
        }
        Received::Commands(commands)
    }

    /// Waits for a first command, as `wait` allows.
    async fn first(&self, rx: &mut mpsc::Receiver<Command>, taking: bool, wait: Wait) -> First {
        let next = async {
            match taking {
                true => rx.recv().await.map_or(First::Closed, First::Got),
                false => std::future::pending().await,
            }
        };
        let deadline = match wait {
            Wait::Idle => Some(Instant::now() + IDLE_CHECKPOINT),
            Wait::Until(at) => Some(at),
            Wait::Forever | Wait::Not => None,
        };
        let timeout = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            first = next => first,
            () = timeout => First::TimedOut,
            () = self.condition.wake.notified() => First::Nothing,
        }
    }

    /// One round: commit (or keep) what came, try the backlog, answer the
    /// flushes it allows, publish. Returns the shutdown's answer channel
    /// when the round ends with one.
    fn round(&mut self, commands: Vec<Command>) -> Option<Ack> {
        let mut batch = Vec::with_capacity(commands.len());
        let mut stop = None;
        for command in commands {
            match command {
                Command::Flush(ack) => self.flushes.push(ack),
                Command::Shutdown(ack) => stop = Some(ack),
                other => batch.push(other),
            }
        }
        self.commit_batch(batch);
        self.commit_backlog();
        self.answer_flushes();
        self.publish();
        stop
    }

    /// Commits what came this round, unless the store is degraded; what it
    /// cannot commit is kept.
    fn commit_batch(&mut self, mut batch: Vec<Command>) {
        if batch.is_empty() {
            return;
        }
        if self.degraded.is_none() {
            batch.extend(self.progress.drain(..).map(Command::ExportProgress));
            match self.transaction(&batch) {
                Ok(answers) => return answer(batch, answers),
                Err(e) => self.degrade(e),
            }
        }
        self.hold(batch);
    }

    /// What the store cannot commit now: records go to the backlog, export
    /// progress waits, session changes are refused.
    fn hold(&mut self, batch: Vec<Command>) {
        self.publish();
        let status = self.condition.status(0);
        let unavailable = || StoreError::Unavailable(Box::new(status.clone()));
        let mut lines = Vec::new();
        for command in batch {
            match command {
                Command::Record(row) => match self.scratch.line(&row) {
                    Ok(line) => lines.push(line),
                    Err(e) => self.reject(&row.record().trace_id, &e),
                },
                Command::ExportProgress(progress) => self.progress.push(progress),
                Command::CreateSession { ack, .. } => {
                    let _ = ack.send(Err(unavailable()));
                }
                Command::Feedback { ack, .. } => {
                    let _ = ack.send(Err(unavailable()));
                }
                Command::DeleteSession { ack, .. } => {
                    let _ = ack.send(Err(unavailable()));
                }
                Command::HarnessSpans { ack, .. } => {
                    let _ = ack.send(Err(unavailable()));
                }
                // Never sent to this backend's thread.
                Command::PostgresRecord(_) | Command::ShareSetting { .. } => {}
                Command::Flush(_) | Command::Shutdown(_) => {}
            }
        }
        self.backlog.push(lines, SystemTime::now());
    }

    /// Tries the front of the backlog: at once while it drains, when the
    /// wait is over while degraded (an empty backlog then just probes).
    fn commit_backlog(&mut self) {
        match &self.degraded {
            None if self.backlog.is_empty() => return,
            None => {}
            Some(_) if Instant::now() < self.retry.at => return,
            Some(d) => self.prepare_retry(d.fault),
        }
        match self.commit_front() {
            Ok(()) => self.piece = (self.piece * 2).min(self.batch_max),
            Err(e) if e.fault() == Some(StoreFault::Full) && self.piece > 1 => {
                // It did not fit: try half as many, at once.
                self.piece /= 2;
                self.degrade(e);
                self.retry.at = Instant::now();
                return;
            }
            Err(e) => return self.degrade(e),
        }
        if self.backlog.is_empty() {
            tracing::info!("the store's backlog is committed");
            self.checkpoint();
        }
    }

    /// Before another attempt: the lines in memory go to the spill file if
    /// it takes them now, and a file that failed is opened again.
    fn prepare_retry(&mut self, fault: StoreFault) {
        if let Err(e) = self.backlog.spill_memory() {
            tracing::debug!("the spill file still refuses the records in memory: {e}");
        }
        if matches!(fault, StoreFault::ReadOnly | StoreFault::Io) {
            match self.db.open() {
                Ok(conn) => self.conn = conn,
                Err(e) => tracing::debug!("cannot open the database again: {e}"),
            }
        }
    }

    /// Commits one piece from the front of the backlog (with the export
    /// progress that waits), then drops it from the backlog.
    fn commit_front(&mut self) -> StoreResult<()> {
        let front = self
            .backlog
            .front(self.piece)
            .map_err(|source| StoreError::Io {
                context: "cannot read the spill file".into(),
                source,
            })?;
        // The piece is what was tried, so that halving it tries less.
        self.piece = self.piece.min(front.lines.len()).max(1);
        let mut batch = Vec::with_capacity(front.lines.len() + self.progress.len());
        for line in &front.lines {
            let row = backlog::decode(line).and_then(|(record, span)| {
                EncodedRow::encode(record, span.as_ref(), Some(&self.references))
            });
            match row {
                Ok(row) if self.stored(&row)? => {}
                Ok(row) => batch.push(Command::Record(Box::new(row))),
                Err(e) => self.reject("(a spill line)", &e),
            }
        }
        batch.extend(self.progress.iter().cloned().map(Command::ExportProgress));
        self.transaction(&batch)?;
        self.progress.clear();
        self.backlog.consume(&front);
        Ok(())
    }

    /// Whether the database holds the row's trace already (it was committed,
    /// then replayed from a spill file a crash left behind).
    fn stored(&self, row: &EncodedRow) -> StoreResult<bool> {
        self.conn
            .prepare_cached("SELECT 1 FROM traces WHERE trace_id = ?1")?
            .exists([&row.record().trace_id])
            .map_err(StoreError::sqlite("cannot look for a replayed trace"))
    }

    /// Runs one transaction; on success the store is not degraded any more.
    fn transaction(&mut self, batch: &[Command]) -> StoreResult<Vec<Answer>> {
        let started = Instant::now();
        let (answers, written) = apply(&mut self.conn, &mut self.log, batch)?;
        self.metrics.observe_commit(started.elapsed(), written);
        let records = batch
            .iter()
            .filter(|c| matches!(c, Command::Record(_)))
            .count();
        self.metrics.records_rejected(records - written);
        self.checkpoint_due = true;
        if batch.iter().any(|c| match c {
            Command::Record(row) => row.span().is_some(),
            Command::Feedback { spans, .. } => spans.iter().any(Option::is_some),
            Command::HarnessSpans { forward, .. } => *forward,
            _ => false,
        }) {
            // Wake the exporter: there is something new past its cursor.
            self.spans_committed.notify_one();
        }
        if let Some(d) = self.degraded.take() {
            let after = SystemTime::now()
                .duration_since(d.since)
                .unwrap_or_default();
            tracing::info!(
                "the store commits again after {after:.1?} ({}); {} records to commit",
                d.fault,
                self.backlog.len()
            );
            self.retry.wait = RETRY_WAIT_FIRST;
        }
        Ok(answers)
    }

    /// Notes a failed commit: the store is degraded until one succeeds, and
    /// the next attempt waits longer.
    fn degrade(&mut self, e: StoreError) {
        self.metrics.commit_failed();
        let fault = e.fault().unwrap_or(StoreFault::Io);
        let now = Instant::now();
        match &mut self.degraded {
            None => {
                tracing::warn!(
                    "the store cannot commit ({fault}); keeping the records until it can: {e}"
                );
                self.degraded = Some(Degradation {
                    fault,
                    since: SystemTime::now(),
                    last_error: e.to_string(),
                });
                self.retry.wait = RETRY_WAIT_FIRST;
                self.retry.reported = now;
            }
            Some(d) => {
                (d.fault, d.last_error) = (fault, e.to_string());
                self.retry.wait = (self.retry.wait * 2).min(RETRY_WAIT_MAX);
                if now - self.retry.reported >= REPORT_EVERY {
                    tracing::warn!(
                        "the store still cannot commit ({fault}); {} records waiting: {e}",
                        self.backlog.len()
                    );
                    self.retry.reported = now;
                }
            }
        }
        self.retry.at = now + self.retry.wait;
    }

    /// A record SQLite refuses for what it holds: logged and counted.
    fn reject(&self, trace_id: &str, e: &StoreError) {
        tracing::error!(%trace_id, "record rejected by the store: {e}");
        self.metrics.records_rejected(1);
    }

    /// Answers the flushes once nothing is held back; forgets those whose
    /// caller stopped waiting.
    fn answer_flushes(&mut self) {
        if self.backlog.is_empty() {
            for ack in self.flushes.drain(..) {
                let _ = ack.send(Ok(()));
            }
        } else {
            self.flushes.retain(|ack| !ack.is_closed());
        }
    }

    /// Shows the handles the state of this round.
    fn publish(&self) {
        let (backlog, oldest) = self.backlog.status();
        self.condition.publish(Published {
            degraded: self.degraded.clone(),
            backlog,
            oldest,
        });
    }

    /// Checkpoints the WAL to nothing, if no reader is in the way now.
    fn checkpoint(&mut self) {
        match connection::checkpoint(&self.conn, Duration::ZERO) {
            Ok(done) => self.checkpoint_due = !done,
            Err(e) => {
                tracing::debug!("WAL checkpoint failed: {e}");
                self.checkpoint_due = false;
            }
        }
        if let Err(e) = self.conn.busy_timeout(self.db.busy_timeout) {
            tracing::warn!("cannot restore the busy timeout: {e}");
        }
    }

    /// Stops the thread: keeps the backlog for the next start, checkpoints,
    /// and answers the shutdown.
    fn stop(mut self, ack: Option<Ack>) {
        let result = self.keep_backlog();
        if self.degraded.is_none()
            && let Err(e) = connection::checkpoint(&self.conn, self.db.busy_timeout)
        {
            tracing::warn!("final WAL checkpoint failed: {e}");
        }
        self.publish();
        if let Some(ack) = ack {
            let _ = ack.send(result);
        }
    }

    /// At shutdown: the backlog's lines in memory go to the spill file; if
    /// it refuses them, they are committed if the store takes them now, else
    /// they are lost, and said so.
    fn keep_backlog(&mut self) -> StoreResult<()> {
        if self.backlog.is_empty() {
            return Ok(());
        }
        if let Err(refused) = self.backlog.spill_memory() {
            while !self.backlog.is_empty() {
                if let Err(e) = self.commit_front() {
                    self.degrade(e);
                    break;
                }
            }
            let lost = self.backlog.status().0.in_memory;
            if lost > 0 {
                let e = StoreError::RecordsLost {
                    count: lost,
                    spill: self.backlog.spill_path(),
                    reason: refused.to_string(),
                };
                tracing::error!("{e}");
                return Err(e);
            }
        }
        if let Err(e) = self.backlog.sync() {
            tracing::warn!("cannot sync the spill file: {e}");
        }
        if !self.backlog.is_empty() {
            tracing::warn!(
                spill = %self.backlog.spill_path().display(),
                "{} records wait in the spill file; the next start commits them",
                self.backlog.len()
            );
        }
        Ok(())
    }
}

/// Answers a committed batch's commands. A requester that gave up waiting
/// is not an error.
fn answer(batch: Vec<Command>, answers: Vec<Answer>) {
    for (command, answer) in batch.into_iter().zip(answers) {
        match (command, answer) {
            (Command::CreateSession { ack, .. }, Answer::Unit(result)) => {
                let _ = ack.send(result);
            }
            (Command::DeleteSession { ack, .. }, Answer::Count(result)) => {
                let _ = ack.send(result);
            }
            (Command::Feedback { ack, .. }, Answer::Posted(result)) => {
                let _ = ack.send(result);
            }
            (Command::HarnessSpans { ack, .. }, Answer::Unit(result)) => {
                let _ = ack.send(result);
            }
            _ => {}
        }
    }
}

/// What a command answers once its transaction is committed.
enum Answer {
    None,
    Unit(StoreResult<()>),
    Count(StoreResult<usize>),
    Posted(StoreResult<Posted>),
}

/// A session change's result as its answer; a fault (the store's condition,
/// not the change's) fails the whole transaction instead.
fn or_abort<T>(result: StoreResult<T>) -> StoreResult<StoreResult<T>> {
    match result {
        Err(e) if e.fault().is_some() => Err(e),
        other => Ok(other),
    }
}

/// Runs a batch in one transaction; returns each command's answer and the
/// number of records written, or the error that failed the transaction
/// (which is then rolled back, and the writer forgets what it remembered:
/// ids placed in it are gone). A record SQLite refuses for what it holds is
/// logged and left out; any fault of the store fails the whole batch.
///
/// A batch is first tried with its records written straight into the
/// transaction ([`Records::Straight`]). Only if one of them is refused (or
/// the writer's memory proves stale) is the transaction rolled back and the
/// batch run again with each record in a savepoint of its own
/// ([`Records::Isolated`]), so that the refused one is left out alone.
/// Savepoints are not free: while one is open SQLite copies every page a
/// statement first touches into its statement journal, which was 11 % of
/// the gateway's instructions on small calls (callgrind, 3 000 calls) for
/// a case that almost never happens.
fn apply(
    conn: &mut Connection,
    log: &mut SessionLog,
    batch: &[Command],
) -> StoreResult<(Vec<Answer>, usize)> {
    let mut records = Records::Straight;
    loop {
        match apply_batch(conn, log, batch, records) {
            Ok(Applied::Done(answers, written)) => return Ok((answers, written)),
            // Only a straight run is refused: the isolated one ends the loop.
            Ok(Applied::Refused) => {
                log.clear();
                records = Records::Isolated;
            }
            Err(e) => {
                log.clear();
                return Err(e);
            }
        }
    }
}

/// How a batch's records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Records {
    /// Into the transaction itself: a record refused refuses the batch.
    Straight,
    /// Each in a savepoint of its own: a record refused is left out alone.
    Isolated,
}

/// What became of a batch that did not fail.
enum Applied {
    /// Committed: each command's answer, and the records written.
    Done(Vec<Answer>, usize),
    /// Rolled back: a record was refused while written straight.
    Refused,
}

fn apply_batch(
    conn: &mut Connection,
    log: &mut SessionLog,
    batch: &[Command],
    records: Records,
) -> StoreResult<Applied> {
    // Immediate: the write lock first, so what the writer reads (the sweep
    // epoch, a session's latest calls) is the state it writes on.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    log.check_epoch(&tx)?;
    let mut answers = Vec::with_capacity(batch.len());
    let mut written = 0;
    for command in batch {
        answers.push(match command {
            Command::Record(row) => match write_record(&tx, log, row, records)? {
                Some(stored) => {
                    written += usize::from(stored);
                    Answer::None
                }
                None => return Ok(Applied::Refused),
            },
            Command::CreateSession {
                session_id,
                metadata,
                sampling_params,
                ..
            } => Answer::Unit(or_abort(create_session(
                &tx,
                session_id,
                metadata,
                sampling_params.as_ref(),
            ))?),
            Command::Feedback { items, spans, .. } => {
                Answer::Posted(or_abort(post_feedback(&tx, items, spans))?)
            }
            Command::DeleteSession { session_id, .. } => {
                let deleted = or_abort(delete_session(&tx, log, session_id))?;
                if deleted.is_err() {
                    // What it swept before failing is unknown: forget all.
                    log.clear();
                }
                Answer::Count(deleted)
            }
            Command::HarnessSpans { spans, forward, .. } => {
                Answer::Unit(or_abort(insert_harness_spans(&tx, spans, *forward))?)
            }
            Command::Flush(_) | Command::Shutdown(_) => Answer::Unit(Ok(())),
            // Never sent to this backend's thread.
            Command::PostgresRecord(_) | Command::ShareSetting { .. } => Answer::None,
            Command::ExportProgress(progress) => {
                save_export_progress(&tx, progress)?;
                Answer::None
            }
        });
    }
    tx.commit()?;
    log.committed();
    Ok(Applied::Done(answers, written))
}

/// Writes one record the batch's way: whether it was written, or `None`
/// when it was written straight and refused (the batch is then rolled back
/// and replayed with each record isolated).
fn write_record(
    tx: &Connection,
    log: &mut SessionLog,
    row: &EncodedRow,
    records: Records,
) -> StoreResult<Option<bool>> {
    match records {
        Records::Isolated => store_record(tx, log, row).map(Some),
        Records::Straight => match store_row(tx, log, row) {
            Ok((pending, announcement)) => {
                log.remember(pending);
                log.announce(announcement);
                Ok(Some(true))
            }
            Err(e) if e.fault().is_some() => Err(e),
            Err(_) => Ok(None),
        },
    }
}

/// Stores a record in the batch's transaction; whether it was written. A
/// record SQLite refuses for what it holds is logged and left out; a fault
/// of the store fails the batch.
fn store_record(tx: &Connection, log: &mut SessionLog, row: &EncodedRow) -> StoreResult<bool> {
    match insert(tx, log, row) {
        Ok((pending, announcement)) => {
            log.remember(pending);
            log.announce(announcement);
            Ok(true)
        }
        // The store's condition, not the record's: keep the batch.
        Err(e) if e.fault().is_some() => Err(e),
        Err(e) => {
            let trace_id = &row.record().trace_id;
            tracing::error!(%trace_id, "cannot store record: {e}");
            Ok(false)
        }
    }
}

/// Inserts a harness request's spans in a savepoint of their own: spans
/// SQLite refuses are rolled back together, and the request told so.
fn insert_harness_spans(
    conn: &Connection,
    spans: &[crate::record::HarnessSpan],
    forward: bool,
) -> StoreResult<()> {
    conn.execute_batch("SAVEPOINT harness")?;
    let result = harness::insert(conn, spans, forward);
    match &result {
        Err(e) if e.fault().is_some() => return result,
        Err(_) => conn.execute_batch("ROLLBACK TO harness")?,
        Ok(()) => {}
    }
    conn.execute_batch("RELEASE harness")?;
    result
}

/// Inserts a record (see [`store_row`]) in a savepoint of its own: a record
/// that fails is rolled back alone, its shared rows with it (the statement
/// journal is in memory: temp_store = MEMORY). Should the writer's memory
/// prove stale, the record is placed again from what the database holds. A
/// fault of the store is returned as it is: the whole transaction goes (and
/// SQLite may have rolled it back already, savepoint and all).
pub(crate) fn insert(
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
    match &result {
        Err(e) if e.fault().is_some() => return result,
        Err(_) => conn.execute_batch("ROLLBACK TO record")?,
        Ok(_) => {}
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

/// Stores feedback items (see `feedback::post`) and the spans of the new
/// ones in the export outbox, in the caller's transaction.
fn post_feedback(
    conn: &Connection,
    items: &[Feedback],
    spans: &[Option<Span>],
) -> StoreResult<Posted> {
    let posted = feedback::post(conn, items)?;
    if let Posted::Stored(stored) = &posted {
        for ((item, new), span) in stored.iter().zip(spans) {
            let (true, Some(span)) = (new, span) else {
                continue;
            };
            let json = serde_json::to_string(span).map_err(|e| StoreError::Encode {
                what: "feedback span",
                source: e.into(),
            })?;
            conn.prepare_cached(
                "INSERT INTO spans (trace_id, created_at, span) VALUES (:id, :at, :span)",
            )?
            .execute(named_params! {":id": item.id, ":at": item.created_at, ":span": json})?;
        }
    }
    Ok(posted)
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
