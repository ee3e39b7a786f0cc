//! Reading the `traces` table: whole records, summaries, and pages of call
//! nodes with a "what is new" cursor.
//!
//! Whole records are what the rLLM-compatible API and `tracegate export`
//! serve, with the feedback that names them; they are decoded one row at a time ([`for_each_trace`]), so an
//! export of a store of any size runs in constant memory. A record's row
//! points at shared content (messages, token runs); each read runs in one
//! read transaction, so a row and what it points at come from the same
//! committed state, and one `ContentReader` per read remembers the paths it
//! has read, so a session's calls read in order cost a row or two each.
//! Summaries and call nodes read the columns (and the answer's preview),
//! never the blobs, so a listing or the UI's polling stays cheap on a busy
//! store.
//!
//! Live updates use the table's `id` (its rowid) as a cursor. The single
//! writer inserts rows in commit order and a batch becomes visible all at
//! once, so "id greater than the last one I saw" is exactly "committed
//! since". (A deleted session can free the highest ids for reuse; a poller
//! then misses nothing older than its cursor, only those reused rows, and
//! picks them up on its next full load.)

use crate::feedback::TargetKind;
use crate::record::TraceRecord;
use crate::store::attempts;
use crate::store::connection::snapshot;
use crate::store::content::ContentReader;
use crate::store::error::{StoreError, StoreResult};
use crate::store::feedback::{self, FeedbackScope};
use crate::store::query::{CallFilter, TraceFilter};
use crate::store::row::{self, NODE_COLUMNS, RECORD_COLUMNS, SUMMARY_COLUMNS};
use crate::store::summary::{CallNode, CallPage, CallSummary};
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use std::ops::ControlFlow;

/// One trace by id.
pub(crate) fn trace(conn: &Connection, trace_id: &str) -> StoreResult<Option<TraceRecord>> {
    snapshot(conn, || {
        let mut reader = ContentReader::default();
        conn.query_row(
            &format!("SELECT {} FROM traces WHERE trace_id = ?1", *RECORD_COLUMNS),
            [trace_id],
            |row| Ok(row::decode_record(conn, row, &mut reader)),
        )
        .optional()?
        .transpose()?
        .map(|record| with_feedback(conn, record))
        .transpose()
    })
}

/// Traces matching `filter`, in its order, collected.
pub(crate) fn traces(conn: &Connection, filter: &TraceFilter) -> StoreResult<Vec<TraceRecord>> {
    snapshot(conn, || {
        let mut reader = ContentReader::default();
        filter.select(&RECORD_COLUMNS).rows(conn, |row| {
            with_feedback(conn, row::decode_record(conn, row, &mut reader)?)
        })
    })
}

/// Calls `each` with every trace matching `filter`, one row at a time and in
/// the filter's order, without collecting them. `each` may stop early with
/// [`ControlFlow::Break`]. Returns the number of traces passed to `each`.
pub(crate) fn for_each_trace<E: From<StoreError>>(
    conn: &Connection,
    filter: &TraceFilter,
    mut each: impl FnMut(TraceRecord) -> Result<ControlFlow<()>, E>,
) -> Result<u64, E> {
    snapshot(conn, || {
        let select = filter.select(&RECORD_COLUMNS);
        let mut stmt = conn.prepare(&select.sql()).map_err(StoreError::from)?;
        let mut rows = stmt
            .query(params_from_iter(select.args()))
            .map_err(StoreError::from)?;
        let mut reader = ContentReader::default();
        let mut seen = 0;
        while let Some(row) = rows.next().map_err(StoreError::from)? {
            let record = with_feedback(conn, row::decode_record(conn, row, &mut reader)?)?;
            seen += 1;
            if each(record)?.is_break() {
                break;
            }
        }
        Ok(seen)
    })
}

/// `record` with the feedback naming it (one indexed read).
fn with_feedback(conn: &Connection, mut record: TraceRecord) -> StoreResult<TraceRecord> {
    record.feedback = feedback::feedback(
        conn,
        &FeedbackScope::Target(TargetKind::Trace, record.trace_id.clone()),
    )?;
    Ok(record)
}

/// The sessions of the traces matching `filter` (its `limit` aside), in
/// the order of their first matching call.
pub(crate) fn session_ids(conn: &Connection, filter: &TraceFilter) -> StoreResult<Vec<String>> {
    let whole = TraceFilter {
        limit: None,
        ..filter.clone()
    };
    let select = whole.select("session_id, started_at");
    let mut stmt = conn.prepare(&format!(
        "SELECT session_id FROM ({}) WHERE session_id IS NOT NULL \
         GROUP BY session_id ORDER BY MIN(started_at), session_id",
        select.sql()
    ))?;
    let ids = stmt
        .query_map(params_from_iter(select.args()), |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// The number of traces matching `filter` (its `limit` included).
pub(crate) fn count_traces(conn: &Connection, filter: &TraceFilter) -> StoreResult<u64> {
    let select = filter.select("1");
    let count: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM ({})", select.sql()),
        params_from_iter(select.args()),
        |r| r.get(0),
    )?;
    Ok(count.unsigned_abs())
}

/// Summaries of the traces matching `filter`, in its order.
pub(crate) fn summaries(conn: &Connection, filter: &TraceFilter) -> StoreResult<Vec<CallSummary>> {
    filter
        .select(SUMMARY_COLUMNS)
        .rows(conn, row::decode_summary)
}

/// Call nodes matching `filter`: with `after`, the oldest calls committed
/// since that cursor; without, the newest calls. Either way in start order,
/// with the cursor to poll from next, and each call's attempt of its step.
pub(crate) fn call_page(conn: &Connection, filter: &CallFilter) -> StoreResult<CallPage> {
    // One snapshot for the calls and the newest id.
    let (mut calls, newest) = snapshot(conn, || {
        let mut calls: Vec<CallNode> = filter.select(NODE_COLUMNS).rows(conn, row::decode_node)?;
        attempts::mark(conn, &mut calls)?;
        let newest: i64 =
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM traces", [], |r| r.get(0))?;
        StoreResult::Ok((calls, newest))
    })?;
    let truncated = calls.len() >= filter.limit;
    let cursor = match (filter.after, truncated) {
        // More are waiting: resume right after the last one returned.
        (Some(_), true) => calls.last().map_or(newest, |c| c.seq),
        _ => newest,
    };
    calls.sort_by(|a, b| start_order(a).cmp(&start_order(b)));
    Ok(CallPage {
        cursor,
        truncated,
        calls,
    })
}

/// The order calls started in (ties broken by id).
fn start_order(call: &CallNode) -> (&str, &str) {
    (&call.summary.started_at, &call.summary.trace_id)
}
