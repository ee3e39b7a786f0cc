//! The TraceRecord: everything tracegate remembers about one proxied call.
//!
//! This type is the contract between capture (which fills it), the store
//! (which keeps it), the API and CLI (which serve it) and the exporter (which
//! turns it into a span). Its JSON form is the one the HTTP API returns, and
//! `schema/trace_record.schema.json` describes exactly that form (a test keeps
//! the two in agreement).
//!
//! The JSON keeps rLLM's TraceRecord field names and types so that
//! rllm-model-gateway's Python `GatewayClient` reads it unchanged: the rLLM
//! fields (`session_id`, `model`, `messages`, `prompt_token_ids`,
//! `response_message`, `completion_token_ids`, `token_counts`, `metadata`, ...)
//! are never `null` — an absent session or model is `""`, an absent list `[]`,
//! an absent object `{}`. tracegate's own fields use `null` for "absent".
//!
//! One record is written for every call, whatever happened: `status` says how
//! it ended (`ok`, `error`, `client_closed`) and `error` says why.

mod attempt;
mod harness;
mod outcome;
mod span;

pub use crate::feedback::Feedback;
pub use crate::identity::Identity;
pub use crate::protocol::{Operation, Protocol};
pub use attempt::{Attempt, RetryReason};
pub use harness::{HarnessSpan, HarnessSpanKind, HarnessStatusCode};
pub use outcome::{CallError, ErrorKind, Status};
pub use span::{Attribute, AttributeValue, Span, unix_nanos};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The default `span_type` of a model call.
pub const DEFAULT_SPAN_TYPE: &str = "llm.call";

