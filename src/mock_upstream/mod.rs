//! `tracegate mock-upstream`: a deterministic model server for demos, tests
//! and benchmarks.
//!
//! It speaks enough of the OpenAI and Anthropic APIs for every SDK and every
//! capture path: `GET /v1/models`; `POST /v1/chat/completions`
//! ([`openai_chat`]), `/v1/completions` ([`openai_completions`]; the two share
//! [`openai`]), `/v1/responses` ([`openai_responses`]) and `/v1/messages`
//! ([`anthropic`]), streamed or not, with tool calls when tools are offered,
//! `n` choices, thinking blocks when Anthropic thinking is enabled, and
//! vLLM-style token data (`prompt_token_ids`, `token_ids`, logprobs with
//! `top_logprobs`) when the request asks for `return_token_ids` /
//! `logprobs`; `POST /v1/embeddings` ([`openai_embeddings`]). Any other
//! `/v1/...` path echoes the request body back with the request's content
//! type. What it says is decided in [`content`]; how a model endpoint
//! answers — its answer built once, written whole or as a paced stream — in
//! [`reply`].
//!
//! Its answers depend only on the request, so tests can predict them. Its
//! misbehaviour is configurable, globally by flags or per request by headers
//! (the header wins):
//!
//! | flag | header | effect |
//! |---|---|---|
//! | `--latency-ms` | `x-mock-latency-ms` | wait before answering |
//! | `--chunks` | `x-mock-chunks` | number of content chunks in a stream |
//! | `--chunk-delay-ms` | `x-mock-chunk-delay-ms` | wait between stream chunks |
//! | `--fail-status` | `x-mock-status` | answer this HTTP status with an error body |
//! | `--drop-after` | `x-mock-drop-after` | cut the connection after N stream chunks |
//! | | `x-mock-hold: 1` | after the first chunk, wait for `POST /mock/release` |
//! | | `x-mock-content` | the answer's text |
//! | | `x-mock-weight-version` | chat: a top-level `weight_version` (a rollout engine's stamp) |
//! | | `x-mock-routing-matrices: 1` | chat: each choice's `routing_matrices` (one per token) |
//! | | `x-mock-chat-template: 1` | chat: the prompt's ids are each message's, end to end, so a turn's prompt extends the previous prompt and answer |
//! | | `x-mock-fail-first: N` | fail the first N requests carrying this header (with `x-mock-status`, else 503), answer the rest |
//! | | `x-mock-retry-after` | send this `Retry-After` with every error answer |
//!
//! `GET /v1/models` names the owner `vllm` with `--vllm` (as a vLLM server
//! does, which a gateway's `kind = "auto"` looks for), else `tracegate`.
//!
//! Every request is remembered: `GET /mock/requests` lists them (method,
//! path, query, headers, body), `DELETE /mock/requests` forgets them —
//! except a gateway's start-up kind probe (`GET /v1/models` with the probe's
//! `User-Agent`), which is only counted (`GET /mock/probes`), so what a test
//! sees is the calls it made.

mod anthropic;
pub mod content;
mod openai;
mod openai_chat;
mod openai_completions;
mod openai_embeddings;
mod openai_responses;
mod reply;

use crate::protocol::Protocol;
use crate::route::PROBE_USER_AGENT;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::serve::ListenerExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use reply::{answer, failure};
use serde::Serialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Default behaviour; each can be overridden per request by a header.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MockOptions {
    /// Wait this long before answering.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub latency_ms: u64,
    /// Split streamed content into this many chunks.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub chunks: usize,
    /// Wait this long between stream chunks.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub chunk_delay_ms: u64,
    /// Fail every model call with this HTTP status.
    #[arg(long, value_name = "CODE")]
    pub fail_status: Option<u16>,
    /// Cut the connection after this many stream chunks.
    #[arg(long, value_name = "N")]
    pub drop_after: Option<usize>,
    /// Say what vLLM says: `owned_by: "vllm"` in `GET /v1/models`.
    #[arg(long)]
    pub vllm: bool,
}

/// A request the mock received.
#[derive(Debug, Clone, Serialize)]
pub struct ReceivedRequest {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: Option<String>,
    /// Headers, lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body, as text (lossy for binary bodies).
    pub body: String,
    /// The body's exact bytes.
    #[serde(skip)]
    pub raw_body: Bytes,
}

