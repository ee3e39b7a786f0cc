//! A record's row in PostgreSQL's `traces`: encoded off the writer thread,
//! inserted by it, with its session's and run's counters.
//!
//! The scalar facts are columns (the SQLite store's names) so filters and
//! aggregates run in the database; the record itself is the `record` blob
//! ([`super::record`]), so a read gives back exactly what was written.
//!
//! The insert is idempotent on `trace_id` (`ON CONFLICT DO NOTHING`): a
//! batch retried after a connection broke mid-commit, or replayed from the
//! spill file, never counts a call twice; the counters and the outbox are
//! touched only for rows the statement really inserted.
//!
//! **Multi-row `INSERT`, not `COPY`.** A batch goes in as `INSERT ...
//! VALUES (...), (...)` of up to [`ROWS_PER_STATEMENT`] rows, then one
//! counter upsert per session and run it touched: a few round trips per
//! batch instead of three per call. Binary `COPY` would stream rows faster
//! still, but it has no `ON CONFLICT`: idempotence would need a staging
//! table and an `INSERT ... SELECT` after it, one more statement for what
//! the measurements (docs/deployment.md) show is not the bottleneck.

use super::record::{self, Blobs};
use crate::identity::{FieldValue, IdentityField};
use crate::record::{Span, Status, TraceRecord};
use crate::store::error::{StoreError, StoreResult};
use crate::store::record_json::count_column;
use postgres::GenericClient;
use postgres::types::ToSql;
use std::collections::{BTreeMap, HashSet};

/// A record ready for its row.
#[derive(Debug)]
pub(crate) struct Row {
    /// The record (its scalar facts become columns).
    pub record: TraceRecord,
    /// Its blobs.
    pub blobs: Blobs,
    /// Its span for the export outbox, as JSON.
    pub span: Option<String>,
}

/// The `traces` columns an insert fills, in its order.
const COLUMNS: &str = "trace_id, session_id, run_id, harness, step_id, parent_span_id, project, \
    experiment, weight_version, span_type, route, upstream, protocol, operation, method, path, \
    model, backend_model, response_model, response_id, stream, status, http_status, error_kind, \
    error_message, timestamp, started_at, ended_at, latency_ms, ttft_ms, input_tokens, \
    output_tokens, tokens, cost_usd, span_id, otel_trace_id, otel_parent_span_id, replica, \
    record, token_data";

/// How many columns [`COLUMNS`] names.
const COLUMN_COUNT: usize = 40;

impl Row {
    /// Encodes `record` and its span (CPU work, done in the request task).
    pub(crate) fn encode(record: TraceRecord, span: Option<&Span>) -> StoreResult<Row> {
        let span = span
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Encode {
                what: "the span",
                source: e.into(),
            })?;
        Self::encode_with_span(record, span)
    }

    /// Encodes `record`, whose span is JSON already (from the spill file).
    pub(crate) fn encode_with_span(record: TraceRecord, span: Option<String>) -> StoreResult<Row> {
        Ok(Row {
            blobs: record::encode(&record)?,
            record,
            span,
        })
    }

    /// The call's tokens (input + output), as its counters add them.
    pub(crate) fn tokens(&self) -> i64 {
        count_column(self.record.usage.tokens()).unwrap_or(0)
    }

    /// The column values, in [`COLUMNS`]' order.
    fn values(&self, replica: &str) -> Vec<Box<dyn ToSql + Sync + '_>> {
        let r = &self.record;
        let text = |field| match r.identity.get(field) {
            Some(FieldValue::Text(t)) => Some(t.to_string()),
            _ => None,
        };
        let number = |field| match r.identity.get(field) {
            Some(FieldValue::Integer(n)) => Some(n),
            _ => None,
        };
        let count = |n: Option<u64>| count_column(n);
        vec![
            Box::new(&r.trace_id),
            Box::new(text(IdentityField::SessionId)),
            Box::new(text(IdentityField::RunId)),
            Box::new(text(IdentityField::Harness)),
            Box::new(number(IdentityField::StepId)),
            Box::new(text(IdentityField::ParentSpanId)),
            Box::new(text(IdentityField::Project)),
            Box::new(text(IdentityField::Experiment)),
            Box::new(number(IdentityField::WeightVersion)),
            Box::new(&r.span_type),
            Box::new(&r.route),
            Box::new(&r.upstream),
            Box::new(r.protocol.as_str()),
            Box::new(r.operation.as_str()),
            Box::new(&r.method),
            Box::new(&r.path),
            Box::new(&r.model),
            Box::new(&r.backend_model),
            Box::new(&r.response_model),
            Box::new(&r.response_id),
            Box::new(r.stream),
            Box::new(r.status.as_str()),
            Box::new(r.http_status.map(i32::from)),
            Box::new(r.error.as_ref().map(|e| e.kind.as_str())),
            Box::new(r.error.as_ref().map(|e| e.message.as_str())),
            Box::new(r.timestamp),
            Box::new(&r.started_at),
            Box::new(&r.ended_at),
            Box::new(r.latency_ms),
            Box::new(r.ttft_ms),
            Box::new(count(r.usage.input_tokens)),
            Box::new(count(r.usage.output_tokens)),
            Box::new(self.tokens()),
            Box::new(r.cost_usd),
            Box::new(&r.span_id),
            Box::new(&r.otel_trace_id),
            Box::new(&r.otel_parent_span_id),
            Box::new(replica.to_string()),
            Box::new(&self.blobs.record),
            Box::new(&self.blobs.token_data),
        ]
    }
}

