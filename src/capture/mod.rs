//! Capture: turning a call's request and response bytes into a TraceRecord.
//!
//! Capture never sits on the hot path. `forward` hands it the call's context
//! when the request goes upstream and a clone of each response chunk as it
//! passes to the client (cloning `Bytes` is a reference-count increment).
//! Only when the response has ended — completely, by upstream failure, or by
//! the client going away — does capture do its work, in a task of its own:
//! split the stream into events, fold them with the protocol's assembler,
//! build the record and hand it to the store.
//!
//! Every call is recorded: [`ResponseCapture`] records on drop if nobody told
//! it how the response ended (the client disconnected and hyper dropped the
//! body), and [`record_failure`] records calls that never got an upstream
//! response (body too large, upstream unreachable, timeout).
//!
//! Each protocol has one assembler module with plain functions: `request`
//! (normalised input), `response_json` (a whole answer) and `response_events`
//! (a streamed one), all producing the same [`Output`] — one normalised view
//! (input messages, output messages, tool calls, finish reasons, usage)
//! whatever the protocol, beside the protocol's own raw request and
//! response. [`sse`] is the one SSE reader they share, [`fields`] the field
//! readers the OpenAI-style APIs share.

pub mod anthropic_messages;
pub mod fields;
pub mod openai_chat;
pub mod openai_completions;
pub mod openai_embeddings;
pub mod openai_responses;
pub mod redact;
pub mod span;
pub mod sse;

use crate::error::GatewayError;
use crate::headers;
use crate::identity::Identity;
use crate::metrics::InFlight;
use crate::record::{
    CallError, Choice, DEFAULT_SPAN_TYPE, Embeddings, Status, TraceRecord, Usage, epoch_seconds,
    millis, rfc3339,
};
use crate::store::{Reservation, StoreWriter};
use crate::trace_context::TraceContext;
use base64::Engine;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value, json};
use std::time::{Instant, SystemTime};

/// The API a call was made to, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// OpenAI `/v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `/v1/completions`.
    Completions,
    /// OpenAI `/v1/responses`.
    Responses,
    /// OpenAI `/v1/embeddings`.
    Embeddings,
    /// Anthropic `/v1/messages`.
    Messages,
    /// Any other OpenAI-style path: forwarded and recorded with raw bodies.
    Other,
    /// Any other Anthropic path (`/v1/messages/count_tokens`, batches).
    OtherAnthropic,
}

impl Endpoint {
    /// The endpoint of a client path that starts with `/v1`.
    pub fn from_api_path(api_path: &str) -> Endpoint {
        match api_path.trim_end_matches('/') {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/completions" => Endpoint::Completions,
            "/v1/responses" => Endpoint::Responses,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/messages" => Endpoint::Messages,
            p if p.starts_with("/v1/messages/") => Endpoint::OtherAnthropic,
            _ => Endpoint::Other,
        }
    }

    /// The API family (`openai` or `anthropic`).
    pub fn protocol(self) -> &'static str {
        match self {
            Endpoint::Messages | Endpoint::OtherAnthropic => "anthropic",
            _ => "openai",
        }
    }

    /// The GenAI operation name.
    pub fn operation(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages => "chat",
            Endpoint::Completions => "text_completion",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Other | Endpoint::OtherAnthropic => "other",
        }
    }
}

/// The normalised input of a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    /// Input messages, in the OpenAI chat shape.
    pub messages: Vec<Value>,
    /// Tool definitions offered to the model.
    pub tools: Vec<Value>,
}

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

/// What the gateway knows about a call before the upstream answers.
#[derive(Debug)]
pub struct CallContext {
    /// The record id (UUIDv7).
    pub trace_id: String,
    /// Where the call's span hangs.
    pub trace: TraceContext,
    /// `gen_ai.provider.name` for the span.
    pub provider: &'static str,
    /// Whether the call gets a span, and with what.
    pub spans: SpanPolicy,
    /// When the call arrived.
    pub started: Moment,
    /// HTTP method.
    pub method: String,
    /// The path as the client called it.
    pub path: String,
    /// The API called.
    pub endpoint: Endpoint,
    /// Who made the call.
    pub identity: Identity,
    /// Identity values that were present but unusable.
    pub identity_errors: Vec<String>,
    /// The upstream base URL.
    pub upstream: String,
    /// The route name, when routes are configured.
    pub route: Option<String>,
    /// `(requested, sent)` when the route renamed the model (`backend_model`).
    pub model_rewrite: Option<(String, String)>,
    /// The client's request headers, credentials redacted.
    pub request_headers: Map<String, Value>,
    /// The request's content type.
    pub request_content_type: Option<String>,
    /// The forwarded body, parsed, when it is a JSON object.
    pub request_json: Option<Map<String, Value>>,
    /// The forwarded body, when it is not a JSON object.
    pub request_body: Bytes,
    /// Whether embedding vectors are kept in the raw response.
    pub store_embeddings: bool,
    /// Secret values that must never be stored (route keys, env-sourced
    /// headers, the gateway's own tokens).
    pub secrets: Vec<String>,
    /// Counts the call in flight until its record is built; its metrics
    /// then observe the record.
    pub in_flight: InFlight,
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

/// How a response ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The whole response reached the client.
    Complete,
    /// The client went away first.
    ClientClosed,
    /// The upstream connection failed mid-response.
    UpstreamFailed(CallError),
}

