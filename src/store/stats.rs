//! Queries for the web UI: a filtered run list, light call summaries with a
//! "what is new" cursor, and the numbers behind the charts.
//!
//! The rLLM-compatible API (`read`) serves whole records; a browser drawing a
//! run's tree and waterfall needs only a few columns per call, and the charts
//! need aggregates, not records. These queries read the indexed columns (and
//! a couple of `json_extract`s for previews), never the blobs, so the UI can
//! poll them every couple of seconds on a busy store.
//!
//! Live updates use the `traces` table's rowid as a cursor. The single writer
//! inserts rows in commit order and a batch becomes visible all at once, so
//! "rowid greater than the last one I saw" is exactly "committed since". (A
//! deleted session can free the highest rowids for reuse; a poller then
//! misses nothing older than its cursor, only those reused rows, and picks
//! them up on its next full load.)

use crate::record::{epoch_seconds, rfc3339};
use crate::store::read::{self, ReadResult, RunInfo, nearest_rank};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row as SqlRow, params_from_iter};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

fn sql_err(e: rusqlite::Error) -> String {
    format!("store query failed: {e}")
}

/// Epoch seconds as the RFC 3339 text the time columns hold.
fn epoch_text(seconds: f64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_micros((seconds.max(0.0) * 1e6).round() as u64))
}

/// The conditions of a query, built from the filters that are set. Only the
/// set ones go into the SQL: `(?1 IS NULL OR run_id = ?1)` would read the
/// same but keep SQLite from using the index.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    args: Vec<SqlValue>,
}

impl Conditions {
    /// Adds `clause` (with one `?`) when `value` is set.
    fn add(&mut self, clause: &str, value: Option<impl Into<SqlValue>>) {
        if let Some(value) = value {
            self.clauses.push(clause.to_string());
            self.args.push(value.into());
        }
    }

    /// ` WHERE a AND b`, or nothing.
    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// The trace columns the run list can be filtered on, by exact value.
pub const FACET_COLUMNS: [&str; 4] = ["model", "harness", "project", "experiment"];

/// Which runs to list. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs whose id contains this text (case-insensitive).
    pub search: Option<String>,
    /// Only runs with at least one call having this value, per
    /// [`FACET_COLUMNS`] entry (same order).
    pub facets: [Option<String>; 4],
    /// Only runs with at least one call that did not end `ok`.
    pub errors_only: bool,
    /// Only runs with a call after this time (epoch seconds).
    pub since: Option<f64>,
    /// At most this many runs.
    pub limit: usize,
}

/// The run list: runs newest first, and the values the filters can take.
#[derive(Debug, Clone, Serialize)]
pub struct RunPage {
    /// The matching runs, newest first.
    pub runs: Vec<RunInfo>,
    /// Distinct values of each [`FACET_COLUMNS`] column, keyed by column
    /// (`models`, `harnesses`, `projects`, `experiments`).
    pub facets: BTreeMap<&'static str, Vec<String>>,
}