/// Rows per `INSERT` statement: 40 parameters each, under PostgreSQL's
/// 65 535, and few enough that one statement's plan stays cheap.
const ROWS_PER_STATEMENT: usize = 64;

/// Inserts `rows` (those whose trace id is not stored yet) with multi-row
/// `INSERT`s, then adds the new ones to their sessions' and runs' counters
/// (one upsert per session and per run, in key order, so replicas lock
/// shared rows in one order) and queues their spans. Returns how many were
/// new and whether any queued a span.
pub(crate) fn insert_batch(
    client: &mut impl GenericClient,
    rows: &[&Row],
    replica: &str,
) -> StoreResult<(usize, bool)> {
    let mut new = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let inserted = insert_chunk(client, chunk, replica)?;
        new.extend(
            chunk
                .iter()
                .filter(|r| inserted.contains(&r.record.trace_id)),
        );
    }
    let (sessions, runs) = tallies(&new);
    for (session_id, t) in &sessions {
        count_session(client, session_id, t)?;
    }
    for (run_id, t) in &runs {
        count_run(client, run_id, t)?;
    }
    let spans = queue_spans(client, &new)?;
    Ok((new.len(), spans))
}

/// One multi-row `INSERT`: the trace ids it inserted.
fn insert_chunk(
    client: &mut impl GenericClient,
    chunk: &[&Row],
    replica: &str,
) -> StoreResult<HashSet<String>> {
    let tuples: Vec<String> = (0..chunk.len())
        .map(|r| {
            let marks: Vec<String> = (1..=COLUMN_COUNT)
                .map(|c| format!("${}", r * COLUMN_COUNT + c))
                .collect();
            format!("({})", marks.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO traces ({COLUMNS}) VALUES {} ON CONFLICT (trace_id) DO NOTHING RETURNING trace_id",
        tuples.join(", ")
    );
    let values: Vec<_> = chunk.iter().flat_map(|row| row.values(replica)).collect();
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
    let inserted = client
        .query(&sql, &params)
        .map_err(StoreError::postgres("cannot insert the traces"))?;
    Ok(inserted.iter().map(|row| row.get(0)).collect())
}

/// What a batch adds to one session's or run's counters.
#[derive(Debug, Default)]
struct Tally<'a> {
    run_id: Option<&'a str>,
    first: Option<&'a str>,
    last: Option<&'a str>,
    calls: i64,
    errors: i64,
    tokens: i64,
}

impl<'a> Tally<'a> {
    fn add(&mut self, row: &'a Row) {
        let r = &row.record;
        let at = r.started_at.as_str();
        self.run_id = r.identity.run_id.as_deref().or(self.run_id);
        self.first = Some(self.first.map_or(at, |f| f.min(at)));
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
        self.calls += 1;
        self.errors += i64::from(r.status != Status::Ok);
        self.tokens += row.tokens();
    }
}

/// The batch's tallies per session and per run, in key order.
fn tallies<'a>(rows: &[&'a Row]) -> (BTreeMap<&'a str, Tally<'a>>, BTreeMap<&'a str, Tally<'a>>) {
    let (mut sessions, mut runs) = (BTreeMap::new(), BTreeMap::new());
    for row in rows {
        let identity = &row.record.identity;
        if let Some(session_id) = identity.session_id.as_deref() {
            sessions
                .entry(session_id)
                .or_insert_with(Tally::default)
                .add(row);
        }
        if let Some(run_id) = identity.run_id.as_deref() {
            runs.entry(run_id).or_insert_with(Tally::default).add(row);
        }
    }
    (sessions, runs)
}

