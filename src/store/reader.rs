//! The read side of the store's seam: every question the rest of the
//! gateway asks it, as methods.
//!
//! [`Reader`] answers on one read-only connection, on the calling thread:
//! the query commands open one on a file ([`Reader::open`]) and need no
//! runtime. [`StoreReader`] is the gateway's: the same questions, async,
//! each run on a pooled read-only connection in a blocking task, off the
//! runtime's threads.
//!
//! Readers never share the writer's connection. Under WAL a reader sees the
//! last committed state and never blocks the writer, so the API and the
//! commands stay fast while the gateway records, and a command can read a
//! store a gateway is writing to. The SQL is in the modules behind these
//! methods (`traces`, `runs`, `stats`, `outbox` for SQLite,
//! `postgres::read` and its siblings for PostgreSQL); each method picks the
//! backend's function for its connection, and nothing else differs.

use crate::config::StoreOptions;
use crate::feedback::{Feedback, FeedbackSummary};
use crate::record::{HarnessSpan, TraceRecord};
use crate::store::database::Database;
use crate::store::error::{StoreError, StoreResult};
use crate::store::feedback::{self, FeedbackScope};
use crate::store::outbox::{self, Backlog, Batch, ExportState};
use crate::store::postgres::connect::Server;
use crate::store::postgres::feedback as pg_feedback;
use crate::store::postgres::harness as pg_harness;
use crate::store::postgres::read::{self as pg, ReadConnection};
use crate::store::query::TraceKey;
use crate::store::query::{CallFilter, RunFilter, SessionFilter, TraceFilter};
use crate::store::summary::{CallLink, CallPage, CallStats, CallSummary, ChartSample, Facets};
use crate::store::summary::{RunInfo, SessionInfo, SessionRow};
use crate::store::{connection, harness, runs, stats, traces};
use rusqlite::Connection;
use serde_json::{Map, Value};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Read queries on one read-only connection, answered on the calling thread.
pub struct Reader {
    conn: Conn,
}

/// A reader's connection, by backend.
enum Conn {
    Sqlite(Connection),
    Postgres(Box<ReadConnection>),
}

/// Runs the SQLite arm with the connection, or the PostgreSQL arm with the
/// client (borrowed for that one call).
macro_rules! on_backend {
    ($reader:expr, $c:ident => $sqlite:expr, $p:ident => $postgres:expr) => {
        match &$reader.conn {
            Conn::Sqlite($c) => $sqlite,
            Conn::Postgres(pg) => pg.with(|$p| $postgres),
        }
    };
}

/// Page size of [`Reader::for_each_trace`] on PostgreSQL.
const POSTGRES_PAGE: usize = 256;

impl Reader {
    /// Opens the tracegate store in `db` read-only. A missing SQLite file
    /// is [`StoreError::Missing`] (and is not created), a file that is not
    /// a store [`StoreError::NotAStore`].
    pub fn open(db: &Database) -> StoreResult<Reader> {
        let conn = match db {
            Database::Sqlite(path) => {
                let busy_timeout = StoreOptions::default().busy_timeout;
                let conn = connection::open_existing(path, false, busy_timeout)?;
                crate::store::migrate::require_current(&conn, path)?;
                Conn::Sqlite(conn)
            }
            Database::Postgres(url) => {
                let server = Server::parse(url.url(), url.shown().to_string())?;
                Conn::Postgres(Box::new(ReadConnection::open_current(&server)?))
            }
        };
        Ok(Reader { conn })
    }

    /// Runs `read` in one read transaction: everything it reads comes from
    /// the same committed state, even while a gateway writes.
    pub fn snapshot<T, E: From<StoreError>>(
        &self,
        read: impl FnOnce(&Reader) -> Result<T, E>,
    ) -> Result<T, E> {
        match &self.conn {
            Conn::Sqlite(conn) => connection::snapshot(conn, || read(self)),
            Conn::Postgres(pg) => pg.snapshot(|| read(self)),
        }
    }

    /// One trace by id.
    pub fn trace(&self, trace_id: &str) -> StoreResult<Option<TraceRecord>> {
        on_backend!(self, c => traces::trace(c, trace_id), p => pg::trace(p, trace_id))
    }

    /// Traces matching `filter`, in its order.
    pub fn traces(&self, filter: &TraceFilter) -> StoreResult<Vec<TraceRecord>> {
        on_backend!(self, c => traces::traces(c, filter), p => pg::traces(p, filter))
    }

