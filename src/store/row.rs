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
use crate::store::raw::{self, Dictionary, Own, References};
use crate::store::record_json::{self, ChoiceTokens};
use crate::store::session_log::{Completion, Content, Placed};
use crate::store::summary::{Attempt, CallNode, CallSummary, SummaryUsage};
use crate::trace_context::{derived_trace_id, span_id_for};
use rusqlite::types::{Null, ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, Row, ToSql};
use serde_json::{Map, Value};
use std::sync::Arc;
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
    FirstChunkUs,
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
    RawRef,
    Record,
    Raw,
    CostUsd,
}

/// The columns after the identity columns, in table order.
const AFTER_IDENTITY: [Column; 36] = [
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
    Column::FirstChunkUs,
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
    Column::RawRef,
    Column::Record,
    Column::Raw,
    Column::CostUsd,
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

    /// The schema version that added the column: 3 (the session-linear
    /// table), or the migration that added it later.
    fn since(self) -> i64 {
        match self {
            Column::CostUsd => 5,
            _ => 3,
        }
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
            Column::FirstChunkUs => "first_chunk_us",
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
            Column::RawRef => "raw_ref",
            Column::Record => "record",
            Column::Raw => "raw",
            Column::CostUsd => "cost_usd",
        }
    }

    /// The column's value in an encoded row placed at `placed` (`id`: the
    /// row's id when it must keep one, else SQLite's next).
    fn value<'a>(
        self,
        row: &'a EncodedRow,
        placed: &'a Placed,
        id: Option<i64>,
    ) -> rusqlite::Result<ToSqlOutput<'a>> {
        let r = &row.record;
        let count = |n: Option<u64>| integer(record_json::count_column(n));
        match self {
            Column::Id => Ok(integer(id)),
            Column::TraceId => r.trace_id.to_sql(),
            Column::Identity(field) => Ok(identity_value(r.identity.get(field))),
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
            Column::ErrorKind => r.error.as_ref().map_or(Ok(null()), |e| e.kind.to_sql()),
            Column::ErrorMessage => Ok(text_or_null(r.error.as_ref().map(|e| &*e.message))),
            Column::Timestamp => r.timestamp.to_sql(),
            Column::StartedAt => r.started_at.to_sql(),
            Column::FirstChunkUs => Ok(integer(record_json::first_chunk_offset(r))),
            Column::EndedAt => r.ended_at.to_sql(),
            Column::LatencyMs => r.latency_ms.to_sql(),
            Column::TtftMs => r.ttft_ms.to_sql(),
            Column::InputTokens => Ok(count(r.usage.input_tokens)),
            Column::OutputTokens => Ok(count(r.usage.output_tokens)),
            Column::Tokens => Ok(integer(row.tokens())),
            Column::SpanId => Ok(unless_derived(&r.span_id, row.derived.span_id)),
            Column::OtelTraceId => Ok(unless_derived(&r.otel_trace_id, row.derived.otel_trace_id)),
            Column::OtelParentSpanId => r.otel_parent_span_id.to_sql(),
            Column::MessagesNode => Ok(integer(placed.messages_node)),
            Column::AnswerNode => Ok(integer(placed.answer_node)),
            Column::Tools => Ok(integer(placed.tools)),
            Column::PromptRun => Ok(integer(placed.prompt_run)),
            Column::RawRef => Ok(integer(row.raw_reference(placed))),
            Column::CostUsd => r.cost_usd.to_sql(),
            Column::Record => row.json.to_sql(),
            Column::Raw => match &placed.raw {
                Some(settled) => Ok(ToSqlOutput::from(settled.blob.as_slice())),
                None => row.raw.to_sql(),
            },
        }
    }
}

/// SQL's NULL.
fn null() -> ToSqlOutput<'static> {
    ToSqlOutput::from(Null)
}

/// An integer column's value, NULL for none.
fn integer(n: Option<i64>) -> ToSqlOutput<'static> {
    ToSqlOutput::Owned(n.map_or(SqlValue::Null, SqlValue::Integer))
}