/// Adds a batch's calls to their session (creating it at its first call).
fn count_session(
    client: &mut impl GenericClient,
    session_id: &str,
    t: &Tally<'_>,
) -> StoreResult<()> {
    client
        .execute(
            "INSERT INTO sessions (session_id, run_id, created_at, first_seen, last_seen,
                                   trace_count, error_count, tokens)
             VALUES ($1, $2, $3, $3, $4, $5, $6, $7)
             ON CONFLICT (session_id) DO UPDATE SET
                 run_id      = COALESCE(EXCLUDED.run_id, sessions.run_id),
                 first_seen  = LEAST(COALESCE(sessions.first_seen, EXCLUDED.first_seen), EXCLUDED.first_seen),
                 last_seen   = GREATEST(COALESCE(sessions.last_seen, EXCLUDED.last_seen), EXCLUDED.last_seen),
                 trace_count = sessions.trace_count + EXCLUDED.trace_count,
                 error_count = sessions.error_count + EXCLUDED.error_count,
                 tokens      = sessions.tokens + EXCLUDED.tokens",
            &[&session_id, &t.run_id, &t.first, &t.last, &t.calls, &t.errors, &t.tokens],
        )
        .map_err(StoreError::postgres("cannot count the calls in their session"))?;
    Ok(())
}

/// Adds a batch's calls to their run.
fn count_run(client: &mut impl GenericClient, run_id: &str, t: &Tally<'_>) -> StoreResult<()> {
    client
        .execute(
            "INSERT INTO runs (run_id, first_seen, last_seen, trace_count, error_count, tokens)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (run_id) DO UPDATE SET
                 first_seen  = LEAST(runs.first_seen, EXCLUDED.first_seen),
                 last_seen   = GREATEST(runs.last_seen, EXCLUDED.last_seen),
                 trace_count = runs.trace_count + EXCLUDED.trace_count,
                 error_count = runs.error_count + EXCLUDED.error_count,
                 tokens      = runs.tokens + EXCLUDED.tokens",
            &[&run_id, &t.first, &t.last, &t.calls, &t.errors, &t.tokens],
        )
        .map_err(StoreError::postgres("cannot count the calls in their run"))?;
    Ok(())
}

/// Queues the spans of the new rows, in order (one statement per chunk).
fn queue_spans(client: &mut impl GenericClient, new: &[&Row]) -> StoreResult<bool> {
    let with_span: Vec<(&Row, &String)> = new
        .iter()
        .filter_map(|row| row.span.as_ref().map(|span| (*row, span)))
        .collect();
    for chunk in with_span.chunks(ROWS_PER_STATEMENT * 10) {
        let tuples: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO spans (trace_id, created_at, span) VALUES {}",
            tuples.join(", ")
        );
        let params: Vec<&(dyn ToSql + Sync)> = chunk
            .iter()
            .flat_map(|(row, span)| {
                let r = &row.record;
                [&r.trace_id as &(dyn ToSql + Sync), &r.ended_at, *span]
            })
            .collect();
        client
            .execute(&sql, &params)
            .map_err(StoreError::postgres("cannot queue the spans"))?;
    }
    Ok(!with_span.is_empty())
}