    /// Calls `each` with every trace matching `filter`, one at a time, in
    /// constant memory; `each` may stop early. Returns how many it was given.
    pub fn for_each_trace<E: From<StoreError>>(
        &self,
        filter: &TraceFilter,
        each: impl FnMut(TraceRecord) -> Result<ControlFlow<()>, E>,
    ) -> Result<u64, E> {
        match &self.conn {
            Conn::Sqlite(conn) => traces::for_each_trace(conn, filter, each),
            Conn::Postgres(_) => self.snapshot(|r| r.for_each_trace_paged(filter, each)),
        }
    }

    /// [`for_each_trace`](Self::for_each_trace) a page at a time (keyset
    /// pagination in one snapshot), so `each` runs with the connection free.
    fn for_each_trace_paged<E: From<StoreError>>(
        &self,
        filter: &TraceFilter,
        mut each: impl FnMut(TraceRecord) -> Result<ControlFlow<()>, E>,
    ) -> Result<u64, E> {
        let mut page_filter = filter.clone();
        let mut seen: u64 = 0;
        loop {
            let left = filter.limit.map(|l| l.saturating_sub(seen as usize));
            if left == Some(0) {
                return Ok(seen);
            }
            page_filter.limit = Some(left.map_or(POSTGRES_PAGE, |l| l.min(POSTGRES_PAGE)));
            let page = self.traces(&page_filter)?;
            let full = page.len() == POSTGRES_PAGE;
            for record in page {
                page_filter.after = Some(TraceKey {
                    started_at: record.started_at.clone(),
                    trace_id: record.trace_id.clone(),
                });
                seen += 1;
                if each(record)?.is_break() {
                    return Ok(seen);
                }
            }
            if !full {
                return Ok(seen);
            }
        }
    }

    /// The sessions of the traces matching `filter`, in the order of their
    /// first matching call.
    pub fn session_ids(&self, filter: &TraceFilter) -> StoreResult<Vec<String>> {
        on_backend!(self, c => traces::session_ids(c, filter), p => pg::session_ids(p, filter))
    }

    /// How many traces match `filter` (its `limit` included).
    pub fn count_traces(&self, filter: &TraceFilter) -> StoreResult<u64> {
        on_backend!(self, c => traces::count_traces(c, filter), p => pg::count_traces(p, filter))
    }

    /// Summaries of the traces matching `filter`, in its order.
    pub fn summaries(&self, filter: &TraceFilter) -> StoreResult<Vec<CallSummary>> {
        on_backend!(self, c => traces::summaries(c, filter), p => pg::summaries(p, filter))
    }

    /// A page of call nodes and the cursor to poll from next.
    pub fn call_page(&self, filter: &CallFilter) -> StoreResult<CallPage> {
        on_backend!(self, c => traces::call_page(c, filter), p => pg::call_page(p, filter))
    }

    /// Statistics of the traces matching `filter`, per model and route.
    pub fn stats(&self, filter: &TraceFilter) -> StoreResult<Vec<CallStats>> {
        on_backend!(self, c => stats::stats(c, filter), p => pg::stats(p, filter))
    }

    /// The newest traces matching `filter`, as points for the charts.
    pub fn chart_sample(&self, filter: &TraceFilter) -> StoreResult<ChartSample> {
        on_backend!(self, c => stats::chart_sample(c, filter), p => pg::chart_sample(p, filter))
    }

    /// One session by id.
    pub fn session(&self, session_id: &str) -> StoreResult<Option<SessionInfo>> {
        on_backend!(self, c => runs::session(c, session_id), p => pg::session(p, session_id))
    }

    /// Sessions matching `filter`, in its order.
    pub fn sessions(&self, filter: &SessionFilter) -> StoreResult<Vec<SessionInfo>> {
        on_backend!(self, c => runs::sessions(c, filter), p => pg::sessions(p, filter))
    }

    /// Every session's sampling parameters.
    pub fn sampling_params(&self) -> StoreResult<Vec<(String, Map<String, Value>)>> {
        on_backend!(self, c => runs::sampling_params(c), p => pg::sampling_params(p))
    }

    /// Sessions matching `filter` as the UI lists them, in its order.
    pub fn session_rows(&self, filter: &SessionFilter) -> StoreResult<Vec<SessionRow>> {
        on_backend!(self, c => runs::session_rows(c, filter), p => pg::session_rows(p, filter))
    }

