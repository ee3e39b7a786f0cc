//! The reader's questions, answered by PostgreSQL.
//!
//! The filters are the same [`Select`]s as SQLite's, written in
//! PostgreSQL's dialect (`query::Dialect`), over the same column names, so
//! a filter means the same on both backends; what differs is only how a
//! row is decoded. Records come whole from their blob; listings read
//! columns only, never the blob (except a call page's answer preview).
//!
//! Feedback and harness spans are not stored on this backend yet: their
//! reads answer "none".

use super::connect::Server;
use super::record;
use crate::protocol::{Operation, Protocol};
use crate::record::{CallError, ErrorKind, Status, TraceRecord, epoch_seconds};
use crate::store::error::{StoreError, StoreResult};
use crate::store::outbox::{self, Backlog, Batch, ExportState};
use crate::store::query::{CallFilter, Dialect, RunFilter, Select, SessionFilter, TraceFilter};
use crate::store::runs::{RUN_COLUMNS, SESSION_COLUMNS, SESSION_ROW_COLUMNS};
use crate::store::stats::{CHART_COLUMNS, STATS_COLUMNS};
use crate::store::summary::{
    Attempt, CallLink, CallNode, CallPage, CallStats, CallSummary, ChartPoint, ChartSample,
    Counted, Facets, RunInfo, SessionInfo, SessionRow, SummaryUsage, Tally,
};
use crate::store::{CHART_SAMPLE, row::SUMMARY_COLUMNS};
use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Row};
use rusqlite::types::Value as SqlValue;
use serde_json::{Map, Value};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

const PG: Dialect = Dialect::Postgres;

/// A reader's connection: the client, and whether a snapshot (one read
/// transaction) is open on it. The reader's methods take `&self`, so the
/// client is borrowed for the length of one query at a time.
pub(crate) struct ReadConnection {
    client: RefCell<Client>,
    in_snapshot: Cell<bool>,
    /// The replica the connection reads for (its outbox claims are its).
    instance: String,
}

impl ReadConnection {
    /// Opens a read-only connection for `instance`.
    pub(crate) fn open(server: &Server, instance: &str) -> StoreResult<ReadConnection> {
        let mut client = server.connect(instance)?;
        client
            .batch_execute("SET default_transaction_read_only = on")
            .map_err(StoreError::postgres("cannot open a read connection"))?;
        Ok(ReadConnection {
            client: RefCell::new(client),
            in_snapshot: Cell::new(false),
            instance: instance.to_string(),
        })
    }

    /// Opens a read-only connection for a command, refusing a database
    /// not at this binary's schema.
    pub(crate) fn open_current(server: &Server) -> StoreResult<ReadConnection> {
        let conn = Self::open(server, "cli")?;
        conn.with(|c| super::migrate::require_current(c, server.shown()))?;
        Ok(conn)
    }

    /// The replica the connection reads for.
    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether the connection is gone (the pool then drops it).
    pub(crate) fn is_closed(&self) -> bool {
        self.client.try_borrow().is_ok_and(|c| c.is_closed())
    }

    /// Runs `read` with the client.
    pub(crate) fn with<T>(
        &self,
        read: impl FnOnce(&mut Client) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut client = self
            .client
            .try_borrow_mut()
            .map_err(|_| StoreError::NestedRead)?;
        read(&mut client)
    }

    /// Runs `read` in one read transaction (repeatable read: every query
    /// in it sees the same committed state).
    pub(crate) fn snapshot<T, E: From<StoreError>>(
        &self,
        read: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        if self.in_snapshot.get() {
            return read();
        }
        let failed = StoreError::postgres("cannot run a read transaction");
        self.with(|c| {
            c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .map_err(&failed)
        })?;
        self.in_snapshot.set(true);
        let result = read();
        self.in_snapshot.set(false);
        let ended = self.with(|c| c.batch_execute("COMMIT").map_err(&failed));
        let value = result?;
        ended?;
        Ok(value)
    }
}

/// A [`Select`]'s argument, bound as the type PostgreSQL inferred for it.
#[derive(Debug)]
struct Arg<'a>(&'a SqlValue);