/// Runs matching `filter`, newest first, with the filter values on offer.
pub fn runs(conn: &Connection, filter: &RunFilter) -> ReadResult<RunPage> {
    // One snapshot for the ids and the rows they name.
    let tx = conn.unchecked_transaction().map_err(sql_err)?;
    let mut when = Conditions::default();
    when.add("instr(lower(run_id), lower(?)) > 0", filter.search.clone());
    when.add("error_count > ?", filter.errors_only.then_some(0));
    when.add("last_seen > ?", filter.since.map(epoch_text));
    for (column, value) in FACET_COLUMNS.iter().zip(&filter.facets) {
        // `+` keeps SQLite on the run_id index: walking each run's calls
        // until one matches beats walking every call of a common model once
        // per run.
        let clause = format!(
            "EXISTS (SELECT 1 FROM traces t WHERE t.run_id = runs.run_id AND +t.{column} = ?)"
        );
        when.add(&clause, value.clone());
    }
    let sql = format!(
        "SELECT run_id FROM runs{} ORDER BY first_seen DESC, run_id LIMIT {}",
        when.sql(),
        filter.limit
    );
    let ids: Vec<String> = {
        let mut stmt = tx.prepare(&sql).map_err(sql_err)?;
        let rows = stmt
            .query_map(params_from_iter(&when.args), |row| row.get(0))
            .map_err(sql_err)?;
        rows.collect::<Result<_, _>>().map_err(sql_err)?
    };
    let mut runs = Vec::with_capacity(ids.len());
    for id in ids {
        runs.extend(read::run(&tx, &id)?);
    }
    let mut facets = BTreeMap::new();
    for (column, key) in
        FACET_COLUMNS
            .iter()
            .zip(["models", "harnesses", "projects", "experiments"])
    {
        // A loose index scan: one index seek per distinct value, instead
        // of `SELECT DISTINCT`, which would read every row's index entry.
        let mut stmt = tx
            .prepare(&format!(
                "WITH RECURSIVE v(value) AS (
                     SELECT MIN({column}) FROM traces
                     UNION ALL
                     SELECT (SELECT MIN({column}) FROM traces WHERE {column} > v.value)
                     FROM v WHERE v.value IS NOT NULL
                 )
                 SELECT value FROM v WHERE value IS NOT NULL LIMIT 200"
            ))
            .map_err(sql_err)?;
        let values = stmt
            .query_map([], |row| row.get(0))
            .map_err(sql_err)?
            .collect::<Result<Vec<String>, _>>()
            .map_err(sql_err)?;
        facets.insert(key, values);
    }
    Ok(RunPage { runs, facets })
}

/// Which calls to summarise. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    /// Only calls of this run.
    pub run_id: Option<String>,
    /// Only calls of this session.
    pub session_id: Option<String>,
    /// Only calls committed after this cursor (a previous page's `cursor`);
    /// without it, the newest calls.
    pub after: Option<i64>,
    /// At most this many calls.
    pub limit: usize,
}

/// One call, as much as a list, a tree or a waterfall row needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallSummary {
    /// Commit order: the cursor value of this call.
    pub seq: i64,
    /// The record's id.
    pub trace_id: String,
    /// The call's OpenTelemetry span id (a harness may use it as a parent).
    pub span_id: Option<String>,
    /// The session.
    pub session_id: Option<String>,
    /// The run.
    pub run_id: Option<String>,
    /// The harness.
    pub harness: Option<String>,
    /// The step within the session.
    pub step_id: Option<i64>,
    /// The harness's parent id (a trace id or span id of another call).
    pub parent_span_id: Option<String>,
    /// The model asked for.
    pub model: Option<String>,
    /// The GenAI operation (`chat`, `messages`, ...).
    pub operation: String,
    /// The API family (`openai`, `anthropic`).
    pub protocol: String,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// `ok`, `error` or `client_closed`.
    pub status: String,
    /// The HTTP status the client got.
    pub http_status: Option<i64>,
    /// Why the call failed, when it did.
    pub error_kind: Option<String>,
    /// The error message, when it failed.
    pub error_message: Option<String>,
    /// When the call arrived (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub ended_at: String,
    /// Milliseconds from arrival to end.
    pub latency_ms: f64,
    /// Milliseconds from arrival to the first response byte.
    pub ttft_ms: Option<f64>,
    /// Input tokens.
    pub input_tokens: Option<i64>,
    /// Output tokens.
    pub output_tokens: Option<i64>,
    /// The start of the answer's text (first choice), up to 160 characters.
    pub preview: Option<String>,
    /// The first tool call's name, when the answer is a tool call.
    pub tool_call: Option<String>,
}

/// A page of call summaries and the cursor to poll from next.
#[derive(Debug, Clone, Serialize)]
pub struct CallPage {
    /// Pass as `after` to get only calls committed since this page.
    pub cursor: i64,
    /// The limit cut the page short: with `after`, poll again from `cursor`
    /// for the rest; without, older calls were left out.
    pub truncated: bool,
    /// The calls, in the order they started.
    pub calls: Vec<CallSummary>,
}