    /// One run by id.
    pub fn run(&self, run_id: &str) -> StoreResult<Option<RunInfo>> {
        on_backend!(self, c => runs::run(c, run_id), p => pg::run(p, run_id))
    }

    /// Runs matching `filter`, newest first.
    pub fn runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunInfo>> {
        on_backend!(self, c => runs::runs(c, filter), p => pg::runs(p, filter))
    }

    /// The values the run list can be filtered on.
    pub fn facets(&self) -> StoreResult<Facets> {
        on_backend!(self, c => runs::facets(c), p => pg::facets(p))
    }

    /// The feedback of `scope`, oldest first.
    pub fn feedback(&self, scope: &FeedbackScope) -> StoreResult<Vec<Feedback>> {
        on_backend!(self, c => feedback::feedback(c, scope), p => pg_feedback::feedback(p, scope))
    }

    /// The feedback of `scope` summarised per name, in name order.
    pub fn feedback_summary(&self, scope: &FeedbackScope) -> StoreResult<Vec<FeedbackSummary>> {
        on_backend!(self, c => feedback::summary(c, scope), p => pg_feedback::summary(p, scope))
    }

    /// The exporter's saved state (zeroes before the first export).
    pub fn export_state(&self) -> StoreResult<ExportState> {
        on_backend!(self, c => outbox::state(c), p => pg::export_state(p))
    }

    /// The harness spans of a session: those naming it, and those of the
    /// OTel traces in `trace_ids` (its calls'), by start.
    pub fn harness_spans_of_session(
        &self,
        session_id: &str,
        trace_ids: &[String],
    ) -> StoreResult<Vec<HarnessSpan>> {
        on_backend!(self,
            c => harness::of_session(c, session_id, trace_ids),
            p => pg_harness::of_session(p, session_id, trace_ids))
    }

    /// Where each call of a session sits in OpenTelemetry, by start.
    pub fn call_links(&self, session_id: &str) -> StoreResult<Vec<CallLink>> {
        on_backend!(self, c => harness::call_links(c, session_id), p => pg::call_links(p, session_id))
    }

    /// `record` with the stored harness span its `traceparent` named.
    fn with_parent(&self, record: TraceRecord) -> StoreResult<(TraceRecord, Option<HarnessSpan>)> {
        let parent = match &record.otel_parent_span_id {
            Some(span_id) => self.harness_span(&record.otel_trace_id, span_id)?,
            None => None,
        };
        Ok((record, parent))
    }

    /// One harness span by its OpenTelemetry trace and span ids.
    pub fn harness_span(&self, trace_id: &str, span_id: &str) -> StoreResult<Option<HarnessSpan>> {
        on_backend!(self, c => harness::one(c, trace_id, span_id), p => pg_harness::one(p, trace_id, span_id))
    }

    /// The spans waiting past `cursor`.
    pub fn export_backlog(&self, cursor: i64) -> StoreResult<Backlog> {
        on_backend!(self, c => outbox::backlog(c, cursor), p => pg::export_backlog(p))
    }

    /// Up to `limit` spans past `cursor`, oldest first. On PostgreSQL,
    /// whose outbox replicas share, the next spans this replica claims
    /// (see `postgres::read::claim_spans`).
    pub fn spans_after(&self, cursor: i64, limit: usize) -> StoreResult<Batch> {
        match &self.conn {
            Conn::Sqlite(c) => outbox::spans_after(c, cursor, limit),
            Conn::Postgres(pg) => {
                let instance = pg.instance().to_string();
                pg.with(|p| pg::claim_spans(p, &instance, cursor, limit))
            }
        }
    }

    /// The settings replicas share whose key starts with `prefix` (none on
    /// SQLite, which has no other replica).
    pub fn shared_settings(&self, prefix: &str) -> StoreResult<Vec<(String, Value)>> {
        on_backend!(self, _c => Ok(Vec::new()), p => pg::shared_settings(p, prefix))
    }

    /// Whether the connection is gone (a pooled reader is then dropped).
    fn is_closed(&self) -> bool {
        match &self.conn {
            Conn::Sqlite(_) => false,
            Conn::Postgres(pg) => pg.is_closed(),
        }
    }
}

/// The gateway's reader: [`Reader`]'s questions, async, answered on a pool
/// of read-only connections off the runtime. Cheap to clone.
#[derive(Clone)]
pub struct StoreReader {
    source: Arc<Source>,
    idle: Arc<Idle>,
}

/// The pooled readers waiting for a query.
#[derive(Default)]
struct Idle(Mutex<Vec<Reader>>);

