//! How an upstream's failure becomes the gateway's error: before an answer
//! (the client gets a gateway error in its API's shape) or mid-body (the
//! record says how the answer broke off).
//!
//! Each timeout is its own kind, and its message names the setting that
//! set it, so that whoever reads the record knows which key to change:
//! `connect_timeout` (the pooled client's), the first-byte, idle and total
//! limits of the route's policy ([`Limit`]).
//!
//! Messages carry the HTTP client's whole cause chain ("connection refused",
//! "operation timed out"), never the URL, whose query could hold a
//! credential.

use crate::config::Limit;
use crate::error::GatewayError;
use crate::record::{CallError, ErrorKind};
use std::time::Duration;

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

/// The gateway error for a request that got no upstream response;
/// `connect_timeout` is the client's, named when it fired.
pub fn before_answer(error: &reqwest::Error, connect_timeout: Duration) -> GatewayError {
    let (kind, what) = if error.is_connect() && error.is_timeout() {
        let what = format!(
            "no connection to the upstream within {} (connect_timeout)",
            humantime::format_duration(connect_timeout)
        );
        (ErrorKind::UpstreamConnectTimeout, what)
    } else if error.is_connect() {
        let what = "cannot connect to the upstream".to_string();
        (ErrorKind::UpstreamUnreachable, what)
    } else {
        let what = "the upstream request failed".to_string();
        (ErrorKind::UpstreamError, what)
    };
    GatewayError::new(kind, format!("{what}: {}", describe(error)))
}

/// The gateway error for a limit that fired before the upstream answered:
/// the first-byte limit (`upstream_timeout`) or the call's total
/// (`upstream_total_timeout`).
pub fn no_answer_within(kind: ErrorKind, limit: &Limit) -> GatewayError {
    let what = match kind {
        ErrorKind::UpstreamTotalTimeout => "the call did not end",
        _ => "the upstream sent no response headers",
    };
    GatewayError::new(kind, format!("{what} within {}", within(limit)))
}

/// The record error for a limit that fired mid-body: the idle limit
/// (`upstream_idle_timeout`) or the call's total.
pub fn cut_off(kind: ErrorKind, limit: &Limit) -> CallError {
    let what = match kind {
        ErrorKind::UpstreamTotalTimeout => "the call did not end",
        _ => "the upstream went silent mid-answer: nothing more",
    };
    CallError::new(kind, format!("{what} within {}", within(limit)))
}

/// `10m (read_timeout)`.
fn within(limit: &Limit) -> String {
    format!(
        "{} ({})",
        humantime::format_duration(limit.after),
        limit.setting
    )
}

/// The record error for an upstream body that failed mid-stream.
pub fn mid_body(error: &reqwest::Error) -> CallError {
    CallError::new(
        ErrorKind::UpstreamStreamError,
        format!("the upstream response broke off: {}", describe(error)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_names_its_setting() {
        let limit = Limit {
            after: Duration::from_millis(200),
            setting: "routes[0] (slow): idle_timeout".into(),
        };
        let e = cut_off(ErrorKind::UpstreamIdleTimeout, &limit);
        assert_eq!(e.kind, ErrorKind::UpstreamIdleTimeout);
        assert!(
            e.message
                .ends_with("within 200ms (routes[0] (slow): idle_timeout)"),
            "{}",
            e.message
        );
        let e = no_answer_within(ErrorKind::UpstreamTimeout, &limit);
        assert_eq!(e.status(), http::StatusCode::GATEWAY_TIMEOUT);
    }
}
