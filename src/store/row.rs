//! The `traces` row: its columns, a record encoded into them, and a record
//! (or a summary of one) decoded back.
//!
//! A record is split by what each part is, and each fact is stored once:
//!
//! * every scalar fact — ids, identity, route and upstream, model, times,
//!   status, error, usage counts — is a column, so `sqlite3` answers
//!   everyday questions directly and nothing repeats them;
//! * the messages, the answer, the tools and the token data are shared
//!   with the other calls of the session ([`Content`], placed by the
//!   writer's `session_log` into the `content` tables), the row keeps their
//!   ids;
//! * the headers and raw bodies are the `request` and `response` blobs
//!   (`raw`), compressed against that content;
//! * the rest is the `record` JSON (`record_json`).
//!
//! Decoding gathers the parts back, so what comes out is the record that
//! went in.
//!
//! [`Column`] is the one list of the table's columns. The `INSERT` is
//! generated from it with a named parameter per column (`:trace_id,
//! :session_id, …`), and each column knows where its value comes from, so a
//! value cannot land in the wrong column. The identity columns are the
//! identity table's ([`IdentityField::ALL`]): an identity field added there
//! is a column here (and a migration in `schema/`).

use crate::identity::{FieldValue, Identity, IdentityField};
use crate::record::{CallError, ErrorKind, Span, TopLogprob, TraceRecord, Usage};
use crate::store::codec::{self, CodecError};
use crate::store::content::{self, ContentReader};
use crate::store::error::{StoreError, StoreResult};
use crate::store::raw::{self, Dictionary};
use crate::store::record_json::{self, ChoiceTokens};
use crate::store::session_log::{Completion, Content, Placed};
use crate::store::summary::{CallNode, CallSummary, SummaryUsage};
use rusqlite::types::{Null, ToSqlOutput, Value as SqlValue};
use rusqlite::{Connection, Row, ToSql};
use serde_json::{Map, Value};
use std::sync::LazyLock;

/// One column of the `traces` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    Id,
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
    BackendModel,
    ResponseModel,
    ResponseId,
    Stream,
    Status,
    HttpStatus,
    ErrorKind,
    ErrorMessage,
    Timestamp,
    StartedAt,
    FirstChunkAt,
    EndedAt,
    LatencyMs,
    TtftMs,
    InputTokens,
    OutputTokens,
    Tokens,
    SpanId,
    OtelTraceId,
    OtelParentSpanId,
    MessagesNode,
    AnswerNode,
    Tools,
    PromptRun,
    Record,
    Request,
    Response,
}

/// The columns after the identity columns, in table order.
const AFTER_IDENTITY: [Column; 35] = [
    Column::SpanType,
    Column::Route,
    Column::Upstream,
    Column::Protocol,
    Column::Operation,
    Column::Method,
    Column::Path,
    Column::Model,
    Column::BackendModel,
    Column::ResponseModel,
    Column::ResponseId,
    Column::Stream,
    Column::Status,
    Column::HttpStatus,
    Column::ErrorKind,
    Column::ErrorMessage,
    Column::Timestamp,
    Column::StartedAt,
    Column::FirstChunkAt,
    Column::EndedAt,
    Column::LatencyMs,
    Column::TtftMs,
    Column::InputTokens,
    Column::OutputTokens,
    Column::Tokens,
    Column::SpanId,
    Column::OtelTraceId,
    Column::OtelParentSpanId,
    Column::MessagesNode,
    Column::AnswerNode,
    Column::Tools,
    Column::PromptRun,
    Column::Record,
    Column::Request,
    Column::Response,
];

/// Every column in table order.
static COLUMNS: LazyLock<Vec<Column>> = LazyLock::new(|| {
    [Column::Id, Column::TraceId]
        .into_iter()
        .chain(IdentityField::ALL.map(Column::Identity))
        .chain(AFTER_IDENTITY)
        .collect()
});

impl Column {
    /// Every column, in table order: the ids, the identity, the rest.
    pub(crate) fn all() -> impl Iterator<Item = Column> {
        COLUMNS.iter().copied()
    }