impl Drop for Idle {
    fn drop(&mut self) {
        // A PostgreSQL client closes its connection by running a runtime of
        // its own, which must not start on the async thread the last
        // handle may be dropped on.
        let readers = std::mem::take(&mut *crate::sync::lock(&self.0));
        if readers.iter().any(|r| matches!(r.conn, Conn::Postgres(_))) {
            let _ = std::thread::Builder::new()
                .name("tracegate-readers-close".into())
                .spawn(move || drop(readers));
        }
    }
}

/// Where a [`StoreReader`] opens its connections.
enum Source {
    Sqlite {
        path: PathBuf,
        busy_timeout: Duration,
    },
    Postgres {
        server: Box<Server>,
        instance: String,
    },
}

impl Source {
    fn open(&self) -> StoreResult<Reader> {
        let conn = match self {
            Source::Sqlite { path, busy_timeout } => {
                Conn::Sqlite(connection::open_read_only(path, *busy_timeout)?)
            }
            Source::Postgres { server, instance } => {
                Conn::Postgres(Box::new(ReadConnection::open(server, instance)?))
            }
        };
        Ok(Reader { conn })
    }
}

impl StoreReader {
    /// A reader of the SQLite file at `path` (which must exist and be
    /// migrated).
    pub fn new(path: PathBuf, busy_timeout: Duration) -> Self {
        Self::of(Source::Sqlite { path, busy_timeout })
    }

    /// A reader of the PostgreSQL database `server` (migrated), its
    /// connections named for the replica `instance`.
    pub(crate) fn postgres(server: Server, instance: String) -> Self {
        Self::of(Source::Postgres {
            server: Box::new(server),
            instance,
        })
    }

    fn of(source: Source) -> Self {
        Self {
            source: Arc::new(source),
            idle: Arc::new(Idle::default()),
        }
    }

