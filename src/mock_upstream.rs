//! `tracegate mock-upstream`: a deterministic model server for demos, tests
//! and benchmarks.
//!
//! It speaks enough of the OpenAI and Anthropic APIs for every SDK and every
//! capture path: `GET /v1/models`, `POST /v1/chat/completions` and
//! `POST /v1/messages`, streamed or not, with tool calls when tools are
//! offered, `n` choices, and vLLM-style token data (`prompt_token_ids`,
//! `choices[].token_ids`, logprobs with `top_logprobs`) when the request asks
//! for `return_token_ids` / `logprobs`. Any other `/v1/...` path echoes the
//! request body back with the request's content type.
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
//!
//! Every request is remembered: `GET /mock/requests` lists them (method,
//! path, query, headers, body), `DELETE /mock/requests` forgets them.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::serve::ListenerExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

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
}

impl MockState {
    /// Fresh state with these defaults.
    pub fn new(options: MockOptions) -> Self {
        Self {
            options: Arc::new(options),
            received: Arc::new(Mutex::new(Vec::new())),
            release: Arc::new(watch::channel(0).0),
        }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
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

/// Serves the mock on `listen` until interrupted.
pub async fn serve(listen: SocketAddr, options: MockOptions) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("tracegate mock upstream listening on http://{addr}/v1");
    axum::serve(listener.tap_io(no_delay), router(MockState::new(options)))
        .with_graceful_shutdown(crate::server::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
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
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
        .route("/v1/{*rest}", any(echo))
        .route("/mock/requests", get(list_received).delete(clear_received))
        .route("/mock/release", post(release))
        .with_state(state)
}

async fn list_received(State(state): State<MockState>) -> axum::Json<Vec<ReceivedRequest>> {
    axum::Json(state.received())
}

async fn clear_received(State(state): State<MockState>) -> StatusCode {
    if let Ok(mut r) = state.received.lock() {
        r.clear();
    }
    StatusCode::NO_CONTENT
}

async fn release(State(state): State<MockState>) -> StatusCode {
    state.release();
    StatusCode::NO_CONTENT
}

/// The behaviour for one request: flags, overridden by headers.
struct Behaviour {
    latency: Duration,
    chunks: usize,
    chunk_delay: Duration,
    fail_status: Option<u16>,
    drop_after: Option<usize>,
    hold: bool,
    content: Option<String>,
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
    if let Ok(mut r) = state.received.lock() {
        r.push(received);
    }
    let behaviour = Behaviour::of(&state.options, &parts.headers);
    if !behaviour.latency.is_zero() {
        tokio::time::sleep(behaviour.latency).await;
    }
    (parts, body, behaviour)
}

async fn models(State(state): State<MockState>, request: Request) -> Response {
    let (_, _, behaviour) = receive(&state, request).await;
    if let Some(status) = behaviour.fail_status {
        return openai_error(status);
    }
    axum::Json(json!({
        "object": "list",
        "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "tracegate"}],
    }))
    .into_response()
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

fn openai_error(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {
        "message": format!("mock failure with status {status}"),
        "type": "server_error",
        "code": "mock_failure",
    }});
    (code, axum::Json(body)).into_response()
}

fn anthropic_error(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"type": "error", "error": {
        "type": "api_error",
        "message": format!("mock failure with status {status}"),
    }});
    (code, axum::Json(body)).into_response()
}