    /// The column's position in [`Column::all`] (and in [`RECORD_COLUMNS`]).
    fn at(self) -> usize {
        COLUMNS.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// The column's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Column::Id => "id",
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
            Column::BackendModel => "backend_model",
            Column::ResponseModel => "response_model",
            Column::ResponseId => "response_id",
            Column::Stream => "stream",
            Column::Status => "status",
            Column::HttpStatus => "http_status",
            Column::ErrorKind => "error_kind",
            Column::ErrorMessage => "error_message",
            Column::Timestamp => "timestamp",
            Column::StartedAt => "started_at",
            Column::FirstChunkAt => "first_chunk_at",
            Column::EndedAt => "ended_at",
            Column::LatencyMs => "latency_ms",
            Column::TtftMs => "ttft_ms",
            Column::InputTokens => "input_tokens",
            Column::OutputTokens => "output_tokens",
            Column::Tokens => "tokens",
            Column::SpanId => "span_id",
            Column::OtelTraceId => "otel_trace_id",
            Column::OtelParentSpanId => "otel_parent_span_id",
            Column::MessagesNode => "messages_node",
            Column::AnswerNode => "answer_node",
            Column::Tools => "tools",
            Column::PromptRun => "prompt_run",
            Column::Record => "record",
            Column::Request => "request",
            Column::Response => "response",
        }
    }

    /// The column's value in an encoded row placed at `placed` (`id`: the
    /// row's id when it must keep one, else SQLite's next).
    fn value<'a>(
        self,
        row: &'a EncodedRow,
        placed: &Placed,
        id: Option<i64>,
    ) -> rusqlite::Result<ToSqlOutput<'a>> {
        let r = &row.record;
        let id_of =
            |id: Option<i64>| ToSqlOutput::Owned(id.map_or(SqlValue::Null, SqlValue::Integer));
        let count = |n: Option<u64>| id_of(record_json::count_column(n));
        match self {
            Column::Id => Ok(id_of(id)),
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
            Column::BackendModel => r.backend_model.to_sql(),
            Column::ResponseModel => r.response_model.to_sql(),
            Column::ResponseId => r.response_id.to_sql(),
            Column::Stream => r.stream.to_sql(),
            Column::Status => r.status.to_sql(),
            Column::HttpStatus => r.http_status.to_sql(),
            Column::ErrorKind => Ok(match &r.error {
                Some(e) => e.kind.to_sql()?,
                None => ToSqlOutput::from(Null),
            }),
            Column::ErrorMessage => Ok(match &r.error {
                Some(e) => ToSqlOutput::from(e.message.as_str()),
                None => ToSqlOutput::from(Null),
            }),
            Column::Timestamp => r.timestamp.to_sql(),
            Column::StartedAt => r.started_at.to_sql(),
            Column::FirstChunkAt => r.first_chunk_at.to_sql(),
            Column::EndedAt => r.ended_at.to_sql(),
            Column::LatencyMs => r.latency_ms.to_sql(),
            Column::TtftMs => r.ttft_ms.to_sql(),
            Column::InputTokens => Ok(count(r.usage.input_tokens)),
            Column::OutputTokens => Ok(count(r.usage.output_tokens)),
            Column::Tokens => Ok(count(r.usage.tokens().map(|t| t.min(i64::MAX as u64)))),
            Column::SpanId => r.span_id.to_sql(),
            Column::OtelTraceId => r.otel_trace_id.to_sql(),
            Column::OtelParentSpanId => r.otel_parent_span_id.to_sql(),
            Column::MessagesNode => Ok(id_of(placed.messages_node)),
            Column::AnswerNode => Ok(id_of(placed.answer_node)),
            Column::Tools => Ok(id_of(placed.tools)),
            Column::PromptRun => Ok(id_of(placed.prompt_run)),
            Column::Record => row.json.to_sql(),
            Column::Request => row.request.to_sql(),
            Column::Response => row.response.to_sql(),
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

/// A record encoded for its row: the record's scalar facts (for the
/// columns), its record JSON, its shared content, its request and response
/// blobs, and its span for the export outbox.
#[derive(Debug)]
pub(crate) struct EncodedRow {
    record: TraceRecord,
    json: String,
    content: Content,
    request: Option<Vec<u8>>,
    response: Option<Vec<u8>>,
    span: Option<String>,
}

impl EncodedRow {
    /// Encodes a record and its span (off the writer thread: serialising
    /// and compressing are CPU work).
    pub(crate) fn encode(mut record: TraceRecord, span: Option<&Span>) -> StoreResult<EncodedRow> {
        let span = span
            .map(serde_json::to_string)
            .transpose()
            .map_err(encoding("the span"))?;
        let json = record_json::encode(&record).map_err(|source| StoreError::Encode {
            what: "the record",
            source,
        })?;
        let content = take_content(&mut record)?;
        let request_dictionary = Dictionary::request(content.tools.as_deref(), &content.messages);
        let completions: Vec<&[u32]> = content
            .completions
            .iter()
            .map(|c| c.token_ids.as_slice())
            .filter(|ids| !ids.is_empty())
            .collect();
        let response_dictionary =
            Dictionary::response(&content.prompt, &completions, content.answer.as_deref());
        let blob = |what, headers: &Map<String, Value>, body: Option<&Value>, d: &Dictionary| {
            raw::encode(headers, body, d).map_err(|source| StoreError::Encode { what, source })
        };
        let request = blob(
            "the request",
            &record.request_headers,
            record.raw_request.as_ref(),
            &request_dictionary,
        )?;
        let response = blob(
            "the response",
            &record.response_headers,
            record.raw_response.as_ref(),
            &response_dictionary,
        )?;
        for part in [&mut record.request_headers, &mut record.response_headers] {
            *part = Map::new();
        }
        (record.raw_request, record.raw_response) = (None, None);
        Ok(EncodedRow {
            record,
            json,
            content,
            request,
            response,
            span,
        })
    }

    /// The record's scalar facts (its columns).
    pub(crate) fn record(&self) -> &TraceRecord {
        &self.record
    }

    /// The shared content, for the writer to place.
    pub(crate) fn content(&self) -> &Content {
        &self.content
    }

    /// Input plus output tokens, when known.
    pub(crate) fn tokens(&self) -> Option<i64> {
        record_json::count_column(self.record.usage.tokens().map(|t| t.min(i64::MAX as u64)))
    }

    /// The span's JSON, when the call has one for export.
    pub(crate) fn span(&self) -> Option<&str> {
        self.span.as_deref()
    }

    /// Inserts the row into `traces` with its content at `placed`, and its
    /// choices' `completions` rows; returns the row's id. `id` keeps a
    /// given id (a migrated row's), else SQLite picks the next.
    pub(crate) fn insert(
        &self,
        conn: &Connection,
        placed: &Placed,
        id: Option<i64>,
    ) -> rusqlite::Result<i64> {
        let mut stmt = conn.prepare_cached(&INSERT.sql)?;
        for (column, param) in &INSERT.params {
            let index = stmt
                .parameter_index(param)?
                .ok_or_else(|| rusqlite::Error::InvalidParameterName(param.clone()))?;
            stmt.raw_bind_parameter(index, column.value(self, placed, id)?)?;
        }
        stmt.raw_execute()?;
        let trace = conn.last_insert_rowid();
        for (completion, run) in self.content.completions.iter().zip(&placed.completion_runs) {
            let row = content::CompletionRow {
                choice: completion.choice,
                run: *run,
                logprobs: completion.logprobs.as_deref(),
                top_logprobs: completion.top_logprobs.as_deref(),
            };
            content::insert_completion(conn, trace, &row)?;
        }
        Ok(trace)
    }
}

fn encoding(what: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |e| StoreError::Encode {
        what,
        source: CodecError::Json(e),
    }
}

/// Moves the shared content out of `record` (the record JSON is made
/// already): messages, answer, tools, token data.
fn take_content(record: &mut TraceRecord) -> StoreResult<Content> {
    let to_text = |v: &Value| serde_json::to_string(v).map_err(encoding("a message"));
    let messages = std::mem::take(&mut record.messages)
        .iter()
        .map(to_text)
        .collect::<StoreResult<_>>()?;
    let answer = std::mem::take(&mut record.response_message);
    let answer = (!answer.is_empty())
        .then(|| serde_json::to_string(&answer))
        .transpose()
        .map_err(encoding("the answer"))?;
    let tools = std::mem::take(&mut record.tools);
    let tools = (!tools.is_empty())
        .then(|| serde_json::to_string(&tools))
        .transpose()
        .map_err(encoding("the tools"))?;
    let mut completions = Vec::new();
    for (choice, c) in std::mem::take(&mut record.choices).into_iter().enumerate() {
        if c.token_ids.is_empty() && c.logprobs.is_none() && c.top_logprobs.is_none() {
            continue;
        }
        let top_logprobs = match &c.top_logprobs {
            Some(top) => {
                let value = serde_json::to_value(top).map_err(encoding("the top logprobs"))?;
                codec::compress_json(Some(&value)).map_err(|source| StoreError::Encode {
                    what: "the top logprobs",
                    source,
                })?
            }
            None => None,
        };
        completions.push(Completion {
            choice,
            token_ids: c.token_ids,
            logprobs: c.logprobs.as_deref().map(codec::pack_f64),
            top_logprobs,
        });
    }
    (
        record.completion_token_ids,
        record.logprobs,
        record.tool_calls,
    ) = (Vec::new(), None, Vec::new());
    Ok(Content {
        session: record.identity.session_id.clone(),
        messages,
        answer,
        tools,
        prompt: std::mem::take(&mut record.prompt_token_ids),
        completions,
    })
}

/// Every column, for [`decode_record`].
pub(crate) static RECORD_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    Column::all()
        .map(Column::name)
        .collect::<Vec<_>>()
        .join(", ")
});