/// The response side of a call, as collected while it streamed.
#[derive(Debug, Clone)]
pub struct ResponseFacts {
    /// The upstream's HTTP status.
    pub status: u16,
    /// The upstream's response headers.
    pub headers: HeaderMap,
    /// The body, in the chunks it arrived in.
    pub chunks: Vec<Bytes>,
    /// When the first chunk arrived.
    pub first_chunk: Option<Moment>,
    /// When the response ended.
    pub ended: Moment,
    /// How it ended.
    pub ending: Ending,
}

/// What an assembler read from a response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// The upstream's response id.
    pub response_id: Option<String>,
    /// The model that answered.
    pub response_model: Option<String>,
    /// Every choice, in index order, with its token data.
    pub choices: Vec<Choice>,
    /// Token usage.
    pub usage: Usage,
    /// Prompt token ids (vLLM).
    pub prompt_token_ids: Vec<u32>,
    /// For embeddings: what was embedded.
    pub embeddings: Option<Embeddings>,
    /// An error the upstream reported inside a 2xx response (an error event).
    pub error: Option<CallError>,
    /// Whether the response reached its protocol's proper end (`[DONE]`,
    /// `message_stop`, `response.completed`, a whole JSON body); a stream cut
    /// short is not complete.
    pub complete: bool,
}

/// Collects a response as it streams to the client, and records the call when
/// the response ends. Dropping it before [`ResponseCapture::finish`] records
/// the call as `client_closed`.
pub struct ResponseCapture {
    pending: Option<Pending>,
}

struct Pending {
    ctx: CallContext,
    status: u16,
    headers: HeaderMap,
    chunks: Vec<Bytes>,
    first_chunk: Option<Moment>,
    store: StoreWriter,
}

impl ResponseCapture {
    /// Starts collecting the response of the call `ctx`.
    pub fn new(ctx: CallContext, status: u16, headers: HeaderMap, store: StoreWriter) -> Self {
        Self {
            pending: Some(Pending {
                ctx,
                status,
                headers,
                chunks: Vec::new(),
                first_chunk: None,
                store,
            }),
        }
    }

    /// Keeps a clone of a chunk that is on its way to the client.
    pub fn chunk(&mut self, chunk: &Bytes) {
        if let Some(p) = &mut self.pending {
            p.first_chunk.get_or_insert_with(Moment::now);
            p.chunks.push(chunk.clone());
        }
    }

    /// Ends the response: reserves the record's place in the store (so a
    /// flush from now on waits for it) and assembles it in the background.
    /// Later calls do nothing.
    pub fn finish(&mut self, ending: Ending) {
        let Some(p) = self.pending.take() else { return };
        let reservation = p.store.reserve();
        let facts = ResponseFacts {
            status: p.status,
            headers: p.headers,
            chunks: p.chunks,
            first_chunk: p.first_chunk,
            ended: Moment::now(),
            ending,
        };
        spawn_record(p.ctx, Some(facts), None, reservation);
    }
}

impl Drop for ResponseCapture {
    fn drop(&mut self) {
        self.finish(Ending::ClientClosed);
    }
}

/// Records a call the gateway failed before any upstream response.
pub fn record_failure(ctx: CallContext, error: &GatewayError, store: &StoreWriter) {
    spawn_record(ctx, None, Some(error.clone()), store.reserve());
}

