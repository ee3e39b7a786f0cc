//! The `traces` row: its columns, a record encoded into them, and a record
//! (or a summary of one) decoded back.
//!
//! A row holds a record three ways. The columns a user filters or sorts on
//! (identity, model, status, times, tokens) are real columns, so `sqlite3`
//! answers everyday questions directly. The record itself is kept as JSON
//! (`record`), minus its bulky parts, which sit in blob columns in the
//! compact encodings of `codec`: token ids and logprobs packed per choice,
//! top logprobs and the raw request and response compressed. Decoding puts
//! the bulky parts back, choice by choice, so what comes out is the record
//! that went in.
//!
//! [`Column`] is the one list of the table's columns. The `INSERT` is
//! generated from it with a named parameter per column (`:trace_id,
//! :session_id, …`), and each column knows where its value comes from, so a
//! value cannot land in the wrong column. The identity columns are the
//! identity table's ([`IdentityField::ALL`]): an identity field added there
//! is a column here (and a migration in `schema/`).

use crate::identity::{FieldValue, IdentityField};
use crate::record::{CallError, ErrorKind, Span, TopLogprob, TraceRecord};
use crate::store::codec::{self, CodecError};
use crate::store::error::{StoreError, StoreResult};
use crate::store::summary::{Attempt, CallNode, CallSummary, SummaryUsage};
use rusqlite::types::{Null, ToSqlOutput};
use rusqlite::{Connection, Row, ToSql};
use std::sync::LazyLock;

/// One column of the `traces` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    TraceId,
    Identity(IdentityField),
    SpanType,
    Route,
    Upstream,
    Protocol,
    Operation,
    Method,
    Path,
    Model,
    ResponseModel,
    Stream,
    Status,
    HttpStatus,
    ErrorKind,
    StartedAt,
    EndedAt,
    LatencyMs,
    TtftMs,
    InputTokens,
    OutputTokens,
    Tokens,
    Record,
    PromptTokenIds,
    CompletionTokenIds,
    Logprobs,
    TopLogprobs,
    RawRequest,
    RawResponse,
}

/// The identity fields whose columns a later migration appended to the
/// table (`0004_rllm.sql`).
const ADDED_IDENTITY: [IdentityField; 1] = [IdentityField::WeightVersion];

/// The columns after the identity columns, in table order.
const AFTER_IDENTITY: [Column; 27] = [
    Column::SpanType,
    Column::Route,
    Column::Upstream,
    Column::Protocol,
    Column::Operation,
    Column::Method,
    Column::Path,
    Column::Model,
    Column::ResponseModel,
    Column::Stream,
    Column::Status,
    Column::HttpStatus,
    Column::ErrorKind,
    Column::StartedAt,
    Column::EndedAt,
    Column::LatencyMs,
    Column::TtftMs,
    Column::InputTokens,
    Column::OutputTokens,
    Column::Tokens,
    Column::Record,
    Column::PromptTokenIds,
    Column::CompletionTokenIds,
    Column::Logprobs,
    Column::TopLogprobs,
    Column::RawRequest,
    Column::RawResponse,
];

impl Column {
    /// Every column, in table order: the id, the identity fields of the
    /// first schema, the rest, then the identity fields later migrations
    /// added (`ALTER TABLE ... ADD COLUMN` appends).
    pub(crate) fn all() -> impl Iterator<Item = Column> {
        let (first, added): (Vec<_>, Vec<_>) = IdentityField::ALL
            .into_iter()
            .partition(|f| !ADDED_IDENTITY.contains(f));
        std::iter::once(Column::TraceId)
            .chain(first.into_iter().map(Column::Identity))
            .chain(AFTER_IDENTITY)
            .chain(added.into_iter().map(Column::Identity))
    }

