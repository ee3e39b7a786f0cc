//! The `feedback` table on PostgreSQL: the same rules as SQLite's
//! (`store::feedback`: idempotent by id, all or nothing on a conflict,
//! scopes by target, session or run), the same SQL with numbered
//! arguments.

use crate::feedback::{Feedback, FeedbackSummary, FeedbackValue};
use crate::record::Span;
use crate::store::error::{StoreError, StoreResult};
use crate::store::feedback::{self, COLUMNS, Columns, FeedbackScope, Posted, scope_clause};
use postgres::{GenericClient, Row};
use std::cell::RefCell;
use std::collections::HashMap;

/// Stores `items` (see `feedback::post`) and the spans of the new ones in
/// the export outbox, in the caller's transaction.
pub(crate) fn post(
    client: &mut impl GenericClient,
    items: &[Feedback],
    spans: &[Option<Span>],
) -> StoreResult<Posted> {
    let shared = RefCell::new(&mut *client);
    let posted = feedback::post_with(
        items,
        |id| by_id(&mut **shared.borrow_mut(), id),
        |item| insert(&mut **shared.borrow_mut(), item),
    )?;
    if let Posted::Stored(stored) = &posted {
        for ((item, new), span) in stored.iter().zip(spans) {
            let (true, Some(span)) = (new, span) else {
                continue;
            };
            let json = serde_json::to_string(span).map_err(|e| StoreError::Encode {
                what: "the feedback span",
                source: e.into(),
            })?;
            client
                .execute(
                    "INSERT INTO spans (trace_id, created_at, span) VALUES ($1, $2, $3)",
                    &[&item.id, &item.created_at, &json],
                )
                .map_err(StoreError::postgres("cannot queue the feedback span"))?;
        }
    }
    Ok(posted)
}

fn insert(client: &mut impl GenericClient, item: &Feedback) -> StoreResult<()> {
    let string = match &item.value {
        FeedbackValue::String(s) => Some(s.as_str()),
        _ => None,
    };
    let metadata = serde_json::Value::Object(item.metadata.clone()).to_string();
    client
        .execute(
            "INSERT INTO feedback (id, target_kind, target_id, name, value_type, value_number,
                                   value_string, comment, metadata, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &item.id,
                &item.target_kind.as_str(),
                &item.target_id,
                &item.name,
                &item.value.value_type().as_str(),
                &item.value.as_number(),
                &string,
                &item.comment,
                &metadata,
                &item.created_at,
            ],
        )
        .map_err(StoreError::postgres("cannot store the feedback"))?;
    Ok(())
}

fn by_id(client: &mut impl GenericClient, id: &str) -> StoreResult<Option<Feedback>> {
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM feedback WHERE id = $1"),
            &[&id],
        )
        .map_err(StoreError::postgres("cannot read the feedback"))?
        .map(|row| decode(&row))
        .transpose()
}

fn decode(row: &Row) -> StoreResult<Feedback> {
    let failed = StoreError::postgres("cannot read the feedback");
    let get = |i| row.try_get::<_, Option<String>>(i).map_err(&failed);
    let text = |i| get(i).map(Option::unwrap_or_default);
    Columns {
        id: text(0)?,
        target_kind: text(1)?,
        target_id: text(2)?,
        name: text(3)?,
        value_type: text(4)?,
        number: row.try_get(5).map_err(&failed)?,
        string: get(6)?,
        comment: get(7)?,
        metadata: text(8)?,
        created_at: text(9)?,
    }
    .decode()
}

/// `clause` (SQLite's, with `?1`) in PostgreSQL's numbering.
fn numbered(clause: &str) -> String {
    clause.replace("?1", "$1")
}

/// The feedback of `scope`, oldest first.
pub(crate) fn feedback(
    client: &mut impl GenericClient,
    scope: &FeedbackScope,
) -> StoreResult<Vec<Feedback>> {
    let (clause, id) = scope_clause(scope);
    let sql = format!(
        "SELECT {COLUMNS} FROM feedback WHERE {} ORDER BY created_at, seq",
        numbered(clause)
    );
    client
        .query(&sql, &[&id])
        .map_err(StoreError::postgres("cannot read the feedback"))?
        .iter()
        .map(decode)
        .collect()
}

/// The feedback naming each of the calls `trace_ids`, oldest first, by call.
pub(crate) fn of_traces(
    client: &mut impl GenericClient,
    trace_ids: &[&str],
) -> StoreResult<HashMap<String, Vec<Feedback>>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM feedback WHERE target_kind = 'trace' AND target_id = ANY($1)
         ORDER BY created_at, seq"
    );
    let mut out: HashMap<String, Vec<Feedback>> = HashMap::new();
    let rows = client
        .query(&sql, &[&trace_ids])
        .map_err(StoreError::postgres("cannot read the feedback"))?;
    for row in &rows {
        let item = decode(row)?;
        out.entry(item.target_id.clone()).or_default().push(item);
    }
    Ok(out)
}

/// The feedback of `scope` per name, in name order.
pub(crate) fn summary(
    client: &mut impl GenericClient,
    scope: &FeedbackScope,
) -> StoreResult<Vec<FeedbackSummary>> {
    let failed = StoreError::postgres("cannot summarise the feedback");
    let (clause, id) = scope_clause(scope);
    let sql = format!(
        "SELECT name, COUNT(*), COUNT(value_number), AVG(value_number), MIN(value_number),
                MAX(value_number)
         FROM feedback WHERE {} GROUP BY name ORDER BY name",
        numbered(clause)
    );
    let rows = client.query(&sql, &[&id]).map_err(&failed)?;
    rows.iter()
        .map(|r| {
            Ok(FeedbackSummary {
                name: r.try_get(0).map_err(&failed)?,
                count: r.try_get::<_, i64>(1).map_err(&failed)?.unsigned_abs(),
                numeric: r.try_get::<_, i64>(2).map_err(&failed)?.unsigned_abs(),
                mean: r.try_get(3).map_err(&failed)?,
                min: r.try_get(4).map_err(&failed)?,
                max: r.try_get(5).map_err(&failed)?,
            })
        })
        .collect()
}