const CALL_SELECT: &str = "SELECT rowid, trace_id, CAST(json_extract(record, '$.span_id') AS TEXT),
        session_id, run_id, harness, step_id, parent_span_id, model, operation, protocol,
        stream, status, http_status, error_kind,
        CAST(json_extract(record, '$.error.message') AS TEXT),
        started_at, ended_at, latency_ms, ttft_ms, input_tokens, output_tokens,
        substr(json_extract(record, '$.response_message.content'), 1, 160),
        CAST(json_extract(record, '$.response_message.tool_calls[0].function.name') AS TEXT)
    FROM traces";

fn call_from_row(row: &SqlRow<'_>) -> rusqlite::Result<CallSummary> {
    Ok(CallSummary {
        seq: row.get(0)?,
        trace_id: row.get(1)?,
        span_id: row.get(2)?,
        session_id: row.get(3)?,
        run_id: row.get(4)?,
        harness: row.get(5)?,
        step_id: row.get(6)?,
        parent_span_id: row.get(7)?,
        model: row.get(8)?,
        operation: row.get(9)?,
        protocol: row.get(10)?,
        stream: row.get(11)?,
        status: row.get(12)?,
        http_status: row.get(13)?,
        error_kind: row.get(14)?,
        error_message: row.get(15)?,
        started_at: row.get(16)?,
        ended_at: row.get(17)?,
        latency_ms: row.get(18)?,
        ttft_ms: row.get(19)?,
        input_tokens: row.get(20)?,
        output_tokens: row.get(21)?,
        preview: row.get(22)?,
        tool_call: row.get(23)?,
    })
}

/// Call summaries matching `filter`: with `after`, the oldest calls committed
/// since that cursor; without, the newest calls. Either way in start order.
pub fn calls(conn: &Connection, filter: &CallFilter) -> ReadResult<CallPage> {
    let tx = conn.unchecked_transaction().map_err(sql_err)?;
    let mut when = Conditions::default();
    when.add("run_id = ?", filter.run_id.clone());
    when.add("session_id = ?", filter.session_id.clone());
    when.add("rowid > ?", filter.after);
    // Since a cursor: the oldest first, so that a cut page resumes cleanly.
    let order = if filter.after.is_some() {
        "ASC"
    } else {
        "DESC"
    };
    let sql = format!(
        "{CALL_SELECT}{} ORDER BY rowid {order} LIMIT {}",
        when.sql(),
        filter.limit
    );
    let mut calls: Vec<CallSummary> = {
        let mut stmt = tx.prepare(&sql).map_err(sql_err)?;
        let rows = stmt
            .query_map(params_from_iter(&when.args), call_from_row)
            .map_err(sql_err)?;
        rows.collect::<Result<_, _>>().map_err(sql_err)?
    };
    let newest: i64 = tx
        .query_row("SELECT COALESCE(MAX(rowid), 0) FROM traces", [], |r| {
            r.get(0)
        })
        .map_err(sql_err)?;
    let truncated = calls.len() >= filter.limit;
    let cursor = match (filter.after, truncated) {
        // More are waiting: resume right after the last one returned.
        (Some(_), true) => calls.last().map_or(newest, |c| c.seq),
        _ => newest,
    };
    calls.sort_by(|a, b| {
        (a.started_at.as_str(), a.trace_id.as_str()).cmp(&(&b.started_at, &b.trace_id))
    });
    Ok(CallPage {
        cursor,
        truncated,
        calls,
    })
}

/// What the charts cover. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct StatsFilter {
    /// Only calls of this run.
    pub run_id: Option<String>,
    /// Only calls that started after this time (epoch seconds).
    pub since: Option<f64>,
    /// About how many time buckets the series should have.
    pub buckets: usize,
}

/// At most this many (the newest) calls feed the charts, to bound the work.
pub const STATS_SAMPLE: usize = 100_000;

