//! Limits on a request's headers, answered by the gateway itself.
//!
//! A request with more header fields than `server.max_headers`, or whose
//! fields take more than `server.max_header_bytes` (name, value and the
//! four bytes of `: ` and CRLF, each), is answered `431` with the error
//! JSON of the API called, before anything else looks at it (auth, the
//! proxy), and its body is not read: headers are what every later stage
//! reads, and what the record would store. Such a request is not recorded,
//! like a refused token: a flood of them must not fill the store.
//!
//! hyper's own limits are set at twice these (`connection`), so this check
//! is the one that answers, with a message naming the key; a head beyond
//! hyper's limits still gets the same 431 JSON, from `io`.

use crate::config::ServerOptions;
use crate::error::GatewayError;
use crate::protocol::CallPath;
use crate::record::ErrorKind;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderMap;

/// The bytes a header field takes besides its name and value: `: ` and CRLF.
const FIELD_OVERHEAD: usize = 4;

/// The middleware: passes requests within the limits on, answers 431
/// otherwise.
pub async fn check(State(options): State<ServerOptions>, request: Request, next: Next) -> Response {
    let Err(error) = within_limits(request.headers(), &options) else {
        return next.run(request).await;
    };
    tracing::debug!(path = %request.uri().path(), "refused: {error}");
    let protocol = CallPath::protocol_of(request.method(), request.uri().path());
    error.into_response_for(protocol)
}

/// Whether `headers` keep `server.max_headers` and `server.max_header_bytes`.
fn within_limits(headers: &HeaderMap, options: &ServerOptions) -> Result<(), GatewayError> {
    let count = headers.len();
    if count > options.max_headers {
        return Err(GatewayError::new(
            ErrorKind::HeadersTooLarge,
            format!(
                "the request has {count} header fields; this gateway accepts at most {} \
                 (server.max_headers)",
                options.max_headers
            ),
        ));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + FIELD_OVERHEAD)
        .sum();
    if bytes > options.max_header_bytes {
        return Err(GatewayError::new(
            ErrorKind::HeadersTooLarge,
            format!(
                "the request's header fields take {bytes} bytes; this gateway accepts at most {} \
                 (server.max_header_bytes)",
                options.max_header_bytes
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn headers(count: usize, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for i in 0..count {
            let name = HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap();
            h.insert(name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn counts_and_bytes_are_both_limits() {
        let options = ServerOptions {
            max_headers: 3,
            max_header_bytes: 40,
            ..ServerOptions::default()
        };
        assert!(within_limits(&headers(3, "v"), &options).is_ok());
        let e = within_limits(&headers(4, "v"), &options).unwrap_err();
        assert!(e.message.ends_with("at most 3 (server.max_headers)"), "{e}");
        // "x-h0: " + 30 bytes + CRLF = 38; two of them are over 40.
        let e = within_limits(&headers(2, &"v".repeat(30)), &options).unwrap_err();
        assert!(e.message.contains("take 76 bytes"), "{e}");
        assert_eq!(
            e.status(),
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
}
