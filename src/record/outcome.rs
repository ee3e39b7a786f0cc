//! How a call ended, and why it failed: the part of the record contract that
//! dashboards, alerts and the CLI filter on.
//!
//! [`ErrorKind`] is the one list of failure kinds. Every failure the gateway
//! produces or observes is one of them; each knows its wire name (what the
//! record's `error.kind`, the `error_kind` column, the `error.type` span
//! attribute, the metrics label and the OpenAI error JSON's `code` say), and,
//! for the failures the gateway itself answers, the HTTP status. The schema's
//! enum, the README's table and the metrics' label values are all checked
//! against [`ErrorKind::ALL`] by tests, so a kind cannot be added in one
//! place and forgotten in another.

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// How a call ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The upstream answered 2xx and the whole answer reached the client.
    #[default]
    Ok,
    /// The upstream or the gateway failed the call; `error` says how.
    Error,
    /// The client went away before the answer was complete.
    ClientClosed,
}

impl Status {
    /// The status as stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::ClientClosed => "client_closed",
        }
    }

    /// Every status, for documentation and parsing.
    pub const ALL: [Status; 3] = [Status::Ok, Status::Error, Status::ClientClosed];

    /// The status named `text` (its wire name).
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Why a call failed: one stable, machine-readable kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The gateway could not connect to the upstream (502).
    UpstreamUnreachable,
    /// No connection to the upstream within `connect_timeout` (504).
    UpstreamConnectTimeout,
    /// No response headers within the first-byte timeout (504).
    UpstreamTimeout,
    /// The upstream went silent mid-body longer than the idle timeout.
    UpstreamIdleTimeout,
    /// The call took longer than its total timeout (`request_timeout`).
    UpstreamTotalTimeout,
    /// The upstream request failed another way before an answer (502).
    UpstreamError,
    /// The upstream answered with an HTTP error status (4xx, 5xx), relayed.
    UpstreamHttpError,
    /// The upstream's body broke off, or it sent an error event in a stream.
    UpstreamStreamError,
    /// A stream ended without its protocol's end marker.
    StreamIncomplete,
    /// The client went away before the answer was complete.
    ClientClosed,
    /// The request body is larger than `max_body_bytes` (413).
    RequestTooLarge,
    /// The request cannot be used as it is (400).
    BadRequest,
    /// No route serves the requested model (404).
    ModelNotFound,
    /// The route's upstream key is not available; nothing was sent (502).
    UpstreamCredentialsUnavailable,
    /// The caller's `X-Tracegate-Provider-Data` is unusable (400).
    InvalidProviderData,
    /// The caller presented no valid gateway token (401; not recorded).
    InvalidApiKey,
    /// No such path or resource (404).
    NotFound,
    /// The gateway failed inside (500).
    InternalError,
}

impl ErrorKind {
    /// Every kind, in documentation order.
    pub const ALL: [ErrorKind; 18] = [
        ErrorKind::UpstreamUnreachable,
        ErrorKind::UpstreamConnectTimeout,
        ErrorKind::UpstreamTimeout,
        ErrorKind::UpstreamIdleTimeout,
        ErrorKind::UpstreamTotalTimeout,
        ErrorKind::UpstreamError,
        ErrorKind::UpstreamHttpError,
        ErrorKind::UpstreamStreamError,
        ErrorKind::StreamIncomplete,
        ErrorKind::ClientClosed,
        ErrorKind::RequestTooLarge,
        ErrorKind::BadRequest,
        ErrorKind::ModelNotFound,
        ErrorKind::UpstreamCredentialsUnavailable,
        ErrorKind::InvalidProviderData,
        ErrorKind::InvalidApiKey,
        ErrorKind::NotFound,
        ErrorKind::InternalError,
    ];

