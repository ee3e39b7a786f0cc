//! The `harness_spans` table on PostgreSQL: the spans a harness sent to
//! the OTLP receiver, as on SQLite (`store::harness`): a span received
//! again replaces its row; with export on, each also goes to the outbox.

use crate::record::{HarnessSpan, HarnessSpanKind, HarnessStatusCode, Identity};
use crate::store::error::{StoreError, StoreResult};
use postgres::types::ToSql;
use postgres::{GenericClient, Row};
use serde_json::{Value, json};

/// The columns read back, in [`decode`]'s order.
const COLUMNS: &str = "trace_id, span_id, parent_span_id, name, kind, start_time, end_time,
    start_unix_nanos, end_unix_nanos, status_code, status_message, attributes, events,
    resource, session_id, run_id, harness, step_id, project, experiment, weight_version";

/// The insert of a span, replacing the row of one received before.
const UPSERT: &str = "INSERT INTO harness_spans (trace_id, span_id, parent_span_id, name, kind,
                 start_time, end_time, start_unix_nanos, end_unix_nanos, status_code,
                 status_message, attributes, events, resource, session_id, run_id, harness,
                 step_id, project, experiment, weight_version, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                 $17, $18, $19, $20, $21, $22)
             ON CONFLICT (trace_id, span_id) DO UPDATE SET
                 parent_span_id = EXCLUDED.parent_span_id, name = EXCLUDED.name,
                 kind = EXCLUDED.kind, start_time = EXCLUDED.start_time,
                 end_time = EXCLUDED.end_time, start_unix_nanos = EXCLUDED.start_unix_nanos,
                 end_unix_nanos = EXCLUDED.end_unix_nanos, status_code = EXCLUDED.status_code,
                 status_message = EXCLUDED.status_message, attributes = EXCLUDED.attributes,
                 events = EXCLUDED.events, resource = EXCLUDED.resource,
                 session_id = EXCLUDED.session_id, run_id = EXCLUDED.run_id,
                 harness = EXCLUDED.harness, step_id = EXCLUDED.step_id,
                 project = EXCLUDED.project, experiment = EXCLUDED.experiment,
                 weight_version = EXCLUDED.weight_version, received_at = EXCLUDED.received_at";

/// A span's column values, in [`UPSERT`]'s order (`now`: when received).
fn values<'a>(span: &'a HarnessSpan, now: &'a str) -> Vec<Box<dyn ToSql + Sync + 'a>> {
    let id = &span.identity;
    vec![
        Box::new(&span.trace_id),
        Box::new(&span.span_id),
        Box::new(&span.parent_span_id),
        Box::new(&span.name),
        Box::new(span.kind.as_str()),
        Box::new(&span.start),
        Box::new(&span.end),
        Box::new(nanos(span.start_unix_nanos)),
        Box::new(nanos(span.end_unix_nanos)),
        Box::new(span.status_code.as_str()),
        Box::new(&span.status_message),
        Box::new(Value::Object(span.attributes.clone()).to_string()),
        Box::new(Value::Array(span.events.clone()).to_string()),
        Box::new(Value::Object(span.resource.clone()).to_string()),
        Box::new(&id.session_id),
        Box::new(&id.run_id),
        Box::new(&id.harness),
        Box::new(id.step_id),
        Box::new(&id.project),
        Box::new(&id.experiment),
        Box::new(id.weight_version),
        Box::new(now),
    ]
}

/// Inserts (or replaces) `spans`; with `forward`, each one also goes to the
/// export outbox.
pub(crate) fn insert(
    client: &mut impl GenericClient,
    spans: &[HarnessSpan],
    forward: bool,
) -> StoreResult<()> {
    let failed = StoreError::postgres("cannot store the harness spans");
    let now = crate::record::rfc3339(std::time::SystemTime::now());
    let statement = client.prepare(UPSERT).map_err(&failed)?;
    for span in spans {
        let values = values(span, &now);
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        client.execute(&statement, &params).map_err(&failed)?;
    }
    if forward {
        for span in spans {
            let row = json!({ "harness": span }).to_string();
            client
                .execute(
                    "INSERT INTO spans (trace_id, created_at, span) VALUES ($1, $2, $3)",
                    &[&span.trace_id, &now, &row],
                )
                .map_err(&failed)?;
        }
    }
    Ok(())
}

/// Times past 2262 are kept as the largest `BIGINT`.
fn nanos(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The spans of a session: those naming it, and those of the OTel traces
/// its calls belong to (`trace_ids`), by start.
pub(crate) fn of_session(
    client: &mut impl GenericClient,
    session_id: &str,
    trace_ids: &[String],
) -> StoreResult<Vec<HarnessSpan>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM harness_spans
         WHERE session_id = $1 OR trace_id = ANY($2)
         ORDER BY start_unix_nanos, span_id"
    );
    client
        .query(&sql, &[&session_id, &trace_ids])
        .map_err(StoreError::postgres("cannot read the harness spans"))?
        .iter()
        .map(decode)
        .collect()
}

/// One span by its OpenTelemetry ids.
pub(crate) fn one(
    client: &mut impl GenericClient,
    trace_id: &str,
    span_id: &str,
) -> StoreResult<Option<HarnessSpan>> {
    let sql = format!("SELECT {COLUMNS} FROM harness_spans WHERE trace_id = $1 AND span_id = $2");
    client
        .query_opt(&sql, &[&trace_id, &span_id])
        .map_err(StoreError::postgres("cannot read the harness span"))?
        .map(|row| decode(&row))
        .transpose()
}

/// A row as a span (a row whose JSON does not read is an error).
fn decode(r: &Row) -> StoreResult<HarnessSpan> {
    let failed = StoreError::postgres("cannot read the harness span");
    let json = |i: usize| -> StoreResult<Value> {
        let text: String = r.try_get(i).map_err(&failed)?;
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            what: "harness span",
            source: e.into(),
        })
    };
    let object = |v: Value| match v {
        Value::Object(map) => map,
        _ => Default::default(),
    };
    let events = match json(12)? {
        Value::Array(events) => events,
        _ => Vec::new(),
    };
    let kind: String = r.try_get(4).map_err(&failed)?;
    let code: String = r.try_get(9).map_err(&failed)?;
    let number = |i: usize| r.try_get::<_, i64>(i).map_err(&failed);
    let text = |i: usize| r.try_get::<_, Option<String>>(i).map_err(&failed);
    let required = |i: usize| r.try_get::<_, String>(i).map_err(&failed);
    Ok(HarnessSpan {
        trace_id: required(0)?,
        span_id: required(1)?,
        parent_span_id: text(2)?,
        name: required(3)?,
        kind: HarnessSpanKind::parse(&kind).unwrap_or(HarnessSpanKind::Unspecified),
        start: required(5)?,
        end: required(6)?,
        start_unix_nanos: u64::try_from(number(7)?).unwrap_or(0),
        end_unix_nanos: u64::try_from(number(8)?).unwrap_or(0),
        status_code: HarnessStatusCode::parse(&code).unwrap_or(HarnessStatusCode::Unset),
        status_message: text(10)?,
        attributes: object(json(11)?),
        events,
        resource: object(json(13)?),
        identity: Identity {
            session_id: text(14)?,
            run_id: text(15)?,
            harness: text(16)?,
            step_id: r.try_get(17).map_err(&failed)?,
            parent_span_id: None,
            project: text(18)?,
            experiment: text(19)?,
            weight_version: r.try_get(20).map_err(&failed)?,
        },
    })
}