fn spawn_record(
    ctx: CallContext,
    response: Option<ResponseFacts>,
    failure: Option<GatewayError>,
    reservation: Reservation,
) {
    let task = async move {
        let (policy, trace, provider, started) =
            (ctx.spans, ctx.trace.clone(), ctx.provider, ctx.started.wall);
        let metrics = ctx.in_flight.metrics().clone();
        let record = assemble(ctx, response, failure.as_ref());
        metrics.observe_call(&record);
        let span = (policy != SpanPolicy::None).then(|| {
            let inputs = span::SpanInputs {
                trace: &trace,
                provider,
                started,
                ended: started + std::time::Duration::from_secs_f64(record.latency_ms / 1000.0),
                include_content: policy == SpanPolicy::WithContent,
            };
            span::of(&record, &inputs)
        });
        reservation.submit(record, span).await;
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(task);
        }
        Err(_) => tracing::error!("no runtime to record a call on; record lost"),
    }
}

/// Request-body keys that are the call's content, not its parameters.
const CONTENT_KEYS: &[&str] = &[
    "model",
    "messages",
    "tools",
    "functions",
    "stream",
    "metadata",
    "prompt",
    "input",
    "system",
];

/// Builds the record of a call from its context and its response (or the
/// gateway's failure), with every secret scrubbed. Pure: no I/O, so tests
/// can call it directly.
pub fn assemble(
    mut ctx: CallContext,
    response: Option<ResponseFacts>,
    failure: Option<&GatewayError>,
) -> TraceRecord {
    let secrets = std::mem::take(&mut ctx.secrets);
    let mut record = build(ctx, response, failure);
    redact::secrets(&mut record, &secrets);
    record
}

fn build(
    mut ctx: CallContext,
    response: Option<ResponseFacts>,
    failure: Option<&GatewayError>,
) -> TraceRecord {
    let ended = response.as_ref().map_or_else(Moment::now, |r| r.ended);
    let model_rewrite = ctx.model_rewrite.take();
    let mut rec = TraceRecord {
        trace_id: ctx.trace_id,
        span_id: ctx.trace.span_id,
        otel_trace_id: ctx.trace.trace_id,
        otel_parent_span_id: ctx.trace.parent_span_id,
        session_id: ctx.identity.session_id,
        run_id: ctx.identity.run_id,
        harness: ctx.identity.harness,
        step_id: ctx.identity.step_id,
        parent_span_id: ctx.identity.parent_span_id,
        project: ctx.identity.project,
        experiment: ctx.identity.experiment,
        identity_errors: ctx.identity_errors,
        span_type: DEFAULT_SPAN_TYPE.to_string(),
        method: ctx.method,
        path: ctx.path,
        route: ctx.route,
        upstream: ctx.upstream,
        protocol: ctx.endpoint.protocol().to_string(),
        operation: ctx.endpoint.operation().to_string(),
        timestamp: epoch_seconds(ctx.started.wall),
        started_at: rfc3339(ctx.started.wall),
        ended_at: rfc3339(ended.wall),
        latency_ms: millis(ended.mono.saturating_duration_since(ctx.started.mono)),
        request_headers: ctx.request_headers,
        ..TraceRecord::default()
    };

    // ---- the request ----
    let mut requested_embeddings = None;
    if let Some(body) = ctx.request_json {
        rec.model = body
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string);
        rec.stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        if let Some(Value::Object(metadata)) = body.get("metadata") {
            rec.metadata = metadata.clone();
        }
        let input = match ctx.endpoint {
            Endpoint::ChatCompletions => openai_chat::request(&body),
            Endpoint::Completions => openai_completions::request(&body),
            Endpoint::Responses => openai_responses::request(&body),
            Endpoint::Messages => anthropic_messages::request(&body),
            Endpoint::Embeddings => {
                let (input, info) = openai_embeddings::request(&body);
                requested_embeddings = Some(info);
                input
            }
            Endpoint::Other | Endpoint::OtherAnthropic => Input::default(),
        };
        rec.messages = input.messages;
        rec.tools = input.tools;
        rec.request_params = body
            .iter()
            .filter(|(k, _)| !CONTENT_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        rec.raw_request = Some(Value::Object(body));
    } else if !ctx.request_body.is_empty() {
        rec.raw_request = Some(raw_body(
            ctx.request_content_type.as_deref(),
            &ctx.request_body,
        ));
    }
    if let Some((requested, sent)) = model_rewrite {
        rec.model = Some(requested);
        rec.backend_model = Some(sent);
    }

    // ---- the response ----
    let Some(response) = response else {
        if let Some(failure) = failure {
            rec.status = Status::Error;
            rec.http_status = Some(failure.status.as_u16());
            rec.error = Some(CallError {
                kind: failure.code.to_string(),
                message: failure.message.clone(),
            });
        }
        return rec;
    };
    rec.http_status = Some(response.status);
    rec.response_headers = headers::for_storage(&response.headers);
    if let Some(first) = response.first_chunk {
        rec.first_chunk_at = Some(rfc3339(first.wall));
        rec.ttft_ms = Some(millis(
            first.mono.saturating_duration_since(ctx.started.mono),
        ));
    }
    let content_type = response
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let is_sse = content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let body: Vec<u8> = response.chunks.concat();
    let json: Option<Value> = if is_sse {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };

    let output = if is_sse {
        let events = sse::events(&response.chunks);
        match ctx.endpoint {
            Endpoint::ChatCompletions => Some(openai_chat::response_events(&events)),
            Endpoint::Completions => Some(openai_completions::response_events(&events)),
            Endpoint::Responses => Some(openai_responses::response_events(&events)),
            Endpoint::Messages => Some(anthropic_messages::response_events(&events)),
            _ => None,
        }
    } else {
        match &json {
            Some(v) if response.status < 400 => match ctx.endpoint {
                Endpoint::ChatCompletions => Some(openai_chat::response_json(v)),
                Endpoint::Completions => Some(openai_completions::response_json(v)),
                Endpoint::Responses => Some(openai_responses::response_json(v)),
                Endpoint::Messages => Some(anthropic_messages::response_json(v)),
                Endpoint::Embeddings => Some(openai_embeddings::response_json(v)),
                _ => None,
            },
            _ => None,
        }
    };
    let json = match json {
        Some(v) if ctx.endpoint == Endpoint::Embeddings && !ctx.store_embeddings => {
            Some(openai_embeddings::without_vectors(v))
        }
        other => other,
    };
    rec.raw_response = match json {
        Some(Value::Object(object)) => Some(Value::Object(object)),
        _ if body.is_empty() => None,
        _ => Some(raw_body(content_type.as_deref(), &body)),
    };

    rec.status = Status::Ok;
    rec.error = match (&response.ending, response.status) {
        (Ending::ClientClosed, _) => {
            rec.status = Status::ClientClosed;
            Some(CallError {
                kind: "client_closed".into(),
                message: format!(
                    "the client disconnected after {} response bytes",
                    body.len()
                ),
            })
        }
        (Ending::UpstreamFailed(error), _) => Some(error.clone()),
        (Ending::Complete, status) if status >= 400 => Some(CallError {
            kind: "upstream_http_error".into(),
            message: upstream_error_message(rec.raw_response.as_ref(), status),
        }),
        (Ending::Complete, _) => match &output {
            Some(out) if out.error.is_some() => out.error.clone(),
            Some(out) if is_sse && !out.complete => Some(CallError {
                kind: "stream_incomplete".into(),
                message: "the upstream ended the stream without its end marker".into(),
            }),
            _ => None,
        },
    };
    if rec.error.is_some() && rec.status == Status::Ok {
        rec.status = Status::Error;
    }

    if let Some(mut out) = output {
        if let (Some(asked), Some(got)) = (requested_embeddings, out.embeddings.as_mut()) {
            got.encoding_format = asked.encoding_format;
            got.dimensions = got.dimensions.or(asked.dimensions);
        }
        apply_output(&mut rec, out);
    }
    rec
}

