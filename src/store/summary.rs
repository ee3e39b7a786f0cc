//! What the store answers besides whole records: sessions, runs, call
//! summaries and call statistics — one type each, shared by the HTTP API,
//! the CLI and the web UI.
//!
//! Their JSON is part of the contract: `GET /sessions` and `tracegate
//! sessions --format json` print the same [`SessionInfo`]s, `GET /runs` and
//! `tracegate runs` the same [`RunInfo`]s, `tracegate traces list` a
//! [`CallSummary`] per call (the record's own field names, the indexed
//! columns only), and `tracegate stats` a [`CallStats`] per model and route.
//! The UI draws the same summaries ([`CallNode`] adds what its tree and
//! waterfall need, [`Attempt`] which retry of its step a call is) and the
//! same statistics; its session list is [`SessionRow`]s.
//!
//! Percentiles are exact: the nearest-rank value over every call of a group
//! ([`nearest_rank`]), so a test — or a user with `sqlite3` — can check them
//! by hand.

use crate::protocol::{Operation, Protocol};
use crate::record::{CallError, Status};
use serde::Serialize;
use serde_json::{Map, Value};

/// A session as the API reports it (rLLM's `SessionInfo` plus ours).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionInfo {
    /// The session id.
    pub session_id: String,
    /// Calls recorded in the session.
    pub trace_count: i64,
    /// When the session was created (RFC 3339, UTC).
    pub created_at: String,
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
    /// What its calls cost in USD (those with a price); `null` when none
    /// had one.
    pub cost_usd: Option<f64>,
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
    /// What its calls cost in USD (those with a price); `null` when none
    /// had one.
    pub cost_usd: Option<f64>,
}

/// The values the run list can be filtered on (distinct values seen in
/// calls, at most 200 each, in order).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facets {
    /// Models asked for.
    pub models: Vec<String>,
    /// Harnesses.
    pub harnesses: Vec<String>,
    /// Projects.
    pub projects: Vec<String>,
    /// Experiments.
    pub experiments: Vec<String>,
}

/// One call in a listing: its indexed columns, under the record's own field
/// names (the full record is the store's `trace`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallSummary {
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
    /// The GenAI operation.
    pub operation: Operation,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// How the call ended.
    pub status: Status,
    /// The HTTP status the client received.
    pub http_status: Option<u16>,
    /// Why the call failed, when it did.
    pub error: Option<CallError>,
    /// Milliseconds from arrival to end.
    pub latency_ms: f64,
    /// Time to first token: milliseconds from arrival to the first response
    /// byte of a streamed call (none for other calls, whose first byte is
    /// the whole answer).
    pub ttft_ms: Option<f64>,
    /// Input and output tokens.
    pub usage: SummaryUsage,
}

/// The token counts of a [`CallSummary`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryUsage {
    /// Prompt (input) tokens.
    pub input_tokens: Option<i64>,
    /// Completion (output) tokens.
    pub output_tokens: Option<i64>,
}

/// A call as a node of its run's tree and a row of its waterfall: its
/// summary, where it hangs, and a preview of its answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallNode {
    /// Commit order: the cursor value of this call.
    pub seq: i64,
    /// The summary.
    #[serde(flatten)]
    pub summary: CallSummary,
    /// The call's OpenTelemetry span id (a harness may use it as a parent).
    pub span_id: Option<String>,
    /// The harness's parent id (a trace id or span id of another call).
    pub parent_span_id: Option<String>,
    /// The API family.
    pub protocol: Protocol,
    /// The request's HTTP method.
    pub method: String,
    /// The request's path (what names a call without a model).
    pub path: String,
    /// Which attempt of its step this call is.
    #[serde(flatten)]
    pub attempt: Attempt,
    /// When the call ended (RFC 3339).
    pub ended_at: String,
    /// The start of the answer's text (first choice), up to 160 characters.
    pub preview: Option<String>,
    /// The first tool call's name, when the answer is a tool call.
    pub tool_call: Option<String>,
}

/// Which attempt of its step a call is. A call is a **retry** of the call
/// before it when both are of the same session and step, the same
/// operation and model, and the same request (its body; the method and
/// path), and the earlier one did not end `ok` and had ended when this one
/// started — what an SDK does after a 5xx, a 429 or a timeout. The
/// attempts of a step are the first call and its chain of retries; the
/// last attempt's outcome is the step's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// 1 for a first (or only) attempt, 2 for its first retry, and so on.
    pub attempt: u32,
    /// The trace id of the step's first attempt; none for the first.
    pub retry_of: Option<String>,
}

