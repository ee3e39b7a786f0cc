//! How the mock's model endpoints answer: read the call (or fail it as the
//! request asked, in its protocol's error shape), build the [`Answer`] once,
//! then write it whole as JSON or as SSE frames paced by the request's
//! behaviour (chunk delays, a hold until released, a dropped connection).

use super::{Behaviour, MockState, content, receive};
use crate::protocol::Protocol;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

/// A model call being answered: its JSON body, the digest its ids derive
/// from (so the same request gets the same answer), and its behaviour.
pub(crate) struct Call {
    /// The request body.
    pub(crate) body: Map<String, Value>,
    /// A hash of the body's bytes, 16 hex digits.
    pub(crate) digest: String,
    /// How to misbehave while answering.
    pub(crate) behaviour: Behaviour,
}

impl Call {
    /// Whether the boolean field `key` is true.
    pub(crate) fn flag(&self, key: &str) -> bool {
        self.body.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    /// The answer's text for `choice` (see [`content::answer`]).
    pub(crate) fn answer(&self, choice: usize) -> String {
        content::answer(&self.body, self.behaviour.content.as_deref(), choice)
    }
}

/// A model endpoint's answer, built once from the call and written whole
/// (JSON) or streamed (SSE), as the request's `stream` asks.
pub(crate) trait Answer: Sized {
    /// The protocol whose error shapes the endpoint fails in.
    const PROTOCOL: Protocol;

    /// The answer to `call`.
    fn of(call: &Call) -> Self;

    /// The answer as one JSON body.
    fn whole(&self) -> Value;

    /// The answer as SSE frames, its text split into `chunks` deltas.
    fn frames(&self, chunks: usize) -> Vec<Bytes>;
}

/// A model endpoint: reads the call, then answers it whole or streamed.
pub(super) async fn answer<A: Answer>(
    State(state): State<MockState>,
    request: Request,
) -> Response {
    let call = match read_call(&state, request, A::PROTOCOL).await {
        Ok(call) => call,
        Err(failure) => return failure,
    };
    let answer = A::of(&call);
    if !call.flag("stream") {
        return axum::Json(answer.whole()).into_response();
    }
    let frames = answer.frames(call.behaviour.chunks);
    stream_response(&state, call.behaviour, frames)
}

/// What every model endpoint reads first: the call, or the failure (in
/// `protocol`'s error shape) to answer instead.
pub(crate) async fn read_call(
    state: &MockState,
    request: Request,
    protocol: Protocol,
) -> Result<Call, Response> {
    let (_, body, behaviour) = receive(state, request).await;
    if let Some(status) = behaviour.fail_status {
        return Err(failure(protocol, status));
    }
    let Ok(json) = serde_json::from_slice::<Map<String, Value>>(&body) else {
        return Err(bad_request(protocol, "the body must be a JSON object"));
    };
    Ok(Call {
        body: json,
        digest: format!("{:016x}", content::fnv(&String::from_utf8_lossy(&body))),
        behaviour,
    })
}

/// The failure `x-mock-status` / `--fail-status` asked for, in the error
/// shape of `protocol`.
pub(crate) fn failure(protocol: Protocol, status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = format!("mock failure with status {status}");
    let body = match protocol {
        Protocol::Openai => json!({"error": {
            "message": message,
            "type": "server_error",
            "code": "mock_failure",
        }}),
        Protocol::Anthropic => json!({"type": "error", "error": {
            "type": "api_error",
            "message": message,
        }}),
    };
    (code, axum::Json(body)).into_response()
}

/// A 400 for a request the mock cannot read, in the error shape of
/// `protocol`.
pub(crate) fn bad_request(protocol: Protocol, message: &str) -> Response {
    let body = match protocol {
        Protocol::Openai => {
            json!({"error": {"message": message, "type": "invalid_request_error", "code": null}})
        }
        Protocol::Anthropic => json!({"type": "error", "error": {"type": "invalid_request_error",
            "message": message}}),
    };
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// One SSE frame, optionally named.
pub(crate) fn sse_frame(event: Option<&str>, data: &str) -> Bytes {
    match event {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// The frames of a typed-event stream (Anthropic's, the Responses API's):
/// each event named, its name repeated as the data's `type`, and, when
/// counted, a `sequence_number`.
pub(crate) struct TypedEvents {
    frames: Vec<Bytes>,
    sequence: Option<u64>,
}

impl TypedEvents {
    /// Events without sequence numbers (Anthropic).
    pub(crate) fn new() -> TypedEvents {
        TypedEvents {
            frames: Vec::new(),
            sequence: None,
        }
    }

    /// Events numbered from 0 (the Responses API).
    pub(crate) fn numbered() -> TypedEvents {
        TypedEvents {
            frames: Vec::new(),
            sequence: Some(0),
        }
    }

    /// Appends the event `kind` with `data`.
    pub(crate) fn push(&mut self, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        if let Some(n) = &mut self.sequence {
            data["sequence_number"] = json!(*n);
            *n += 1;
        }
        self.frames.push(sse_frame(Some(kind), &data.to_string()));
    }

    /// The frames, in order.
    pub(crate) fn into_frames(self) -> Vec<Bytes> {
        self.frames
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