impl ReceivedRequest {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.raw_body).ok()
    }
}

/// The mock's shared state.
#[derive(Clone)]
pub struct MockState {
    options: Arc<MockOptions>,
    received: Arc<Mutex<Vec<ReceivedRequest>>>,
    release: Arc<watch::Sender<u64>>,
    /// Requests seen so far that carried `x-mock-fail-first`.
    fail_first_seen: Arc<AtomicUsize>,
    /// Kind probes seen so far (not in `received`).
    probes: Arc<AtomicUsize>,
}

impl MockState {
    /// Fresh state with these defaults.
    pub fn new(options: MockOptions) -> Self {
        Self {
            options: Arc::new(options),
            received: Arc::new(Mutex::new(Vec::new())),
            release: Arc::new(watch::channel(0).0),
            fail_first_seen: Arc::new(AtomicUsize::new(0)),
            probes: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many kind probes (`GET /v1/models` from a starting gateway)
    /// arrived; they are not among [`MockState::received`].
    pub fn probes(&self) -> usize {
        self.probes.load(Ordering::Relaxed)
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        crate::sync::lock(&self.received).clone()
    }

    /// Releases every stream held by `x-mock-hold`.
    pub fn release(&self) {
        self.release.send_modify(|generation| *generation += 1);
    }
}

/// A running mock server.
pub struct MockServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (received requests, release).
    pub state: MockState,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// The base URL to configure as an upstream (`http://addr/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Stops serving (open connections are dropped).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the mock on `listener` in the background.
pub fn start(listener: TcpListener, options: MockOptions) -> std::io::Result<MockServer> {
    let addr = listener.local_addr()?;
    let state = MockState::new(options);
    let app = router(state.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener.tap_io(no_delay), app).await {
            tracing::error!("mock upstream stopped: {e}");
        }
    });
    Ok(MockServer { addr, state, task })
}

/// Why `tracegate mock-upstream` stopped.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it could not be bound.
        source: std::io::Error,
    },
    /// Serving failed after the bind.
    #[error(transparent)]
    Serve(std::io::Error),
}

/// Serves the mock on `listen` until interrupted.
pub async fn serve(listen: SocketAddr, options: MockOptions) -> Result<(), MockError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| MockError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(MockError::Serve)?;
    println!("tracegate mock upstream listening on http://{addr}/v1");
    axum::serve(listener.tap_io(no_delay), router(MockState::new(options)))
        .with_graceful_shutdown(crate::server::shutdown_signal())
        .await
        .map_err(MockError::Serve)
}

/// Small stream chunks must leave at once, not wait for Nagle's algorithm.
fn no_delay(stream: &mut tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// The mock's routes.
pub fn router(state: MockState) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(answer::<openai_chat::Chat>))
        .route(
            "/v1/completions",
            post(answer::<openai_completions::Completion>),
        )
        .route("/v1/responses", post(answer::<openai_responses::Responses>))
        .route("/v1/embeddings", post(openai_embeddings::embeddings))
        .route("/v1/messages", post(answer::<anthropic::Message>))
        .route("/v1/{*rest}", any(echo))
        .route("/mock/requests", get(list_received).delete(clear_received))
        .route("/mock/probes", get(probes))
        .route("/mock/release", post(release))
        .layer(axum::middleware::from_fn(retry_after))
        .with_state(state)
}

