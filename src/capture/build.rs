//! Building a call's record: the request part, the response part, and the
//! outcome — pure functions, no I/O, so tests can call them directly.
//!
//! The record starts from the call's context (ids, identity, timing, where
//! it went). The request part reads the forwarded body through the
//! endpoint's assembler; the response part reads the answer (a JSON body or
//! an SSE stream) the same way; the outcome decides `status` and `error`
//! from how the response ended and what it said. Last, every secret the
//! gateway holds is scrubbed (`redact`).

use super::assembler::{self, Assembler};
use super::context::{Arrival, CallContext, Destination, Moment, RequestBody, Who};
use super::{Ending, Output, ResponseFacts, cost, redact, sse};
use crate::error::GatewayError;
use crate::headers;
use crate::record::{
    self, CallError, DEFAULT_SPAN_TYPE, Embeddings, ErrorKind, Status, TraceRecord, epoch_seconds,
    millis, rfc3339,
};
use base64::Engine;
use serde_json::{Value, json};

/// Builds the record of a call from its context and its response (or the
/// gateway's failure), with every secret scrubbed and the raw bodies kept
/// as the route's `raw_bodies` says.
pub fn assemble(
    ctx: CallContext,
    response: Option<ResponseFacts>,
    failure: Option<&GatewayError>,
) -> TraceRecord {
    let CallContext {
        arrival,
        who,
        request,
        destination,
        settings,
        secrets,
        in_flight: _in_flight,
        attempts,
        heartbeats,
    } = ctx;
    let assembler = assembler::of(arrival.endpoint);
    let ended = response.as_ref().map_or_else(Moment::now, |r| r.ended);
    let started = arrival.started;
    let content_type = arrival.content_type.clone();
    let raw_bodies = destination.raw_bodies;
    let mut record = start(arrival, who, destination.clone(), ended);
    record.attempt_count = u32::try_from(attempts.len()).unwrap_or(u32::MAX);
    record.attempts = attempts;
    record.heartbeats = heartbeats;
    let asked = request_part(&mut record, request, assembler, content_type.as_deref());
    if let Some((requested, sent)) = destination.model_rewrite {
        record.model = Some(requested);
        record.backend_model = Some(sent);
    }
    match (response, failure) {
        (Some(response), _) => {
            let options = ResponseOptions {
                assembler,
                asked,
                store_embeddings: settings.store_embeddings,
                started,
            };
            response_part(&mut record, response, &options);
        }
        // The client left before any answer: it never got a status.
        (None, Some(failure)) if failure.kind == ErrorKind::ClientClosed => {
            record.status = Status::ClientClosed;
            record.client_closed_at = Some(record.ended_at.clone());
            record.error = Some(failure.to_call_error());
        }
        (None, Some(failure)) => {
            record.status = Status::Error;
            record.http_status = Some(failure.status().as_u16());
            record.error = Some(failure.to_call_error());
        }
        (None, None) => {}
    }
    record.cost_usd = cost::cost_usd(&settings.prices, &record);
    if !raw_bodies.keeps(record.status == Status::Ok) {
        (record.raw_request, record.raw_response) = (None, None);
    }
    redact::secrets(record, &secrets)
}

/// The record as far as the context tells it.
fn start(arrival: Arrival, who: Who, destination: Destination, ended: Moment) -> TraceRecord {
    TraceRecord {
        trace_id: arrival.trace_id,
        span_id: who.trace.span_id,
        otel_trace_id: who.trace.trace_id,
        otel_parent_span_id: who.trace.parent_span_id,
        identity: who.identity,
        identity_errors: who.errors,
        span_type: DEFAULT_SPAN_TYPE.to_string(),
        method: arrival.method,
        path: arrival.path,
        route: destination.route,
        upstream: destination.upstream,
        protocol: arrival.endpoint.protocol(),
        operation: arrival.endpoint.operation(),
        timestamp: epoch_seconds(arrival.started.wall),
        started_at: rfc3339(arrival.started.wall),
        ended_at: rfc3339(ended.wall),
        latency_ms: millis(ended.mono.saturating_duration_since(arrival.started.mono)),
        request_headers: arrival.request_headers,
        ..TraceRecord::default()
    }
}

