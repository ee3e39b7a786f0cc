//! The OpenTelemetry span of a call, as the store keeps it in its export
//! outbox until a collector has it: plain data, independent of the SDK, so
//! a stored span reads back whatever the SDK version.
//!
//! A call that was sent upstream more than once carries one child span per
//! attempt (`upstream.attempt`) inside its own, so the outbox keeps one row
//! per call and the exporter sends the call with its children.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The OpenTelemetry span of one call, as kept in the store's outbox until
/// it is exported. Kind is always CLIENT: the gateway calls a model server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Span {
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// Parent span id, 16 hex digits.
    pub parent_span_id: Option<String>,
    /// Whether the parent is in another process (an incoming `traceparent`).
    pub parent_is_remote: bool,
    /// The caller's W3C `tracestate`.
    pub trace_state: Option<String>,
    /// `{gen_ai.operation.name} {model}`.
    pub name: String,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// The status description when the call failed (status error); `None`
    /// for a call that succeeded (status unset).
    pub error: Option<String>,
    /// Attributes, in a stable order.
    pub attributes: Vec<Attribute>,
    /// Child spans exported with this one (a retried call's attempts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Span>,
}

/// One span attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    /// The key, e.g. `gen_ai.request.model`.
    pub key: String,
    /// The value.
    pub value: AttributeValue,
}

/// A span attribute's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeValue {
    /// A string.
    String(String),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A list of strings.
    Strings(Vec<String>),
}

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
