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

pub(crate) const COLUMNS: &str = "id, target_kind, target_id, name, value_type, value_number, value_string, \
                       comment, metadata, created_at";

/// Stores `items` in the caller's transaction: all of them, or — when an id
/// is stored already with other content — none.
pub(crate) fn post(conn: &Connection, items: &[Feedback]) -> StoreResult<Posted> {
    post_with(items, |id| by_id(conn, id), |item| insert(conn, item))
}

/// [`post`] on any backend: `stored` reads an item by id, `insert` stores
/// a new one.
pub(crate) fn post_with(
    items: &[Feedback],
    mut stored: impl FnMut(&str) -> StoreResult<Option<Feedback>>,
    mut insert: impl FnMut(&Feedback) -> StoreResult<()>,
) -> StoreResult<Posted> {
    let mut known = Vec::with_capacity(items.len());
    let mut conflicts = Vec::new();
    for item in items {
        let stored = stored(&item.id)?;
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
                insert(item)?;
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
    Columns {
        id: row.get(0)?,
        target_kind: row.get(1)?,
        target_id: row.get(2)?,
        name: row.get(3)?,
        value_type: row.get(4)?,
        number: row.get(5)?,
        string: row.get(6)?,
        comment: row.get(7)?,
        metadata: row.get(8)?,
        created_at: row.get(9)?,
    }
    .decode()
}

/// A feedback row's [`COLUMNS`] as stored, on either backend.
pub(crate) struct Columns {
    pub id: String,
    pub target_kind: String,
    pub target_id: String,
    pub name: String,
    pub value_type: String,
    pub number: Option<f64>,
    pub string: Option<String>,
    pub comment: Option<String>,
    pub metadata: String,
    pub created_at: String,
}

impl Columns {
    /// The item the row holds.
    pub(crate) fn decode(self) -> StoreResult<Feedback> {
        let unreadable = |column: &'static str| StoreError::Corrupt {
            what: "feedback",
            source: CodecError::Dangling(column),
        };
        let value = match (ValueType::parse(&self.value_type), self.number, self.string) {
            (Some(ValueType::Number), Some(n), _) => FeedbackValue::Number(n),
            (Some(ValueType::Boolean), Some(n), _) => FeedbackValue::Boolean(n != 0.0),
            (Some(ValueType::String), _, Some(s)) => FeedbackValue::String(s),
            _ => return Err(unreadable("value")),
        };
        Ok(Feedback {
            id: self.id,
            target_kind: TargetKind::parse(&self.target_kind)
                .ok_or_else(|| unreadable("target_kind"))?,
            target_id: self.target_id,
            name: self.name,
            value,
            comment: self.comment,
            metadata: serde_json::from_str(&self.metadata).unwrap_or_default(),
            created_at: self.created_at,
        })
    }
}

/// The condition selecting a scope's feedback, with `?1` its id.
pub(crate) fn scope_clause(scope: &FeedbackScope) -> (&'static str, &str) {
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
