//! The OTLP/gRPC receiver: `TraceService/Export` on its own port.
//!
//! Harness SDKs default to OTLP over gRPC (port 4317), so the gateway can
//! take their spans there too, when `otlp.grpc_listen` names an address
//! (off by default). It is the HTTP receiver's twin, not a second
//! implementation: the body is parsed, bounded by the `[otlp]` limits,
//! counted and committed by the same `take`, and answered
//! with the same `ExportTraceServiceResponse` (`answer::response`).
//! What differs is only how the answers travel, per the OTLP/gRPC spec:
//!
//! * `OK` with `partial_success` (rejected spans and why) once the spans
//!   are committed;
//! * `INVALID_ARGUMENT` for a message that does not decode — so the message
//!   reaches the service as bytes (`RawCodec`), and decoding is ours, not
//!   tonic's (which would answer `INTERNAL`, uncounted);
//! * `UNAVAILABLE`, which exporters retry, while the store cannot commit;
//! * `UNAUTHENTICATED` without a gateway token, when inbound auth is on: the
//!   `authorization` metadata (or `auth.header`'s) is checked by the same
//!   [`auth::presents_token`] before the message is read.
//!
//! tonic serves the connections (HTTP/2, gzip-compressed messages, at most
//! `max_body_bytes` a message); on shutdown it stops accepting and lets the
//! exports in flight finish, and the server waits for that before it
//! flushes the store.

use super::answer::{self, Encoding, Refusal};
use crate::auth;
use crate::server::AppState;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Buf;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::server::{Grpc, UnaryService};
use tonic::{Code, Status};

/// The one method served.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A bound OTLP/gRPC receiver, not yet serving.
pub struct GrpcReceiver {
    listener: TcpListener,
    addr: SocketAddr,
    routes: axum::Router,
}

impl GrpcReceiver {
    /// Binds `addr`; the receiver shares the gateway's `state` (its store
    /// writer, limits, metrics and inbound tokens).
    pub async fn bind(addr: SocketAddr, state: AppState) -> std::io::Result<GrpcReceiver> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let routes = axum::Router::new()
            .route(EXPORT_PATH, axum::routing::post(export))
            .fallback(unimplemented)
            .with_state(state);
        Ok(GrpcReceiver {
            listener,
            addr,
            routes,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then until the exports in flight
    /// are answered.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        tracing::info!(addr = %self.addr, "OTLP/gRPC receiver listening");
        let served = tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::from(self.routes))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(self.listener),
                shutdown,
            )
            .await;
        if let Err(e) = served {
            tracing::error!("the OTLP/gRPC receiver stopped: {e}");
        }
    }
}

/// `TraceService/Export`: the token first, then the message.
async fn export(State(state): State<AppState>, request: Request) -> Response {
    let inbound = &state.inbound;
    if inbound.enabled() && !auth::presents_token(inbound, request.headers()) {
        let refusal = Status::unauthenticated("this gateway needs a valid token");
        return refusal.into_http::<axum::body::Body>();
    }
    let mut gzip = EnabledCompressionEncodings::default();
    gzip.enable(CompressionEncoding::Gzip);
    let max = state.otlp.max_body_bytes;
    let mut grpc = Grpc::new(RawCodec)
        .apply_compression_config(gzip, EnabledCompressionEncodings::default())
        .apply_max_message_size_config(Some(max), None);
    grpc.unary(Export(state), request).await.into_response()
}

/// Any other method: `UNIMPLEMENTED`.
async fn unimplemented() -> Response {
    Status::unimplemented("this port serves TraceService/Export only")
        .into_http::<axum::body::Body>()
}

/// The unary service tonic calls with the raw message.
struct Export(AppState);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = futures_util::future::BoxFuture<
        'static,
        Result<tonic::Response<ExportTraceServiceResponse>, Status>,
    >;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let body = request.into_inner();
            match super::take(&state, Encoding::Protobuf, &body).await {
                Ok(decoded) => Ok(tonic::Response::new(answer::response(&decoded))),
                Err(refusal) => Err(status(super::refused(&state, refusal))),
            }
        })
    }
}

/// A refusal as the gRPC status the OTLP spec gives it.
fn status(refusal: Refusal) -> Status {
    match refusal {
        Refusal::Malformed(_, message) => Status::new(Code::InvalidArgument, message),
        Refusal::Unavailable(_, message) => Status::new(Code::Unavailable, message),
        Refusal::ContentType => Status::new(Code::InvalidArgument, "not a protobuf message"),
    }
}

/// Takes the request message as bytes (decoded by [`super::take`]) and
/// writes the response with prost.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the answer: {e}")))
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
