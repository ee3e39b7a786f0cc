//! Reading the span outbox: what the exporter sends next, and how far behind
//! it is.
//!
//! Spans are written by the writer thread in the transaction of their record
//! (see `writer`); the exporter's cursor is saved by the writer too. This
//! file only reads: the spans past the cursor, in `id` order, and the
//! backlog that `GET /health` reports.

use crate::record::{HarnessSpan, Span};
use crate::store::error::StoreResult;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// The exporter's saved state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExportState {
    /// The last span id the collector accepted.
    pub cursor: i64,
    /// Spans exported so far.
    pub exported: i64,
    /// When the last export succeeded.
    pub last_success_at: Option<String>,
    /// The last export error (kept after a later success, with its time).
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_at: Option<String>,
}

/// The spans waiting for export.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Backlog {
    /// Spans past the cursor.
    pub waiting: i64,
    /// When the oldest of them was written (RFC 3339).
    pub oldest_at: Option<String>,
}

/// The saved exporter state (zeroes before the first export).
pub(crate) fn state(conn: &Connection) -> StoreResult<ExportState> {
    conn.query_row(
        "SELECT cursor, exported, last_success_at, last_error, last_error_at
         FROM export_state WHERE exporter = 'otlp'",
        [],
        |r| {
            Ok(ExportState {
                cursor: r.get(0)?,
                exported: r.get(1)?,
                last_success_at: r.get(2)?,
                last_error: r.get(3)?,
                last_error_at: r.get(4)?,
            })
        },
    )
    .optional()
    .map(Option::unwrap_or_default)
    .map_err(crate::store::StoreError::sqlite(
        "cannot read the export state",
    ))
}

/// A batch of spans to export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The gateway's own spans, oldest first.
    pub spans: Vec<Span>,
    /// The harness spans the OTLP receiver queued for forwarding (rows
    /// written as `{"harness": span}`), oldest first.
    pub harness: Vec<HarnessSpan>,
    /// The id of the last row read: the cursor once the batch is accepted.
    pub last_id: i64,
    /// The claim its rows are held under (PostgreSQL's shared outbox; see
    /// `postgres::read::claim_spans`).
    pub claim: Option<String>,
}

/// Up to `limit` spans past `cursor`, oldest first.
pub(crate) fn spans_after(conn: &Connection, cursor: i64, limit: usize) -> StoreResult<Batch> {
    let mut stmt =
        conn.prepare_cached("SELECT id, span FROM spans WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let rows = stmt.query_map(
        params![cursor, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
    )?;
    let mut batch = Batch {
        last_id: cursor,
        ..Batch::default()
    };
    for row in rows {
        let (id, json) = row?;
        add_to_batch(&mut batch, id, &json);
    }
    Ok(batch)
}

/// Adds the outbox row `id` holding `json` to `batch` (either backend's).
pub(crate) fn add_to_batch(batch: &mut Batch, id: i64, json: &str) {
    batch.last_id = id;
    match serde_json::from_str(json) {
        Ok(Outboxed::Harness { harness }) => batch.harness.push(*harness),
        Ok(Outboxed::Call(span)) => batch.spans.push(*span),
        // A span that cannot be read can never be sent: skip it rather
        // than block every span after it.
        Err(e) => tracing::error!(id, "unreadable span in the outbox, skipped: {e}"),
    }
}

/// An outbox row: a harness span (`{"harness": ...}`), else one of the
/// gateway's own.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Outboxed {
    Harness { harness: Box<HarnessSpan> },
    Call(Box<Span>),
}

/// The spans waiting past `cursor`.
pub(crate) fn backlog(conn: &Connection, cursor: i64) -> StoreResult<Backlog> {
    conn.query_row(
        "SELECT COUNT(*), MIN(created_at) FROM spans WHERE id > ?1",
        [cursor],
        |r| {
            Ok(Backlog {
                waiting: r.get(0)?,
                oldest_at: r.get(1)?,
            })
        },
    )
    .map_err(crate::store::StoreError::sqlite(
        "cannot read the span outbox",
    ))
}