/// The numbers behind the charts, per model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Calls counted.
    pub calls: usize,
    /// More calls matched than [`STATS_SAMPLE`]; only the newest count.
    pub sampled: bool,
    /// Every model, most calls first (the key of every per-model map).
    pub models: Vec<String>,
    /// Counts and quantiles per model, in `models` order.
    pub per_model: Vec<ModelStats>,
    /// The latency distribution.
    pub latency_ms: Histogram,
    /// The time-to-first-token distribution of streamed calls.
    pub ttft_ms: Histogram,
    /// Calls, errors and tokens over time.
    pub over_time: Timeline,
}

/// One model's totals and quantiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelStats {
    /// The model asked for (`(none)` when the call named none).
    pub model: String,
    /// Calls.
    pub calls: u64,
    /// Calls that did not end `ok`.
    pub errors: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Latency quantiles.
    pub latency_ms: Quantiles,
    /// Time-to-first-token quantiles of streamed calls, if any streamed.
    pub ttft_ms: Option<Quantiles>,
}

/// Nearest-rank quantiles of a set of durations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// A histogram over 1-2-5 steps, trimmed to the bins that hold values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// Bin edges in milliseconds: bin `i` is `[edges[i], edges[i+1])`; the
    /// last bin also holds everything above its upper edge. Empty when no
    /// call had a value.
    pub edges: Vec<f64>,
    /// Per model, the count in each bin.
    pub counts: BTreeMap<String, Vec<u64>>,
}

/// Per-model series over equal time buckets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// Start of the first bucket, epoch seconds.
    pub start: f64,
    /// Width of each bucket, seconds.
    pub bucket_seconds: f64,
    /// Per model, the series.
    pub series: BTreeMap<String, Series>,
}

/// Counts per time bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Series {
    /// Calls that started in the bucket.
    pub calls: Vec<u64>,
    /// Of those, the ones that did not end `ok`.
    pub errors: Vec<u64>,
    /// Their input tokens.
    pub input_tokens: Vec<u64>,
    /// Their output tokens.
    pub output_tokens: Vec<u64>,
}

/// One call, as the charts see it.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    model: String,
    started: Option<f64>,
    latency_ms: f64,
    ttft_ms: Option<f64>,
    error: bool,
    input_tokens: u64,
    output_tokens: u64,
}

/// Chart data for the calls matching `filter`.
pub fn stats(conn: &Connection, filter: &StatsFilter) -> ReadResult<Stats> {
    let mut when = Conditions::default();
    when.add("run_id = ?", filter.run_id.clone());
    when.add("started_at > ?", filter.since.map(epoch_text));
    let mut stmt = conn
        .prepare(&format!(
            "SELECT COALESCE(model, '(none)'), started_at, latency_ms,
                    CASE WHEN stream THEN ttft_ms END, status != 'ok',
                    COALESCE(input_tokens, 0), COALESCE(output_tokens, 0)
             FROM traces{} ORDER BY rowid DESC LIMIT {}",
            when.sql(),
            STATS_SAMPLE + 1
        ))
        .map_err(sql_err)?;
    let rows = stmt
        .query_map(params_from_iter(&when.args), |row| {
            let started: String = row.get(1)?;
            Ok(Point {
                model: row.get(0)?,
                started: humantime::parse_rfc3339_weak(&started)
                    .ok()
                    .map(epoch_seconds),
                latency_ms: row.get(2)?,
                ttft_ms: row.get(3)?,
                error: row.get(4)?,
                input_tokens: row.get::<_, i64>(5)?.max(0) as u64,
                output_tokens: row.get::<_, i64>(6)?.max(0) as u64,
            })
        })
        .map_err(sql_err)?;
    let mut points: Vec<Point> = rows.collect::<Result<_, _>>().map_err(sql_err)?;
    let sampled = points.len() > STATS_SAMPLE;
    points.truncate(STATS_SAMPLE);
    Ok(summarise(&points, filter.buckets.max(1), sampled))
}

