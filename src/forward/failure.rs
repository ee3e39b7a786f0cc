//! How an upstream's failure becomes the gateway's error: before an answer
//! (the client gets a gateway error in its API's shape) or mid-body (the
//! record says how the answer broke off).
//!
//! Messages carry the HTTP client's whole cause chain ("connection refused",
//! "operation timed out"), never the URL, whose query could hold a
//! credential.

use crate::error::GatewayError;
use crate::record::{CallError, ErrorKind};

/// A reqwest error's full cause chain, without the URL.
pub fn describe(error: &reqwest::Error) -> String {
    let top = error.to_string();
    let mut message = top.split(" for url").next().unwrap_or(&top).to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}

/// The gateway error for a request that got no upstream response.
pub fn before_answer(error: &reqwest::Error) -> GatewayError {
    let (kind, what) = if error.is_timeout() {
        (
            ErrorKind::UpstreamTimeout,
            "the upstream did not answer in time",
        )
    } else if error.is_connect() {
        (
            ErrorKind::UpstreamUnreachable,
            "cannot connect to the upstream",
        )
    } else {
        (ErrorKind::UpstreamError, "the upstream request failed")
    };
    GatewayError::new(kind, format!("{what}: {}", describe(error)))
}

/// The record error for an upstream body that failed mid-stream.
pub fn mid_body(error: &reqwest::Error) -> CallError {
    let kind = if error.is_timeout() {
        ErrorKind::UpstreamTimeout
    } else {
        ErrorKind::UpstreamStreamError
    };
    CallError::new(
        kind,
        format!("the upstream response broke off: {}", describe(error)),
    )
}