fn bad_request(message: &str) -> Response {
    let body =
        json!({"error": {"message": message, "type": "invalid_request_error", "code": null}});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

// ---------------------------------------------------------------------------
// Deterministic content
// ---------------------------------------------------------------------------

/// A word-level token: its text and its (deterministic) id.
#[derive(Debug, Clone)]
struct Token {
    text: String,
    id: u32,
}

/// FNV-1a: a stable hash, so token ids never change between builds.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Splits text into word tokens, each keeping its leading space.
fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c == ' ' && !current.is_empty() && !current.ends_with(' ') {
            tokens.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
        .into_iter()
        .map(|text| Token {
            id: 100 + (fnv(&text) % 50_000) as u32,
            text,
        })
        .collect()
}

/// The text of a message's content (a string, or text parts).
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The prompt as one text (every message's content), for token counting.
fn prompt_text(body: &Map<String, Value>) -> String {
    let mut parts = Vec::new();
    if let Some(system) = body.get("system") {
        parts.push(content_text(Some(system)));
    }
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        parts.push(content_text(m.get("content")));
    }
    parts.join(" ")
}

/// The last user message's text, shortened.
fn last_user_text(body: &Map<String, Value>) -> String {
    let text = body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content")))
        .unwrap_or_default();
    text.chars().take(60).collect()
}

/// The tool call the mock makes, if tools are offered and the last message is
/// not already a tool result: `(call id, tool name, arguments JSON)`.
fn tool_call(body: &Map<String, Value>, anthropic: bool) -> Option<(String, String, String)> {
    let tools = body.get("tools")?.as_array()?;
    let first = tools.first()?;
    if body.get("tool_choice").and_then(Value::as_str) == Some("none") {
        return None;
    }
    let last = body.get("messages")?.as_array()?.last()?;
    let is_tool_result = if anthropic {
        last.get("content")
            .and_then(Value::as_array)
            .is_some_and(|parts| {
                parts
                    .iter()
                    .any(|p| p.get("type").and_then(Value::as_str) == Some("tool_result"))
            })
    } else {
        last.get("role").and_then(Value::as_str) == Some("tool")
    };
    if is_tool_result {
        return None;
    }
    let name = if anthropic {
        first.get("name")?.as_str()?
    } else {
        first.get("function")?.get("name")?.as_str()?
    };
    let arguments = json!({"query": last_user_text(body)}).to_string();
    let id = format!(
        "{}{:012x}",
        if anthropic { "toolu_mock" } else { "call_mock" },
        fnv(&arguments) & 0xffff_ffff_ffff
    );
    Some((id, name.to_string(), arguments))
}

/// The text answer for a request (and choice).
fn answer(body: &Map<String, Value>, behaviour: &Behaviour, choice: usize) -> String {
    let base = behaviour.content.clone().unwrap_or_else(|| {
        format!(
            "This is the tracegate mock answering: {}",
            last_user_text(body)
        )
    });
    if choice == 0 {
        base
    } else {
        format!("{base} (choice {choice})")
    }
}

/// Splits `items` into `n` consecutive groups as evenly as possible.
fn split_even<T: Clone>(items: &[T], n: usize) -> Vec<Vec<T>> {
    let n = n.max(1).min(items.len().max(1));
    let size = items.len().div_ceil(n).max(1);
    items.chunks(size).map(<[T]>::to_vec).collect()
}

/// Splits text into `n` pieces of roughly equal length (on char boundaries).
fn split_text(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    split_even(&chars, n)
        .into_iter()
        .map(|c| c.into_iter().collect())
        .collect()
}

/// OpenAI-style logprob entries for tokens, with `top` alternatives each.
fn logprob_entries(tokens: &[Token], top: usize, offset: usize) -> Vec<Value> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            // Binary fractions: exact in JSON, f32 and f64 alike.
            let logprob = -(((i + offset) % 7) as f64 + 1.0) * 0.125;
            let tops: Vec<Value> = (0..top)
                .map(|k| {
                    json!({
                        "token": if k == 0 { t.text.clone() } else { format!("{}#{k}", t.text) },
                        "logprob": logprob - k as f64 * 0.5,
                        "bytes": t.text.as_bytes(),
                    })
                })
                .collect();
            json!({"token": t.text, "logprob": logprob, "bytes": t.text.as_bytes(), "top_logprobs": tops})
        })
        .collect()
}

