//! Reading the top of the run → session → step tree: the `runs` and
//! `sessions` tables, and the values the run list can be filtered on.
//!
//! Both tables hold counters the writer keeps up to date with every record
//! (calls, errors, tokens, first and last seen), so these queries answer at
//! once on any store size: they never count traces, except a run's sessions
//! and the cost, summed over the session's or run's own calls through their
//! index (a cost never goes stale: prune and delete need no bookkeeping).

use crate::store::connection::snapshot;
use crate::store::error::StoreResult;
use crate::store::query::{RunFilter, SessionFilter};
use crate::store::summary::{Facets, RunInfo, SessionInfo, SessionRow};
use rusqlite::{Connection, OptionalExtension, Row};
use serde_json::{Map, Value};

pub(crate) const SESSION_COLUMNS: &str = "session_id, trace_count, created_at, metadata, run_id, \
     first_seen, last_seen, error_count, tokens, \
     (SELECT SUM(t.cost_usd) FROM traces t WHERE t.session_id = sessions.session_id)";

fn session_from_row(row: &Row<'_>) -> StoreResult<SessionInfo> {
    let metadata: String = row.get(3)?;
    Ok(SessionInfo {
        session_id: row.get(0)?,
        trace_count: row.get(1)?,
        created_at: row.get(2)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        run_id: row.get(4)?,
        first_seen: row.get(5)?,
        last_seen: row.get(6)?,
        error_count: row.get(7)?,
        tokens: row.get(8)?,
        cost_usd: row.get(9)?,
    })
}

/// Sessions matching `filter`, in its order.
pub(crate) fn sessions(conn: &Connection, filter: &SessionFilter) -> StoreResult<Vec<SessionInfo>> {
    filter.select(SESSION_COLUMNS).rows(conn, session_from_row)
}

/// Every session's sampling parameters (`POST /sessions`'s
/// `sampling_params`); a row that is not a JSON object is skipped, logged.
pub(crate) fn sampling_params(conn: &Connection) -> StoreResult<Vec<(String, Map<String, Value>)>> {
    let mut stmt =
        conn.prepare("SELECT session_id, sampling_params FROM session_sampling_params")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (session_id, text) = row?;
        match serde_json::from_str(&text) {
            Ok(params) => out.push((session_id, params)),
            Err(e) => tracing::warn!(%session_id, "unreadable sampling parameters: {e}"),
        }
    }
    Ok(out)
}

/// The first harness and model named by a session's calls (its model calls:
/// a model list names none), read with the session's index.
pub(crate) const SESSION_ROW_COLUMNS: &str = "session_id, trace_count, created_at, metadata, run_id, \
     first_seen, last_seen, error_count, tokens, \
     (SELECT SUM(t.cost_usd) FROM traces t WHERE t.session_id = sessions.session_id), \
     (SELECT t.harness FROM traces t WHERE t.session_id = sessions.session_id \
      AND t.harness IS NOT NULL ORDER BY t.started_at LIMIT 1), \
     (SELECT t.model FROM traces t WHERE t.session_id = sessions.session_id \
      AND t.model IS NOT NULL AND t.model != '' ORDER BY t.started_at LIMIT 1)";

/// Sessions matching `filter` as the UI lists them, in its order.
pub(crate) fn session_rows(
    conn: &Connection,
    filter: &SessionFilter,
) -> StoreResult<Vec<SessionRow>> {
    filter.select(SESSION_ROW_COLUMNS).rows(conn, |row| {
        Ok(SessionRow {
            session: session_from_row(row)?,
            harness: row.get(10)?,
            model: row.get(11)?,
        })
    })
}

/// One session by id.
pub(crate) fn session(conn: &Connection, session_id: &str) -> StoreResult<Option<SessionInfo>> {
    conn.query_row(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?1"),
        [session_id],
        |row| Ok(session_from_row(row)),
    )
    .optional()?
    .transpose()
}

pub(crate) const RUN_COLUMNS: &str = "run_id, first_seen, last_seen, \
     (SELECT COUNT(*) FROM sessions s WHERE s.run_id = runs.run_id), \
     trace_count, error_count, tokens, \
     (SELECT SUM(t.cost_usd) FROM traces t WHERE t.run_id = runs.run_id)";

fn run_from_row(row: &Row<'_>) -> StoreResult<RunInfo> {
    Ok(RunInfo {
        run_id: row.get(0)?,
        first_seen: row.get(1)?,
        last_seen: row.get(2)?,
        session_count: row.get(3)?,
        trace_count: row.get(4)?,
        error_count: row.get(5)?,
        tokens: row.get(6)?,
        cost_usd: row.get(7)?,
    })
}

/// Runs matching `filter`, newest first.
pub(crate) fn runs(conn: &Connection, filter: &RunFilter) -> StoreResult<Vec<RunInfo>> {
    filter.select(RUN_COLUMNS).rows(conn, run_from_row)
}

/// One run by id.
pub(crate) fn run(conn: &Connection, run_id: &str) -> StoreResult<Option<RunInfo>> {
    conn.query_row(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"),
        [run_id],
        |row| Ok(run_from_row(row)),
    )
    .optional()?
    .transpose()
}

/// The distinct values of the columns the run list filters on.
pub(crate) fn facets(conn: &Connection) -> StoreResult<Facets> {
    snapshot(conn, || {
        Ok(Facets {
            models: distinct(conn, "model")?,
            harnesses: distinct(conn, "harness")?,
            projects: distinct(conn, "project")?,
            experiments: distinct(conn, "experiment")?,
        })
    })
}

/// Up to 200 distinct values of an indexed `traces` column, in order.
fn distinct(conn: &Connection, column: &str) -> StoreResult<Vec<String>> {
    // A loose index scan: one index seek per distinct value, instead of
    // `SELECT DISTINCT`, which would read every row's index entry. (The
    // facet indexes are partial, without NULLs: the first seek says so.)
    let mut stmt = conn.prepare(&format!(
        "WITH RECURSIVE v(value) AS (
             SELECT MIN({column}) FROM traces WHERE {column} IS NOT NULL
             UNION ALL
             SELECT (SELECT MIN({column}) FROM traces WHERE {column} > v.value)
             FROM v WHERE v.value IS NOT NULL
         )
         SELECT value FROM v WHERE value IS NOT NULL LIMIT 200"
    ))?;
    let values = stmt
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(values)
}