    /// The column's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Column::TraceId => "trace_id",
            Column::Identity(field) => field.name(),
            Column::SpanType => "span_type",
            Column::Route => "route",
            Column::Upstream => "upstream",
            Column::Protocol => "protocol",
            Column::Operation => "operation",
            Column::Method => "method",
            Column::Path => "path",
            Column::Model => "model",
            Column::ResponseModel => "response_model",
            Column::Stream => "stream",
            Column::Status => "status",
            Column::HttpStatus => "http_status",
            Column::ErrorKind => "error_kind",
            Column::StartedAt => "started_at",
            Column::EndedAt => "ended_at",
            Column::LatencyMs => "latency_ms",
            Column::TtftMs => "ttft_ms",
            Column::InputTokens => "input_tokens",
            Column::OutputTokens => "output_tokens",
            Column::Tokens => "tokens",
            Column::Record => "record",
            Column::PromptTokenIds => "prompt_token_ids",
            Column::CompletionTokenIds => "completion_token_ids",
            Column::Logprobs => "logprobs",
            Column::TopLogprobs => "top_logprobs",
            Column::RawRequest => "raw_request",
            Column::RawResponse => "raw_response",
        }
    }

    /// The column's value in an encoded row.
    fn value(self, row: &EncodedRow) -> rusqlite::Result<ToSqlOutput<'_>> {
        let r = &row.record;
        match self {
            Column::TraceId => r.trace_id.to_sql(),
            Column::Identity(field) => Ok(match r.identity.get(field) {
                Some(FieldValue::Text(text)) => ToSqlOutput::from(text),
                Some(FieldValue::Integer(n)) => ToSqlOutput::from(n),
                None => ToSqlOutput::from(Null),
            }),
            Column::SpanType => r.span_type.to_sql(),
            Column::Route => r.route.to_sql(),
            Column::Upstream => r.upstream.to_sql(),
            Column::Protocol => r.protocol.to_sql(),
            Column::Operation => r.operation.to_sql(),
            Column::Method => r.method.to_sql(),
            Column::Path => r.path.to_sql(),
            Column::Model => r.model.to_sql(),
            Column::ResponseModel => r.response_model.to_sql(),
            Column::Stream => r.stream.to_sql(),
            Column::Status => r.status.to_sql(),
            Column::HttpStatus => r.http_status.to_sql(),
            Column::ErrorKind => row.error_kind.to_sql(),
            Column::StartedAt => r.started_at.to_sql(),
            Column::EndedAt => r.ended_at.to_sql(),
            Column::LatencyMs => r.latency_ms.to_sql(),
            Column::TtftMs => r.ttft_ms.to_sql(),
            Column::InputTokens => row.input_tokens.to_sql(),
            Column::OutputTokens => row.output_tokens.to_sql(),
            Column::Tokens => row.tokens.to_sql(),
            Column::Record => row.json.to_sql(),
            Column::PromptTokenIds => row.blobs.prompt_token_ids.to_sql(),
            Column::CompletionTokenIds => row.blobs.completion_token_ids.to_sql(),
            Column::Logprobs => row.blobs.logprobs.to_sql(),
            Column::TopLogprobs => row.blobs.top_logprobs.to_sql(),
            Column::RawRequest => row.blobs.raw_request.to_sql(),
            Column::RawResponse => row.blobs.raw_response.to_sql(),
        }
    }
}

/// The `INSERT` of a row, generated from [`Column::all`], and each column's
/// named parameter.
struct Insert {
    sql: String,
    params: Vec<(Column, String)>,
}

static INSERT: LazyLock<Insert> = LazyLock::new(|| {
    let params: Vec<(Column, String)> = Column::all()
        .map(|column| (column, format!(":{}", column.name())))
        .collect();
    let names: Vec<&str> = params.iter().map(|(c, _)| c.name()).collect();
    let marks: Vec<&str> = params.iter().map(|(_, p)| p.as_str()).collect();
    Insert {
        sql: format!(
            "INSERT INTO traces ({}) VALUES ({})",
            names.join(", "),
            marks.join(", ")
        ),
        params,
    }
});

/// Record fields stored in their own compact columns rather than the JSON.
/// (`completion_token_ids` and `logprobs` are the first choice's, rebuilt
/// from the per-choice columns on read.)
const BLOB_FIELDS: &[&str] = &[
    "prompt_token_ids",
    "completion_token_ids",
    "logprobs",
    "raw_request",
    "raw_response",
];

/// A record's bulky parts, encoded.
#[derive(Debug, Default)]
struct Blobs {
    prompt_token_ids: Option<Vec<u8>>,
    completion_token_ids: Option<Vec<u8>>,
    logprobs: Option<Vec<u8>>,
    top_logprobs: Option<Vec<u8>>,
    raw_request: Option<Vec<u8>>,
    raw_response: Option<Vec<u8>>,
}

/// A record encoded for its row: the record (for its columns, with its
/// bulky parts moved out), its JSON, its blobs, and its span for the export
/// outbox.
#[derive(Debug)]
pub(crate) struct EncodedRow {
    record: TraceRecord,
    json: String,
    blobs: Blobs,
    error_kind: Option<ErrorKind>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    tokens: Option<i64>,
    span: Option<String>,
}

