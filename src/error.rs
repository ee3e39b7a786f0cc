//! Errors the gateway itself answers with.
//!
//! When tracegate (not the upstream) fails a call, the client gets the error
//! shape its SDK already understands — OpenAI's
//! `{"error": {"message", "type", "code"}}`, or on the Anthropic API
//! Anthropic's `{"type": "error", "error": {"type", "message"}}` — with the
//! matching HTTP status, so the SDKs' error classes work. The status and the
//! `code` come from the error's [`ErrorKind`]: one table, in `record`.
//! Messages never echo a secret, a URL with credentials, or an environment
//! variable's value.

use crate::protocol::Protocol;
use crate::record::{CallError, ErrorKind};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

/// An error produced by the gateway, ready to be sent to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({kind}): {message}", kind.status().as_u16())]
pub struct GatewayError {
    /// The kind of failure: decides the status and the `code`, and is the
    /// record's `error.kind`.
    pub kind: ErrorKind,
    /// A human-readable message.
    pub message: String,
}

impl GatewayError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// 404 for a path or resource that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// 400 for a request the gateway cannot use.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// 500 for a failure inside the gateway.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InternalError, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The error as the record keeps it.
    pub fn to_call_error(&self) -> CallError {
        CallError::new(self.kind, self.message.clone())
    }

    /// The OpenAI error `type` for this status.
    fn openai_type(&self) -> &'static str {
        match self.status().as_u16() {
            400 | 404 | 405 | 413 | 414 | 422 | 431 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            502..=504 => "upstream_error",
            _ => "server_error",
        }
    }

    /// The error as the OpenAI JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.openai_type(),
                "code": self.kind,
            }
        })
    }

    /// The error in Anthropic's shape, `{"type": "error", "error": {"type",
    /// "message"}}`, for calls made to the Anthropic API.
    pub fn anthropic_body(&self) -> serde_json::Value {
        let kind = match self.status().as_u16() {
            400 | 405 | 414 | 422 | 431 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        json!({"type": "error", "error": {"type": kind, "message": self.message}})
    }

    /// The body in the error shape of `protocol`.
    pub fn body_for(&self, protocol: Protocol) -> serde_json::Value {
        match protocol {
            Protocol::Anthropic => self.anthropic_body(),
            Protocol::Openai => self.body(),
        }
    }

    /// The response in the error shape of `protocol`.
    pub fn into_response_for(self, protocol: Protocol) -> Response {
        (self.status(), axum::Json(self.body_for(protocol))).into_response()
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        self.into_response_for(Protocol::Openai)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_openai_shape() {
        let e = GatewayError::new(ErrorKind::UpstreamUnreachable, "down");
        let body = e.body();
        assert_eq!(body["error"]["message"], "down");
        assert_eq!(body["error"]["type"], "upstream_error");
        assert_eq!(body["error"]["code"], "upstream_unreachable");
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    }
}
