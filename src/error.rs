//! Errors the gateway itself answers with.
//!
//! When tracegate (not the upstream) fails a call, the client gets the error
//! shape its SDK already understands — OpenAI's
//! `{"error": {"message", "type", "code"}}`, or on the Anthropic API
//! Anthropic's `{"type": "error", "error": {"type", "message"}}` — with the
//! matching HTTP status, so the SDKs' error classes work.
//! Messages never echo a secret, a URL with credentials, or an environment
//! variable name.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

/// An error produced by the gateway, ready to be sent to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code, also stored as the record's error kind.
    pub code: &'static str,
    /// A human-readable message.
    pub message: String,
}

impl GatewayError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 404 for a path or resource that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400 for a request the gateway cannot use.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 500 for a failure inside the gateway.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    /// The OpenAI error `type` for this status.
    fn error_type(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 405 | 413 | 422 => "invalid_request_error",
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
                "type": self.error_type(),
                "code": self.code,
            }
        })
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for GatewayError {}

impl GatewayError {
    /// The error in Anthropic's shape, `{"type": "error", "error": {"type",
    /// "message"}}`, for calls made to the Anthropic API.
    pub fn anthropic_body(&self) -> serde_json::Value {
        let kind = match self.status.as_u16() {
            400 | 405 | 422 => "invalid_request_error",
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

    /// The response in the error shape of `protocol` (`anthropic`, else
    /// OpenAI's).
    pub fn into_response_for(self, protocol: &str) -> Response {
        let body = if protocol == "anthropic" {
            self.anthropic_body()
        } else {
            self.body()
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_openai_shape() {
        let e = GatewayError::new(StatusCode::BAD_GATEWAY, "upstream_unreachable", "down");
        let body = e.body();
        assert_eq!(body["error"]["message"], "down");
        assert_eq!(body["error"]["type"], "upstream_error");
        assert_eq!(body["error"]["code"], "upstream_unreachable");
    }
}