impl EncodedRow {
    /// Encodes a record and its span (off the writer thread: compression is
    /// CPU work).
    pub(crate) fn encode(mut record: TraceRecord, span: Option<&Span>) -> StoreResult<EncodedRow> {
        let span = span
            .map(serde_json::to_string)
            .transpose()
            .map_err(encoding("the span"))?;
        let blobs = take_blobs(&mut record)?;
        let mut value = serde_json::to_value(&record).map_err(encoding("the record"))?;
        if let Some(object) = value.as_object_mut() {
            for field in BLOB_FIELDS {
                object.shift_remove(*field);
            }
        }
        let count = |n: Option<u64>| n.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
        Ok(EncodedRow {
            error_kind: record.error.as_ref().map(|e| e.kind),
            input_tokens: count(record.usage.input_tokens),
            output_tokens: count(record.usage.output_tokens),
            tokens: count(record.usage.tokens()),
            json: value.to_string(),
            blobs,
            record,
            span,
        })
    }

    /// The record, without its bulky parts.
    pub(crate) fn record(&self) -> &TraceRecord {
        &self.record
    }

    /// Input plus output tokens, when known.
    pub(crate) fn tokens(&self) -> Option<i64> {
        self.tokens
    }

    /// The span's JSON, when the call has one for export.
    pub(crate) fn span(&self) -> Option<&str> {
        self.span.as_deref()
    }

    /// Inserts the row into `traces`.
    pub(crate) fn insert(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(&INSERT.sql)?;
        for (column, param) in &INSERT.params {
            let index = stmt
                .parameter_index(param)?
                .ok_or_else(|| rusqlite::Error::InvalidParameterName(param.clone()))?;
            stmt.raw_bind_parameter(index, column.value(self)?)?;
        }
        stmt.raw_execute().map(|_| ())
    }
}

fn encoding(what: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |e| StoreError::Encode {
        what,
        source: CodecError::Json(e),
    }
}

/// Moves the bulky parts out of `record` and encodes them.
fn take_blobs(record: &mut TraceRecord) -> StoreResult<Blobs> {
    let prompt_token_ids = codec::pack_u32(&std::mem::take(&mut record.prompt_token_ids));
    record.completion_token_ids = Vec::new();
    record.logprobs = None;
    let choices = &mut record.choices;
    let ids: Vec<Vec<u32>> = choices
        .iter_mut()
        .map(|c| std::mem::take(&mut c.token_ids))
        .collect();
    let logprobs: Vec<Option<Vec<f64>>> = choices.iter_mut().map(|c| c.logprobs.take()).collect();
    let top: Vec<Option<Vec<Vec<TopLogprob>>>> =
        choices.iter_mut().map(|c| c.top_logprobs.take()).collect();
    let top_logprobs = if top.iter().all(Option::is_none) {
        None
    } else {
        let value = serde_json::to_value(&top).map_err(encoding("the top logprobs"))?;
        compress("the top logprobs", Some(&value))?
    };
    Ok(Blobs {
        prompt_token_ids,
        completion_token_ids: codec::pack_u32_lists(
            &ids.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        ),
        logprobs: codec::pack_f64_lists(&logprobs.iter().map(Option::as_deref).collect::<Vec<_>>()),
        top_logprobs,
        raw_request: compress("the raw request", record.raw_request.take().as_ref())?,
        raw_response: compress("the raw response", record.raw_response.take().as_ref())?,
    })
}

fn compress(what: &'static str, value: Option<&serde_json::Value>) -> StoreResult<Option<Vec<u8>>> {
    codec::compress_json(value).map_err(|source| StoreError::Encode { what, source })
}

/// The columns [`decode_record`] reads, in its order.
pub(crate) const RECORD_COLUMNS: &str = "record, prompt_token_ids, completion_token_ids, \
     logprobs, top_logprobs, raw_request, raw_response";

/// Rebuilds a record from its JSON and blob columns ([`RECORD_COLUMNS`]).
pub(crate) fn decode_record(row: &Row<'_>) -> StoreResult<TraceRecord> {
    let json: String = row.get(0)?;
    let blob = |i: usize| row.get::<_, Option<Vec<u8>>>(i);
    let (prompt, completion, logprobs) = (blob(1)?, blob(2)?, blob(3)?);
    let (top_logprobs, raw_request, raw_response) = (blob(4)?, blob(5)?, blob(6)?);
    let mut record: TraceRecord =
        serde_json::from_str(&json).map_err(|e| corrupt("record", CodecError::Json(e)))?;
    record.prompt_token_ids = prompt.as_deref().map(codec::unpack_u32).unwrap_or_default();
    let ids = completion.as_deref().map(codec::unpack_u32_lists);
    let lps = logprobs.as_deref().map(codec::unpack_f64_lists);
    let tops: Vec<Option<Vec<Vec<TopLogprob>>>> = match top_logprobs.as_deref() {
        Some(blob) => decompress("top_logprobs", blob).and_then(|value| {
            serde_json::from_value(value).map_err(|e| corrupt("top_logprobs", e.into()))
        })?,
        None => Vec::new(),
    };
    let (ids, lps) = (ids.unwrap_or_default(), lps.unwrap_or_default());
    for (i, choice) in record.choices.iter_mut().enumerate() {
        choice.token_ids = ids.get(i).cloned().unwrap_or_default();
        choice.logprobs = lps.get(i).cloned().flatten();
        choice.top_logprobs = tops.get(i).cloned().flatten();
    }
    if let Some(first) = record.choices.first() {
        record.completion_token_ids = first.token_ids.clone();
        record.logprobs = first.logprobs.clone().filter(|l| !l.is_empty());
    }
    record.raw_request = raw_request
        .map(|b| decompress("raw_request", &b))
        .transpose()?;
    record.raw_response = raw_response
        .map(|b| decompress("raw_response", &b))
        .transpose()?;
    Ok(record)
}

