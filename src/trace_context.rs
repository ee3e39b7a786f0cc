//! Where a call's span hangs: its OpenTelemetry trace id, span id and parent.
//!
//! Users open their tracing backend and expect one trace per agent run, with
//! each LLM call nested where the harness says it belongs. So, for each call:
//!
//! * an incoming valid W3C `traceparent` wins: the span continues that trace
//!   as a child of that parent, and `tracestate` is kept;
//! * otherwise the trace id is derived deterministically from the run id
//!   (else the session id), so every call of one run lands in one trace; a
//!   call with neither starts a fresh trace;
//! * otherwise the parent is `X-RLLM-Parent-Span-Id`: a 16-hex value is the
//!   parent span id as is, any other value is mapped deterministically to a
//!   span id.
//!
//! A call's own span id is derived from its record id by that same mapping.
//! So a harness that names the previous call (its `X-RLLM-Trace-Id`) as the
//! parent of the next gets a consistent tree, and one that uses its own ids
//! ("agent-1", "tool-3") gets the same parent span for the same id. Every
//! response carries the call's `traceparent`, so a harness can also continue
//! the trace itself. Derivations are UUIDv5 (SHA-1) hashes: stable across
//! gateways, restarts and versions.

use crate::identity::Identity;
use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use uuid::Uuid;

/// The namespace of tracegate's derived ids.
const NAMESPACE: Uuid = Uuid::from_u128(0x6a1c_52e3_8d9b_4f0e_a7c2_5b9e_1d4f_7a30);

/// The OpenTelemetry identity of one call's span.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// The call's span id, 16 lowercase hex digits.
    pub span_id: String,
    /// The parent span id, 16 lowercase hex digits, if the call has one.
    pub parent_span_id: Option<String>,
    /// Whether the parent came from the caller's `traceparent`.
    pub parent_is_remote: bool,
    /// The caller's `tracestate`, kept as is.
    pub trace_state: Option<String>,
}

impl TraceContext {
    /// The context of the call with record id `record_id`.
    pub fn for_call(headers: &HeaderMap, identity: &Identity, record_id: &str) -> TraceContext {
        let span_id = span_id_for(record_id);
        let incoming = TraceContextPropagator::new().extract(&Headers(headers));
        let remote = incoming.span().span_context().clone();
        if remote.is_valid() {
            let state = remote.trace_state().header();
            return TraceContext {
                trace_id: remote.trace_id().to_string(),
                span_id,
                parent_span_id: Some(remote.span_id().to_string()),
                parent_is_remote: true,
                trace_state: (!state.is_empty()).then_some(state),
            };
        }
        let trace_id =
            derived_trace_id(identity).unwrap_or_else(|| Uuid::new_v4().simple().to_string());
        TraceContext {
            trace_id,
            span_id,
            parent_span_id: identity.parent_span_id.as_deref().map(parent_span_id),
            parent_is_remote: false,
            trace_state: None,
        }
    }