impl Attempt {
    /// A call that retries nothing.
    pub const FIRST: Attempt = Attempt {
        attempt: 1,
        retry_of: None,
    };
}

/// A session as the UI lists it: its counters, and what its calls were
/// made with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRow {
    /// The session.
    #[serde(flatten)]
    pub session: SessionInfo,
    /// The harness of its first call that names one.
    pub harness: Option<String>,
    /// The model of its first call that names one.
    pub model: Option<String>,
}

/// A page of call nodes and the cursor to poll from next.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallPage {
    /// Pass as the next filter's `after` to get only calls committed since
    /// this page.
    pub cursor: i64,
    /// The limit cut the page short: with `after`, poll again from `cursor`
    /// for the rest; without, older calls were left out.
    pub truncated: bool,
    /// The calls, in the order they started.
    pub calls: Vec<CallNode>,
}

/// Call statistics of one model (and route).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallStats {
    /// The model the calls asked for.
    pub model: Option<String>,
    /// The route that served them (`default` for the implicit route; none
    /// when no route did, and in statistics per model only).
    pub route: Option<String>,
    /// Calls.
    pub calls: u64,
    /// Calls that did not end `ok`.
    pub errors: u64,
    /// `errors / calls`.
    pub error_rate: f64,
    /// Latency percentiles, milliseconds.
    pub latency_ms: Percentiles,
    /// Time-to-first-token percentiles, milliseconds, over the streamed
    /// calls (none if no call streamed).
    pub ttft_ms: Option<Percentiles>,
    /// Input tokens of all the calls.
    pub input_tokens: u64,
    /// Output tokens of all the calls.
    pub output_tokens: u64,
    /// What the calls with a price cost in USD; left out when none had
    /// one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
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

/// The calls of one group as they are counted, before they become a
/// [`CallStats`]. Exact: every latency is held (16 bytes a call).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    calls: u64,
    errors: u64,
    latencies: Vec<f64>,
    ttfts: Vec<f64>,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: Option<f64>,
}

/// One call, as statistics count it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counted {
    /// Milliseconds from arrival to end.
    pub latency_ms: f64,
    /// Milliseconds to the first byte, when it counts.
    pub ttft_ms: Option<f64>,
    /// Whether it did not end `ok`.
    pub error: bool,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Its cost in USD, when it has one.
    pub cost_usd: Option<f64>,
}

impl Tally {
    /// Counts one call.
    pub fn add(&mut self, call: Counted) {
        self.calls += 1;
        self.errors += u64::from(call.error);
        self.latencies.push(call.latency_ms);
        self.ttfts.extend(call.ttft_ms);
        self.input_tokens += call.input_tokens;
        self.output_tokens += call.output_tokens;
        if let Some(cost) = call.cost_usd {
            *self.cost_usd.get_or_insert(0.0) += cost;
        }
    }

    /// The statistics of the calls counted; none if there were none.
    pub fn stats(self, model: Option<String>, route: Option<String>) -> Option<CallStats> {
        Some(CallStats {
            model,
            route,
            calls: self.calls,
            errors: self.errors,
            error_rate: self.errors as f64 / self.calls as f64,
            latency_ms: Percentiles::of(self.latencies)?,
            ttft_ms: Percentiles::of(self.ttfts),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_usd: self.cost_usd,
        })
    }
}

/// One call, as the UI's charts see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartPoint {
    /// The model asked for (`(none)` when the call named none).
    pub model: String,
    /// When it started, epoch seconds.
    pub started: Option<f64>,
    /// What statistics count of it (its time to first byte only if it
    /// streamed: the charts show time to first token).
    pub counted: Counted,
}

/// The newest calls matching a filter, for the charts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChartSample {
    /// The calls, newest first.
    pub points: Vec<ChartPoint>,
    /// More calls matched than the sample holds (`CHART_SAMPLE`).
    pub sampled: bool,
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

/// Where one call of a session sits in OpenTelemetry: enough to hang it
/// under a harness span without reading the record itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallLink {
    /// The record's id.
    pub trace_id: String,
    /// The OTel trace the call belongs to (its `traceparent`'s, else the
    /// one derived from its run or session).
    pub otel_trace_id: String,
    /// Its OTel parent span id: the harness span it was made under, when
    /// the harness sent `traceparent`.
    pub otel_parent_span_id: Option<String>,
}
