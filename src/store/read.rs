//! Read queries: traces, sessions and runs, for the API (and the CLI).
//!
//! Readers never share the writer's connection. Under WAL a reader sees the
//! last committed state and never blocks the writer, so the API stays fast
//! while the gateway records. The query functions take a plain
//! [`Connection`]; [`StoreReader`] runs them on a small pool of read-only
//! connections off the async runtime.

use crate::record::{CallError, ErrorKind, Status, TopLogprob, TraceRecord, epoch_seconds};
use crate::store::codec;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row as SqlRow, params_from_iter};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
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
    /// Only traces that asked for this model (the requested `model`).
    pub model: Option<String>,
    /// Only traces of this harness.
    pub harness: Option<String>,
    /// Only traces that did not end `ok`.
    pub errors_only: bool,
    /// Newest first (and `limit` keeps the newest) instead of oldest first.
    pub newest_first: bool,
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

/// Traces matching `filter`, oldest first (or newest first), collected.
pub fn traces(conn: &Connection, filter: &TraceFilter) -> ReadResult<Vec<TraceRecord>> {
    let mut out = Vec::new();
    for_each_trace(conn, filter, |record| {
        out.push(record);
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// Calls `each` with every trace matching `filter`, one row at a time and in
/// the filter's order, without collecting them: memory stays constant however
/// large the store. `each` may stop early with [`ControlFlow::Break`]. Returns
/// the number of traces passed to `each`.
pub fn for_each_trace(
    conn: &Connection,
    filter: &TraceFilter,
    mut each: impl FnMut(TraceRecord) -> ReadResult<ControlFlow<()>>,
) -> ReadResult<u64> {
    let (sql, args) = trace_query(RECORD_COLUMNS, filter);
    let mut stmt = conn.prepare(&sql).map_err(sql_err)?;
    let mut rows = stmt.query(params_from_iter(args.iter())).map_err(sql_err)?;
    let mut seen = 0;
    while let Some(row) = rows.next().map_err(sql_err)? {
        let record = record_from_row(row).map_err(sql_err)??;
        seen += 1;
        if each(record)?.is_break() {
            break;
        }
    }
    Ok(seen)
}

/// The number of traces matching `filter` (its `limit` included).
pub fn count_traces(conn: &Connection, filter: &TraceFilter) -> ReadResult<u64> {
    let (sql, args) = trace_query("1", filter);
    conn.query_row(
        &format!("SELECT COUNT(*) FROM ({sql})"),
        params_from_iter(args.iter()),
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n.unsigned_abs())
    .map_err(sql_err)
}

/// The SELECT of `columns` from `traces` restricted, ordered and limited by
/// `filter`, and its arguments: the one place a trace filter becomes SQL.
fn trace_query(columns: &str, filter: &TraceFilter) -> (String, Vec<String>) {
    let mut clauses = Vec::new();
    let mut args: Vec<String> = Vec::new();
    if !filter.session_ids.is_empty() {
        let marks = vec!["?"; filter.session_ids.len()].join(", ");
        clauses.push(format!("session_id IN ({marks})"));
        args.extend(filter.session_ids.iter().cloned());
    }
    let equal = [
        ("run_id", &filter.run_id),
        ("model", &filter.model),
        ("harness", &filter.harness),
    ];
    for (column, value) in equal {
        if let Some(value) = value {
            clauses.push(format!("{column} = ?"));
            args.push(value.clone());
        }
    }
    if filter.errors_only {
        clauses.push("status != 'ok'".to_string());
    }
    if let Some(since) = filter.since {
        clauses.push("started_at > ?".to_string());
        args.push(since_text(since));
    }
    let mut sql = format!("SELECT {columns} FROM traces");
    if !clauses.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&clauses.join(" AND "));
    }
    if filter.newest_first {
        sql.push_str(" ORDER BY started_at DESC, trace_id DESC");
    } else {
        sql.push_str(" ORDER BY started_at, trace_id");
    }
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    (sql, args)
}

/// One line of a trace listing: a trace's indexed columns, under the
/// record's own field names (the full record is [`trace`]'s).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceSummary {
    /// The record's id.
    pub trace_id: String,
    /// When the call arrived.
    pub started_at: String,
    /// The run.
    pub run_id: Option<String>,
    /// The session.
    pub session_id: Option<String>,
    /// The harness.
    pub harness: Option<String>,
    /// The step within the session.
    pub step_id: Option<i64>,
    /// The model the client asked for.
    pub model: Option<String>,
    /// The GenAI operation (`chat`, `embeddings`, ...).
    pub operation: String,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// How the call ended: `ok`, `error` or `client_closed`.
    pub status: String,
    /// The HTTP status the client received.
    pub http_status: Option<u16>,
    /// Why the call failed, when it did.
    pub error: Option<CallError>,
    /// Milliseconds from arrival to end.
    pub latency_ms: f64,
    /// Milliseconds from arrival to the first response byte.
    pub ttft_ms: Option<f64>,
    /// Input and output tokens.
    pub usage: SummaryUsage,
}