    /// The W3C `traceparent` of the call's own span (sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

/// The trace id of a call without a valid incoming `traceparent`: derived
/// from its run id, else its session id; `None` for a call with neither
/// (it starts a fresh, random trace).
pub fn derived_trace_id(identity: &Identity) -> Option<String> {
    let name = match (&identity.run_id, &identity.session_id) {
        (Some(run), _) => format!("run:{run}"),
        (None, Some(session)) => format!("session:{session}"),
        (None, None) => return None,
    };
    Some(derived(&name).simple().to_string())
}

fn derived(name: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

/// The span id an arbitrary id maps to: 16 hex digits, never all zero.
pub fn span_id_for(id: &str) -> String {
    let bytes = derived(&format!("span:{id}")).into_bytes();
    let mut span = [0u8; 8];
    span.copy_from_slice(&bytes[..8]);
    if span == [0; 8] {
        span[7] = 1;
    }
    span.iter().map(|b| format!("{b:02x}")).collect()
}

/// `X-RLLM-Parent-Span-Id` as a span id: 16 hex digits as they are, anything
/// else mapped.
fn parent_span_id(raw: &str) -> String {
    let is_span_id = raw.len() == 16
        && raw.bytes().all(|b| b.is_ascii_hexdigit())
        && raw.bytes().any(|b| b != b'0');
    if is_span_id {
        raw.to_ascii_lowercase()
    } else {
        span_id_for(raw)
    }
}

/// Lets the W3C propagator read an `http::HeaderMap`.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::map_of;

    fn identity(run: Option<&str>, session: Option<&str>, parent: Option<&str>) -> Identity {
        Identity {
            run_id: run.map(str::to_string),
            session_id: session.map(str::to_string),
            parent_span_id: parent.map(str::to_string),
            ..Identity::default()
        }
    }

    #[test]
    fn a_valid_traceparent_wins() {
        let h = map_of(&[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "vendor=abc"),
        ]);
        let ctx = TraceContext::for_call(&h, &identity(Some("r"), None, Some("p")), "id-1");
        assert_eq!(ctx.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(ctx.parent_span_id.as_deref(), Some("b7ad6b7169203331"));
        assert!(ctx.parent_is_remote);
        assert_eq!(ctx.trace_state.as_deref(), Some("vendor=abc"));
    }

    #[test]
    fn an_invalid_traceparent_is_ignored() {
        let h = map_of(&[(
            "traceparent",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        )]);
        let ctx = TraceContext::for_call(&h, &identity(Some("r"), None, None), "id-1");
        assert_eq!(ctx.trace_id, derived("run:r").simple().to_string());
        assert!(!ctx.parent_is_remote);
    }

    #[test]
    fn calls_of_one_run_share_a_trace_and_others_do_not() {
        let h = HeaderMap::new();
        let a = TraceContext::for_call(&h, &identity(Some("run-1"), Some("s1"), None), "a");
        let b = TraceContext::for_call(&h, &identity(Some("run-1"), Some("s2"), None), "b");
        let c = TraceContext::for_call(&h, &identity(None, Some("s1"), None), "c");
        let d = TraceContext::for_call(&h, &identity(None, None, None), "d");
        let e = TraceContext::for_call(&h, &identity(None, None, None), "e");
        assert_eq!(a.trace_id, b.trace_id);
        assert_ne!(a.trace_id, c.trace_id);
        assert_ne!(d.trace_id, e.trace_id, "no identity: a fresh trace");
        assert_eq!(a.trace_id.len(), 32);
        assert_ne!(a.span_id, b.span_id);
    }

    #[test]
    fn a_parent_names_the_previous_call_consistently() {
        let h = HeaderMap::new();
        let first = TraceContext::for_call(&h, &identity(Some("r"), None, None), "trace-1");
        let second =
            TraceContext::for_call(&h, &identity(Some("r"), None, Some("trace-1")), "trace-2");
        assert_eq!(
            second.parent_span_id.as_deref(),
            Some(first.span_id.as_str())
        );
    }

    #[test]
    fn a_sixteen_hex_parent_is_kept_as_is() {
        assert_eq!(parent_span_id("00F067AA0BA902B7"), "00f067aa0ba902b7");
        assert_ne!(parent_span_id("agent-1"), "agent-1");
        assert_eq!(parent_span_id("agent-1"), parent_span_id("agent-1"));
        assert_eq!(parent_span_id("agent-1").len(), 16);
        assert_ne!(parent_span_id("0000000000000000"), "0000000000000000");
    }

    #[test]
    fn traceparent_is_w3c() {
        let ctx = TraceContext::for_call(&HeaderMap::new(), &identity(Some("r"), None, None), "x");
        let tp = ctx.traceparent();
        assert_eq!(tp.len(), 55);
        assert!(tp.starts_with("00-") && tp.ends_with("-01"));
    }
}
