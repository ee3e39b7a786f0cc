//! The `harness_spans` table: the spans a harness sent to the OTLP
//! receiver, written by the writer thread and read back by session, by
//! OTel trace, and by (trace id, span id).
//!
//! Writing is `commit`'s: a [`HarnessSpans`](crate::store::writer) command
//! is committed in the batch it arrives in, like a record, and answered
//! once committed, so the receiver says 200 only for spans on disk. A span
//! received again (an exporter's retry) replaces its row. When export is
//! on, each span also gets a row in the export outbox (`spans`, as
//! `{"harness": span}`) in the same transaction, so it is forwarded to the
//! collector with the same guarantees as the gateway's own spans.

use crate::record::{HarnessSpan, HarnessSpanKind, HarnessStatusCode, Identity};
use crate::store::error::{StoreError, StoreResult};
use crate::store::summary::CallLink;
use rusqlite::{Connection, OptionalExtension, Row, named_params};
use serde_json::{Value, json};

/// The columns read back, in [`decode`]'s order.
const COLUMNS: &str = "trace_id, span_id, parent_span_id, name, kind, start_time, end_time,
    start_unix_nanos, end_unix_nanos, status_code, status_message, attributes, events,
    resource, session_id, run_id, harness, step_id, project, experiment, weight_version";

/// Inserts (or replaces) `spans`; with `forward`, each one also goes to the
/// export outbox.
pub(crate) fn insert(conn: &Connection, spans: &[HarnessSpan], forward: bool) -> StoreResult<()> {
    let now = crate::record::rfc3339(std::time::SystemTime::now());
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO harness_spans (trace_id, span_id, parent_span_id, name, kind,
             start_time, end_time, start_unix_nanos, end_unix_nanos, status_code, status_message,
             attributes, events, resource, session_id, run_id, harness, step_id, project,
             experiment, weight_version, received_at)
         VALUES (:trace_id, :span_id, :parent, :name, :kind, :start, :end, :start_ns, :end_ns,
             :code, :message, :attributes, :events, :resource, :session_id, :run_id, :harness,
             :step_id, :project, :experiment, :weight_version, :now)",
    )?;
    for span in spans {
        let id = &span.identity;
        insert.execute(named_params! {
            ":trace_id": span.trace_id,
            ":span_id": span.span_id,
            ":parent": span.parent_span_id,
            ":name": span.name,
            ":kind": span.kind.as_str(),
            ":start": span.start,
            ":end": span.end,
            ":start_ns": nanos(span.start_unix_nanos),
            ":end_ns": nanos(span.end_unix_nanos),
            ":code": span.status_code.as_str(),
            ":message": span.status_message,
            ":attributes": Value::Object(span.attributes.clone()).to_string(),
            ":events": Value::Array(span.events.clone()).to_string(),
            ":resource": Value::Object(span.resource.clone()).to_string(),
            ":session_id": id.session_id,
            ":run_id": id.run_id,
            ":harness": id.harness,
            ":step_id": id.step_id,
            ":project": id.project,
            ":experiment": id.experiment,
            ":weight_version": id.weight_version,
            ":now": now,
        })?;
    }
    if forward {
        let mut outbox = conn.prepare_cached(
            "INSERT INTO spans (trace_id, created_at, span) VALUES (:trace_id, :at, :span)",
        )?;
        for span in spans {
            let row = json!({ "harness": span }).to_string();
            outbox.execute(named_params! {":trace_id": span.trace_id, ":at": now, ":span": row})?;
        }
    }
    Ok(())
}

/// SQLite integers are signed; times past 2262 are kept as the largest.
fn nanos(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The spans of a session: those naming it, and those of the OTel traces
/// its calls belong to (`trace_ids`), by start.
pub(crate) fn of_session(
    conn: &Connection,
    session_id: &str,
    trace_ids: &[String],
) -> StoreResult<Vec<HarnessSpan>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM harness_spans
         WHERE session_id = ?1 OR trace_id IN (SELECT value FROM json_each(?2))
         ORDER BY start_unix_nanos, span_id"
    ))?;
    let ids = Value::from(trace_ids.to_vec()).to_string();
    let rows = stmt.query_map((session_id, ids), decode)?;
    rows.map(|r| r?).collect()
}

/// Where each call of a session sits in OpenTelemetry, by start: three
/// indexed columns per call, not the records, so that the UI can hang a
/// session of hundreds of calls under its harness spans cheaply. A call
/// without a stored OTel trace id has the one derived from its identity
/// (as the record read back has).
pub(crate) fn call_links(conn: &Connection, session_id: &str) -> StoreResult<Vec<CallLink>> {
    let mut stmt = conn.prepare_cached(
        "SELECT trace_id, otel_trace_id, otel_parent_span_id, run_id FROM traces
         WHERE session_id = ?1 ORDER BY started_at, trace_id",
    )?;
    let rows = stmt.query_map([session_id], |r| {
        let stored: Option<String> = r.get(1)?;
        let identity = Identity {
            session_id: Some(session_id.to_string()),
            run_id: r.get(3)?,
            ..Identity::default()
        };
        Ok(CallLink {
            trace_id: r.get(0)?,
            otel_trace_id: stored
                .or_else(|| crate::trace_context::derived_trace_id(&identity))
                .unwrap_or_default(),
            otel_parent_span_id: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One span by its OpenTelemetry ids.
pub(crate) fn one(
    conn: &Connection,
    trace_id: &str,
    span_id: &str,
) -> StoreResult<Option<HarnessSpan>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM harness_spans WHERE trace_id = ?1 AND span_id = ?2"
    ))?
    .query_row((trace_id, span_id), decode)
    .optional()?
    .transpose()
}

/// A row as a span (a row whose JSON does not read is an error).
fn decode(r: &Row<'_>) -> rusqlite::Result<StoreResult<HarnessSpan>> {
    let (attributes, events, resource): (String, String, String) =
        (r.get(11)?, r.get(12)?, r.get(13)?);
    let parsed = (|| {
        Ok::<_, serde_json::Error>((
            serde_json::from_str(&attributes)?,
            serde_json::from_str(&events)?,
            serde_json::from_str(&resource)?,
        ))
    })();
    let (attributes, events, resource) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            return Ok(Err(StoreError::Corrupt {
                what: "harness span",
                source: e.into(),
            }));
        }
    };
    let kind: String = r.get(4)?;
    let code: String = r.get(9)?;
    Ok(Ok(HarnessSpan {
        trace_id: r.get(0)?,
        span_id: r.get(1)?,
        parent_span_id: r.get(2)?,
        name: r.get(3)?,
        kind: HarnessSpanKind::parse(&kind).unwrap_or(HarnessSpanKind::Unspecified),
        start: r.get(5)?,
        end: r.get(6)?,
        start_unix_nanos: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
        end_unix_nanos: u64::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
        status_code: HarnessStatusCode::parse(&code).unwrap_or(HarnessStatusCode::Unset),
        status_message: r.get(10)?,
        attributes,
        events,
        resource,
        identity: Identity {
            session_id: r.get(14)?,
            run_id: r.get(15)?,
            harness: r.get(16)?,
            step_id: r.get(17)?,
            parent_span_id: None,
            project: r.get(18)?,
            experiment: r.get(19)?,
            weight_version: r.get(20)?,
        },
    }))
}