/// Rebuilds a record from its row (all [`RECORD_COLUMNS`]) and the shared
/// content it points at, read through `reader`.
pub(crate) fn decode_record(
    conn: &Connection,
    row: &Row<'_>,
    reader: &mut ContentReader,
) -> StoreResult<TraceRecord> {
    let mut record = scalar_facts(row)?;
    let node = |c: Column| row.get::<_, Option<i64>>(c.at());
    let messages = match node(Column::MessagesNode)? {
        Some(id) => reader.messages(conn, id)?,
        None => Default::default(),
    };
    let answer = match node(Column::AnswerNode)? {
        Some(id) => reader.messages(conn, id)?.last().map(|(_, a)| a.clone()),
        None => None,
    };
    let tools = match node(Column::Tools)? {
        Some(id) => Some(reader.tools(conn, id)?),
        None => None,
    };
    let prompt = match node(Column::PromptRun)? {
        Some(id) => content::flatten(&reader.tokens(conn, id)?),
        None => Vec::new(),
    };
    let id: i64 = row.get(Column::Id.at())?;
    let tokens = choice_tokens(conn, reader, id)?;
    let texts: Vec<&str> = messages.iter().map(|(_, m)| &**m).collect();
    record.messages = texts
        .iter()
        .map(|m| parse("message_nodes", m))
        .collect::<StoreResult<_>>()?;
    if let Some(answer) = &answer {
        record.response_message = parse("message_nodes", answer)?;
    }
    if let Some(tools) = &tools {
        record.tools = parse("tool_lists", tools)?;
    }
    let request = Dictionary::request(tools.as_deref(), &texts);
    let completions: Vec<&[u32]> = tokens
        .iter()
        .map(|t| t.token_ids.as_slice())
        .filter(|ids| !ids.is_empty())
        .collect();
    let response = Dictionary::response(&prompt, &completions, answer.as_deref());
    let blob = |c: Column| row.get::<_, Option<Vec<u8>>>(c.at());
    if let Some(blob) = blob(Column::Request)? {
        (record.request_headers, record.raw_request) =
            raw::decode(&blob, &request).map_err(|e| corrupt("request", e))?;
    }
    if let Some(blob) = blob(Column::Response)? {
        (record.response_headers, record.raw_response) =
            raw::decode(&blob, &response).map_err(|e| corrupt("response", e))?;
    }
    record.prompt_token_ids = prompt;
    let json: String = row.get(Column::Record.at())?;
    record_json::restore(&json, &mut record, tokens).map_err(|e| corrupt("record", e))?;
    Ok(record)
}