/// One proxied call, as stored and served.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TraceRecord {
    // ---- ids ----
    /// The record's id (UUIDv7, so ids sort by time). Also sent back to the
    /// caller as `X-RLLM-Trace-Id`.
    pub trace_id: String,
    /// The OpenTelemetry span id of the call (16 hex digits).
    pub span_id: String,
    /// The OpenTelemetry trace id the span belongs to (32 hex digits).
    pub otel_trace_id: String,
    /// The OpenTelemetry parent span id (16 hex digits), if the call has one.
    pub otel_parent_span_id: Option<String>,

    // ---- identity ----
    /// Who made the call (see `identity`): its fields sit at the top level
    /// of the JSON, as rLLM's record has them.
    #[serde(flatten)]
    pub identity: Identity,
    /// Identity values that were present but unusable (e.g. a step_id that is
    /// not an integer), one line each.
    pub identity_errors: Vec<String>,
    /// What kind of span this call is (`llm.call` unless configured otherwise).
    pub span_type: String,

    // ---- where it went ----
    /// The HTTP method of the call.
    pub method: String,
    /// The path the client called (with its `/sessions/{sid}` prefix, if any).
    pub path: String,
    /// The route that served the call: its name, `default` for the
    /// implicit route of a gateway without routes; none when no route
    /// served it (no route for the model).
    pub route: Option<String>,
    /// The upstream base URL the call was sent to (never with credentials).
    pub upstream: String,
    /// The API family the call spoke: `openai` or `anthropic`.
    pub protocol: Protocol,
    /// The GenAI operation: `chat` (chat completions, Anthropic messages, the
    /// Responses API), `text_completion`, `embeddings`, or `other`.
    pub operation: Operation,

    // ---- request ----
    /// The model the client asked for; `""` when none (rLLM type).
    #[serde(with = "empty_as_none")]
    pub model: Option<String>,
    /// The model name sent upstream, when the route renamed it.
    pub backend_model: Option<String>,
    /// Whether the client asked for a streamed answer.
    pub stream: bool,
    /// The input messages (normalised: OpenAI chat shape).
    pub messages: Vec<Value>,
    /// The tool definitions offered to the model.
    pub tools: Vec<Value>,
    /// Every other request parameter (sampling parameters and the like).
    pub request_params: Map<String, Value>,

    // ---- response ----
    /// The response id the upstream gave.
    pub response_id: Option<String>,
    /// The model that answered, as the upstream reported it.
    pub response_model: Option<String>,
    /// The first choice's message (`{}` when there is none; rLLM type).
    pub response_message: Map<String, Value>,
    /// Every choice of the answer (the output messages).
    pub choices: Vec<Choice>,
    /// Every tool call of every choice, in OpenAI's shape
    /// (`{id, type, function: {name, arguments}}`) plus its `choice` index,
    /// whatever the protocol (Anthropic `tool_use` blocks and Responses API
    /// `function_call` items are normalised to it).
    pub tool_calls: Vec<Value>,
    /// The first choice's finish reason.
    pub finish_reason: Option<String>,
    /// Every choice's finish reason, in choice order.
    pub finish_reasons: Vec<String>,

    // ---- token data (vLLM) ----
    /// The prompt's token ids, when the upstream returned them.
    pub prompt_token_ids: Vec<u32>,
    /// The first choice's completion token ids, when returned.
    pub completion_token_ids: Vec<u32>,
    /// The first choice's per-token logprobs, when returned (`null`, not
    /// `[]`, when there are none, as rLLM has it).
    pub logprobs: Option<Vec<f64>>,
    /// The first choice's `routing_matrices` (vLLM's per-token expert
    /// routing, for mixture-of-experts router replay), when returned.
    pub routing_matrices: Option<Vec<String>>,
    /// rLLM's conversation lineage within the session. rLLM assigns one
    /// only in its cumulative token mode, which tracegate does not have, so
    /// it is always `null`: readers treat the session as one lineage.
    pub lineage_id: Option<String>,
    /// For embeddings calls: how many inputs, and the vectors' size.
    pub embeddings: Option<Embeddings>,

    // ---- usage ----
    /// Token usage as the upstream reported it.
    pub usage: Usage,
    /// rLLM's usage summary: `{prompt, completion}`.
    pub token_counts: Map<String, Value>,
    /// What the call cost in USD, from its usage and the `[[prices]]` entry
    /// of its model; `null` when no price matches or there is no usage.
    pub cost_usd: Option<f64>,

    // ---- timing ----
    /// When the call arrived, in seconds since the Unix epoch (rLLM type).
    pub timestamp: f64,
    /// When the call arrived (RFC 3339, UTC, microseconds).
    pub started_at: String,
    /// When the first response byte arrived from the upstream.
    pub first_chunk_at: Option<String>,
    /// When the call ended (last byte, error, or client disconnect).
    pub ended_at: String,
    /// Milliseconds from arrival to end.
    pub latency_ms: f64,
    /// Milliseconds from arrival to the first response byte. Statistics
    /// and displays count it as the time to first token of streamed calls
    /// only (a plain answer's first byte is the whole answer).
    pub ttft_ms: Option<f64>,

    // ---- outcome ----
    /// How the call ended.
    pub status: Status,
    /// The HTTP status of the answer: the upstream's, or the gateway's
    /// when it failed the call; none if the client never got one. (After
    /// heartbeats the client got `200` before the status was known.)
    pub http_status: Option<u16>,
    /// Why the call failed, when it did.
    pub error: Option<CallError>,
    /// When the client went away, if it did before the answer ended. With
    /// the route's `finish_on_client_close` the gateway read on: `ended_at`
    /// and the content are then the upstream's whole answer.
    pub client_closed_at: Option<String>,

    // ---- attempts ----
    /// Every time the call was sent upstream, in order (empty when the
    /// gateway failed it before sending); the last one was answered.
    pub attempts: Vec<Attempt>,
    /// How many attempts there were (`attempts.len()`; retries are one less).
    pub attempt_count: u32,
    /// Heartbeats the gateway sent the client while the upstream was
    /// silent: whitespace bytes before a non-streamed body
    /// (`heartbeat_after`), `: keep-alive` comments in a stream
    /// (`stream_keepalive`). They are never part of `raw_response`.
    pub heartbeats: u64,

    // ---- raw ----
    /// The request headers as the client sent them, credentials redacted.
    pub request_headers: Map<String, Value>,
    /// The response headers as the upstream sent them, credentials redacted.
    pub response_headers: Map<String, Value>,
    /// The request body as forwarded: the JSON object, or a wrapper
    /// `{content_type, encoding, body}` for anything else.
    pub raw_request: Option<Value>,
    /// The response body as received: the JSON object, or a wrapper
    /// `{content_type, encoding, body}` for anything else (SSE streams too).
    pub raw_response: Option<Value>,
    /// Free-form metadata (the request's own `metadata` object, rLLM type).
    pub metadata: Map<String, Value>,

    // ---- feedback ----
    /// The feedback naming this call (`POST /feedback`), oldest first:
    /// joined when the record is read, never stored with it.
    pub feedback: Vec<Feedback>,
}