    /// The wire name (`upstream_unreachable`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UpstreamUnreachable => "upstream_unreachable",
            ErrorKind::UpstreamConnectTimeout => "upstream_connect_timeout",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamIdleTimeout => "upstream_idle_timeout",
            ErrorKind::UpstreamTotalTimeout => "upstream_total_timeout",
            ErrorKind::UpstreamError => "upstream_error",
            ErrorKind::UpstreamHttpError => "upstream_http_error",
            ErrorKind::UpstreamStreamError => "upstream_stream_error",
            ErrorKind::StreamIncomplete => "stream_incomplete",
            ErrorKind::ClientClosed => "client_closed",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::UpstreamCredentialsUnavailable => "upstream_credentials_unavailable",
            ErrorKind::InvalidProviderData => "invalid_provider_data",
            ErrorKind::InvalidApiKey => "invalid_api_key",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InternalError => "internal_error",
        }
    }

    /// The kind named `text` (its wire name).
    pub fn parse(text: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The HTTP status the gateway answers with when it fails a call this
    /// way itself. Kinds the gateway only observes (an upstream's own error
    /// status, a stream broken after its headers) answer 502 if asked.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::UpstreamConnectTimeout
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamIdleTimeout
            | ErrorKind::UpstreamTotalTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::BadRequest | ErrorKind::InvalidProviderData => StatusCode::BAD_REQUEST,
            ErrorKind::ModelNotFound | ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::InvalidApiKey => StatusCode::UNAUTHORIZED,
            ErrorKind::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::UpstreamUnreachable
            | ErrorKind::ClientClosed
            | ErrorKind::UpstreamError
            | ErrorKind::UpstreamHttpError
            | ErrorKind::UpstreamStreamError
            | ErrorKind::StreamIncomplete
            | ErrorKind::UpstreamCredentialsUnavailable => StatusCode::BAD_GATEWAY,
        }
    }

    /// What the kind means, one line (the README's table).
    pub fn description(self) -> &'static str {
        match self {
            ErrorKind::UpstreamUnreachable => "the gateway could not connect to the upstream (502)",
            ErrorKind::UpstreamConnectTimeout => {
                "no connection to the upstream within connect_timeout (504)"
            }
            ErrorKind::UpstreamTimeout => {
                "no response headers from the upstream within first_byte_timeout (504)"
            }
            ErrorKind::UpstreamIdleTimeout => {
                "the upstream went silent mid-answer for longer than idle_timeout"
            }
            ErrorKind::UpstreamTotalTimeout => {
                "the call took longer than request_timeout (504 before an answer)"
            }
            ErrorKind::UpstreamError => "the upstream request failed before an answer (502)",
            ErrorKind::UpstreamHttpError => {
                "the upstream answered with an HTTP error status, relayed as is"
            }
            ErrorKind::UpstreamStreamError => {
                "the upstream's answer broke off, or carried an error event"
            }
            ErrorKind::StreamIncomplete => "a stream ended without its protocol's end marker",
            ErrorKind::ClientClosed => "the client went away before the answer was complete",
            ErrorKind::RequestTooLarge => "the request body is larger than max_body_bytes (413)",
            ErrorKind::BadRequest => "the request cannot be used as it is (400)",
            ErrorKind::ModelNotFound => "no route serves the requested model (404)",
            ErrorKind::UpstreamCredentialsUnavailable => {
                "the route's upstream key is not set; nothing was sent (502)"
            }
            ErrorKind::InvalidProviderData => {
                "the caller's X-Tracegate-Provider-Data is unusable (400)"
            }
            ErrorKind::InvalidApiKey => "no valid gateway token (401; not recorded)",
            ErrorKind::NotFound => "no such path or resource (404; not recorded)",
            ErrorKind::InternalError => "the gateway failed inside (500)",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// A human-readable message (never contains a credential).
    #[serde(default)]
    pub message: String,
}

impl CallError {
    /// A failure of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> CallError {
        CallError {
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds a documentation table lists: the first cell of each row
    /// that names a kind in backquotes.
    fn kinds_in_table(text: &str, heading: &str) -> Vec<String> {
        let section = text.split(heading).nth(1).unwrap_or_default();
        section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split('|').nth(1))
            .map(|cell| cell.trim().trim_matches('`').to_string())
            .filter(|cell| cell.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect()
    }

    fn all_names() -> Vec<String> {
        ErrorKind::ALL
            .iter()
            .map(|k| k.as_str().to_string())
            .collect()
    }

    #[test]
    fn the_schema_lists_exactly_every_error_kind() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schema/trace_record.schema.json")).unwrap();
        let listed: Vec<String> = serde_json::from_value(
            schema["properties"]["error"]["properties"]["kind"]["enum"].clone(),
        )
        .unwrap();
        assert_eq!(listed, all_names());
    }

    #[test]
    fn the_readme_table_lists_exactly_every_error_kind() {
        let listed = kinds_in_table(include_str!("../../README.md"), "### Error kinds");
        assert_eq!(listed, all_names());
    }

    #[test]
    fn the_readme_table_says_what_each_kind_means() {
        let readme = include_str!("../../README.md");
        for kind in ErrorKind::ALL {
            let row = format!("| `{}` | {} |", kind.as_str(), kind.description());
            assert!(readme.contains(&row), "README row for {kind}: {row}");
        }
    }

    #[test]
    fn wire_names_round_trip_through_serde() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        }
        for status in Status::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}
