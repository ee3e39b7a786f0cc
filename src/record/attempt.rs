//! The upstream attempts of a call: each time the gateway sent the request
//! to a worker, what came of it, and why it tried again.
//!
//! A call is sent once unless its route has a `retry` policy (or a worker
//! refuses the connection and the pool has another). The record keeps every
//! attempt, in order, so that a slow call shows where its time went — three
//! 503s and a backoff, say — and the last attempt is the one whose answer
//! the client got. [`RetryReason`] is the fixed list of failures a policy
//! may retry; its wire names are what `retry.on` lists and what the
//! `reason` label of `tracegate_retries_total` says.

use super::outcome::CallError;
use serde::{Deserialize, Serialize};

/// One time the gateway sent the call upstream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Attempt {
    /// The worker it went to (its id in the route's pool).
    pub worker: String,
    /// That worker's base URL (never with credentials).
    pub upstream: String,
    /// When the attempt started (RFC 3339, UTC, microseconds).
    pub started_at: String,
    /// Milliseconds from its start to the upstream's response headers, or
    /// to its failure.
    pub duration_ms: f64,
    /// The status the upstream answered with, if it answered.
    pub http_status: Option<u16>,
    /// How it failed, if it got no answer (or the client left meanwhile).
    pub error: Option<CallError>,
    /// Why another attempt followed; `None` for the last one.
    pub retry_reason: Option<RetryReason>,
}

/// A failure before anything reached the client that a `retry` policy may
/// retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RetryReason {
    /// The connection was refused or timed out: nothing was sent.
    #[serde(rename = "connect")]
    Connect,
    /// The connection broke before the upstream's response headers.
    #[serde(rename = "reset")]
    Reset,
    /// No response headers within the first-byte timeout.
    #[serde(rename = "timeout")]
    Timeout,
    /// 429 Too Many Requests.
    #[serde(rename = "429")]
    TooManyRequests,
    /// 500 Internal Server Error (opt-in: it is often not transient).
    #[serde(rename = "500")]
    InternalServerError,
    /// 502 Bad Gateway.
    #[serde(rename = "502")]
    BadGateway,
    /// 503 Service Unavailable.
    #[serde(rename = "503")]
    ServiceUnavailable,
    /// 504 Gateway Timeout.
    #[serde(rename = "504")]
    GatewayTimeout,
}

impl RetryReason {
    /// Every reason, in documentation order.
    pub const ALL: [RetryReason; 8] = [
        RetryReason::Connect,
        RetryReason::Reset,
        RetryReason::Timeout,
        RetryReason::TooManyRequests,
        RetryReason::InternalServerError,
        RetryReason::BadGateway,
        RetryReason::ServiceUnavailable,
        RetryReason::GatewayTimeout,
    ];

    /// What a policy retries when it does not say: everything but 500.
    pub const DEFAULT: [RetryReason; 7] = [
        RetryReason::Connect,
        RetryReason::Reset,
        RetryReason::Timeout,
        RetryReason::TooManyRequests,
        RetryReason::BadGateway,
        RetryReason::ServiceUnavailable,
        RetryReason::GatewayTimeout,
    ];

    /// The wire name (`connect`, `429`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Reset => "reset",
            RetryReason::Timeout => "timeout",
            RetryReason::TooManyRequests => "429",
            RetryReason::InternalServerError => "500",
            RetryReason::BadGateway => "502",
            RetryReason::ServiceUnavailable => "503",
            RetryReason::GatewayTimeout => "504",
        }
    }

    /// The reason named `text`.
    pub fn parse(text: &str) -> Option<RetryReason> {
        RetryReason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The reason an upstream status is retried for, if it is one.
    pub fn of_status(status: u16) -> Option<RetryReason> {
        RetryReason::ALL
            .into_iter()
            .find(|r| r.as_str() == status.to_string())
    }
}

impl std::fmt::Display for RetryReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for reason in RetryReason::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
            assert_eq!(RetryReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(
            RetryReason::of_status(503),
            Some(RetryReason::ServiceUnavailable)
        );
        assert_eq!(RetryReason::of_status(404), None);
        assert!(!RetryReason::DEFAULT.contains(&RetryReason::InternalServerError));
    }
}