fn decompress(what: &'static str, blob: &[u8]) -> StoreResult<serde_json::Value> {
    codec::decompress_json(blob).map_err(|source| corrupt(what, source))
}

fn corrupt(what: &'static str, source: CodecError) -> StoreError {
    StoreError::Corrupt { what, source }
}

/// The columns of a [`CallSummary`], in [`decode_summary`]'s order.
macro_rules! summary_columns {
    () => {
        "trace_id, started_at, run_id, session_id, harness, step_id, model, operation, \
         stream, status, http_status, error_kind, \
         CAST(json_extract(record, '$.error.message') AS TEXT), \
         latency_ms, ttft_ms, input_tokens, output_tokens"
    };
}

/// The columns [`decode_summary`] reads.
pub(crate) const SUMMARY_COLUMNS: &str = summary_columns!();

/// A summary from the [`SUMMARY_COLUMNS`] at the start of a row.
pub(crate) fn decode_summary(row: &Row<'_>) -> StoreResult<CallSummary> {
    let error_kind: Option<ErrorKind> = row.get(11)?;
    let error_message: Option<String> = row.get(12)?;
    Ok(CallSummary {
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

/// The columns [`decode_node`] reads: the summary's, then the node's own.
pub(crate) const NODE_COLUMNS: &str = concat!(
    summary_columns!(),
    ", rowid, CAST(json_extract(record, '$.span_id') AS TEXT), parent_span_id, protocol, \
     ended_at, substr(json_extract(record, '$.response_message.content'), 1, 160), \
     CAST(json_extract(record, '$.response_message.tool_calls[0].function.name') AS TEXT), \
     method, path"
);

/// A call node from the [`NODE_COLUMNS`] of a row.
pub(crate) fn decode_node(row: &Row<'_>) -> StoreResult<CallNode> {
    Ok(CallNode {
        summary: decode_summary(row)?,
        seq: row.get(17)?,
        span_id: row.get(18)?,
        parent_span_id: row.get(19)?,
        protocol: row.get(20)?,
        ended_at: row.get(21)?,
        preview: row.get(22)?,
        tool_call: row.get(23)?,
        method: row.get(24)?,
        path: row.get(25)?,
        // Which attempt a call is depends on its neighbours (`attempts`).
        attempt: Attempt::FIRST,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_columns_are_the_tables_in_its_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate::apply(&mut conn).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info('traces') ORDER BY cid")
            .unwrap();
        let table: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let ours: Vec<&str> = Column::all().map(Column::name).collect();
        assert_eq!(table, ours);
        assert!(
            INSERT
                .sql
                .contains("VALUES (:trace_id, :session_id, :run_id,")
        );
    }

    #[test]
    fn a_record_round_trips_through_its_row() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate::apply(&mut conn).unwrap();
        let mut record = TraceRecord {
            trace_id: "t-1".into(),
            prompt_token_ids: vec![1, 2, 3],
            raw_request: Some(serde_json::json!({"model": "m"})),
            ..TraceRecord::default()
        };
        record.identity.step_id = Some(4);
        record.identity.run_id = Some("r".into());
        EncodedRow::encode(record.clone(), None)
            .unwrap()
            .insert(&conn)
            .unwrap();
        let back = conn
            .query_row(&format!("SELECT {RECORD_COLUMNS} FROM traces"), [], |row| {
                Ok(decode_record(row))
            })
            .unwrap()
            .unwrap();
        assert_eq!(back, record);
        let (step, run): (i64, String) = conn
            .query_row("SELECT step_id, run_id FROM traces", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((step, run.as_str()), (4, "r"));
    }
}