/// One choice of an answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Choice {
    /// The choice's index.
    pub index: u32,
    /// The message: `role`, `content`, and when present `reasoning_content`,
    /// `refusal`, `tool_calls` (and for Anthropic `content_blocks`, the
    /// message's blocks exactly as the API returns them).
    pub message: Map<String, Value>,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
    /// The choice's completion token ids (vLLM `token_ids`).
    pub token_ids: Vec<u32>,
    /// The choice's per-token logprobs.
    pub logprobs: Option<Vec<f64>>,
    /// For each token, the most likely alternatives, when asked for.
    pub top_logprobs: Option<Vec<Vec<TopLogprob>>>,
}

/// One alternative token and its logprob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its log probability.
    pub logprob: f64,
}

/// What an embeddings call embedded. The vectors themselves are not kept
/// unless `capture.store_embeddings` is on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Embeddings {
    /// How many inputs were embedded.
    pub input_count: u64,
    /// The size of each vector.
    pub dimensions: Option<u64>,
    /// `float` or `base64`, as requested.
    pub encoding_format: Option<String>,
}

/// Token usage. Every count is optional: upstreams report what they report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub input_tokens: Option<u64>,
    /// Completion (output) tokens.
    pub output_tokens: Option<u64>,
    /// Total tokens.
    pub total_tokens: Option<u64>,
    /// Input tokens served from a prompt cache.
    pub cached_input_tokens: Option<u64>,
    /// Input tokens written to a prompt cache.
    pub cache_creation_input_tokens: Option<u64>,
    /// Output tokens spent on reasoning.
    pub reasoning_tokens: Option<u64>,
}

impl Usage {
    /// Input plus output tokens, when either is known.
    pub fn tokens(&self) -> Option<u64> {
        match (self.input_tokens, self.output_tokens) {
            (None, None) => self.total_tokens,
            (i, o) => Some(i.unwrap_or(0) + o.unwrap_or(0)),
        }
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

/// A request body's parameters (`temperature`, `max_tokens`, ...): every
/// key but those that are the call's content. Capture fills
/// `request_params` with it, and the store derives it again from the raw
/// request it keeps, so both must agree.
pub fn request_params(body: &Map<String, Value>) -> Map<String, Value> {
    body.iter()
        .filter(|(k, _)| !CONTENT_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The finish reason of every choice that has one, in order (the record's
/// `finish_reasons`).
pub fn finish_reasons_of(choices: &[Choice]) -> Vec<String> {
    choices
        .iter()
        .filter_map(|c| c.finish_reason.clone())
        .collect()
}

/// Every choice's tool calls, each with its choice's index as `choice`
/// (the record's `tool_calls`).
pub fn tool_calls_of(choices: &[Choice]) -> Vec<Value> {
    choices
        .iter()
        .flat_map(|c| {
            let calls = c.message.get("tool_calls").and_then(Value::as_array);
            calls.into_iter().flatten().map(move |call| {
                let mut call = call.clone();
                if let Some(fields) = call.as_object_mut() {
                    fields.insert("choice".into(), Value::from(c.index));
                }
                call
            })
        })
        .collect()
}

/// rLLM's `token_counts`, `{prompt, completion}`, from usage.
pub fn token_counts_of(usage: &Usage) -> Map<String, Value> {
    let mut counts = Map::new();
    if let Some(n) = usage.input_tokens {
        counts.insert("prompt".into(), Value::from(n));
    }
    if let Some(n) = usage.output_tokens {
        counts.insert("completion".into(), Value::from(n));
    }
    counts
}

/// Formats a time as RFC 3339 in UTC with microseconds, the form every stored
/// time takes (fixed width, so it sorts lexicographically).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// Seconds since the Unix epoch, as rLLM's `timestamp` has it.
pub fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Milliseconds in a duration, with sub-millisecond precision.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Serde helper: an `Option<String>` written as `""` when absent (rLLM's
/// string-typed fields), and read back with `""` meaning absent.
pub(crate) mod empty_as_none {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_deref().unwrap_or(""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        Ok(v.filter(|s| !s.is_empty()))
    }
}