    /// Runs `read` on a pooled reader in a blocking task.
    async fn call<T, F>(&self, read: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Reader) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = crate::sync::lock(&pool.idle.0).pop();
            let reader = match pooled {
                Some(reader) if !reader.is_closed() => reader,
                _ => pool.source.open()?,
            };
            let result = read(&reader);
            if !reader.is_closed() {
                crate::sync::lock(&pool.idle.0).push(reader);
            }
            result
        })
        .await?
    }

    /// One trace by id.
    pub async fn trace(&self, trace_id: String) -> StoreResult<Option<TraceRecord>> {
        self.call(move |r| r.trace(&trace_id)).await
    }

    /// Traces matching `filter`, in its order.
    pub async fn traces(&self, filter: TraceFilter) -> StoreResult<Vec<TraceRecord>> {
        self.call(move |r| r.traces(&filter)).await
    }

    /// [`traces`](Self::traces), each with the stored harness span its
    /// `traceparent` named (if any), read in one snapshot.
    pub async fn traces_with_parents(
        &self,
        filter: TraceFilter,
    ) -> StoreResult<Vec<(TraceRecord, Option<HarnessSpan>)>> {
        self.call(move |r| {
            r.snapshot(|r| {
                let records = r.traces(&filter)?;
                records
                    .into_iter()
                    .map(|record| r.with_parent(record))
                    .collect()
            })
        })
        .await
    }

    /// A page of call nodes and the cursor to poll from next.
    pub async fn call_page(&self, filter: CallFilter) -> StoreResult<CallPage> {
        self.call(move |r| r.call_page(&filter)).await
    }

    /// The newest traces matching `filter`, as points for the charts.
    pub async fn chart_sample(&self, filter: TraceFilter) -> StoreResult<ChartSample> {
        self.call(move |r| r.chart_sample(&filter)).await
    }

    /// One session by id.
    pub async fn session(&self, session_id: String) -> StoreResult<Option<SessionInfo>> {
        self.call(move |r| r.session(&session_id)).await
    }

    /// Sessions matching `filter`, in its order.
    pub async fn sessions(&self, filter: SessionFilter) -> StoreResult<Vec<SessionInfo>> {
        self.call(move |r| r.sessions(&filter)).await
    }

    /// Every session's sampling parameters.
    pub async fn sampling_params(&self) -> StoreResult<Vec<(String, Map<String, Value>)>> {
        self.call(|r| r.sampling_params()).await
    }

    /// Sessions matching `filter` as the UI lists them, in its order.
    pub async fn session_rows(&self, filter: SessionFilter) -> StoreResult<Vec<SessionRow>> {
        self.call(move |r| r.session_rows(&filter)).await
    }

    /// One run by id, with its sessions (oldest first), read together.
    pub async fn run(&self, run_id: String) -> StoreResult<Option<(RunInfo, Vec<SessionInfo>)>> {
        self.call(move |r| {
            r.snapshot(|r| {
                let Some(run) = r.run(&run_id)? else {
                    return Ok(None);
                };
                let filter = SessionFilter {
                    run_id: Some(run_id),
                    ..SessionFilter::default()
                };
                Ok(Some((run, r.sessions(&filter)?)))
            })
        })
        .await
    }

    /// Runs matching `filter`, newest first.
    pub async fn runs(&self, filter: RunFilter) -> StoreResult<Vec<RunInfo>> {
        self.call(move |r| r.runs(&filter)).await
    }

    /// The values the run list can be filtered on.
    pub async fn facets(&self) -> StoreResult<Facets> {
        self.call(|r| r.facets()).await
    }

    /// The feedback of `scope`, oldest first.
    pub async fn feedback(&self, scope: FeedbackScope) -> StoreResult<Vec<Feedback>> {
        self.call(move |r| r.feedback(&scope)).await
    }

    /// The feedback of `scope` summarised per name, in name order.
    pub async fn feedback_summary(
        &self,
        scope: FeedbackScope,
    ) -> StoreResult<Vec<FeedbackSummary>> {
        self.call(move |r| r.feedback_summary(&scope)).await
    }

    /// The exporter's saved state and the spans waiting past its cursor,
    /// read together.
    pub async fn export_backlog(&self) -> StoreResult<(ExportState, Backlog)> {
        self.call(|r| {
            r.snapshot(|r| {
                let state = r.export_state()?;
                let backlog = r.export_backlog(state.cursor)?;
                Ok((state, backlog))
            })
        })
        .await
    }

    /// The settings replicas share whose key starts with `prefix`.
    pub async fn shared_settings(&self, prefix: String) -> StoreResult<Vec<(String, Value)>> {
        self.call(move |r| r.shared_settings(&prefix)).await
    }

    /// The exporter's saved state (zeroes before the first export).
    pub async fn export_state(&self) -> StoreResult<ExportState> {
        self.call(|r| r.export_state()).await
    }

    /// Up to `limit` spans past `cursor`, oldest first.
    pub async fn spans_after(&self, cursor: i64, limit: usize) -> StoreResult<Batch> {
        self.call(move |r| r.spans_after(cursor, limit)).await
    }

    /// A session's calls and its harness spans (those naming the session
    /// and those of its calls' OTel traces), read together.
    pub async fn session_spans(
        &self,
        session_id: String,
    ) -> StoreResult<(Vec<TraceRecord>, Vec<HarnessSpan>)> {
        self.call(move |r| {
            r.snapshot(|r| {
                let filter = TraceFilter {
                    session_ids: vec![session_id.clone()],
                    ..TraceFilter::default()
                };
                let calls = r.traces(&filter)?;
                let mut trace_ids: Vec<String> =
                    calls.iter().map(|c| c.otel_trace_id.clone()).collect();
                trace_ids.sort();
                trace_ids.dedup();
                let spans = r.harness_spans_of_session(&session_id, &trace_ids)?;
                Ok((calls, spans))
            })
        })
        .await
    }

    /// A session's harness spans and where each of its calls sits in
    /// OpenTelemetry, read together, without the records (the UI's tree).
    pub async fn session_span_links(
        &self,
        session_id: String,
    ) -> StoreResult<(Vec<HarnessSpan>, Vec<CallLink>)> {
        self.call(move |r| {
            r.snapshot(|r| {
                let links = r.call_links(&session_id)?;
                let mut trace_ids: Vec<String> =
                    links.iter().map(|c| c.otel_trace_id.clone()).collect();
                trace_ids.sort();
                trace_ids.dedup();
                let spans = r.harness_spans_of_session(&session_id, &trace_ids)?;
                Ok((spans, links))
            })
        })
        .await
    }

    /// One trace and the harness span its call hangs under, if one is
    /// stored.
    pub async fn trace_with_parent(
        &self,
        trace_id: String,
    ) -> StoreResult<Option<(TraceRecord, Option<HarnessSpan>)>> {
        self.call(move |r| {
            r.snapshot(|r| {
                let Some(record) = r.trace(&trace_id)? else {
                    return Ok(None);
                };
                r.with_parent(record).map(Some)
            })
        })
        .await
    }
}