fn sse_frame(event: Option<&str>, data: &str) -> Bytes {
    match event {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// Streams frames with the request's pacing, hold and drop behaviour.
fn stream_response(state: &MockState, behaviour: Behaviour, frames: Vec<Bytes>) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let mut released = state.release.subscribe();
    tokio::spawn(async move {
        for (i, frame) in frames.into_iter().enumerate() {
            if i > 0 && !behaviour.chunk_delay.is_zero() {
                tokio::time::sleep(behaviour.chunk_delay).await;
            }
            if behaviour.drop_after == Some(i) {
                let _ = tx
                    .send(Err(std::io::Error::other("mock dropped the connection")))
                    .await;
                return;
            }
            if tx.send(Ok(frame)).await.is_err() {
                return; // the client went away
            }
            if i == 0 && behaviour.hold {
                // `changed` resolves for a release sent after the subscription,
                // which was taken when the request arrived.
                if released.changed().await.is_err() {
                    return;
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

// ---------------------------------------------------------------------------
// OpenAI chat completions
// ---------------------------------------------------------------------------

async fn chat_completions(State(state): State<MockState>, request: Request) -> Response {
    let (_, body, behaviour) = receive(&state, request).await;
    if let Some(status) = behaviour.fail_status {
        return openai_error(status);
    }
    let Ok(req) = serde_json::from_slice::<Map<String, Value>>(&body) else {
        return bad_request("the body must be a JSON object");
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_string();
    let n = req
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 8) as usize;
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let want_logprobs = req
        .get("logprobs")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let top = req
        .get("top_logprobs")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(5) as usize;
    let want_ids = req
        .get("return_token_ids")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let include_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let prompt = tokenize(&prompt_text(&req));
    let prompt_ids: Vec<u32> = prompt.iter().map(|t| t.id).collect();
    let call = tool_call(&req, false);
    let id = format!("chatcmpl-mock{:016x}", fnv(&String::from_utf8_lossy(&body)));

    // Per choice: the text tokens (empty for a tool call).
    let choices: Vec<Vec<Token>> = (0..n)
        .map(|i| match &call {
            Some(_) => Vec::new(),
            None => tokenize(&answer(&req, &behaviour, i)),
        })
        .collect();
    let completion_tokens: usize = match &call {
        Some((_, _, args)) => tokenize(args).len() * n,
        None => choices.iter().map(Vec::len).sum(),
    };
    let usage = json!({
        "prompt_tokens": prompt.len(),
        "completion_tokens": completion_tokens,
        "total_tokens": prompt.len() + completion_tokens,
    });
    let finish = if call.is_some() { "tool_calls" } else { "stop" };

    if !stream {
        let out: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(i, tokens)| {
                let mut message = json!({"role": "assistant"});
                match &call {
                    Some((cid, name, args)) => {
                        message["content"] = Value::Null;
                        message["tool_calls"] = json!([{"id": cid, "type": "function",
                            "function": {"name": name, "arguments": args}}]);
                    }
                    None => {
                        message["content"] =
                            json!(tokens.iter().map(|t| t.text.as_str()).collect::<String>());
                    }
                }
                let mut choice = json!({"index": i, "message": message, "finish_reason": finish});
                if want_logprobs {
                    choice["logprobs"] = json!({"content": logprob_entries(tokens, top, 0)});
                }
                if want_ids {
                    choice["token_ids"] = json!(tokens.iter().map(|t| t.id).collect::<Vec<_>>());
                }
                choice
            })
            .collect();
        let mut response = json!({
            "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": out, "usage": usage,
        });
        if want_ids {
            response["prompt_token_ids"] = json!(prompt_ids);
        }
        return axum::Json(response).into_response();
    }

    let chunk = |choices: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": model, "choices": choices})
    };
    let mut frames = Vec::new();
    // First chunk: the role (and the prompt's token ids, vLLM style).
    let mut first = chunk(json!((0..n)
        .map(|i| json!({"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}))
        .collect::<Vec<_>>()));
    if want_ids {
        first["prompt_token_ids"] = json!(prompt_ids);
    }
    frames.push(sse_frame(None, &first.to_string()));
    match &call {
        Some((cid, name, args)) => {
            for i in 0..n {
                let opening = json!([{"index": i, "delta": {"tool_calls": [{"index": 0, "id": cid,
                    "type": "function", "function": {"name": name, "arguments": ""}}]}, "finish_reason": null}]);
                frames.push(sse_frame(None, &chunk(opening).to_string()));
                for piece in split_text(args, behaviour.chunks) {
                    let delta = json!([{"index": i, "delta": {"tool_calls": [{"index": 0,
                        "function": {"arguments": piece}}]}, "finish_reason": null}]);
                    frames.push(sse_frame(None, &chunk(delta).to_string()));
                }
            }
        }
        None => {
            for (i, tokens) in choices.iter().enumerate() {
                let mut offset = 0;
                for group in split_even(tokens, behaviour.chunks) {
                    let text: String = group.iter().map(|t| t.text.as_str()).collect();
                    let mut c =
                        json!({"index": i, "delta": {"content": text}, "finish_reason": null});
                    if want_logprobs {
                        c["logprobs"] = json!({"content": logprob_entries(&group, top, offset)});
                    }
                    if want_ids {
                        c["token_ids"] = json!(group.iter().map(|t| t.id).collect::<Vec<_>>());
                    }
                    offset += group.len();
                    frames.push(sse_frame(None, &chunk(json!([c])).to_string()));
                }
            }
        }
    }
    let last = json!(
        (0..n)
            .map(|i| json!({"index": i, "delta": {}, "finish_reason": finish}))
            .collect::<Vec<_>>()
    );
    frames.push(sse_frame(None, &chunk(last).to_string()));
    if include_usage {
        let mut u = chunk(json!([]));
        u["usage"] = usage;
        frames.push(sse_frame(None, &u.to_string()));
    }
    frames.push(sse_frame(None, "[DONE]"));
    stream_response(&state, behaviour, frames)
}

// ---------------------------------------------------------------------------
// Anthropic messages
// ---------------------------------------------------------------------------

async fn messages(State(state): State<MockState>, request: Request) -> Response {
    let (_, body, behaviour) = receive(&state, request).await;
    if let Some(status) = behaviour.fail_status {
        return anthropic_error(status);
    }
    let Ok(req) = serde_json::from_slice::<Map<String, Value>>(&body) else {
        let body = json!({"type": "error", "error": {"type": "invalid_request_error",
            "message": "the body must be a JSON object"}});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_string();
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let input_tokens = tokenize(&prompt_text(&req)).len();
    let call = tool_call(&req, true);
    let id = format!("msg_mock{:016x}", fnv(&String::from_utf8_lossy(&body)));
    let text = answer(&req, &behaviour, 0);
    let (stop_reason, output_tokens) = match &call {
        Some((_, _, args)) => ("tool_use", tokenize(args).len()),
        None => ("end_turn", tokenize(&text).len()),
    };
    let block = match &call {
        Some((cid, name, args)) => {
            let input: Value = serde_json::from_str(args).unwrap_or_default();
            json!({"type": "tool_use", "id": cid, "name": name, "input": input})
        }
        None => json!({"type": "text", "text": text}),
    };
    let usage = json!({"input_tokens": input_tokens, "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});

    if !stream {
        return axum::Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop_reason, "stop_sequence": null, "usage": usage,
        }))
        .into_response();
    }

    let mut frames = vec![sse_frame(
        Some("message_start"),
        &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}})
        .to_string(),
    )];
    let (start, pieces, delta_kind, delta_key) = match &call {
        Some((cid, name, args)) => (
            json!({"type": "tool_use", "id": cid, "name": name, "input": {}}),
            split_text(args, behaviour.chunks),
            "input_json_delta",
            "partial_json",
        ),
        None => (
            json!({"type": "text", "text": ""}),
            split_text(&text, behaviour.chunks),
            "text_delta",
            "text",
        ),
    };
    frames.push(sse_frame(
        Some("content_block_start"),
        &json!({"type": "content_block_start", "index": 0, "content_block": start}).to_string(),
    ));
    frames.push(sse_frame(
        Some("ping"),
        &json!({"type": "ping"}).to_string(),
    ));
    for piece in pieces {
        let mut delta = json!({"type": delta_kind});
        delta[delta_key] = json!(piece);
        frames.push(sse_frame(
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": 0, "delta": delta}).to_string(),
        ));
    }
    frames.push(sse_frame(
        Some("content_block_stop"),
        &json!({"type": "content_block_stop", "index": 0}).to_string(),
    ));
    frames.push(sse_frame(
        Some("message_delta"),
        &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": output_tokens}})
        .to_string(),
    ));
    frames.push(sse_frame(
        Some("message_stop"),
        &json!({"type": "message_stop"}).to_string(),
    ));
    stream_response(&state, behaviour, frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_their_spaces_and_ids_are_stable() {
        let t = tokenize("hello big world");
        let texts: Vec<_> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["hello", " big", " world"]);
        assert_eq!(t[0].id, tokenize("hello")[0].id);
    }

    #[test]
    fn even_split_keeps_everything_in_order() {
        let parts = split_text("abcdefghij", 3);
        assert_eq!(parts.concat(), "abcdefghij");
        assert_eq!(parts.len(), 3);
        assert_eq!(split_text("ab", 8).len(), 2);
    }
}