/// A text column's value, NULL for none.
fn text_or_null(text: Option<&str>) -> ToSqlOutput<'_> {
    match text {
        Some(text) => ToSqlOutput::from(text),
        None => null(),
    }
}

/// An identity field's column value.
fn identity_value(value: Option<FieldValue<'_>>) -> ToSqlOutput<'_> {
    match value {
        Some(FieldValue::Text(text)) => ToSqlOutput::from(text),
        Some(FieldValue::Integer(n)) => ToSqlOutput::from(n),
        None => null(),
    }
}

/// An id the reader can derive again is not stored: NULL says "derived".
fn unless_derived(id: &str, derived: bool) -> ToSqlOutput<'_> {
    text_or_null((!derived).then_some(id))
}

/// The `INSERT` of a row, generated from [`Column::all`], and each column's
/// named parameter, numbered by its position (from 1).
struct Insert {
    sql: String,
    params: Vec<(Column, String)>,
}

static INSERT: LazyLock<Insert> = LazyLock::new(|| Insert::of(i64::MAX));

/// The `INSERT` of migration 3's conversion, which runs before the columns
/// later migrations add exist (they fill those with their defaults).
static CONVERSION_INSERT: LazyLock<Insert> = LazyLock::new(|| Insert::of(3));

impl Insert {
    /// The insert of the columns the table has at schema `version`.
    fn of(version: i64) -> Insert {
        let params: Vec<(Column, String)> = Column::all()
            .filter(|column| column.since() <= version)
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
    }
}

/// A record encoded for its row: the record's scalar facts (for the
/// columns), its record JSON, its shared content, its request and response
/// blobs, and its span for the export outbox.
#[derive(Debug)]
pub(crate) struct EncodedRow {
    record: TraceRecord,
    json: String,
    content: Content,
    raw: Option<Vec<u8>>,
    /// The reference `raw` is compressed against, when one was published.
    reference: Option<(i64, Arc<[u8]>)>,
    /// Without one, the raw lines and kind, to become its kind's reference.
    candidate: Option<(String, Arc<[u8]>)>,
    span: Option<String>,
    /// Which of the record's ids the reader derives again (not stored).
    derived: Derived,
}

/// Whether the span id and the OTel trace id are the ones the reader
/// derives from the trace id and the identity: then the column is NULL.
/// Decided when the row is encoded, off the writer thread (deriving them
/// hashes: 8 % of the writer's instructions on the store bench).
#[derive(Debug, Clone, Copy)]
struct Derived {
    span_id: bool,
    otel_trace_id: bool,
}

impl Derived {
    fn of(r: &TraceRecord) -> Derived {
        Derived {
            span_id: span_id_for(&r.trace_id) == r.span_id,
            otel_trace_id: derived_trace_id(&r.identity).as_deref() == Some(&*r.otel_trace_id),
        }
    }
}

/// A raw blob the writer settled differently from the encoding: against a
/// reference it just stored, or without one that is gone.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SettledRaw {
    /// The reference it is compressed against.
    pub reference: Option<i64>,
    /// The blob.
    pub blob: Vec<u8>,
}

impl EncodedRow {
    /// Encodes a record and its span (off the writer thread: serialising
    /// and compressing are CPU work).
    pub(crate) fn encode(
        mut record: TraceRecord,
        span: Option<&Span>,
        references: Option<&References>,
    ) -> StoreResult<EncodedRow> {
        let span = span
            .map(serde_json::to_string)
            .transpose()
            .map_err(encoding("the span"))?;
        let json = record_json::encode(&record).map_err(|source| StoreError::Encode {
            what: "the record",
            source,
        })?;
        let content = take_content(&mut record)?;
        let parts = raw::Raw {
            request_headers: std::mem::take(&mut record.request_headers),
            request: record.raw_request.take(),
            response_headers: std::mem::take(&mut record.response_headers),
            response: record.raw_response.take(),
        };
        let mut row = EncodedRow {
            derived: Derived::of(&record),
            record,
            json,
            content,
            raw: None,
            reference: None,
            candidate: None,
            span,
        };
        let Some(lines) = raw::lines(&parts).map_err(raw_error)? else {
            return Ok(row);
        };
        let kind = raw::kind_of(&row.record);
        row.reference = references.and_then(|r| r.get(&kind));
        let reference = row.reference.as_ref().map(|(_, lines)| &lines[..]);
        row.raw = Some(row.compress(&lines, reference)?);
        if row.reference.is_none() && references.is_some() {
            row.candidate = Some((kind, lines.into()));
        }
        Ok(row)
    }

