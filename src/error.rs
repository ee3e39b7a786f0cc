//! Errors the gateway itself answers with.
//!
//! When tracegate (not the upstream) fails a call, the client gets the error
//! shape its SDK already understands, `{"error": {"message", "type", "code"}}`
//! with the matching HTTP status, so `openai.APIStatusError` and friends work.
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