/// The record's columns: its scalar facts.
fn scalar_facts(row: &Row<'_>) -> StoreResult<TraceRecord> {
    let get = |c: Column| row.get_ref(c.at());
    let mut identity = Map::new();
    for field in IdentityField::ALL {
        match get(Column::Identity(field))? {
            rusqlite::types::ValueRef::Text(t) => {
                identity.insert(
                    field.name().into(),
                    Value::String(String::from_utf8_lossy(t).into_owned()),
                );
            }
            rusqlite::types::ValueRef::Integer(n) => {
                identity.insert(field.name().into(), Value::from(n));
            }
            _ => {}
        }
    }
    let identity: Identity = serde_json::from_value(Value::Object(identity))
        .map_err(|e| corrupt("identity", e.into()))?;
    let at = |c: Column| c.at();
    let error_kind: Option<ErrorKind> = row.get(at(Column::ErrorKind))?;
    let error_message: Option<String> = row.get(at(Column::ErrorMessage))?;
    let count = |c: Column| {
        row.get::<_, Option<i64>>(at(c))
            .map(|n| n.map(i64::unsigned_abs))
    };
    Ok(TraceRecord {
        trace_id: row.get(at(Column::TraceId))?,
        span_id: row.get(at(Column::SpanId))?,
        otel_trace_id: row.get(at(Column::OtelTraceId))?,
        otel_parent_span_id: row.get(at(Column::OtelParentSpanId))?,
        identity,
        span_type: row.get(at(Column::SpanType))?,
        method: row.get(at(Column::Method))?,
        path: row.get(at(Column::Path))?,
        route: row.get(at(Column::Route))?,
        upstream: row.get(at(Column::Upstream))?,
        protocol: row.get(at(Column::Protocol))?,
        operation: row.get(at(Column::Operation))?,
        model: row.get(at(Column::Model))?,
        backend_model: row.get(at(Column::BackendModel))?,
        stream: row.get(at(Column::Stream))?,
        response_id: row.get(at(Column::ResponseId))?,
        response_model: row.get(at(Column::ResponseModel))?,
        usage: Usage {
            input_tokens: count(Column::InputTokens)?,
            output_tokens: count(Column::OutputTokens)?,
            ..Usage::default()
        },
        timestamp: row.get(at(Column::Timestamp))?,
        started_at: row.get(at(Column::StartedAt))?,
        first_chunk_at: row.get(at(Column::FirstChunkAt))?,
        ended_at: row.get(at(Column::EndedAt))?,
        latency_ms: row.get(at(Column::LatencyMs))?,
        ttft_ms: row.get(at(Column::TtftMs))?,
        status: row.get(at(Column::Status))?,
        http_status: row.get(at(Column::HttpStatus))?,
        error: error_kind.map(|kind| CallError {
            kind,
            message: error_message.unwrap_or_default(),
        }),
        ..TraceRecord::default()
    })
}

