//! From OTLP to [`HarnessSpan`]s: ids to hex, times to RFC 3339, attribute
//! values to JSON, identity from the attributes (else the resource's) — and
//! the receiver's limits applied on the way.
//!
//! A span is *rejected* (counted in the answer's `partial_success`) when it
//! cannot be kept at all: an id of the wrong length, or past
//! `otlp.max_spans_per_request`. A span that is only too big is *cut*, and
//! says so in its `tracegate.truncated` attribute: the attributes past
//! `otlp.max_attributes_per_span` are dropped, and string values longer
//! than `otlp.max_attribute_bytes` are shortened (on a character boundary).

use crate::config::OtlpLimits;
use crate::identity::{IdentityField, MAX_TEXT_BYTES};
use crate::record::{HarnessSpan, HarnessSpanKind, HarnessStatusCode, Identity, rfc3339};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Map, Value, json};
use std::time::{Duration, UNIX_EPOCH};

/// The attribute that lists what the limits cut from a span.
pub const TRUNCATED: &str = "tracegate.truncated";

/// A request's spans, decoded.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The spans to keep.
    pub spans: Vec<HarnessSpan>,
    /// How many were rejected for an unusable id.
    pub invalid: usize,
    /// How many were rejected past `otlp.max_spans_per_request`.
    pub too_many: usize,
    /// Why (the first reason of each kind), for the answer.
    pub reasons: Vec<String>,
    /// How many of the kept spans were cut.
    pub truncated: usize,
}

/// Decodes every span of `request` within `limits`.
pub fn decode(request: ExportTraceServiceRequest, limits: &OtlpLimits) -> Decoded {
    let mut decoded = Decoded::default();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes_of(r.attributes, limits).0)
            .unwrap_or_default();
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            if decoded.spans.len() >= limits.max_spans_per_request {
                decoded.too_many += 1;
                decoded.note(format!(
                    "more than {} spans in one request",
                    limits.max_spans_per_request
                ));
                continue;
            }
            match harness_span(span, &resource, limits) {
                Ok(span) => {
                    if span.attributes.contains_key(TRUNCATED) {
                        decoded.truncated += 1;
                    }
                    decoded.spans.push(span);
                }
                Err(reason) => {
                    decoded.invalid += 1;
                    decoded.note(reason.to_string());
                }
            }
        }
    }
    decoded
}

impl Decoded {
    /// Every span rejected.
    pub fn rejected(&self) -> usize {
        self.invalid + self.too_many
    }

    fn note(&mut self, reason: String) {
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }
}

/// One span, or why it cannot be kept.
fn harness_span(
    span: Span,
    resource: &Map<String, Value>,
    limits: &OtlpLimits,
) -> Result<HarnessSpan, &'static str> {
    let trace_id = id(&span.trace_id, 16).ok_or("a span has no valid trace_id (16 bytes)")?;
    let span_id = id(&span.span_id, 8).ok_or("a span has no valid span_id (8 bytes)")?;
    let parent_span_id = match span.parent_span_id.as_slice() {
        [] => None,
        bytes => Some(id(bytes, 8).ok_or("a span's parent_span_id is not 8 bytes")?),
    };
    let (mut attributes, cut) = attributes_of(span.attributes, limits);
    if !cut.is_empty() {
        attributes.insert(TRUNCATED.into(), json!(cut));
    }
    let identity = identity(&attributes, resource);
    let status = span.status.unwrap_or_default();
    Ok(HarnessSpan {
        trace_id,
        span_id,
        parent_span_id,
        name: span.name,
        kind: kind(span.kind),
        start: time(span.start_time_unix_nano),
        end: time(span.end_time_unix_nano),
        start_unix_nanos: span.start_time_unix_nano,
        end_unix_nanos: span.end_time_unix_nano,
        status_code: match status.code {
            1 => HarnessStatusCode::Ok,
            2 => HarnessStatusCode::Error,
            _ => HarnessStatusCode::Unset,
        },
        status_message: Some(status.message).filter(|m| !m.is_empty()),
        attributes,
        events: span
            .events
            .into_iter()
            .map(|e| {
                json!({
                    "name": e.name,
                    "time": time(e.time_unix_nano),
                    "attributes": attributes_of(e.attributes, limits).0,
                })
            })
            .collect(),
        resource: resource.clone(),
        identity,
    })
}

/// Hex of an id of `len` bytes, not all zero (an invalid id in OTLP).
fn id(bytes: &[u8], len: usize) -> Option<String> {
    (bytes.len() == len && bytes.iter().any(|b| *b != 0))
        .then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn kind(kind: i32) -> HarnessSpanKind {
    match kind {
        1 => HarnessSpanKind::Internal,
        2 => HarnessSpanKind::Server,
        3 => HarnessSpanKind::Client,
        4 => HarnessSpanKind::Producer,
        5 => HarnessSpanKind::Consumer,
        _ => HarnessSpanKind::Unspecified,
    }
}

fn time(unix_nanos: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_nanos(unix_nanos))
}