/// The token counts of a [`TraceSummary`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryUsage {
    /// Prompt (input) tokens.
    pub input_tokens: Option<i64>,
    /// Completion (output) tokens.
    pub output_tokens: Option<i64>,
}

const SUMMARY_COLUMNS: &str = "trace_id, started_at, run_id, session_id, harness, step_id, \
     model, operation, stream, status, http_status, error_kind, \
     json_extract(record, '$.error.message'), latency_ms, ttft_ms, input_tokens, output_tokens";

fn summary_from_row(row: &SqlRow<'_>) -> rusqlite::Result<TraceSummary> {
    let error_kind: Option<ErrorKind> = row.get(11)?;
    let error_message: Option<String> = row.get(12)?;
    Ok(TraceSummary {
        trace_id: row.get(0)?,
        started_at: row.get(1)?,
        run_id: row.get(2)?,
        session_id: row.get(3)?,
        harness: row.get(4)?,
        step_id: row.get(5)?,
        model: row.get(6)?,
        operation: row.get(7)?,
        stream: row.get(8)?,
        status: row.get(9)?,
        http_status: row.get(10)?,
        error: error_kind.map(|kind| CallError {
            kind,
            message: error_message.unwrap_or_default(),
        }),
        latency_ms: row.get(13)?,
        ttft_ms: row.get(14)?,
        usage: SummaryUsage {
            input_tokens: row.get(15)?,
            output_tokens: row.get(16)?,
        },
    })
}

/// Summaries of the traces matching `filter`, in the filter's order.
pub fn trace_summaries(conn: &Connection, filter: &TraceFilter) -> ReadResult<Vec<TraceSummary>> {
    let (sql, args) = trace_query(SUMMARY_COLUMNS, filter);
    let mut stmt = conn.prepare(&sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(params_from_iter(args.iter()), summary_from_row)
        .map_err(sql_err)?;
    rows.collect::<Result<_, _>>().map_err(sql_err)
}

/// Call statistics of one model and route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallStats {
    /// The model the calls asked for.
    pub model: Option<String>,
    /// The route that served them (none until routes are configured).
    pub route: Option<String>,
    /// Calls.
    pub calls: u64,
    /// Calls that did not end `ok`.
    pub errors: u64,
    /// `errors / calls`.
    pub error_rate: f64,
    /// Latency percentiles, milliseconds.
    pub latency_ms: Percentiles,
    /// Time-to-first-byte percentiles, milliseconds, over the calls that
    /// received a first byte (none if no call did).
    pub ttft_ms: Option<Percentiles>,
    /// Input tokens of all the calls.
    pub input_tokens: u64,
    /// Output tokens of all the calls.
    pub output_tokens: u64,
}

