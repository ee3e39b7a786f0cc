//! OTLP receivers for tests: a gRPC one (tonic) and an HTTP/protobuf one
//! (axum), both decoding the real protobuf with `opentelemetry-proto`, in
//! this process on 127.0.0.1.
//!
//! A receiver can be told to refuse exports (gRPC UNAVAILABLE, HTTP 503), to
//! die (its port closes) and to come back on the same port, so tests can
//! play a collector outage.

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_stream::wrappers::TcpListenerStream;
use tracegate::config::ServeArgs;

/// The transport a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

/// One received span with its resource's attributes.
#[derive(Debug, Clone)]
pub struct Received {
    /// The span.
    pub span: Span,
    /// The resource attributes, as JSON values.
    pub resource: serde_json::Map<String, Value>,
}

impl Received {
    /// An attribute's value as JSON (`null` when absent).
    pub fn attr(&self, key: &str) -> Value {
        attribute(&self.span.attributes, key)
    }

    /// The span's trace id as hex.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    /// The span's id as hex.
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// The parent span id as hex (empty when none).
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

/// Hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn any(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> Value {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => json!(s),
        Some(Any::IntValue(i)) => json!(i),
        Some(Any::DoubleValue(d)) => json!(d),
        Some(Any::BoolValue(b)) => json!(b),
        Some(Any::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| any(&Some(v.clone()))).collect())
        }
        _ => Value::Null,
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Value {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| any(&kv.value))
        .unwrap_or(Value::Null)
}

#[derive(Default)]
struct Shared {
    spans: Mutex<Vec<Received>>,
    refuse: Mutex<bool>,
    /// Hold each HTTP export until unset, then refuse it.
    stall: Mutex<bool>,
    attempts: Mutex<u64>,
}

impl Shared {
    /// Takes an export request; false when refusing.
    fn take(&self, request: ExportTraceServiceRequest) -> bool {
        *self.attempts.lock().unwrap() += 1;
        if *self.refuse.lock().unwrap() {
            return false;
        }
        let mut spans = self.spans.lock().unwrap();
        for rs in request.resource_spans {
            let resource: serde_json::Map<String, Value> = rs
                .resource
                .map(|r| {
                    r.attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), any(&kv.value)))
                        .collect()
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Received {
                        span,
                        resource: resource.clone(),
                    });
                }
            }
        }
        true
    }
}

struct Grpc(Arc<Shared>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.0.take(request.into_inner()) {
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        } else {
            Err(tonic::Status::unavailable("collector refusing"))
        }
    }
}

/// A running OTLP receiver.
pub struct Receiver {
    /// Its transport.
    pub transport: Transport,
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Starts a receiver on a free port.
    pub async fn start(transport: Transport) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut receiver = Receiver {
            transport,
            addr,
            shared: Arc::default(),
            task: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let shared = self.shared.clone();
        self.task = Some(match self.transport {
            Transport::Grpc => tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(Grpc(shared)))
                    .serve_with_incoming(TcpListenerStream::new(listener))
                    .await
                    .unwrap();
            }),
            Transport::Http => tokio::spawn(async move {
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |body: Bytes| {
                        let shared = shared.clone();
                        async move {
                            let stalled = *shared.stall.lock().unwrap();
                            while *shared.stall.lock().unwrap() {
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            }
                            if stalled {
                                return (
                                    http::StatusCode::SERVICE_UNAVAILABLE,
                                    [("content-type", "text/plain")],
                                    b"stalled".to_vec(),
                                );
                            }
                            let request = ExportTraceServiceRequest::decode(body).unwrap();
                            if shared.take(request) {
                                let ok = ExportTraceServiceResponse::default().encode_to_vec();
                                (
                                    http::StatusCode::OK,
                                    [("content-type", "application/x-protobuf")],
                                    ok,
                                )
                            } else {
                                (
                                    http::StatusCode::SERVICE_UNAVAILABLE,
                                    [("content-type", "text/plain")],
                                    b"refusing".to_vec(),
                                )
                            }
                        }
                    }),
                );
                axum::serve(listener, app).await.unwrap();
            }),
        });
    }

    /// The endpoint to configure (`--otlp-endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The protocol to configure (`--otlp-protocol`).
    pub fn protocol(&self) -> &'static str {
        match self.transport {
            Transport::Grpc => "grpc",
            Transport::Http => "http/protobuf",
        }
    }

    /// Points a gateway's export at this receiver.
    pub fn export_to(&self, args: &mut ServeArgs) {
        args.otlp_endpoint = Some(self.endpoint());
        args.otlp_protocol = Some(self.protocol().into());
    }

    /// Refuse (503 / UNAVAILABLE) or accept exports from now on.
    pub fn refuse(&self, refuse: bool) {
        *self.shared.refuse.lock().unwrap() = refuse;
    }

    /// Hold HTTP exports from now on (each one waits, then is refused
    /// once this is unset): an exporter stuck mid-batch.
    pub fn stall(&self, stall: bool) {
        *self.shared.stall.lock().unwrap() = stall;
    }

    /// Stops listening: the port closes.
    pub fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn revive(&mut self) {
        let listener = loop {
            // The old socket may take a moment to be released.
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.shared.spans.lock().unwrap().clone()
    }

    /// Export requests received so far (accepted or refused).
    pub fn attempts(&self) -> u64 {
        *self.shared.attempts.lock().unwrap()
    }

    /// Waits until at least `n` spans arrived (or fails after the hang guard).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        super::eventually(&format!("{n} spans at the collector"), async || {
            let spans = self.spans();
            (spans.len() >= n).then_some(spans)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}