/// `x-mock-retry-after`: the value goes out as `Retry-After` on every error
/// answer.
async fn retry_after(request: Request, next: axum::middleware::Next) -> Response {
    let value = request.headers().get("x-mock-retry-after").cloned();
    let mut response = next.run(request).await;
    if let Some(value) = value.filter(|_| response.status().as_u16() >= 400) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn list_received(State(state): State<MockState>) -> axum::Json<Vec<ReceivedRequest>> {
    axum::Json(state.received())
}

async fn probes(State(state): State<MockState>) -> axum::Json<Value> {
    axum::Json(json!({"probes": state.probes()}))
}

async fn clear_received(State(state): State<MockState>) -> StatusCode {
    crate::sync::lock(&state.received).clear();
    StatusCode::NO_CONTENT
}

async fn release(State(state): State<MockState>) -> StatusCode {
    state.release();
    StatusCode::NO_CONTENT
}

/// The behaviour for one request: flags, overridden by headers.
pub(crate) struct Behaviour {
    /// The wait before answering.
    pub(crate) latency: Duration,
    /// How many deltas a stream's content is split into.
    pub(crate) chunks: usize,
    /// The wait between stream chunks.
    pub(crate) chunk_delay: Duration,
    /// The error status to answer instead, if any.
    pub(crate) fail_status: Option<u16>,
    /// After how many chunks to cut the connection, if ever.
    pub(crate) drop_after: Option<usize>,
    /// Whether to wait for `POST /mock/release` after the first chunk.
    pub(crate) hold: bool,
    /// The answer's text, instead of the echo.
    pub(crate) content: Option<String>,
    /// The `weight_version` a chat answer carries, if any.
    pub(crate) weight_version: Option<u64>,
    /// Whether chat choices carry `routing_matrices`.
    pub(crate) routing_matrices: bool,
    /// Whether a chat prompt is tokenized message by message.
    pub(crate) chat_template: bool,
    /// Fail the first N requests that carry `x-mock-fail-first`.
    pub(crate) fail_first: Option<usize>,
}

impl Behaviour {
    fn of(options: &MockOptions, headers: &HeaderMap) -> Behaviour {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let number = |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok());
        Behaviour {
            latency: Duration::from_millis(
                number("x-mock-latency-ms").unwrap_or(options.latency_ms),
            ),
            chunks: number("x-mock-chunks")
                .map_or(options.chunks, |n| n as usize)
                .max(1),
            chunk_delay: Duration::from_millis(
                number("x-mock-chunk-delay-ms").unwrap_or(options.chunk_delay_ms),
            ),
            fail_status: number("x-mock-status")
                .map(|n| n as u16)
                .or(options.fail_status),
            drop_after: number("x-mock-drop-after")
                .map(|n| n as usize)
                .or(options.drop_after),
            hold: header("x-mock-hold").is_some_and(|v| v.trim() == "1"),
            content: header("x-mock-content").map(str::to_string),
            weight_version: number("x-mock-weight-version"),
            routing_matrices: header("x-mock-routing-matrices").is_some_and(|v| v.trim() == "1"),
            chat_template: header("x-mock-chat-template").is_some_and(|v| v.trim() == "1"),
            fail_first: number("x-mock-fail-first").map(|n| n as usize),
        }
    }
}

/// Remembers the request and returns its parts, body and behaviour.
async fn receive(state: &MockState, request: Request) -> (http::request::Parts, Bytes, Behaviour) {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let received = ReceivedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        raw_body: body.clone(),
    };
    crate::sync::lock(&state.received).push(received);
    let mut behaviour = Behaviour::of(&state.options, &parts.headers);
    if let Some(n) = behaviour.fail_first {
        let seen = state.fail_first_seen.fetch_add(1, Ordering::Relaxed) + 1;
        behaviour.fail_status = (seen <= n).then_some(behaviour.fail_status.unwrap_or(503));
    }
    if !behaviour.latency.is_zero() {
        tokio::time::sleep(behaviour.latency).await;
    }
    (parts, body, behaviour)
}

async fn models(State(state): State<MockState>, request: Request) -> Response {
    let owned_by = if state.options.vllm {
        "vllm"
    } else {
        "tracegate"
    };
    let list = axum::Json(json!({
        "object": "list",
        "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": owned_by}],
    }));
    let user_agent = request.headers().get(header::USER_AGENT);
    if user_agent.is_some_and(|v| v.as_bytes() == PROBE_USER_AGENT.as_bytes()) {
        state.probes.fetch_add(1, Ordering::Relaxed);
        return list.into_response();
    }
    let (_, _, behaviour) = receive(&state, request).await;
    if let Some(status) = behaviour.fail_status {
        return failure(Protocol::Openai, status);
    }
    list.into_response()
}

/// Any other `/v1/...` call: the body comes back as it was sent.
async fn echo(State(state): State<MockState>, request: Request) -> Response {
    let (parts, body, behaviour) = receive(&state, request).await;
    let status = behaviour
        .fail_status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    if let Ok(v) = HeaderValue::from_str(parts.method.as_str()) {
        h.insert("x-mock-method", v);
    }
    if let Ok(v) = HeaderValue::from_str(parts.uri.path()) {
        h.insert("x-mock-path", v);
    }
    if let Some(v) = parts
        .uri
        .query()
        .and_then(|q| HeaderValue::from_str(q).ok())
    {
        h.insert("x-mock-query", v);
    }
    response
}
