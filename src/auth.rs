//! Inbound auth: who may use the gateway.
//!
//! A gateway reachable from a sandbox or over a tunnel spends provider
//! credits for whoever can reach it. With tokens configured (`auth.tokens`,
//! `TRACEGATE_AUTH_TOKENS`), every request must present one — as
//! `Authorization: Bearer <token>` (the scheme in any case), or in the header
//! named by `auth.header` when callers' own `Authorization` must pass through
//! to upstreams. The check runs before anything else, so a refused request's
//! body is never read, and it answers 401 with `WWW-Authenticate: Bearer` and
//! the error shape of the API called. Tokens are compared in constant time.
//!
//! Exempt: `GET /health` (for load balancers), and the web UI's static page
//! and assets (`/ui`, `/ui/`, `/ui/<file>`), which hold no data — the page
//! asks for the token and sends it with every data request (`/ui/api/...`
//! and the API are protected like everything else). Refused requests are not
//! recorded: an unauthenticated caller must not be able to fill the store.
//! The OTLP/gRPC receiver, on its own port, asks [`presents_token`] of its
//! calls' metadata and answers `UNAUTHENTICATED` (`otlp::grpc`).

use crate::config::InboundAuth;
use crate::error::GatewayError;
use crate::protocol::CallPath;
use crate::record::ErrorKind;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method, header};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The middleware: passes authorised requests on, answers 401 otherwise.
pub async fn check(State(auth): State<Arc<InboundAuth>>, request: Request, next: Next) -> Response {
    if !auth.enabled()
        || is_public(request.method(), request.uri().path())
        || presents_token(&auth, request.headers())
    {
        return next.run(request).await;
    }
    tracing::debug!(path = %request.uri().path(), "refused: no valid gateway token");
    let protocol = CallPath::protocol_of(request.method(), request.uri().path());
    let where_ = match &auth.header {
        Some(name) => format!("in the {name} header"),
        None => "as Authorization: Bearer <token>".to_string(),
    };
    let mut response = GatewayError::new(
        ErrorKind::InvalidApiKey,
        format!("this gateway needs a valid token {where_}"),
    )
    .into_response_for(protocol);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Requests that need no token.
fn is_public(method: &Method, path: &str) -> bool {
    if method != Method::GET {
        return false;
    }
    path == "/health"
        || path == "/"
        || path == "/ui"
        || (path.starts_with("/ui/") && !path.starts_with("/ui/api/"))
}

/// Whether a request with these headers carries one of the tokens (the
/// OTLP/gRPC receiver asks it of its call's metadata too).
pub fn presents_token(auth: &InboundAuth, headers: &HeaderMap) -> bool {
    let presented = match &auth.header {
        Some(name) => headers.get(name).and_then(|v| v.to_str().ok()).map(|v| {
            // Accept the bare token, or "Bearer <token>" in the custom header too.
            bearer(v).unwrap_or(v.trim())
        }),
        None => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer),
    };
    let Some(presented) = presented else {
        return false;
    };
    // Every token is compared (no early exit), each in constant time.
    auth.tokens.iter().fold(false, |found, token| {
        found | bool::from(token.as_bytes().ct_eq(presented.as_bytes()))
    })
}

/// The token of `Bearer <token>`, the scheme in any case.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn only_health_and_the_ui_shell_are_public() {
        assert!(is_public(&Method::GET, "/health"));
        assert!(is_public(&Method::GET, "/ui/"));
        assert!(is_public(&Method::GET, "/ui/app.js"));
        assert!(!is_public(&Method::GET, "/ui/api/runs"));
        assert!(!is_public(&Method::GET, "/health/workers"));
        assert!(!is_public(&Method::POST, "/health"));
        assert!(!is_public(&Method::GET, "/v1/models"));
    }
}