/// Builds the chart data from the points (pure, so it is unit-tested).
fn summarise(points: &[Point], buckets: usize, sampled: bool) -> Stats {
    let mut by_model: BTreeMap<&str, Vec<&Point>> = BTreeMap::new();
    for p in points {
        by_model.entry(&p.model).or_default().push(p);
    }
    let mut models: Vec<&str> = by_model.keys().copied().collect();
    models.sort_by_key(|m| std::cmp::Reverse(by_model[m].len()));

    let per_model = models
        .iter()
        .map(|m| {
            let calls = &by_model[m];
            let latencies: Vec<f64> = calls.iter().map(|p| p.latency_ms).collect();
            let ttfts: Vec<f64> = calls.iter().filter_map(|p| p.ttft_ms).collect();
            ModelStats {
                model: m.to_string(),
                calls: calls.len() as u64,
                errors: calls.iter().filter(|p| p.error).count() as u64,
                input_tokens: calls.iter().map(|p| p.input_tokens).sum(),
                output_tokens: calls.iter().map(|p| p.output_tokens).sum(),
                latency_ms: quantiles(latencies).unwrap_or(Quantiles {
                    p50: 0.0,
                    p90: 0.0,
                    p99: 0.0,
                    max: 0.0,
                }),
                ttft_ms: quantiles(ttfts),
            }
        })
        .collect();

    let latency_ms = histogram(&by_model, |p| Some(p.latency_ms));
    let ttft_ms = histogram(&by_model, |p| p.ttft_ms);
    Stats {
        calls: points.len(),
        sampled,
        models: models.iter().map(|m| m.to_string()).collect(),
        per_model,
        latency_ms,
        ttft_ms,
        over_time: timeline(&by_model, buckets),
    }
}

/// Nearest-rank quantiles (as `tracegate stats` computes them); `None` for
/// no values.
fn quantiles(mut values: Vec<f64>) -> Option<Quantiles> {
    values.sort_by(f64::total_cmp);
    Some(Quantiles {
        p50: nearest_rank(&values, 50)?,
        p90: nearest_rank(&values, 90)?,
        p99: nearest_rank(&values, 99)?,
        max: *values.last()?,
    })
}

/// Bin edges in milliseconds: 0, then 1-2-5 steps from 0.1 ms to 20 minutes.
const EDGES_MS: [f64; 21] = [
    0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4,
    2e4, 5e4, 1e5, 2e5,
];

/// A per-model histogram of `value` over [`EDGES_MS`], trimmed to the bins
/// from the first to the last that hold a value.
fn histogram(
    by_model: &BTreeMap<&str, Vec<&Point>>,
    value: impl Fn(&Point) -> Option<f64>,
) -> Histogram {
    let bins = EDGES_MS.len() - 1;
    let bin_of = |v: f64| {
        EDGES_MS[1..]
            .iter()
            .position(|&e| v < e)
            .unwrap_or(bins - 1)
    };
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (model, calls) in by_model {
        let mut row = vec![0u64; bins];
        let mut any = false;
        for v in calls.iter().filter_map(|p| value(p)) {
            row[bin_of(v)] += 1;
            any = true;
        }
        if any {
            counts.insert(model.to_string(), row);
        }
    }
    let used = |i: &usize| counts.values().any(|row| row[*i] > 0);
    let (Some(first), Some(last)) = ((0..bins).find(used), (0..bins).rev().find(used)) else {
        return Histogram {
            edges: Vec::new(),
            counts,
        };
    };
    for row in counts.values_mut() {
        *row = row[first..=last].to_vec();
    }
    Histogram {
        edges: EDGES_MS[first..=last + 1].to_vec(),
        counts,
    }
}

/// Bucket widths a reader can take in at a glance, in seconds.
const NICE_SECONDS: [f64; 26] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    900.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0, 172800.0, 604800.0,
];

