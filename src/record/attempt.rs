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

crate::wire_enum! {
    /// A failure before anything reached the client that a `retry` policy
    /// may retry.
    #[derive(PartialOrd, Ord)]
    pub enum RetryReason {
        /// The connection was refused or timed out: nothing was sent.
        Connect = "connect",
        /// The connection broke before the upstream's response headers.
        Reset = "reset",
        /// No response headers within the first-byte timeout.
        Timeout = "timeout",
        /// 429 Too Many Requests.
        TooManyRequests = "429",
        /// 500 Internal Server Error (opt-in: it is often not transient).
        InternalServerError = "500",
        /// 502 Bad Gateway.
        BadGateway = "502",
        /// 503 Service Unavailable.
        ServiceUnavailable = "503",
        /// 504 Gateway Timeout.
        GatewayTimeout = "504",
    }
}

impl RetryReason {
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

    /// The reason an upstream status is retried for, if it is one.
    pub fn of_status(status: u16) -> Option<RetryReason> {
        RetryReason::ALL
            .into_iter()
            .find(|r| r.as_str() == status.to_string())
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
