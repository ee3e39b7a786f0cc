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

use super::record::{self, Blobs};
use crate::identity::{FieldValue, IdentityField};
use crate::record::{Span, Status, TraceRecord};
use crate::store::error::{StoreError, StoreResult};
use crate::store::record_json::count_column;
use postgres::GenericClient;
use postgres::types::ToSql;

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

    /// Inserts the row (unless its trace id is stored already) and, when it
    /// was new, updates its session and run and queues its span. Returns
    /// whether it was new.
    pub(crate) fn insert(
        &self,
        client: &mut impl GenericClient,
        replica: &str,
    ) -> StoreResult<bool> {
        let marks: Vec<String> = (1..=COLUMN_COUNT).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO traces ({COLUMNS}) VALUES ({}) ON CONFLICT (trace_id) DO NOTHING RETURNING id",
            marks.join(", ")
        );
        let values = self.values(replica);
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        let inserted = client
            .query_opt(&sql, &params)
            .map_err(StoreError::postgres("cannot insert the trace"))?;
        if inserted.is_none() {
            return Ok(false);
        }
        self.count(client)?;
        if let Some(span) = &self.span {
            let r = &self.record;
            client
                .execute(
                    "INSERT INTO spans (trace_id, created_at, span) VALUES ($1, $2, $3)",
                    &[&r.trace_id, &r.ended_at, span],
                )
                .map_err(StoreError::postgres("cannot queue the span"))?;
        }
        Ok(true)
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

    /// Adds the call to its session's and its run's counters.
    fn count(&self, client: &mut impl GenericClient) -> StoreResult<()> {
        let r = &self.record;
        let errors = i64::from(r.status != Status::Ok);
        let tokens = self.tokens();
        if let Some(session_id) = &r.identity.session_id {
            client
                .execute(
                    "INSERT INTO sessions (session_id, run_id, created_at, first_seen, last_seen,
                                           trace_count, error_count, tokens)
                     VALUES ($1, $2, $3, $3, $3, 1, $4, $5)
                     ON CONFLICT (session_id) DO UPDATE SET
                         run_id      = COALESCE(EXCLUDED.run_id, sessions.run_id),
                         first_seen  = LEAST(COALESCE(sessions.first_seen, EXCLUDED.first_seen), EXCLUDED.first_seen),
                         last_seen   = GREATEST(COALESCE(sessions.last_seen, EXCLUDED.last_seen), EXCLUDED.last_seen),
                         trace_count = sessions.trace_count + 1,
                         error_count = sessions.error_count + EXCLUDED.error_count,
                         tokens      = sessions.tokens + EXCLUDED.tokens",
                    &[session_id, &r.identity.run_id, &r.started_at, &errors, &tokens],
                )
                .map_err(StoreError::postgres("cannot count the call in its session"))?;
        }
        if let Some(run_id) = &r.identity.run_id {
            client
                .execute(
                    "INSERT INTO runs (run_id, first_seen, last_seen, trace_count, error_count, tokens)
                     VALUES ($1, $2, $2, 1, $3, $4)
                     ON CONFLICT (run_id) DO UPDATE SET
                         first_seen  = LEAST(runs.first_seen, EXCLUDED.first_seen),
                         last_seen   = GREATEST(runs.last_seen, EXCLUDED.last_seen),
                         trace_count = runs.trace_count + 1,
                         error_count = runs.error_count + EXCLUDED.error_count,
                         tokens      = runs.tokens + EXCLUDED.tokens",
                    &[run_id, &r.started_at, &errors, &tokens],
                )
                .map_err(StoreError::postgres("cannot count the call in its run"))?;
        }
        Ok(())
    }
}
