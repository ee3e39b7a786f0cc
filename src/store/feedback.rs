//! The `feedback` table: writing items idempotently, and reading them by
//! target, by the session or run they fall under, and summarised per name.
//!
//! Feedback names its target by id, without a foreign key (schema
//! `0006_feedback.sql`): a session's feedback is what names the session or
//! one of its calls, a run's what names the run, one of its sessions or one
//! of its calls — whichever was committed first.

use crate::feedback::{Feedback, FeedbackSummary, FeedbackValue, TargetKind, ValueType};
use crate::store::codec::CodecError;
use crate::store::error::{StoreError, StoreResult};
use rusqlite::{Connection, OptionalExtension, Row, named_params};

/// What a post of feedback did.
#[derive(Debug, Clone, PartialEq)]
pub enum Posted {
    /// Every item is stored: the new ones now, the others already were
    /// (with the same content). Each item as stored, in the order given,
    /// and whether it is new.
    Stored(Vec<(Feedback, bool)>),
    /// Nothing was stored: these ids are stored with other content.
    Conflict(Vec<String>),
}

/// Which feedback to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackScope {
    /// What names exactly this target (a call, a session or a run).
    Target(TargetKind, String),
    /// What names this session or one of its calls.
    Session(String),
    /// What names this run, one of its sessions or one of its calls.
    Run(String),
}

const COLUMNS: &str = "id, target_kind, target_id, name, value_type, value_number, value_string, \
                       comment, metadata, created_at";

/// Stores `items` in the caller's transaction: all of them, or — when an id
/// is stored already with other content — none.
pub(crate) fn post(conn: &Connection, items: &[Feedback]) -> StoreResult<Posted> {
    let mut known = Vec::with_capacity(items.len());
    let mut conflicts = Vec::new();
    for item in items {
        let stored = by_id(conn, &item.id)?;
        // Within one batch, the first item with an id decides its content.
        let earlier = items.iter().take_while(|i| !std::ptr::eq(*i, item));
        let stored = stored.or_else(|| earlier.into_iter().find(|i| i.id == item.id).cloned());
        match stored {
            Some(s) if !s.same_content(item) => conflicts.push(item.id.clone()),
            other => known.push(other),
        }
    }
    if !conflicts.is_empty() {
        return Ok(Posted::Conflict(conflicts));
    }
    let mut out = Vec::with_capacity(items.len());
    for (item, stored) in items.iter().zip(known) {
        match stored {
            Some(stored) => out.push((stored, false)),
            None => {
                insert(conn, item)?;
                out.push((item.clone(), true));
            }
        }
    }
    Ok(Posted::Stored(out))
}

fn insert(conn: &Connection, item: &Feedback) -> StoreResult<()> {
    let string = match &item.value {
        FeedbackValue::String(s) => Some(s.as_str()),
        _ => None,
    };
    conn.prepare_cached(
        "INSERT INTO feedback (id, target_kind, target_id, name, value_type, value_number,
                               value_string, comment, metadata, created_at)
         VALUES (:id, :kind, :target, :name, :type, :number, :string, :comment, :metadata, :at)",
    )?
    .execute(named_params! {
        ":id": item.id,
        ":kind": item.target_kind.as_str(),
        ":target": item.target_id,
        ":name": item.name,
        ":type": item.value.value_type().as_str(),
        ":number": item.value.as_number(),
        ":string": string,
        ":comment": item.comment,
        ":metadata": serde_json::Value::Object(item.metadata.clone()).to_string(),
        ":at": item.created_at,
    })
    .map_err(StoreError::sqlite("cannot store the feedback"))?;
    Ok(())
}

fn by_id(conn: &Connection, id: &str) -> StoreResult<Option<Feedback>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM feedback WHERE id = ?1"))?
        .query_row([id], |row| Ok(decode(row)))
        .optional()?
        .transpose()
}

fn decode(row: &Row<'_>) -> StoreResult<Feedback> {
    let unreadable = |column: &'static str| StoreError::Corrupt {
        what: "feedback",
        source: CodecError::Dangling(column),
    };
    let kind: String = row.get(1)?;
    let value_type: String = row.get(4)?;
    let number: Option<f64> = row.get(5)?;
    let string: Option<String> = row.get(6)?;
    let value = match (ValueType::parse(&value_type), number, string) {
        (Some(ValueType::Number), Some(n), _) => FeedbackValue::Number(n),
        (Some(ValueType::Boolean), Some(n), _) => FeedbackValue::Boolean(n != 0.0),
        (Some(ValueType::String), _, Some(s)) => FeedbackValue::String(s),
        _ => return Err(unreadable("value")),
    };
    let metadata: String = row.get(8)?;
    Ok(Feedback {
        id: row.get(0)?,
        target_kind: TargetKind::parse(&kind).ok_or_else(|| unreadable("target_kind"))?,
        target_id: row.get(2)?,
        name: row.get(3)?,
        value,
        comment: row.get(7)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        created_at: row.get(9)?,
    })
}

/// The condition selecting a scope's feedback, with `?1` its id.
fn scope_clause(scope: &FeedbackScope) -> (&'static str, &str) {
    match scope {
        FeedbackScope::Target(TargetKind::Trace, id) => {
            ("target_kind = 'trace' AND target_id = ?1", id)
        }
        FeedbackScope::Target(TargetKind::Session, id) => {
            ("target_kind = 'session' AND target_id = ?1", id)
        }
        FeedbackScope::Target(TargetKind::Run, id) => {
            ("target_kind = 'run' AND target_id = ?1", id)
        }
        FeedbackScope::Session(id) => (
            "(target_kind = 'session' AND target_id = ?1) \
             OR (target_kind = 'trace' AND target_id IN \
                 (SELECT trace_id FROM traces WHERE session_id = ?1))",
            id,
        ),
        FeedbackScope::Run(id) => (
            "(target_kind = 'run' AND target_id = ?1) \
             OR (target_kind = 'session' AND target_id IN \
                 (SELECT session_id FROM sessions WHERE run_id = ?1)) \
             OR (target_kind = 'trace' AND target_id IN \
                 (SELECT trace_id FROM traces WHERE run_id = ?1))",
            id,
        ),
    }
}

/// The feedback of `scope`, oldest first.
pub(crate) fn feedback(conn: &Connection, scope: &FeedbackScope) -> StoreResult<Vec<Feedback>> {
    let (clause, id) = scope_clause(scope);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM feedback WHERE {clause} ORDER BY created_at, rowid"
    ))?;
    let mut rows = stmt.query([id])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// The feedback of `scope` per name, in name order.
pub(crate) fn summary(
    conn: &Connection,
    scope: &FeedbackScope,
) -> StoreResult<Vec<FeedbackSummary>> {
    let (clause, id) = scope_clause(scope);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT name, COUNT(*), COUNT(value_number), AVG(value_number), MIN(value_number),
                MAX(value_number)
         FROM feedback WHERE {clause} GROUP BY name ORDER BY name"
    ))?;
    let rows = stmt.query_map([id], |r| {
        Ok(FeedbackSummary {
            name: r.get(0)?,
            count: r.get::<_, i64>(1)?.unsigned_abs(),
            numeric: r.get::<_, i64>(2)?.unsigned_abs(),
            mean: r.get(3)?,
            min: r.get(4)?,
            max: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
