//! The OTLP/HTTP answers: the encoding a request speaks, and what it is
//! told back — an `ExportTraceServiceResponse` on success, a
//! `google.rpc.Status` on failure, each in the request's encoding.

use super::decode::Decoded;
use crate::metrics::OtlpRejection;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;

/// How long a sender should wait before retrying while the store cannot
/// commit.
const RETRY_AFTER_SECONDS: &str = "5";

/// The two encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP/JSON: hex ids, lowerCamelCase fields).
    Json,
}

impl Encoding {
    /// The encoding the request's `Content-Type` names; `None` for
    /// another (a 415).
    pub fn of(headers: &HeaderMap) -> Option<Encoding> {
        let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let mime = value.split(';').next()?.trim().to_ascii_lowercase();
        match mime.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        })
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    /// The gRPC code (3 invalid argument, 14 unavailable).
    #[prost(int32, tag = "1")]
    code: i32,
    /// What went wrong.
    #[prost(string, tag = "2")]
    message: String,
}

/// Why a request was refused as a whole.
#[derive(Debug)]
pub enum Refusal {
    /// Neither protobuf nor JSON (415).
    ContentType,
    /// The payload does not decode (400).
    Malformed(Encoding, String),
    /// The store cannot take the spans now (503, retryable).
    Unavailable(Encoding, String),
}

impl Refusal {
    /// The reason label it is counted under.
    pub fn reason(&self) -> OtlpRejection {
        match self {
            Refusal::ContentType => OtlpRejection::ContentType,
            Refusal::Malformed(..) => OtlpRejection::Malformed,
            Refusal::Unavailable(..) => OtlpRejection::StoreUnavailable,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, encoding, code, message) = match self {
            Refusal::ContentType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Encoding::Protobuf,
                3,
                "OTLP/HTTP takes application/x-protobuf or application/json".to_string(),
            ),
            Refusal::Malformed(encoding, message) => {
                (StatusCode::BAD_REQUEST, encoding, 3, message)
            }
            Refusal::Unavailable(encoding, message) => {
                (StatusCode::SERVICE_UNAVAILABLE, encoding, 14, message)
            }
        };
        let body = RpcStatus { code, message };
        let mut response = encoded(status, encoding, &body, &body);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// The 200 of a request whose spans are stored, in its encoding.
pub fn accepted(encoding: Encoding, decoded: &Decoded) -> Response {
    let body = response(decoded);
    encoded(StatusCode::OK, encoding, &body, &body)
}

/// What an export whose spans are stored is told, on either transport:
/// `partial_success` counts the spans rejected, and its message says why
/// and what was cut.
pub fn response(decoded: &Decoded) -> ExportTraceServiceResponse {
    let mut notes = decoded.reasons.clone();
    if decoded.truncated > 0 {
        notes.push(format!(
            "{} spans were cut to the receiver's limits (see their tracegate.truncated attribute)",
            decoded.truncated
        ));
    }
    let partial_success = (!notes.is_empty()).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(decoded.rejected()).unwrap_or(i64::MAX),
        error_message: notes.join("; "),
    });
    ExportTraceServiceResponse { partial_success }
}

/// A body in `encoding`: `message` as protobuf, or `json` as JSON.
fn encoded(
    status: StatusCode,
    encoding: Encoding,
    message: &impl Message,
    json: &impl serde::Serialize,
) -> Response {
    let bytes = match encoding {
        Encoding::Protobuf => message.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(json).unwrap_or_default(),
    };
    let mut response = (status, bytes).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, encoding.content_type());
    response
}
