//! Talking to a gateway over HTTP, the way its clients do.
//!
//! [`Gateway`] is anything serving tracegate's API at an address: the
//! in-process [`TestGateway`](super::TestGateway) (and so a
//! [`Setup`](super::Setup)) or the real binary as a child process
//! ([`Running`](super::process::Running)). It builds [`Request`]s, which a
//! test sends either as a [`reqwest::Response`] (to read a stream as it
//! arrives, or to leave it unread) or read to the end as an [`Answer`].
//! The unwraps live here: a test that cannot reach its gateway has failed.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A plain HTTP client.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// The `x-rllm-trace-id` the gateway answered with.
pub fn trace_id(headers: &HeaderMap) -> String {
    headers["x-rllm-trace-id"].to_str().unwrap().to_string()
}

/// The first chunk of a streamed body, within the hang guard.
pub async fn first_chunk(response: &mut reqwest::Response) -> Bytes {
    super::within("the first chunk", response.chunk())
        .await
        .unwrap()
        .unwrap()
}

/// The rest of a streamed body as text, each chunk within the hang guard.
pub async fn rest_of_stream(mut response: reqwest::Response) -> String {
    let mut rest = Vec::new();
    while let Some(chunk) = super::within("the rest of the stream", response.chunk())
        .await
        .unwrap()
    {
        rest.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&rest).into_owned()
}

/// Sends every request at once, each from its own task, and reads every
/// answer.
pub async fn all_at_once(requests: impl IntoIterator<Item = Request>) -> Vec<Answer> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| tokio::spawn(request.answer()))
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// Something serving the gateway's HTTP API.
pub trait Gateway {
    /// The URL of `path` on it.
    fn at(&self, path: &str) -> String;

    /// `method path`.
    fn request(&self, method: Method, path: &str) -> Request {
        Request::new(method, self.at(path))
    }

    /// `GET path`.
    fn get(&self, path: &str) -> Request {
        self.request(Method::GET, path)
    }

    /// `POST path`.
    fn post(&self, path: &str) -> Request {
        self.request(Method::POST, path)
    }

    /// `DELETE path`.
    fn delete(&self, path: &str) -> Request {
        self.request(Method::DELETE, path)
    }

    /// `POST /v1/chat/completions` with `body`.
    fn chat(&self, body: &Value) -> Request {
        self.post("/v1/chat/completions").json(body)
    }

    /// `GET path`, its body as JSON.
    async fn get_json(&self, path: &str) -> Value {
        self.get(path).answer().await.json()
    }

    /// Waits until every ended call is recorded (`POST /admin/flush`).
    async fn flush(&self) {
        let answer = self.post("/admin/flush").answer().await;
        assert_eq!(answer.status, 200);
    }
}

/// A request being built.
pub struct Request(reqwest::RequestBuilder);

impl Request {
    /// `method url`, with a plain client.
    pub fn new(method: Method, url: impl reqwest::IntoUrl) -> Request {
        Request(client().request(method, url))
    }

    /// `method url`, with a client that does not follow redirects (so that
    /// the test sees them).
    pub fn without_redirects(method: Method, url: impl reqwest::IntoUrl) -> Request {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Request(client.request(method, url))
    }

    /// Adds a header.
    pub fn header<K, V>(self, name: K, value: V) -> Request
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        Request(self.0.header(name, value))
    }

    /// Adds each `(name, value)`, in order.
    pub fn headers(self, pairs: &[(&str, &str)]) -> Request {
        pairs
            .iter()
            .fold(self, |request, (name, value)| request.header(*name, *value))
    }

    /// Sends `body` as JSON.
    pub fn json(self, body: &Value) -> Request {
        Request(self.0.json(body))
    }

    /// Sends these bytes (or this stream) as the body.
    pub fn body(self, body: impl Into<reqwest::Body>) -> Request {
        Request(self.0.body(body))
    }

    /// Sends it; the response's body is still to be read.
    pub async fn send(self) -> reqwest::Response {
        self.0.send().await.unwrap()
    }

    /// Sends it and reads the whole answer.
    pub async fn answer(self) -> Answer {
        Answer::read(self.send().await).await
    }
}

/// A response read to its end.
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Answer {
    /// Reads `response` to its end.
    async fn read(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The `x-rllm-trace-id` the gateway answered with.
    pub fn trace_id(&self) -> String {
        trace_id(&self.headers)
    }

    /// The body as JSON (fails the test when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.status, self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
