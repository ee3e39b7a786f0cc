//! The OTLP receiver: the harness's own spans, stored with the calls.
//!
//! An agent harness that already emits OpenTelemetry spans — its steps
//! (`invoke_agent`), tool executions (`execute_tool`), evaluations — points
//! its OTLP exporter at the gateway (`POST /v1/traces`, OTLP/HTTP, protobuf
//! or JSON, gzip or not, behind the inbound auth). The spans are decoded
//! with `opentelemetry-proto` and within the `[otlp]` limits (`decode`),
//! kept by the store's one writer in `harness_spans` — and, when export is
//! on, queued in the same transaction in the outbox that forwards them to
//! the collector — and answered per the OTLP/HTTP spec (`answer`):
//!
//! * 200 with an `ExportTraceServiceResponse` in the request's encoding,
//!   once the spans are committed; `partial_success` counts the spans
//!   rejected (and says what was cut from those kept);
//! * 400 with a `google.rpc.Status` for a payload that does not decode, 415
//!   for another content type;
//! * 503 with `Retry-After` while the store cannot commit (the exporter
//!   retries; the spans are never held in memory meanwhile).
//!
//! The OTLP/gRPC receiver (`grpc`, on `otlp.grpc_listen` when set) is the
//! same receiver over another transport: its messages go through the same
//! `take` (parse, limits, counts, commit) and get the same
//! `ExportTraceServiceResponse`; only the status codes travel differently.
//!
//! A call the harness made through the gateway with `traceparent` hangs
//! under the harness span that header named: the link is the call's OTel
//! trace and parent span ids, read by a join (`store::harness`), so the
//! spans and the calls may arrive in any order.

mod answer;
pub mod decode;
pub mod grpc;

use crate::config::OtlpLimits;
use crate::metrics::OtlpRejection;
use crate::server::AppState;
use answer::{Encoding, Refusal};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use decode::Decoded;
use http::{HeaderMap, header};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::io::Read;

/// What the receiver needs beside the store: its limits, and the largest
/// body it reads (`max_body_bytes`, before and after gzip).
#[derive(Debug, Clone, Copy)]
pub struct Receiver {
    /// The `[otlp]` limits.
    pub limits: OtlpLimits,
    /// The largest request body, as sent and as decompressed.
    pub max_body_bytes: usize,
}

/// `POST /v1/traces`: decodes, stores and answers one OTLP/HTTP export.
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match handle(&state, &headers, body).await {
        Ok(response) => response,
        Err(refusal) => refused(&state, refusal).into_response(),
    }
}

async fn handle(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, Refusal> {
    let encoding = Encoding::of(headers).ok_or(Refusal::ContentType)?;
    let max = state.otlp.max_body_bytes;
    let body = axum::body::to_bytes(body, max)
        .await
        .map_err(|e| Refusal::Malformed(encoding, format!("cannot read the body: {e}")))?;
    let body = decompress(headers, body, max, encoding)?;
    let decoded = take(state, encoding, &body).await?;
    Ok(answer::accepted(encoding, &decoded))
}

/// One export's body, parsed, decoded within the limits, counted and
/// committed to the store: the path both transports share. The answer is
/// the caller's to give ([`answer::response`] is its message).
async fn take(state: &AppState, encoding: Encoding, body: &[u8]) -> Result<Decoded, Refusal> {
    let request = parse(encoding, body)?;
    let mut decoded = decode::decode(request, &state.otlp.limits);
    count_rejected(state, &decoded);
    let stored = decoded.spans.len();
    if stored > 0 {
        let forward = state.export.is_some();
        state
            .writer
            .harness_spans(std::mem::take(&mut decoded.spans), forward)
            .await
            .map_err(|e| Refusal::Unavailable(encoding, e.to_string()))?;
        state.metrics.otlp_received(stored);
    }
    Ok(decoded)
}

/// Counts a refused request under its reason, and gives it back to be
/// answered.
fn refused(state: &AppState, refusal: Refusal) -> Refusal {
    state.metrics.otlp_rejected(refusal.reason(), 1);
    refusal
}

/// Counts the spans decode rejected, by why.
fn count_rejected(state: &AppState, decoded: &Decoded) {
    let metrics = &state.metrics;
    metrics.otlp_rejected(OtlpRejection::TooManySpans, decoded.too_many);
    metrics.otlp_rejected(OtlpRejection::InvalidSpan, decoded.invalid);
}

/// The body, gunzipped when `Content-Encoding: gzip` says so; a body that
/// does not is refused in the request's `encoding`.
fn decompress(
    headers: &HeaderMap,
    body: Bytes,
    max: usize,
    encoding: Encoding,
) -> Result<Bytes, Refusal> {
    let malformed = |message: String| Refusal::Malformed(encoding, message);
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match content_encoding.as_deref() {
        None | Some("" | "identity") => Ok(body),
        Some("gzip") => {
            let mut out = Vec::new();
            let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
            flate2::read::GzDecoder::new(&body[..])
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| malformed(format!("the gzip body does not decompress: {e}")))?;
            if out.len() > max {
                return Err(malformed(format!(
                    "the decompressed body is over {max} bytes"
                )));
            }
            Ok(out.into())
        }
        Some(other) => Err(malformed(format!(
            "unsupported Content-Encoding '{other}' (gzip or none)"
        ))),
    }
}

/// The request, from protobuf or OTLP/JSON.
fn parse(encoding: Encoding, body: &[u8]) -> Result<ExportTraceServiceRequest, Refusal> {
    let message = match encoding {
        Encoding::Protobuf => match ExportTraceServiceRequest::decode(body) {
            Ok(request) => return Ok(request),
            Err(e) => format!("not an OTLP ExportTraceServiceRequest: {e}"),
        },
        Encoding::Json => match serde_json::from_slice(body) {
            Ok(request) => return Ok(request),
            Err(e) => format!("not an OTLP/JSON ExportTraceServiceRequest: {e}"),
        },
    };
    Err(Refusal::Malformed(encoding, message))
}
