//! A harness span: an OpenTelemetry span the agent harness sent to the
//! gateway's OTLP receiver (`otlp`) — an agent step (`invoke_agent`), a tool
//! execution (`execute_tool`), an evaluation — kept beside the calls.
//!
//! Plain data, independent of the protobuf types: the receiver decodes OTLP
//! into it, the store keeps one row per span (`harness_spans`), the API
//! serves it, and export forwards it. Its identity (session, run, step,
//! harness, ...) is read from its attributes, else its resource's, by the
//! receiver; a call whose `traceparent` named the span is its child.

use crate::identity::Identity;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

crate::wire_enum! {
    /// The span's kind, as OTLP names it (without the `SPAN_KIND_` prefix).
    pub enum HarnessSpanKind {
        /// `SPAN_KIND_UNSPECIFIED`.
        Unspecified = "unspecified",
        /// `SPAN_KIND_INTERNAL`.
        Internal = "internal",
        /// `SPAN_KIND_SERVER`.
        Server = "server",
        /// `SPAN_KIND_CLIENT`.
        Client = "client",
        /// `SPAN_KIND_PRODUCER`.
        Producer = "producer",
        /// `SPAN_KIND_CONSUMER`.
        Consumer = "consumer",
    }
}

crate::wire_enum! {
    /// The span's status code.
    pub enum HarnessStatusCode {
        /// `STATUS_CODE_UNSET`.
        Unset = "unset",
        /// `STATUS_CODE_OK`.
        Ok = "ok",
        /// `STATUS_CODE_ERROR`.
        Error = "error",
    }
}

/// One received span, as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarnessSpan {
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// Parent span id, 16 hex digits; none for a root span.
    pub parent_span_id: Option<String>,
    /// The span's name (`invoke_agent my-agent`, `execute_tool bash`).
    pub name: String,
    /// Its kind.
    pub kind: HarnessSpanKind,
    /// Start, RFC 3339.
    pub start: String,
    /// End, RFC 3339.
    pub end: String,
    /// Start, nanoseconds since the Unix epoch (for export and ordering).
    pub start_unix_nanos: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// The status code.
    pub status_code: HarnessStatusCode,
    /// The status message, if any.
    pub status_message: Option<String>,
    /// The span's attributes, as JSON values (`tracegate.truncated` lists
    /// what the receiver's limits cut).
    pub attributes: Map<String, Value>,
    /// The span's events: `{name, time, attributes}` each.
    pub events: Vec<Value>,
    /// The attributes of the resource that sent it (`service.name`, ...).
    pub resource: Map<String, Value>,
    /// Who the span belongs to, from its attributes, else its resource's.
    pub identity: Identity,
}
