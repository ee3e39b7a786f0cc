//! How a call ended, and why it failed: the part of the record contract that
//! dashboards, alerts and the CLI filter on.
//!
//! [`ErrorKind`] is the one list of failure kinds. Every failure the gateway
//! produces or observes is one of them; each knows its wire name (what the
//! record's `error.kind`, the `error_kind` column, the `error.type` span
//! attribute, the metrics label and the OpenAI error JSON's `code` say), and,
//! for the failures the gateway itself answers, the HTTP status. The schema's
//! enum, the table in `docs/recording.md` and the metrics' label values are all checked
//! against [`ErrorKind::ALL`] by tests, so a kind cannot be added in one
//! place and forgotten in another.

use http::StatusCode;
use serde::{Deserialize, Serialize};

crate::wire_enum! {
    /// How a call ended.
    #[derive(Default)]
    pub enum Status {
        /// The upstream answered 2xx and the whole answer reached the client.
        #[default]
        Ok = "ok",
        /// The upstream or the gateway failed the call; `error` says how.
        Error = "error",
        /// The client went away before the answer was complete.
        ClientClosed = "client_closed",
    }
}

crate::wire_enum! {
    /// Why a call failed: one stable, machine-readable kind.
    #[derive(PartialOrd, Ord)]
    pub enum ErrorKind {
        /// The gateway could not connect to the upstream (502).
        UpstreamUnreachable = "upstream_unreachable",
        /// No connection to the upstream within `connect_timeout` (504).
        UpstreamConnectTimeout = "upstream_connect_timeout",
        /// No response headers within the first-byte timeout (504).
        UpstreamTimeout = "upstream_timeout",
        /// The upstream went silent mid-body longer than the idle timeout.
        UpstreamIdleTimeout = "upstream_idle_timeout",
        /// The call took longer than its total timeout (`request_timeout`).
        UpstreamTotalTimeout = "upstream_total_timeout",
        /// The upstream request failed another way before an answer (502).
        UpstreamError = "upstream_error",
        /// The upstream answered with an HTTP error status (4xx, 5xx), relayed.
        UpstreamHttpError = "upstream_http_error",
        /// The upstream's body broke off, or it sent an error event in a stream.
        UpstreamStreamError = "upstream_stream_error",
        /// A stream ended without its protocol's end marker.
        StreamIncomplete = "stream_incomplete",
        /// The client went away before the answer was complete.
        ClientClosed = "client_closed",
        /// The request body is larger than `max_body_bytes` (413).
        RequestTooLarge = "request_too_large",
        /// The request cannot be used as it is (400).
        BadRequest = "bad_request",
        /// No route serves the requested model (404).
        ModelNotFound = "model_not_found",
        /// The route's upstream key is not available; nothing was sent (502).
        UpstreamCredentialsUnavailable = "upstream_credentials_unavailable",
        /// The caller's `X-Tracegate-Provider-Data` is unusable (400).
        InvalidProviderData = "invalid_provider_data",
        /// The request already passed through this gateway: a forwarding loop
        /// (508).
        LoopDetected = "loop_detected",
        /// The request's headers are over the server's limits (431; not
        /// recorded).
        HeadersTooLarge = "headers_too_large",
        /// The request target is too long to parse (414; not recorded).
        UriTooLong = "uri_too_long",
        /// The caller presented no valid gateway token (401; not recorded).
        InvalidApiKey = "invalid_api_key",
        /// No such path or resource (404).
        NotFound = "not_found",
        /// The gateway failed inside (500).
        InternalError = "internal_error",
        /// The store cannot commit now; what waits on it (a flush, a session
        /// change) gave up (503; not recorded).
        StoreUnavailable = "store_unavailable",
        /// What the request names exists already with other content: a
        /// feedback id reused for another value (409; not recorded).
        Conflict = "conflict",
    }
}

impl ErrorKind {
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
            ErrorKind::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::LoopDetected => StatusCode::LOOP_DETECTED,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::UpstreamUnreachable
            | ErrorKind::ClientClosed
            | ErrorKind::UpstreamError
            | ErrorKind::UpstreamHttpError
            | ErrorKind::UpstreamStreamError
            | ErrorKind::StreamIncomplete
            | ErrorKind::UpstreamCredentialsUnavailable => StatusCode::BAD_GATEWAY,
        }
    }

    /// What the kind means, one line (the table in `docs/recording.md`).
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
            ErrorKind::LoopDetected => {
                "the request already passed through this gateway: a forwarding loop (508)"
            }
            ErrorKind::HeadersTooLarge => {
                "more header fields or header bytes than server.max_headers or \
                 server.max_header_bytes allow (431; not recorded)"
            }
            ErrorKind::UriTooLong => "the request target is too long to parse (414; not recorded)",
            ErrorKind::InvalidApiKey => "no valid gateway token (401; not recorded)",
            ErrorKind::NotFound => "no such path or resource (404; not recorded)",
            ErrorKind::InternalError => "the gateway failed inside (500)",
            ErrorKind::StoreUnavailable => {
                "the store cannot commit now; a flush or session change gave up (503; not recorded)"
            }
            ErrorKind::Conflict => {
                "a feedback id was given again with another value (409; not recorded)"
            }
        }
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
        let listed = kinds_in_table(include_str!("../../docs/recording.md"), "### Error kinds");
        assert_eq!(listed, all_names());
    }

    #[test]
    fn the_readme_table_says_what_each_kind_means() {
        let readme = include_str!("../../docs/recording.md");
        for kind in ErrorKind::ALL {
            let row = format!("| `{}` | {} |", kind.as_str(), kind.description());
            assert!(
                readme.contains(&row),
                "docs/recording.md row for {kind}: {row}"
            );
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
