//! What the gateway knows about a call before the upstream answers, in the
//! parts the request path learns them: the arrival, who made the call, the
//! request body, and where it went.
//!
//! `forward` builds each part once, at the stage that knows it, and hands
//! the whole [`CallContext`] to capture with the response (or to
//! [`record_failure`](super::record_failure) when a stage fails). A call that
//! fails early simply has less: no route yet, or a body that was never read.

use crate::config::{Prices, RawBodies, UpstreamKind};
use crate::identity::Identity;
use crate::metrics::InFlight;
use crate::protocol::Endpoint;
use crate::record::Attempt;
use crate::trace_context::TraceContext;
use bytes::Bytes;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// A point in time, on both clocks: wall (for the record) and monotonic (for
/// durations that must not jump with the system clock).
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    /// Wall-clock time.
    pub wall: SystemTime,
    /// Monotonic time.
    pub mono: Instant,
}

impl Moment {
    /// Now.
    pub fn now() -> Moment {
        Moment {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }
}

/// A call as it arrived, before its body is read.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The record id (UUIDv7).
    pub trace_id: String,
    /// When the call arrived.
    pub started: Moment,
    /// HTTP method.
    pub method: String,
    /// The path as the client called it.
    pub path: String,
    /// The API called.
    pub endpoint: Endpoint,
    /// The client's request headers, credentials redacted.
    pub request_headers: Map<String, Value>,
    /// The request's content type.
    pub content_type: Option<String>,
}

/// Who made the call and where its span hangs.
#[derive(Debug, Clone, Default)]
pub struct Who {
    /// The identity the harness stamped on the call.
    pub identity: Identity,
    /// Identity values that were present but unusable.
    pub errors: Vec<String>,
    /// The call's OpenTelemetry context.
    pub trace: TraceContext,
}

/// The request body as forwarded.
#[derive(Debug, Clone, Default)]
pub enum RequestBody {
    /// Never read (the gateway failed the call first), or empty.
    #[default]
    None,
    /// A JSON object, parsed (identity carriers removed).
    Json(Map<String, Value>),
    /// Anything else, as bytes.
    Raw(Bytes),
}

/// Where the call went.
#[derive(Debug, Clone, Default)]
pub struct Destination {
    /// The route's name (`default` for the implicit route), once routed.
    pub route: Option<String>,
    /// What the route's upstream is (for `gen_ai.provider.name`).
    pub kind: UpstreamKind,
    /// The upstream base URL of the worker it was sent to.
    pub upstream: String,
    /// `(requested, sent)` when the route renamed the model.
    pub model_rewrite: Option<(String, String)>,
    /// Whether the record keeps the raw bodies (the route's `raw_bodies`).
    pub raw_bodies: RawBodies,
}

/// Whether a call gets a span (export on), and whether message content goes
/// on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanPolicy {
    /// Export is off: no span.
    None,
    /// A span without message content.
    WithoutContent,
    /// A span with `gen_ai.input.messages` and `gen_ai.output.messages`.
    WithContent,
}

/// What capture is told to keep, the same for every call.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// Whether the call gets a span.
    pub spans: SpanPolicy,
    /// Whether embedding vectors are kept in the raw response.
    pub store_embeddings: bool,
    /// What tokens cost (`[[prices]]`), for the record's `cost_usd`.
    pub prices: Arc<Prices>,
}

/// Everything capture needs about a call besides its response.
#[derive(Debug)]
pub struct CallContext {
    /// The call as it arrived.
    pub arrival: Arrival,
    /// Who made it.
    pub who: Who,
    /// Its body as forwarded.
    pub request: RequestBody,
    /// Where it went.
    pub destination: Destination,
    /// What to keep.
    pub settings: CaptureSettings,
    /// Secret values that must never be stored (route keys, env-sourced
    /// headers, the gateway's own tokens).
    pub secrets: Vec<String>,
    /// Counts the call in flight until its record is built; its metrics
    /// then observe the record.
    pub in_flight: InFlight,
    /// Every time the call was sent upstream, in order.
    pub attempts: Vec<Attempt>,
    /// Heartbeats sent to the client before the upstream answered.
    pub heartbeats: u64,
}

impl CallContext {
    /// A copy of the context, for recording a call whose owner is being
    /// dropped (the client left while the gateway waited for the upstream).
    /// It counts in flight on its own until its record is built.
    pub fn snapshot(&self) -> CallContext {
        CallContext {
            arrival: self.arrival.clone(),
            who: self.who.clone(),
            request: self.request.clone(),
            destination: self.destination.clone(),
            settings: self.settings.clone(),
            secrets: self.secrets.clone(),
            in_flight: self.in_flight.metrics().in_flight(),
            attempts: self.attempts.clone(),
            heartbeats: self.heartbeats,
        }
    }
}