/// The 50th, 95th and 99th percentiles of a set of values, each one of the
/// values (nearest rank, no interpolation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// The median.
    pub p50: f64,
    /// The 95th percentile.
    pub p95: f64,
    /// The 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    /// The percentiles of `values` (sorted here); none for no values.
    pub fn of(mut values: Vec<f64>) -> Option<Percentiles> {
        values.sort_by(f64::total_cmp);
        Some(Percentiles {
            p50: nearest_rank(&values, 50)?,
            p95: nearest_rank(&values, 95)?,
            p99: nearest_rank(&values, 99)?,
        })
    }
}

/// The `percent`th percentile of ascending `sorted` by the nearest-rank
/// method: the value at rank ⌈percent·n/100⌉ (integer arithmetic, so 95% of
/// 100 values is exactly the 95th).
pub fn nearest_rank(sorted: &[f64], percent: usize) -> Option<f64> {
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// Statistics of the traces matching `filter`, per model and route, ordered
/// by model then route. Exact: every latency of a group is held while it is
/// summarised (16 bytes a call).
pub fn stats(conn: &Connection, filter: &TraceFilter) -> ReadResult<Vec<CallStats>> {
    #[derive(Default)]
    struct Group {
        calls: u64,
        errors: u64,
        latencies: Vec<f64>,
        ttfts: Vec<f64>,
        input_tokens: u64,
        output_tokens: u64,
    }
    let (sql, args) = trace_query(
        "model, route, status, latency_ms, ttft_ms, input_tokens, output_tokens",
        filter,
    );
    let mut stmt = conn.prepare(&sql).map_err(sql_err)?;
    let mut rows = stmt.query(params_from_iter(args.iter())).map_err(sql_err)?;
    let mut groups: BTreeMap<(Option<String>, Option<String>), Group> = BTreeMap::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        let key = (row.get(0).map_err(sql_err)?, row.get(1).map_err(sql_err)?);
        let status: String = row.get(2).map_err(sql_err)?;
        let ttft: Option<f64> = row.get(4).map_err(sql_err)?;
        let input: Option<i64> = row.get(5).map_err(sql_err)?;
        let output: Option<i64> = row.get(6).map_err(sql_err)?;
        let group = groups.entry(key).or_default();
        group.calls += 1;
        group.errors += u64::from(status != Status::Ok.as_str());
        group.latencies.push(row.get(3).map_err(sql_err)?);
        group.ttfts.extend(ttft);
        group.input_tokens += input.unwrap_or(0).unsigned_abs();
        group.output_tokens += output.unwrap_or(0).unsigned_abs();
    }
    Ok(groups
        .into_iter()
        .filter_map(|((model, route), g)| {
            Some(CallStats {
                model,
                route,
                calls: g.calls,
                errors: g.errors,
                error_rate: g.errors as f64 / g.calls as f64,
                latency_ms: Percentiles::of(g.latencies)?,
                ttft_ms: Percentiles::of(g.ttfts),
                input_tokens: g.input_tokens,
                output_tokens: g.output_tokens,
            })
        })
        .collect())
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
            let pooled = crate::sync::lock(&reader.idle).pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_read_only(&reader.path)?,
            };
            let result = query(&conn);
            crate::sync::lock(&reader.idle).push(conn);
            result
        })
        .await
        .map_err(|e| format!("store query task failed: {e}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_an_exact_value() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&values, 50), Some(50.0));
        assert_eq!(nearest_rank(&values, 95), Some(95.0));
        assert_eq!(nearest_rank(&values, 99), Some(99.0));
        assert_eq!(nearest_rank(&[7.0], 99), Some(7.0));
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 50), Some(2.0));
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 95), Some(4.0));
        assert_eq!(nearest_rank(&[], 50), None);
    }

    #[test]
    fn percentiles_sort_their_values() {
        let p = Percentiles::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((p.p50, p.p95, p.p99), (2.0, 3.0, 3.0));
        assert_eq!(Percentiles::of(Vec::new()), None);
    }
}
