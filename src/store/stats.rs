//! Reading what statistics are made of: per model and route for `tracegate
//! stats`, and the newest calls, as points, for the UI's charts.
//!
//! Both read only indexed columns. `tracegate stats` counts every matching
//! call (its percentiles are exact); the charts take at most the newest
//! [`CHART_SAMPLE`] calls, so a poll every couple of seconds costs the same
//! on any store size. How the points become histograms and series is the
//! UI's (`api::charts`).

use crate::record::epoch_seconds;
use crate::store::error::StoreResult;
use crate::store::query::{Select, TraceFilter};
use crate::store::summary::{CallStats, ChartPoint, ChartSample, Counted, Tally};
use rusqlite::{Connection, Row};
use std::collections::BTreeMap;

/// The columns [`stats`] reads (either backend's): the model and route,
/// then what [`counted`] reads.
pub(crate) const STATS_COLUMNS: &str = "model, route, status != 'ok', latency_ms, \
     CASE WHEN stream THEN ttft_ms END, \
     COALESCE(input_tokens, 0), COALESCE(output_tokens, 0), cost_usd";

/// The columns [`chart_sample`] reads (either backend's): the model and
/// start, then what [`counted`] reads.
pub(crate) const CHART_COLUMNS: &str = "COALESCE(model, '(none)'), started_at, status != 'ok', \
     latency_ms, CASE WHEN stream THEN ttft_ms END, \
     COALESCE(input_tokens, 0), COALESCE(output_tokens, 0), cost_usd";

/// Statistics of the traces matching `filter`, per model and route, ordered
/// by model then route. TTFT counts streamed calls only, as everywhere.
pub(crate) fn stats(conn: &Connection, filter: &TraceFilter) -> StoreResult<Vec<CallStats>> {
    let select = filter.select(STATS_COLUMNS);
    let mut groups: BTreeMap<(Option<String>, Option<String>), Tally> = BTreeMap::new();
    for (key, call) in select.rows(conn, |row| Ok(((row.get(0)?, row.get(1)?), counted(row)?)))? {
        groups.entry(key).or_default().add(call);
    }
    Ok(groups
        .into_iter()
        .filter_map(|((model, route), tally)| tally.stats(model, route))
        .collect())
}

/// At most this many (the newest) calls feed the charts, to bound the work.
pub const CHART_SAMPLE: usize = 100_000;

/// The newest calls matching `filter` (its `run_id` and `since`), as points
/// for the charts; a streamed call's time to first byte is its time to
/// first token, other calls have none.
pub(crate) fn chart_sample(conn: &Connection, filter: &TraceFilter) -> StoreResult<ChartSample> {
    let select = filter
        .restrict(Select::new(CHART_COLUMNS, "traces"))
        .order("id DESC")
        .limit(Some(CHART_SAMPLE + 1));
    let mut points = select.rows(conn, |row| {
        let started: String = row.get(1)?;
        Ok(ChartPoint {
            model: row.get(0)?,
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

/// What statistics count of a call, from columns 2 to 7 of `row`: whether
/// it failed, its latency, its time to first byte, its tokens and its cost.
fn counted(row: &Row<'_>) -> StoreResult<Counted> {
    Ok(Counted {
        error: row.get(2)?,
        latency_ms: row.get(3)?,
        ttft_ms: row.get(4)?,
        input_tokens: row.get::<_, i64>(5)?.unsigned_abs(),
        output_tokens: row.get::<_, i64>(6)?.unsigned_abs(),
        cost_usd: row.get(7)?,
    })
}
