//! A replay upstream: answers each request with a recorded exchange.
//!
//! Tests register named responses (status, a JSON body or SSE chunks, and
//! whether to break the connection after them); a request picks one with its
//! `x-fixture` header. Each chunk is sent as its own body frame, so the
//! gateway sees the chunk boundaries the fixture describes. Every request
//! body is kept, so tests can check what reached the upstream.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One recorded upstream response.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// The body, in the chunks to send it in.
    pub chunks: Vec<Bytes>,
    /// Break the connection after the chunks instead of ending cleanly.
    pub abort: bool,
}

#[derive(Clone, Default)]
struct ReplayState {
    responses: Arc<HashMap<String, Recorded>>,
    received: Arc<Mutex<HashMap<String, Value>>>,
}

/// A running replay upstream.
pub struct Replay {
    /// Where it listens.
    pub addr: SocketAddr,
    state: ReplayState,
    task: tokio::task::JoinHandle<()>,
}

impl Replay {
    /// Serves `responses`, keyed by the `x-fixture` header value.
    pub async fn start(responses: HashMap<String, Recorded>) -> Replay {
        let state = ReplayState {
            responses: Arc::new(responses),
            received: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Replay { addr, state, task }
    }

    /// The upstream base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The JSON body the upstream received for a fixture.
    pub fn received(&self, fixture: &str) -> Option<Value> {
        self.state.received.lock().unwrap().get(fixture).cloned()
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(State(state): State<ReplayState>, request: Request) -> Response {
    let name = request
        .headers()
        .get("x-fixture")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.received.lock().unwrap().insert(name.clone(), json);
    let recorded = state
        .responses
        .get(&name)
        .unwrap_or_else(|| panic!("no recorded response for fixture {name:?}"))
        .clone();
    let stream = async_stream(recorded.chunks, recorded.abort);
    Response::builder()
        .status(recorded.status)
        .header("content-type", recorded.content_type)
        .body(Body::from_stream(stream))
        .unwrap()
}

/// The chunks as a body stream, one frame each, with a pause between them so
/// they leave as separate writes; then an error if `abort`.
fn async_stream(
    chunks: Vec<Bytes>,
    abort: bool,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for chunk in chunks {
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        if abort {
            let _ = tx
                .send(Err(std::io::Error::other("replay aborts the connection")))
                .await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
