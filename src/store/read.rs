//! Read queries: traces, sessions and runs, for the API (and the CLI).
//!
//! Readers never share the writer's connection. Under WAL a reader sees the
//! last committed state and never blocks the writer, so the API stays fast
//! while the gateway records. The query functions take a plain
//! [`Connection`]; [`StoreReader`] runs them on a small pool of read-only
//! connections off the async runtime.

use crate::record::{TopLogprob, TraceRecord, epoch_seconds};
use crate::store::codec;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row as SqlRow, params_from_iter};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

/// Which traces to read. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    /// Only traces of these sessions.
    pub session_ids: Vec<String>,
    /// Only traces of this run.
    pub run_id: Option<String>,
    /// Only traces that started strictly after this time (epoch seconds).
    pub since: Option<f64>,
    /// At most this many traces.
    pub limit: Option<usize>,
}

/// A session as the API reports it (rLLM's `SessionInfo` plus ours).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionInfo {
    /// The session id.
    pub session_id: String,
    /// Calls recorded in the session.
    pub trace_count: i64,
    /// When the session was created, epoch seconds (rLLM type).
    pub created_at: f64,
    /// Metadata given when the session was created.
    pub metadata: Map<String, Value>,
    /// The run the session belongs to.
    pub run_id: Option<String>,
    /// The session's first call.
    pub first_seen: Option<String>,
    /// The session's last call.
    pub last_seen: Option<String>,
    /// Calls that did not end `ok`.
    pub error_count: i64,
    /// Input plus output tokens of all its calls.
    pub tokens: i64,
}

/// A run as the API reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// The run id.
    pub run_id: String,
    /// The run's first call.
    pub first_seen: String,
    /// The run's last call.
    pub last_seen: String,
    /// Sessions seen in the run.
    pub session_count: i64,
    /// Calls recorded in the run.
    pub trace_count: i64,
    /// Calls that did not end `ok`.
    pub error_count: i64,
    /// Input plus output tokens of all its calls.
    pub tokens: i64,
}

/// Errors of the read side, as text: they are reported, never matched on.
pub type ReadResult<T> = Result<T, String>;

fn sql_err(e: rusqlite::Error) -> String {
    format!("store query failed: {e}")
}

/// RFC 3339 text for an epoch-seconds value (the form the columns hold).
fn since_text(since: f64) -> String {
    // Stored times have microsecond precision; round so that a timestamp
    // read back from a record selects strictly after that record.
    let micros = (since.max(0.0) * 1e6).round() as u64;
    crate::record::rfc3339(UNIX_EPOCH + Duration::from_micros(micros))
}

const RECORD_COLUMNS: &str = "record, prompt_token_ids, completion_token_ids, logprobs, \
                              top_logprobs, raw_request, raw_response";

/// Rebuilds a record from its JSON and blob columns.
fn record_from_row(row: &SqlRow<'_>) -> rusqlite::Result<ReadResult<TraceRecord>> {
    let json: String = row.get(0)?;
    let prompt: Option<Vec<u8>> = row.get(1)?;
    let completion: Option<Vec<u8>> = row.get(2)?;
    let logprobs: Option<Vec<u8>> = row.get(3)?;
    let top_logprobs: Option<Vec<u8>> = row.get(4)?;
    let raw_request: Option<Vec<u8>> = row.get(5)?;
    let raw_response: Option<Vec<u8>> = row.get(6)?;
    Ok((|| {
        let mut record: TraceRecord =
            serde_json::from_str(&json).map_err(|e| format!("stored record is corrupt: {e}"))?;
        record.prompt_token_ids = prompt.as_deref().map(codec::unpack_u32).unwrap_or_default();
        let ids = completion
            .as_deref()
            .map(codec::unpack_u32_lists)
            .unwrap_or_default();
        let lps = logprobs
            .as_deref()
            .map(codec::unpack_f64_lists)
            .unwrap_or_default();
        let tops: Vec<Option<Vec<Vec<TopLogprob>>>> = match top_logprobs.as_deref() {
            Some(blob) => serde_json::from_value(codec::decompress_json(blob)?)
                .map_err(|e| format!("stored top logprobs are corrupt: {e}"))?,
            None => Vec::new(),
        };
        for (i, choice) in record.choices.iter_mut().enumerate() {
            choice.token_ids = ids.get(i).cloned().unwrap_or_default();
            choice.logprobs = lps.get(i).cloned().flatten();
            choice.top_logprobs = tops.get(i).cloned().flatten();
        }
        if let Some(first) = record.choices.first() {
            record.completion_token_ids = first.token_ids.clone();
            record.logprobs = first.logprobs.clone();
        }
        record.raw_request = raw_request
            .as_deref()
            .map(codec::decompress_json)
            .transpose()?;
        record.raw_response = raw_response
            .as_deref()
            .map(codec::decompress_json)
            .transpose()?;
        Ok(record)
    })())
}

/// One trace by id.
pub fn trace(conn: &Connection, trace_id: &str) -> ReadResult<Option<TraceRecord>> {
    conn.query_row(
        &format!("SELECT {RECORD_COLUMNS} FROM traces WHERE trace_id = ?1"),
        [trace_id],
        record_from_row,
    )
    .optional()
    .map_err(sql_err)?
    .transpose()
}