/// The token data of each choice of call `id` that has some.
fn choice_tokens(
    conn: &Connection,
    reader: &mut ContentReader,
    id: i64,
) -> StoreResult<Vec<ChoiceTokens>> {
    let mut tokens = Vec::new();
    for stored in content::completions(conn, id)? {
        let token_ids = match stored.run {
            Some(run) => reader
                .tokens(conn, run)?
                .last()
                .map(|(_, ids)| ids.to_vec())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let logprobs = stored
            .logprobs
            .as_deref()
            .map(codec::unpack_f64)
            .transpose()
            .map_err(|e| corrupt("logprobs", e))?;
        let top_logprobs: Option<Vec<Vec<TopLogprob>>> = match stored.top_logprobs.as_deref() {
            Some(blob) => {
                let value = codec::decompress_json(blob).map_err(|e| corrupt("top_logprobs", e))?;
                Some(serde_json::from_value(value).map_err(|e| corrupt("top_logprobs", e.into()))?)
            }
            None => None,
        };
        tokens.push(ChoiceTokens {
            choice: stored.choice,
            token_ids,
            logprobs,
            top_logprobs,
        });
    }
    Ok(tokens)
}

fn parse<T: serde::de::DeserializeOwned>(what: &'static str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e.into()))
}

fn corrupt(what: &'static str, source: CodecError) -> StoreError {
    StoreError::Corrupt { what, source }
}

/// The columns of a [`CallSummary`], in [`decode_summary`]'s order.
macro_rules! summary_columns {
    () => {
        "trace_id, started_at, run_id, session_id, harness, step_id, model, operation, \
         stream, status, http_status, error_kind, error_message, \
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

/// The columns [`decode_node`] reads: the summary's, then the node's own
/// (the answer's preview comes from its message node).
pub(crate) const NODE_COLUMNS: &str = concat!(
    summary_columns!(),
    ", id, span_id, parent_span_id, protocol, ended_at, \
     (SELECT substr(json_extract(a.message, '$.content'), 1, 160) \
      FROM message_nodes a WHERE a.id = traces.answer_node), \
     (SELECT CAST(json_extract(a.message, '$.tool_calls[0].function.name') AS TEXT) \
      FROM message_nodes a WHERE a.id = traces.answer_node)"
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::session_log::SessionLog;

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
                .contains("VALUES (:id, :trace_id, :session_id, :run_id,")
        );
    }

    #[test]
    fn a_record_round_trips_through_its_row() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate::apply(&mut conn).unwrap();
        let mut record = TraceRecord {
            trace_id: "t-1".into(),
            prompt_token_ids: vec![1, 2, 3],
            messages: vec![serde_json::json!({"role": "user", "content": "hi"})],
            raw_request: Some(serde_json::json!({"model": "m"})),
            timestamp: 1_796_121_963.360_499_9,
            ..TraceRecord::default()
        };
        record.identity.step_id = Some(4);
        record.identity.run_id = Some("r".into());
        let row = EncodedRow::encode(record.clone(), None).unwrap();
        let mut log = SessionLog::default();
        let (placed, _) = log.place(&conn, row.content()).unwrap();
        row.insert(&conn, &placed, None).unwrap();
        let back = conn
            .query_row(
                &format!("SELECT {} FROM traces", *RECORD_COLUMNS),
                [],
                |r| Ok(decode_record(&conn, r, &mut ContentReader::default())),
            )
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