/// Per-model series over at most about `buckets` buckets of a nice width.
fn timeline(by_model: &BTreeMap<&str, Vec<&Point>>, buckets: usize) -> Timeline {
    let times = || by_model.values().flatten().filter_map(|p| p.started);
    let (Some(min), Some(max)) = (
        times().min_by(f64::total_cmp),
        times().max_by(f64::total_cmp),
    ) else {
        return Timeline {
            start: 0.0,
            bucket_seconds: 1.0,
            series: BTreeMap::new(),
        };
    };
    let wanted = (max - min) / buckets as f64;
    let width = NICE_SECONDS
        .iter()
        .copied()
        .find(|&w| w >= wanted)
        .unwrap_or_else(|| wanted.ceil());
    let start = (min / width).floor() * width;
    let n = (((max - start) / width).floor() as usize + 1).min(buckets + 1);
    let mut series = BTreeMap::new();
    for (model, calls) in by_model {
        let mut s = Series {
            calls: vec![0; n],
            errors: vec![0; n],
            input_tokens: vec![0; n],
            output_tokens: vec![0; n],
        };
        for p in calls {
            let Some(t) = p.started else { continue };
            let i = (((t - start) / width).floor().max(0.0) as usize).min(n - 1);
            s.calls[i] += 1;
            s.errors[i] += u64::from(p.error);
            s.input_tokens[i] += p.input_tokens;
            s.output_tokens[i] += p.output_tokens;
        }
        series.insert(model.to_string(), s);
    }
    Timeline {
        start,
        bucket_seconds: width,
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(model: &str, started: f64, latency_ms: f64, ttft_ms: Option<f64>) -> Point {
        Point {
            model: model.into(),
            started: Some(started),
            latency_ms,
            ttft_ms,
            error: false,
            input_tokens: 10,
            output_tokens: 5,
        }
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let q = quantiles((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!((q.p50, q.p90, q.p99, q.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(quantiles(Vec::new()), None);
    }

    #[test]
    fn histogram_is_trimmed_to_the_bins_that_hold_values() {
        let points = [point("a", 0.0, 3.0, None), point("b", 0.0, 30.0, Some(1.5))];
        let stats = summarise(&points, 10, false);
        assert_eq!(stats.latency_ms.edges, vec![2.0, 5.0, 10.0, 20.0, 50.0]);
        assert_eq!(stats.latency_ms.counts["a"], vec![1, 0, 0, 0]);
        assert_eq!(stats.latency_ms.counts["b"], vec![0, 0, 0, 1]);
        // Only b streamed: a has no TTFT row at all.
        assert_eq!(stats.ttft_ms.edges, vec![1.0, 2.0]);
        assert!(!stats.ttft_ms.counts.contains_key("a"));
    }

    #[test]
    fn values_beyond_the_last_edge_fall_in_the_last_bin() {
        let stats = summarise(&[point("a", 0.0, 9e6, None)], 10, false);
        assert_eq!(stats.latency_ms.edges, vec![1e5, 2e5]);
        assert_eq!(stats.latency_ms.counts["a"], vec![1]);
    }

    #[test]
    fn timeline_buckets_have_a_nice_width_and_cover_every_call() {
        let points = [
            point("a", 1000.0, 1.0, None),
            point("a", 1059.0, 1.0, None),
            point("b", 1030.5, 1.0, None),
        ];
        let t = summarise(&points, 6, false).over_time;
        assert_eq!(t.bucket_seconds, 10.0);
        assert_eq!(t.start, 1000.0);
        assert_eq!(t.series["a"].calls, vec![1, 0, 0, 0, 0, 1]);
        assert_eq!(t.series["b"].calls, vec![0, 0, 0, 1, 0, 0]);
        assert_eq!(t.series["a"].input_tokens, vec![10, 0, 0, 0, 0, 10]);
    }

    #[test]
    fn models_are_listed_most_calls_first() {
        let points = [
            point("a", 0.0, 1.0, None),
            point("b", 0.0, 1.0, None),
            point("b", 0.0, 1.0, None),
        ];
        let stats = summarise(&points, 10, false);
        assert_eq!(stats.models, vec!["b", "a"]);
        assert_eq!(stats.per_model[0].calls, 2);
        assert_eq!(stats.per_model[0].input_tokens, 20);
    }
}