/// Reads the forwarded body into the record; returns what an embeddings
/// call asked for (its answer completes it).
fn request_part(
    rec: &mut TraceRecord,
    request: RequestBody,
    assembler: Option<&Assembler>,
    content_type: Option<&str>,
) -> Option<Embeddings> {
    match request {
        RequestBody::None => None,
        RequestBody::Raw(bytes) if bytes.is_empty() => None,
        RequestBody::Raw(bytes) => {
            rec.raw_request = Some(raw_body(content_type, &bytes));
            None
        }
        RequestBody::Json(body) => {
            rec.model = body
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string);
            rec.stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
            if let Some(Value::Object(metadata)) = body.get("metadata") {
                rec.metadata = metadata.clone();
            }
            let input = assembler.map(|a| (a.request)(&body)).unwrap_or_default();
            rec.messages = input.messages;
            rec.tools = input.tools;
            rec.request_params = record::request_params(&body);
            rec.raw_request = Some(Value::Object(body));
            input.embeddings
        }
    }
}

/// What reading a response needs besides the response.
struct ResponseOptions<'a> {
    assembler: Option<&'a Assembler>,
    asked: Option<Embeddings>,
    store_embeddings: bool,
    started: Moment,
}

/// The response body, whole, as capture reads it.
struct Body {
    content_type: Option<String>,
    is_sse: bool,
    bytes: Vec<u8>,
    json: Option<Value>,
}

impl Body {
    fn of(response: &ResponseFacts) -> Body {
        let content_type = response
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let is_sse = content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let bytes = response.chunks.concat();
        let json = if is_sse {
            None
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        Body {
            content_type,
            is_sse,
            bytes,
            json,
        }
    }
}

/// Reads the answer into the record: status, headers, timing, the raw
/// answer, the assembler's output and the outcome.
fn response_part(rec: &mut TraceRecord, response: ResponseFacts, options: &ResponseOptions<'_>) {
    rec.http_status = Some(response.status);
    rec.heartbeats += response.heartbeats;
    rec.client_closed_at = match (&response.ending, response.client_left) {
        (_, Some(left)) => Some(rfc3339(left.wall)),
        (Ending::ClientClosed, None) => Some(rfc3339(response.ended.wall)),
        _ => None,
    };
    rec.response_headers = headers::for_storage(&response.headers);
    if let Some(first) = response.first_chunk {
        rec.first_chunk_at = Some(rfc3339(first.wall));
        rec.ttft_ms = Some(millis(
            first.mono.saturating_duration_since(options.started.mono),
        ));
    }
    let body = Body::of(&response);
    let output = options.assembler.and_then(|a| {
        if body.is_sse {
            a.response_events
                .map(|fold| fold(&sse::events(&response.chunks)))
        } else {
            let json = body.json.as_ref().filter(|_| response.status < 400)?;
            Some((a.response_json)(json))
        }
    });
    if rec.identity.weight_version.is_none() {
        // The upstream's own stamp, when nothing at the gateway named one.
        rec.identity.weight_version = body
            .json
            .as_ref()
            .and_then(|j| j.get("weight_version"))
            .and_then(Value::as_i64);
    }
    rec.routing_matrices = body.json.as_ref().and_then(routing_matrices);
    let (is_sse, received) = (body.is_sse, body.bytes.len());
    rec.raw_response = raw_response(body, options);
    let ended = Ended {
        response: &response,
        output: output.as_ref(),
        is_sse,
        received,
        raw: rec.raw_response.as_ref(),
    };
    (rec.status, rec.error) = match response.client_left {
        Some(_) => finished_for_nobody(&ended),
        None => outcome(&ended),
    };
    if let Some(mut out) = output {
        if let (Some(asked), Some(got)) = (options.asked.clone(), out.embeddings.as_mut()) {
            got.encoding_format = asked.encoding_format;
            got.dimensions = got.dimensions.or(asked.dimensions);
        }
        apply_output(rec, out);
    }
}

/// The stored raw answer: the JSON object (slimmed as the assembler says,
/// unless told to keep everything), or a wrapper for anything else.
fn raw_response(body: Body, options: &ResponseOptions<'_>) -> Option<Value> {
    let slim = options
        .assembler
        .and_then(|a| a.slim_raw)
        .filter(|_| !options.store_embeddings);
    match body.json {
        Some(Value::Object(object)) => Some(match slim {
            Some(slim) => slim(Value::Object(object)),
            None => Value::Object(object),
        }),
        _ if body.bytes.is_empty() => None,
        _ => Some(raw_body(body.content_type.as_deref(), &body.bytes)),
    }
}

/// What the outcome is decided from.
struct Ended<'a> {
    response: &'a ResponseFacts,
    output: Option<&'a Output>,
    is_sse: bool,
    /// Response bytes received.
    received: usize,
    /// The stored raw answer (an upstream error's message is in it).
    raw: Option<&'a Value>,
}