/// Attributes as a JSON object, within the limits; returns what was cut
/// (`attributes` past the count, then the keys whose values were shortened).
fn attributes_of(list: Vec<KeyValue>, limits: &OtlpLimits) -> (Map<String, Value>, Vec<String>) {
    let mut out = Map::new();
    let mut cut = Vec::new();
    let total = list.len();
    for kv in list.into_iter().take(limits.max_attributes_per_span) {
        let mut shortened = false;
        let value = any(kv.value, limits.max_attribute_bytes, &mut shortened);
        if shortened {
            cut.push(kv.key.clone());
        }
        out.insert(kv.key, value);
    }
    if total > limits.max_attributes_per_span {
        cut.insert(
            0,
            format!(
                "attributes: {} dropped",
                total - limits.max_attributes_per_span
            ),
        );
    }
    (out, cut)
}

/// An attribute value as JSON: bytes as hex, lists and maps as JSON ones;
/// strings longer than `max_bytes` shortened (and `shortened` set).
fn any(value: Option<AnyValue>, max_bytes: usize, shortened: &mut bool) -> Value {
    match value.and_then(|v| v.value) {
        Some(Any::StringValue(s)) => Value::String(shorten(s, max_bytes, shortened)),
        Some(Any::BoolValue(b)) => json!(b),
        Some(Any::IntValue(i)) => json!(i),
        Some(Any::DoubleValue(d)) => json!(d),
        Some(Any::ArrayValue(list)) => Value::Array(
            list.values
                .into_iter()
                .map(|v| any(Some(v), max_bytes, shortened))
                .collect(),
        ),
        Some(Any::KvlistValue(map)) => Value::Object(
            map.values
                .into_iter()
                .map(|kv| (kv.key, any(kv.value, max_bytes, shortened)))
                .collect(),
        ),
        Some(Any::BytesValue(bytes)) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            Value::String(shorten(hex, max_bytes, shortened))
        }
        Some(Any::StringValueStrindex(_)) | None => Value::Null,
    }
}

fn shorten(mut s: String, max_bytes: usize, shortened: &mut bool) -> String {
    if s.len() > max_bytes {
        let mut end = max_bytes;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        *shortened = true;
    }
    s
}

/// The span's identity: `session.id` (else `gen_ai.conversation.id`) and
/// `rllm.<field>` for the other fields, each from the span's attributes,
/// else the resource's. Values that are no usable id are left out.
fn identity(attributes: &Map<String, Value>, resource: &Map<String, Value>) -> Identity {
    let lookup = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| attributes.get(*k))
            .or_else(|| keys.iter().find_map(|k| resource.get(*k)))
    };
    let mut identity = Identity::default();
    for field in IdentityField::ALL {
        let name = format!("rllm.{}", field.name());
        let keys: Vec<&str> = match field {
            IdentityField::SessionId => vec![name.as_str(), "session.id", "gen_ai.conversation.id"],
            _ => vec![name.as_str()],
        };
        let Some(value) = lookup(&keys) else { continue };
        match (field.is_integer(), value) {
            (true, Value::Number(n)) => set_integer(&mut identity, field, n.as_i64()),
            (true, Value::String(s)) => set_integer(&mut identity, field, s.trim().parse().ok()),
            (false, Value::String(s)) => set_text(&mut identity, field, s),
            (false, Value::Number(n)) => set_text(&mut identity, field, &n.to_string()),
            _ => {}
        }
    }
    identity
}

fn set_integer(identity: &mut Identity, field: IdentityField, value: Option<i64>) {
    match field {
        IdentityField::StepId => identity.step_id = value,
        IdentityField::WeightVersion => identity.weight_version = value,
        _ => {}
    }
}

fn set_text(identity: &mut Identity, field: IdentityField, value: &str) {
    let value = value.trim();
    if value.is_empty() || value.len() > MAX_TEXT_BYTES || value.chars().any(char::is_control) {
        return;
    }
    let value = Some(value.to_string());
    match field {
        IdentityField::SessionId => identity.session_id = value,
        IdentityField::RunId => identity.run_id = value,
        IdentityField::Harness => identity.harness = value,
        IdentityField::ParentSpanId => identity.parent_span_id = value,
        IdentityField::Project => identity.project = value,
        IdentityField::Experiment => identity.experiment = value,
        IdentityField::StepId | IdentityField::WeightVersion => {}
    }
}