impl ToSql for Arg<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Integer(n) => match *ty {
                Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                Type::FLOAT8 => (*n as f64).to_sql(ty, out),
                Type::BOOL => (*n != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => n.to_string().to_sql(ty, out),
                _ => n.to_sql(ty, out),
            },
            SqlValue::Real(x) => x.to_sql(ty, out),
            SqlValue::Text(text) => text.to_sql(ty, out),
            SqlValue::Blob(bytes) => bytes.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Runs `select` and decodes every row with `decode`.
fn rows<T>(
    client: &mut Client,
    select: &Select,
    decode: impl FnMut(&Row) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    query(client, &select.sql(), select.args())?
        .iter()
        .map(decode)
        .collect()
}

/// Runs `sql` with `args`.
fn query(client: &mut Client, sql: &str, args: &[SqlValue]) -> StoreResult<Vec<Row>> {
    let args: Vec<Arg<'_>> = args.iter().map(Arg).collect();
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
    client
        .query(sql, &params)
        .map_err(StoreError::postgres("store query failed"))
}

/// Column `i` of `row`.
fn get<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> StoreResult<T> {
    row.try_get(i)
        .map_err(StoreError::postgres("cannot read a column"))
}

/// A text column holding one of a fixed set of values.
fn parsed<T>(
    row: &Row,
    i: usize,
    what: &'static str,
    parse: fn(&str) -> Option<T>,
) -> StoreResult<T> {
    let text: String = get(row, i)?;
    parse(&text).ok_or(StoreError::Unreadable { what, value: text })
}

/// The record in the `record` and `token_data` columns at `i`, `i + 1`.
fn record_at(row: &Row, i: usize) -> StoreResult<TraceRecord> {
    let blob: Vec<u8> = get(row, i)?;
    let token_data: Option<Vec<u8>> = get(row, i + 1)?;
    record::decode(&blob, token_data.as_deref())
}

/// One trace by id.
pub(crate) fn trace(client: &mut Client, trace_id: &str) -> StoreResult<Option<TraceRecord>> {
    let row = client
        .query_opt(
            "SELECT record, token_data FROM traces WHERE trace_id = $1",
            &[&trace_id],
        )
        .map_err(StoreError::postgres("cannot read the trace"))?;
    let records = row.map(|row| record_at(&row, 0)).transpose()?;
    Ok(with_feedback(client, records.into_iter().collect())?.pop())
}

/// Traces matching `filter`, in its order.
pub(crate) fn traces(client: &mut Client, filter: &TraceFilter) -> StoreResult<Vec<TraceRecord>> {
    let records = rows(client, &filter.select_in(PG, "record, token_data"), |r| {
        record_at(r, 0)
    })?;
    with_feedback(client, records)
}

/// `records`, each with the feedback naming it (one query for them all).
fn with_feedback(
    client: &mut Client,
    mut records: Vec<TraceRecord>,
) -> StoreResult<Vec<TraceRecord>> {
    if records.is_empty() {
        return Ok(records);
    }
    let ids: Vec<&str> = records.iter().map(|r| r.trace_id.as_str()).collect();
    let mut by_trace = super::feedback::of_traces(client, &ids)?;
    for record in &mut records {
        record.feedback = by_trace.remove(&record.trace_id).unwrap_or_default();
    }
    Ok(records)
}

/// The sessions of the traces matching `filter` (its limit aside), in the
/// order of their first matching call.
pub(crate) fn session_ids(client: &mut Client, filter: &TraceFilter) -> StoreResult<Vec<String>> {
    let whole = TraceFilter {
        limit: None,
        ..filter.clone()
    };
    let select = whole.select_in(PG, "session_id, started_at, trace_id");
    let sql = format!(
        "SELECT session_id FROM ({}) m WHERE session_id IS NOT NULL \
         GROUP BY session_id ORDER BY MIN(started_at), session_id",
        select.sql()
    );
    query(client, &sql, select.args())?
        .iter()
        .map(|r| get(r, 0))
        .collect()
}

/// How many traces match `filter` (its limit included).
pub(crate) fn count_traces(client: &mut Client, filter: &TraceFilter) -> StoreResult<u64> {
    let select = filter.select_in(PG, "1");
    let sql = format!("SELECT COUNT(*) FROM ({}) m", select.sql());
    let rows = query(client, &sql, select.args())?;
    let count: i64 = rows.first().map(|r| get(r, 0)).transpose()?.unwrap_or(0);
    Ok(count.unsigned_abs())
}

/// Summaries of the traces matching `filter`, in its order.
pub(crate) fn summaries(
    client: &mut Client,
    filter: &TraceFilter,
) -> StoreResult<Vec<CallSummary>> {
    rows(client, &filter.select_in(PG, SUMMARY_COLUMNS), summary)
}

/// A summary from the `SUMMARY_COLUMNS` at the start of `row`.
fn summary(row: &Row) -> StoreResult<CallSummary> {
    let kind: Option<String> = get(row, 11)?;
    let error = match kind {
        Some(kind) => Some(CallError {
            kind: ErrorKind::parse(&kind).ok_or(StoreError::Unreadable {
                what: "error_kind",
                value: kind,
            })?,
            message: get::<Option<String>>(row, 12)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(CallSummary {
        trace_id: get(row, 0)?,
        started_at: get(row, 1)?,
        run_id: get(row, 2)?,
        session_id: get(row, 3)?,
        harness: get(row, 4)?,
        step_id: get(row, 5)?,
        model: get(row, 6)?,
        operation: parsed(row, 7, "operation", Operation::parse)?,
        stream: get(row, 8)?,
        status: parsed(row, 9, "status", Status::parse)?,
        http_status: get::<Option<i32>>(row, 10)?.and_then(|s| u16::try_from(s).ok()),
        error,
        latency_ms: get(row, 13)?,
        ttft_ms: get(row, 14)?,
        usage: SummaryUsage {
            input_tokens: get(row, 15)?,
            output_tokens: get(row, 16)?,
        },
    })
}

/// A page of call nodes and the cursor to poll from next (see
/// `traces::call_page`). Every call is its step's first attempt here:
/// retries are told apart on SQLite only for now.
pub(crate) fn call_page(client: &mut Client, filter: &CallFilter) -> StoreResult<CallPage> {
    let columns = format!(
        "{SUMMARY_COLUMNS}, id, span_id, parent_span_id, protocol, ended_at, method, path, \
         record, token_data"
    );
    let mut calls = rows(client, &filter.select_in(PG, &columns), node)?;
    let newest: i64 = client
        .query_one("SELECT COALESCE(MAX(id), 0) FROM traces", &[])
        .map_err(StoreError::postgres("cannot read the newest call"))?
        .get(0);
    let truncated = calls.len() >= filter.limit;
    let cursor = match (filter.after, truncated) {
        (Some(_), true) => calls.last().map_or(newest, |c| c.seq),
        _ => newest,
    };
    calls.sort_by(|a, b| {
        (&a.summary.started_at, &a.summary.trace_id)
            .cmp(&(&b.summary.started_at, &b.summary.trace_id))
    });
    Ok(CallPage {
        cursor,
        truncated,
        calls,
    })
}

/// A call node: the summary, then the node's own columns and the record
/// (for the answer's preview).
fn node(row: &Row) -> StoreResult<CallNode> {
    let record = record_at(row, 24)?;
    let preview = record
        .response_message
        .get("content")
        .and_then(Value::as_str)
        .map(|text| text.chars().take(160).collect());
    let tool_call = record
        .tool_calls
        .first()
        .and_then(|c| c.pointer("/function/name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(CallNode {
        summary: summary(row)?,
        seq: get(row, 17)?,
        span_id: Some(get(row, 18)?),
        parent_span_id: get(row, 19)?,
        protocol: parsed(row, 20, "protocol", Protocol::parse)?,
        ended_at: get(row, 21)?,
        method: get(row, 22)?,
        path: get(row, 23)?,
        preview,
        tool_call,
        attempt: Attempt::FIRST,
    })
}

/// Statistics per model and route (see `stats::stats`).
pub(crate) fn stats(client: &mut Client, filter: &TraceFilter) -> StoreResult<Vec<CallStats>> {
    let select = filter.select_in(PG, STATS_COLUMNS);
    let mut groups: BTreeMap<(Option<String>, Option<String>), Tally> = BTreeMap::new();
    for (key, call) in rows(client, &select, |r| {
        Ok(((get(r, 0)?, get(r, 1)?), counted(r)?))
    })? {
        groups.entry(key).or_default().add(call);
    }
    Ok(groups
        .into_iter()
        .filter_map(|((model, route), tally)| tally.stats(model, route))
        .collect())
}

/// The newest calls as chart points (see `stats::chart_sample`).
pub(crate) fn chart_sample(client: &mut Client, filter: &TraceFilter) -> StoreResult<ChartSample> {
    let select = filter
        .restrict(Select::new_in(PG, CHART_COLUMNS, "traces"))
        .order("id DESC")
        .limit(Some(CHART_SAMPLE + 1));
    let mut points = rows(client, &select, |row| {
        let started: String = get(row, 1)?;
        Ok(ChartPoint {
            model: get(row, 0)?,
            started: humantime::parse_rfc3339_weak(&started)
                .ok()
                .map(epoch_seconds),
            counted: counted(row)?,
        })
    })?;
    let sampled = points.len() > CHART_SAMPLE;
    points.truncate(CHART_SAMPLE);
    Ok(ChartSample { points, sampled })
}

/// What statistics count of a call, from columns 2 to 7.
fn counted(row: &Row) -> StoreResult<Counted> {
    Ok(Counted {
        error: get(row, 2)?,
        latency_ms: get(row, 3)?,
        ttft_ms: get(row, 4)?,
        input_tokens: get::<i64>(row, 5)?.unsigned_abs(),
        output_tokens: get::<i64>(row, 6)?.unsigned_abs(),
        cost_usd: get(row, 7)?,
    })
}

/// A session from the `SESSION_COLUMNS` at the start of `row`.
fn session_info(row: &Row) -> StoreResult<SessionInfo> {
    let metadata: String = get(row, 3)?;
    Ok(SessionInfo {
        session_id: get(row, 0)?,
        trace_count: get(row, 1)?,
        created_at: get(row, 2)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        run_id: get(row, 4)?,
        first_seen: get(row, 5)?,
        last_seen: get(row, 6)?,
        error_count: get(row, 7)?,
        tokens: get(row, 8)?,
        cost_usd: get(row, 9)?,
    })
}

/// One session by id.
pub(crate) fn session(client: &mut Client, session_id: &str) -> StoreResult<Option<SessionInfo>> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = $1");
    let args = [SqlValue::Text(session_id.to_string())];
    query(client, &sql, &args)?
        .first()
        .map(session_info)
        .transpose()
}

/// Sessions matching `filter`, in its order.
pub(crate) fn sessions(
    client: &mut Client,
    filter: &SessionFilter,
) -> StoreResult<Vec<SessionInfo>> {
    rows(client, &filter.select_in(PG, SESSION_COLUMNS), session_info)
}

/// Sessions matching `filter` as the UI lists them.
pub(crate) fn session_rows(
    client: &mut Client,
    filter: &SessionFilter,
) -> StoreResult<Vec<SessionRow>> {
    rows(client, &filter.select_in(PG, SESSION_ROW_COLUMNS), |row| {
        Ok(SessionRow {
            session: session_info(row)?,
            harness: get(row, 10)?,
            model: get(row, 11)?,
        })
    })
}

/// Every session's sampling parameters; a row that is not a JSON object is
/// skipped, logged.
pub(crate) fn sampling_params(
    client: &mut Client,
) -> StoreResult<Vec<(String, Map<String, Value>)>> {
    let rows = query(
        client,
        "SELECT session_id, sampling_params FROM session_sampling_params",
        &[],
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (session_id, text): (String, String) = (get(&row, 0)?, get(&row, 1)?);
        match serde_json::from_str(&text) {
            Ok(params) => out.push((session_id, params)),
            Err(e) => tracing::warn!(%session_id, "unreadable sampling parameters: {e}"),
        }
    }
    Ok(out)
}

/// A run from the `RUN_COLUMNS` of `row`.
fn run_info(row: &Row) -> StoreResult<RunInfo> {
    Ok(RunInfo {
        run_id: get(row, 0)?,
        first_seen: get(row, 1)?,
        last_seen: get(row, 2)?,
        session_count: get(row, 3)?,
        trace_count: get(row, 4)?,
        error_count: get(row, 5)?,
        tokens: get(row, 6)?,
        cost_usd: get(row, 7)?,
    })
}

/// One run by id.
pub(crate) fn run(client: &mut Client, run_id: &str) -> StoreResult<Option<RunInfo>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1");
    let args = [SqlValue::Text(run_id.to_string())];
    query(client, &sql, &args)?
        .first()
        .map(run_info)
        .transpose()
}

/// Runs matching `filter`, newest first.
pub(crate) fn runs(client: &mut Client, filter: &RunFilter) -> StoreResult<Vec<RunInfo>> {
    rows(client, &filter.select_in(PG, RUN_COLUMNS), run_info)
}

/// The distinct values the run list filters on, at most 200 each.
pub(crate) fn facets(client: &mut Client) -> StoreResult<Facets> {
    let mut distinct = |column: &str| -> StoreResult<Vec<String>> {
        let sql = format!(
            "SELECT DISTINCT {column} FROM traces WHERE {column} IS NOT NULL ORDER BY 1 LIMIT 200"
        );
        query(client, &sql, &[])?
            .iter()
            .map(|r| get(r, 0))
            .collect()
    };
    Ok(Facets {
        models: distinct("model")?,
        harnesses: distinct("harness")?,
        projects: distinct("project")?,
        experiments: distinct("experiment")?,
    })
}

/// Where each call of a session sits in OpenTelemetry, by start.
pub(crate) fn call_links(client: &mut Client, session_id: &str) -> StoreResult<Vec<CallLink>> {
    let args = [SqlValue::Text(session_id.to_string())];
    let sql = "SELECT trace_id, otel_trace_id, otel_parent_span_id FROM traces \
               WHERE session_id = $1 ORDER BY started_at, trace_id";
    query(client, sql, &args)?
        .iter()
        .map(|r| {
            Ok(CallLink {
                trace_id: get(r, 0)?,
                otel_trace_id: get(r, 1)?,
                otel_parent_span_id: get(r, 2)?,
            })
        })
        .collect()
}

/// The exporter's saved state (zeroes before the first export).
pub(crate) fn export_state(client: &mut Client) -> StoreResult<ExportState> {
    let rows = query(
        client,
        "SELECT cursor, exported, last_success_at, last_error, last_error_at \
         FROM export_state WHERE exporter = 'otlp'",
        &[],
    )?;
    let Some(r) = rows.first() else {
        return Ok(ExportState::default());
    };
    Ok(ExportState {
        cursor: get(r, 0)?,
        exported: get(r, 1)?,
        last_success_at: get(r, 2)?,
        last_error: get(r, 3)?,
        last_error_at: get(r, 4)?,
    })
}

/// How long a replica's claim on outbox rows holds: past it, a replica
/// that died mid-batch leaves its rows to the others.
pub(crate) const SPAN_LEASE_SECONDS: i64 = 10;

/// The spans waiting for export (the outbox is shared: the cursor of one
/// replica says nothing of the others', so it is not used).
pub(crate) fn export_backlog(client: &mut Client) -> StoreResult<Backlog> {
    let rows = query(
        client,
        "SELECT COUNT(*), MIN(created_at) FROM spans WHERE exported_at IS NULL",
        &[],
    )?;
    let Some(r) = rows.first() else {
        return Ok(Backlog::default());
    };
    Ok(Backlog {
        waiting: get(r, 0)?,
        oldest_at: get(r, 1)?,
    })
}

/// Claims up to `limit` outbox rows for `instance`, oldest first, and
/// returns them: rows nobody exported and nobody holds a lease on (`FOR
/// UPDATE SKIP LOCKED`: replicas claiming at once take different rows,
/// none waits). The writer marks them exported once the collector took
/// them (`ExportProgress`, a few milliseconds later); a batch the
/// collector refused, or whose replica died, is claimable again when its
/// lease ends — by any replica. Not even its own replica takes it back
/// earlier: it might still be waiting for its mark. Delivery is at least
/// once: a replica killed between the collector's answer and its mark
/// leaves that batch to be sent again. Each claim has its own token
/// (`<instance>/<uuid>` in `claimed_by`), so the mark and the give-back
/// touch exactly its rows. With none waiting, `last_id` is `cursor`.
pub(crate) fn claim_spans(
    client: &mut Client,
    instance: &str,
    cursor: i64,
    limit: usize,
) -> StoreResult<Batch> {
    let failed = StoreError::postgres("cannot claim spans from the outbox");
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let claim = format!("{instance}/{}", uuid::Uuid::new_v4().simple());
    let mut tx = client
        .build_transaction()
        .read_only(false)
        .start()
        .map_err(&failed)?;
    let mut rows = tx
        .query(
            "UPDATE spans SET claimed_by = $1,
                 claimed_until = now() + make_interval(secs => $3::bigint)
             WHERE id IN (
                 SELECT id FROM spans
                 WHERE exported_at IS NULL
                   AND (claimed_until IS NULL OR claimed_until < now())
                 ORDER BY id LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, span",
            &[&claim, &limit, &SPAN_LEASE_SECONDS],
        )
        .map_err(&failed)?;
    tx.commit().map_err(&failed)?;
    rows.sort_by_key(|row| row.get::<_, i64>(0));
    let mut batch = Batch {
        last_id: cursor,
        claim: (!rows.is_empty()).then_some(claim),
        ..Batch::default()
    };
    for row in &rows {
        outbox::add_to_batch(&mut batch, get(row, 0)?, &get::<String>(row, 1)?);
    }
    Ok(batch)
}

/// The shared settings whose key starts with `prefix`, as stored.
pub(crate) fn shared_settings(
    client: &mut Client,
    prefix: &str,
) -> StoreResult<Vec<(String, Value)>> {
    let rows = query(
        client,
        "SELECT key, value FROM admin_state WHERE starts_with(key, $1) ORDER BY key",
        &[SqlValue::Text(prefix.to_string())],
    )?;
    rows.iter()
        .map(|r| {
            let text: String = get(r, 1)?;
            let value = serde_json::from_str(&text).unwrap_or(Value::Null);
            Ok((get(r, 0)?, value))
        })
        .collect()
}