/// How the call ended and why it failed, from how the response ended, its
/// status and what the assembler read.
fn outcome(ended: &Ended<'_>) -> (Status, Option<CallError>) {
    let status = ended.response.status;
    let error = match &ended.response.ending {
        Ending::ClientClosed => {
            let message = format!(
                "the client disconnected after {} response bytes",
                ended.received
            );
            return (
                Status::ClientClosed,
                Some(CallError::new(ErrorKind::ClientClosed, message)),
            );
        }
        Ending::UpstreamFailed(error) => Some(error.clone()),
        Ending::Complete if status >= 400 => Some(CallError::new(
            ErrorKind::UpstreamHttpError,
            upstream_error_message(ended.raw, status),
        )),
        Ending::Complete => match ended.output {
            Some(out) if out.error.is_some() => out.error.clone(),
            Some(out) if ended.is_sse && !out.complete => Some(CallError::new(
                ErrorKind::StreamIncomplete,
                "the upstream ended the stream without its end marker",
            )),
            _ => None,
        },
    };
    let status = if error.is_some() {
        Status::Error
    } else {
        Status::Ok
    };
    (status, error)
}

/// The outcome of a call the gateway read to its end after the client left
/// (`finish_on_client_close`): `client_closed`, saying what the upstream did.
fn finished_for_nobody(ended: &Ended<'_>) -> (Status, Option<CallError>) {
    let rest = match outcome(ended) {
        (_, None) => "the gateway read the rest of the answer".to_string(),
        (_, Some(e)) => format!("the gateway read on, and the answer failed: {}", e.message),
    };
    let message = format!(
        "the client disconnected; {rest} ({} bytes, finish_on_client_close)",
        ended.received
    );
    (
        Status::ClientClosed,
        Some(CallError::new(ErrorKind::ClientClosed, message)),
    )
}

/// Moves an assembler's output into the record.
fn apply_output(rec: &mut TraceRecord, out: Output) {
    rec.response_id = out.response_id;
    rec.response_model = out.response_model;
    rec.prompt_token_ids = out.prompt_token_ids;
    rec.embeddings = out.embeddings;
    rec.token_counts = record::token_counts_of(&out.usage);
    rec.usage = out.usage;
    rec.finish_reasons = record::finish_reasons_of(&out.choices);
    rec.tool_calls = record::tool_calls_of(&out.choices);
    if let Some(first) = out.choices.first() {
        rec.response_message = first.message.clone();
        rec.finish_reason = first.finish_reason.clone();
        rec.completion_token_ids = first.token_ids.clone();
        rec.logprobs = first.logprobs.clone().filter(|l| !l.is_empty());
    }
    rec.choices = out.choices;
}

/// The first choice's `routing_matrices` (vLLM), when it has any.
fn routing_matrices(body: &Value) -> Option<Vec<String>> {
    let matrices = body.get("choices")?.get(0)?.get("routing_matrices")?;
    let matrices: Vec<String> = matrices
        .as_array()?
        .iter()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect();
    (!matrices.is_empty()).then_some(matrices)
}

/// The message of an upstream error answer.
fn upstream_error_message(body: Option<&Value>, status: u16) -> String {
    let from_body = body.and_then(|b| {
        let error = b.get("error")?;
        error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| error.as_str().map(str::to_string))
    });
    from_body.unwrap_or_else(|| format!("the upstream answered HTTP {status}"))
}

/// A body that is not a JSON object, kept as
/// `{content_type, encoding: "utf8" | "base64", body}`.
pub fn raw_body(content_type: Option<&str>, bytes: &[u8]) -> Value {
    let (encoding, body) = match std::str::from_utf8(bytes) {
        Ok(text) => ("utf8", text.to_string()),
        Err(_) => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ),
    };
    json!({"content_type": content_type, "encoding": encoding, "body": body})
}