/// Traces matching `filter`, oldest first.
pub fn traces(conn: &Connection, filter: &TraceFilter) -> ReadResult<Vec<TraceRecord>> {
    let mut clauses = Vec::new();
    let mut args: Vec<String> = Vec::new();
    if !filter.session_ids.is_empty() {
        let marks = vec!["?"; filter.session_ids.len()].join(", ");
        clauses.push(format!("session_id IN ({marks})"));
        args.extend(filter.session_ids.iter().cloned());
    }
    if let Some(run_id) = &filter.run_id {
        clauses.push("run_id = ?".to_string());
        args.push(run_id.clone());
    }
    if let Some(since) = filter.since {
        clauses.push("started_at > ?".to_string());
        args.push(since_text(since));
    }
    let mut sql = format!("SELECT {RECORD_COLUMNS} FROM traces");
    if !clauses.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&clauses.join(" AND "));
    }
    sql.push_str(" ORDER BY started_at, trace_id");
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut stmt = conn.prepare(&sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(params_from_iter(args.iter()), record_from_row)
        .map_err(sql_err)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(sql_err)??);
    }
    Ok(out)
}

const SESSION_COLUMNS: &str = "session_id, trace_count, created_at, metadata, run_id, \
                               first_seen, last_seen, error_count, tokens";

fn session_from_row(row: &SqlRow<'_>) -> rusqlite::Result<SessionInfo> {
    let created_at: String = row.get(2)?;
    let metadata: String = row.get(3)?;
    Ok(SessionInfo {
        session_id: row.get(0)?,
        trace_count: row.get(1)?,
        created_at: humantime::parse_rfc3339_weak(&created_at)
            .map(epoch_seconds)
            .unwrap_or(0.0),
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        run_id: row.get(4)?,
        first_seen: row.get(5)?,
        last_seen: row.get(6)?,
        error_count: row.get(7)?,
        tokens: row.get(8)?,
    })
}

/// Sessions, oldest first, optionally created after `since` (epoch seconds)
/// and within one run.
pub fn sessions(
    conn: &Connection,
    since: Option<f64>,
    run_id: Option<&str>,
    limit: Option<usize>,
) -> ReadResult<Vec<SessionInfo>> {
    let mut sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE (?1 IS NULL OR created_at > ?1) \
         AND (?2 IS NULL OR run_id = ?2) ORDER BY created_at, session_id"
    );
    if let Some(limit) = limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut stmt = conn.prepare(&sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(
            rusqlite::params![since.map(since_text), run_id],
            session_from_row,
        )
        .map_err(sql_err)?;
    rows.collect::<Result<_, _>>().map_err(sql_err)
}

/// One session by id.
pub fn session(conn: &Connection, session_id: &str) -> ReadResult<Option<SessionInfo>> {
    conn.query_row(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?1"),
        [session_id],
        session_from_row,
    )
    .optional()
    .map_err(sql_err)
}

const RUN_SELECT: &str = "SELECT run_id, first_seen, last_seen,
        (SELECT COUNT(*) FROM sessions s WHERE s.run_id = runs.run_id),
        trace_count, error_count, tokens FROM runs";

fn run_from_row(row: &SqlRow<'_>) -> rusqlite::Result<RunInfo> {
    Ok(RunInfo {
        run_id: row.get(0)?,
        first_seen: row.get(1)?,
        last_seen: row.get(2)?,
        session_count: row.get(3)?,
        trace_count: row.get(4)?,
        error_count: row.get(5)?,
        tokens: row.get(6)?,
    })
}

/// Runs, newest first.
pub fn runs(conn: &Connection, limit: Option<usize>) -> ReadResult<Vec<RunInfo>> {
    let mut sql = format!("{RUN_SELECT} ORDER BY first_seen DESC, run_id");
    if let Some(limit) = limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut stmt = conn.prepare(&sql).map_err(sql_err)?;
    let rows = stmt.query_map([], run_from_row).map_err(sql_err)?;
    rows.collect::<Result<_, _>>().map_err(sql_err)
}

/// One run by id.
pub fn run(conn: &Connection, run_id: &str) -> ReadResult<Option<RunInfo>> {
    conn.query_row(
        &format!("{RUN_SELECT} WHERE run_id = ?1"),
        [run_id],
        run_from_row,
    )
    .optional()
    .map_err(sql_err)
}

/// Opens a read-only connection to a tracegate database.
pub fn open_read_only(path: &Path) -> ReadResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql_err)?;
    Ok(conn)
}

/// Runs read queries on a pool of read-only connections, off the runtime.
#[derive(Clone)]
pub struct StoreReader {
    path: Arc<PathBuf>,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl StoreReader {
    /// A reader of the database at `path` (which must exist and be migrated).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path: Arc::new(path),
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Runs `query` on a pooled connection in a blocking task.
    pub async fn call<T, F>(&self, query: F) -> ReadResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> ReadResult<T> + Send + 'static,
    {
        let reader = self.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = reader
                .idle
                .lock()
                .map_err(|_| "reader pool poisoned".to_string())?
                .pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_read_only(&reader.path)?,
            };
            let result = query(&conn);
            if let Ok(mut idle) = reader.idle.lock() {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| format!("store query task failed: {e}"))?
    }
}
