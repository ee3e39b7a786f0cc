//! A retried call's attempts as child spans of its span: one
//! `upstream.attempt` span per time the call was sent, so that a tracing
//! backend shows three 503s, two backoffs and the answer as a waterfall
//! under the call.
//!
//! A call answered at its first attempt has no child: its own span is that
//! attempt. Each child's id is derived from the record's id and the
//! attempt's number (as a call's span id is derived from its record id), so
//! a span exported twice is the same span. The children travel inside the
//! call's stored span ([`Span::children`]): one outbox row per call.

use crate::record::Attribute;
use crate::record::{Attempt, AttributeValue, Span, TraceRecord, unix_nanos};
use crate::trace_context::{TraceContext, span_id_for};
use reqwest::Url;
use std::time::{Duration, UNIX_EPOCH};

/// The name of an attempt's span.
pub const NAME: &str = "upstream.attempt";

/// Every attribute key an attempt's span can have, for the documentation.
pub const KEYS: &[&str] = &[
    "tracegate.attempt",
    "tracegate.worker",
    "server.address",
    "server.port",
    "http.response.status_code",
    "error.type",
    "tracegate.retry_reason",
];

/// The child spans of `record`'s span hung at `trace`: one per attempt when
/// there were several, else none.
pub fn spans(record: &TraceRecord, trace: &TraceContext) -> Vec<Span> {
    if record.attempts.len() < 2 {
        return Vec::new();
    }
    record
        .attempts
        .iter()
        .enumerate()
        .map(|(i, attempt)| span(record, trace, i + 1, attempt))
        .collect()
}

fn span(record: &TraceRecord, trace: &TraceContext, number: usize, attempt: &Attempt) -> Span {
    let start = humantime::parse_rfc3339_weak(&attempt.started_at).unwrap_or(UNIX_EPOCH);
    let end = start + Duration::from_secs_f64(attempt.duration_ms.max(0.0) / 1000.0);
    let mut attributes = Vec::new();
    let mut push = |key: &str, value: AttributeValue| {
        attributes.push(Attribute {
            key: key.to_string(),
            value,
        })
    };
    push("tracegate.attempt", AttributeValue::Int(number as i64));
    push(
        "tracegate.worker",
        AttributeValue::String(attempt.worker.clone()),
    );
    if let Ok(url) = Url::parse(&attempt.upstream) {
        if let Some(host) = url.host_str() {
            push("server.address", AttributeValue::String(host.to_string()));
        }
        if let Some(port) = url.port_or_known_default() {
            push("server.port", AttributeValue::Int(i64::from(port)));
        }
    }
    if let Some(status) = attempt.http_status {
        push(
            "http.response.status_code",
            AttributeValue::Int(i64::from(status)),
        );
    }
    if let Some(error) = &attempt.error {
        push("error.type", AttributeValue::String(error.kind.to_string()));
    }
    if let Some(reason) = attempt.retry_reason {
        push(
            "tracegate.retry_reason",
            AttributeValue::String(reason.to_string()),
        );
    }
    Span {
        trace_id: trace.trace_id.clone(),
        span_id: span_id_for(&format!("{}#attempt-{number}", record.trace_id)),
        parent_span_id: Some(trace.span_id.clone()),
        parent_is_remote: false,
        trace_state: trace.trace_state.clone(),
        name: NAME.to_string(),
        start_unix_nanos: unix_nanos(start),
        end_unix_nanos: unix_nanos(end),
        error: attempt.error.as_ref().map(|e| e.message.clone()),
        attributes,
        children: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{CallError, ErrorKind, RetryReason};

    #[test]
    fn a_retried_call_has_one_child_per_attempt() {
        let trace = TraceContext {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            ..TraceContext::default()
        };
        let failed = Attempt {
            worker: "a".into(),
            upstream: "http://h:8000/v1".into(),
            started_at: "2026-01-01T00:00:00.000000Z".into(),
            duration_ms: 5.0,
            http_status: Some(503),
            error: Some(CallError::new(ErrorKind::UpstreamHttpError, "busy")),
            retry_reason: Some(RetryReason::ServiceUnavailable),
        };
        let mut record = TraceRecord {
            trace_id: "t".into(),
            attempts: vec![failed.clone()],
            ..TraceRecord::default()
        };
        assert!(spans(&record, &trace).is_empty(), "one attempt: no child");
        record.attempts.push(Attempt {
            retry_reason: None,
            http_status: Some(200),
            error: None,
            ..failed
        });
        let children = spans(&record, &trace);
        assert_eq!(children.len(), 2);
        assert_ne!(children[0].span_id, children[1].span_id);
        assert_eq!(
            children[0].parent_span_id.as_deref(),
            Some("b7ad6b7169203331")
        );
        assert_eq!(
            children[0].end_unix_nanos - children[0].start_unix_nanos,
            5_000_000
        );
        for child in &children {
            for a in &child.attributes {
                assert!(KEYS.contains(&a.key.as_str()), "{} is not listed", a.key);
            }
        }
    }

    #[test]
    fn every_key_is_documented_in_the_schema() {
        let doc = include_str!("../../schema/span_attributes.md");
        let section = doc.split("## Attempt spans").nth(1).unwrap_or_default();
        for key in KEYS {
            assert!(
                section.contains(&format!("| `{key}` |")),
                "{key} is not documented"
            );
        }
    }
}