/// Moves an assembler's output into the record.
fn apply_output(rec: &mut TraceRecord, out: Output) {
    rec.response_id = out.response_id;
    rec.response_model = out.response_model;
    rec.prompt_token_ids = out.prompt_token_ids;
    rec.embeddings = out.embeddings;
    rec.token_counts = token_counts(&out.usage);
    rec.usage = out.usage;
    rec.finish_reasons = out
        .choices
        .iter()
        .filter_map(|c| c.finish_reason.clone())
        .collect();
    rec.tool_calls = out
        .choices
        .iter()
        .flat_map(|c| {
            let calls = c.message.get("tool_calls").and_then(Value::as_array);
            calls.into_iter().flatten().map(move |call| {
                let mut call = call.clone();
                if let Some(fields) = call.as_object_mut() {
                    fields.insert("choice".into(), json!(c.index));
                }
                call
            })
        })
        .collect();
    if let Some(first) = out.choices.first() {
        rec.response_message = first.message.clone();
        rec.finish_reason = first.finish_reason.clone();
        rec.completion_token_ids = first.token_ids.clone();
        rec.logprobs = first.logprobs.clone();
    }
    rec.choices = out.choices;
}

/// rLLM's `token_counts`: `{prompt, completion}` when known.
fn token_counts(usage: &Usage) -> Map<String, Value> {
    let mut counts = Map::new();
    if let Some(n) = usage.input_tokens {
        counts.insert("prompt".into(), json!(n));
    }
    if let Some(n) = usage.output_tokens {
        counts.insert("completion".into(), json!(n));
    }
    counts
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