    /// Compresses raw lines against this call's dictionary with `reference`.
    fn compress(&self, lines: &[u8], reference: Option<&[u8]>) -> StoreResult<Vec<u8>> {
        raw::compress(lines, &self.dictionary(reference)).map_err(raw_error)
    }

    /// This call's raw dictionary, with `reference`.
    fn dictionary(&self, reference: Option<&[u8]>) -> Dictionary {
        let c = &self.content;
        let completions = with_ids(c.completions.iter().map(|c| c.token_ids.as_slice()));
        let own = Own {
            reference,
            words: &[],
            tools: c.tools.as_deref(),
            messages: &c.messages,
            prompt: &c.prompt,
            completions: &completions,
            answer: c.answer.as_deref(),
        };
        dictionary(&self.record, &own)
    }

    /// The blob compressed against `to` instead of the reference it was
    /// encoded with (the writer found that one gone, or just stored one).
    pub(crate) fn recompress(&self, to: Option<(i64, &[u8])>) -> StoreResult<Option<SettledRaw>> {
        let Some(blob) = &self.raw else {
            return Ok(None);
        };
        let lines = match (&self.candidate, &self.reference) {
            (Some((_, lines)), _) => lines.to_vec(),
            (None, from) => {
                let from = from.as_ref().map(|(_, lines)| &lines[..]);
                raw::decompress(blob, &self.dictionary(from)).map_err(raw_error)?
            }
        };
        Ok(Some(SettledRaw {
            reference: to.map(|(id, _)| id),
            blob: self.compress(&lines, to.map(|(_, lines)| lines))?,
        }))
    }

    /// The id of the reference the blob was encoded against.
    pub(crate) fn reference_id(&self) -> Option<i64> {
        self.reference.as_ref().map(|(id, _)| *id)
    }

    /// The reference the stored blob is compressed against: the one the
    /// writer settled it with, else the encoding's.
    fn raw_reference(&self, placed: &Placed) -> Option<i64> {
        placed
            .raw
            .as_ref()
            .map_or(self.reference_id(), |r| r.reference)
    }

    /// The kind and raw lines of a call that could become its kind's
    /// reference.
    pub(crate) fn candidate(&self) -> Option<(&str, &Arc<[u8]>)> {
        self.candidate
            .as_ref()
            .map(|(kind, lines)| (kind.as_str(), lines))
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
        self.insert_with(&INSERT, conn, placed, id)
    }

    /// [`EncodedRow::insert`] into the table as migration 3 leaves it.
    pub(crate) fn insert_converted(
        &self,
        conn: &Connection,
        placed: &Placed,
        id: i64,
    ) -> rusqlite::Result<i64> {
        self.insert_with(&CONVERSION_INSERT, conn, placed, Some(id))
    }

    fn insert_with(
        &self,
        insert: &Insert,
        conn: &Connection,
        placed: &Placed,
        id: Option<i64>,
    ) -> rusqlite::Result<i64> {
        let mut stmt = conn.prepare_cached(&insert.sql)?;
        // Each name stands once, in order, so SQLite numbers the parameters
        // by position (a test checks it): binding by number saves looking
        // up ~40 names a row (7 % of the store's instructions).
        for (index, (column, _)) in insert.params.iter().enumerate() {
            stmt.raw_bind_parameter(index + 1, column.value(self, placed, id)?)?;
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

/// The dictionary of a call's raw blob: its own content, and the column
/// values its headers and bodies repeat (the same at write and read time).
fn dictionary<S: AsRef<str>>(r: &TraceRecord, own: &Own<'_, S>) -> Dictionary {
    let identity = [
        &r.identity.session_id,
        &r.identity.run_id,
        &r.identity.harness,
    ];
    let words: Vec<&str> = [
        &r.model,
        &r.backend_model,
        &r.response_id,
        &r.response_model,
    ]
    .into_iter()
    .chain(identity)
    .filter_map(|w| w.as_deref())
    .collect();
    Dictionary::of(&Own {
        words: &words,
        ..*own
    })
}

/// The completions that have token ids.
fn with_ids<'a>(ids: impl Iterator<Item = &'a [u32]>) -> Vec<&'a [u32]> {
    ids.filter(|ids| !ids.is_empty()).collect()
}

fn raw_error(source: CodecError) -> StoreError {
    StoreError::Encode {
        what: "the raw request and response",
        source,
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
    let stored = read_content(conn, row, reader)?;
    let texts: Vec<&str> = stored.messages.iter().map(|(_, m)| &**m).collect();
    record.messages = texts
        .iter()
        .map(|m| parse("message_nodes", m))
        .collect::<StoreResult<_>>()?;
    if let Some(answer) = &stored.answer {
        record.response_message = parse("message_nodes", answer)?;
    }
    if let Some(tools) = &stored.tools {
        record.tools = parse("tool_lists", tools)?;
    }
    if let Some(blob) = row.get::<_, Option<Vec<u8>>>(Column::Raw.at())? {
        let completions = with_ids(stored.tokens.iter().map(|t| t.token_ids.as_slice()));
        let reference = match row.get::<_, Option<i64>>(Column::RawRef.at())? {
            Some(id) => Some(reader.reference(conn, id)?),
            None => None,
        };
        let own = Own {
            reference: reference.as_deref(),
            words: &[],
            tools: stored.tools.as_deref(),
            messages: &texts,
            prompt: &stored.prompt,
            completions: &completions,
            answer: stored.answer.as_deref(),
        };
        let lines =
            raw::decompress(&blob, &dictionary(&record, &own)).map_err(|e| corrupt("raw", e))?;
        let parts = raw::parse(&lines).map_err(|e| corrupt("raw", e))?;
        (record.request_headers, record.raw_request) = (parts.request_headers, parts.request);
        (record.response_headers, record.raw_response) = (parts.response_headers, parts.response);
    }
    record.prompt_token_ids = stored.prompt;
    let json: String = row.get(Column::Record.at())?;
    record_json::restore(&json, &mut record, stored.tokens).map_err(|e| corrupt("record", e))?;
    Ok(record)
}

/// The shared content a row points at, read back.
struct Stored {
    messages: content::MessagePath,
    answer: Option<Arc<str>>,
    tools: Option<Arc<str>>,
    prompt: Vec<u32>,
    tokens: Vec<ChoiceTokens>,
}

fn read_content(
    conn: &Connection,
    row: &Row<'_>,
    reader: &mut ContentReader,
) -> StoreResult<Stored> {
    let id = |c: Column| row.get::<_, Option<i64>>(c.at());
    let messages = match id(Column::MessagesNode)? {
        Some(node) => reader.messages(conn, node)?,
        None => Default::default(),
    };
    let answer = match id(Column::AnswerNode)? {
        Some(node) => reader.messages(conn, node)?.last().map(|(_, a)| a.clone()),
        None => None,
    };
    let tools = match id(Column::Tools)? {
        Some(list) => Some(reader.tools(conn, list)?),
        None => None,
    };
    let prompt = match id(Column::PromptRun)? {
        Some(run) => content::flatten(&reader.tokens(conn, run)?),
        None => Vec::new(),
    };
    let trace: i64 = row.get(Column::Id.at())?;
    Ok(Stored {
        messages,
        answer,
        tools,
        prompt,
        tokens: choice_tokens(conn, reader, trace)?,
    })
}

/// The record's identity, from its identity columns.
fn identity_of(row: &Row<'_>) -> StoreResult<Identity> {
    let mut identity = Map::new();
    for field in IdentityField::ALL {
        let value = match row.get_ref(Column::Identity(field).at())? {
            ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Integer(n) => Value::from(n),
            _ => continue,
        };
        identity.insert(field.name().into(), value);
    }
    serde_json::from_value(Value::Object(identity)).map_err(|e| corrupt("identity", e.into()))
}

/// A call's error from its `error_kind` and `error_message` columns.
fn call_error(kind: Option<ErrorKind>, message: Option<String>) -> Option<CallError> {
    kind.map(|kind| CallError {
        kind,
        message: message.unwrap_or_default(),
    })
}

/// The record's columns: its scalar facts.
fn scalar_facts(row: &Row<'_>) -> StoreResult<TraceRecord> {
    let identity = identity_of(row)?;
    let at = |c: Column| c.at();
    let count = |c: Column| {
        row.get::<_, Option<i64>>(at(c))
            .map(|n| n.map(i64::unsigned_abs))
    };
    let trace_id: String = row.get(at(Column::TraceId))?;
    let span_id: Option<String> = row.get(at(Column::SpanId))?;
    let otel_trace_id: Option<String> = row.get(at(Column::OtelTraceId))?;
    let started_at: String = row.get(at(Column::StartedAt))?;
    Ok(TraceRecord {
        span_id: span_id.unwrap_or_else(|| span_id_for(&trace_id)),
        otel_trace_id: otel_trace_id
            .or_else(|| derived_trace_id(&identity))
            .unwrap_or_default(),
        trace_id,
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
        first_chunk_at: row
            .get::<_, Option<i64>>(at(Column::FirstChunkUs))?
            .and_then(|us| record_json::at_offset(&started_at, us)),
        ended_at: row.get(at(Column::EndedAt))?,
        started_at,
        latency_ms: row.get(at(Column::LatencyMs))?,
        ttft_ms: row.get(at(Column::TtftMs))?,
        status: row.get(at(Column::Status))?,
        http_status: row.get(at(Column::HttpStatus))?,
        error: call_error(
            row.get(at(Column::ErrorKind))?,
            row.get(at(Column::ErrorMessage))?,
        ),
        cost_usd: row.get(at(Column::CostUsd))?,
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
         latency_ms, CASE WHEN stream THEN ttft_ms END, input_tokens, output_tokens"
    };
}

/// The columns [`decode_summary`] reads.
pub(crate) const SUMMARY_COLUMNS: &str = summary_columns!();

/// A summary from the [`SUMMARY_COLUMNS`] at the start of a row.
pub(crate) fn decode_summary(row: &Row<'_>) -> StoreResult<CallSummary> {
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
        error: call_error(row.get(11)?, row.get(12)?),
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
      FROM message_nodes a WHERE a.id = traces.answer_node), \
     method, path"
);

/// A call node from the [`NODE_COLUMNS`] of a row.
pub(crate) fn decode_node(row: &Row<'_>) -> StoreResult<CallNode> {
    let summary = decode_summary(row)?;
    let span_id: Option<String> = row.get(18)?;
    Ok(CallNode {
        span_id: Some(span_id.unwrap_or_else(|| span_id_for(&summary.trace_id))),
        summary,
        seq: row.get(17)?,
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
    fn each_inserts_parameters_are_numbered_by_their_position() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate::apply(&mut conn).unwrap();
        for insert in [&*INSERT, &*CONVERSION_INSERT] {
            let stmt = conn.prepare(&insert.sql).unwrap();
            for (position, (_, name)) in insert.params.iter().enumerate() {
                assert_eq!(stmt.parameter_index(name).unwrap(), Some(position + 1));
            }
        }
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
        let row = EncodedRow::encode(record.clone(), None, None).unwrap();
        let mut log = SessionLog::new(Default::default());
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
