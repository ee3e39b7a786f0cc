//! What the upstream request carries: the route's credentials, its static
//! headers, and the caller's extra headers when the route allows them.
//!
//! The order is the order of trust. The caller's own headers come first
//! (through the header policy: no hop-by-hop, no identity carriers); then the
//! caller's per-request extra headers from `X-Tracegate-Provider-Data`, for
//! routes that opt in, minus everything the blocklist holds; then the
//! deployer's static route headers, which override the caller's; then the
//! route's credentials, which override everything:
//!
//! * `auth = "passthrough"` leaves the caller's `Authorization` / `x-api-key`;
//! * `auth = "none"` removes the caller's credentials and sends none (an
//!   upstream without a key);
//! * `auth = "env:VAR"` removes the caller's `Authorization`, `x-api-key`,
//!   `api-key` and `Cookie` and sends the key read from `VAR` now (so a rotated secret
//!   needs no restart) as `Authorization: Bearer` to OpenAI-style upstreams
//!   and as `x-api-key` to Anthropic.
//!
//! A key or a static header that comes from an unset or empty variable
//! **fails closed**: the call is refused (502) before the upstream is
//! contacted, never sent without its credential, and the message does not
//! name the variable. Malformed provider data is a 400 — never silently
//! ignored. The gateway's own inbound token is never forwarded.

use crate::config::{HeaderSource, InboundAuth, RouteConfig, UpstreamAuth};
use crate::headers;
use crate::protocol::Protocol;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

/// Why the upstream request cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundError {
    /// A credential or header the route needs is not available (its
    /// variable is unset or empty): fail closed.
    MissingSecret,
    /// The caller's provider data is unusable; the message says why.
    BadProviderData(String),
}

/// The headers to send upstream for a call the route serves.
pub fn outbound_headers(
    route: &RouteConfig,
    incoming: &HeaderMap,
    inbound: &InboundAuth,
) -> Result<HeaderMap, OutboundError> {
    let mut out = headers::upstream_request_headers(incoming);
    // The gateway's own token stays at the gateway.
    match &inbound.header {
        Some(name) => {
            out.remove(name);
        }
        None if inbound.enabled() => {
            out.remove(AUTHORIZATION);
        }
        None => {}
    }
    // A route with its own key (or none) drops the caller's credentials
    // first, so a route header set below (a cookie, say) is not removed
    // with them.
    if matches!(route.auth, UpstreamAuth::Env(_) | UpstreamAuth::None) {
        for name in headers::CALLER_CREDENTIALS {
            out.remove(*name);
        }
    }
    if route.allow_caller_headers {
        for (name, value) in caller_headers(route, incoming)? {
            out.insert(name, value);
        }
    }
    for (name, source) in &route.headers {
        let value = match source {
            HeaderSource::Literal(value) => value.clone(),
            HeaderSource::Env(var) => {
                let secret = env_secret(var)?;
                HeaderValue::from_str(&secret).map_err(|_| OutboundError::MissingSecret)?
            }
        };
        out.insert(name.clone(), value);
    }
    if let UpstreamAuth::Env(var) = &route.auth {
        let key = env_secret(var)?;
        let (name, value) = match route.protocol {
            Protocol::Openai => (AUTHORIZATION, format!("Bearer {key}")),
            Protocol::Anthropic => (HeaderName::from_static("x-api-key"), key.clone()),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| OutboundError::MissingSecret)?;
        value.set_sensitive(true);
        out.insert(name, value);
    }
    Ok(out)
}

/// A secret from the environment, read at request time; unset or empty is
/// an error (never an unauthenticated request).
pub fn env_secret(var: &str) -> Result<String, OutboundError> {
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or(OutboundError::MissingSecret)
}

/// The caller's extra headers for this route, from
/// `X-Tracegate-Provider-Data: {"<route>_extra_headers": {name: value}}`,
/// with blocked headers dropped.
fn caller_headers(
    route: &RouteConfig,
    incoming: &HeaderMap,
) -> Result<Vec<(HeaderName, HeaderValue)>, OutboundError> {
    let Some(raw) = incoming.get(headers::PROVIDER_DATA) else {
        return Ok(Vec::new());
    };
    let bad = |m: String| OutboundError::BadProviderData(m);
    let text = raw
        .to_str()
        .map_err(|_| bad("X-Tracegate-Provider-Data must be text (JSON)".into()))?;
    let data: Value = serde_json::from_str(text)
        .map_err(|e| bad(format!("X-Tracegate-Provider-Data is not valid JSON: {e}")))?;
    let Value::Object(data) = data else {
        return Err(bad("X-Tracegate-Provider-Data must be a JSON object".into()));
    };
    let field = format!("{}_extra_headers", route.label());
    let extras = match data.get(&field) {
        None => return Ok(Vec::new()),
        Some(Value::Object(extras)) => extras,
        Some(_) => {
            return Err(bad(format!(
                "{field} must be a JSON object of header names to values"
            )));
        }
    };
    let mut out = Vec::with_capacity(extras.len());
    for (name, value) in extras {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("{field}: '{name}' is not a valid header name")))?;
        let Value::String(text) = value else {
            return Err(bad(format!(
                "{field}: the value of '{name}' must be a string"
            )));
        };
        let value = HeaderValue::from_str(text).map_err(|_| {
            bad(format!(
                "{field}: the value of '{name}' is not a valid header value"
            ))
        })?;
        if headers::is_blocked_for_caller(&header) {
            tracing::debug!(header = %header, route = route.label(), "caller header blocked");
            continue;
        }
        out.push((header, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::map_of;

    fn route(auth: UpstreamAuth, protocol: Protocol) -> RouteConfig {
        RouteConfig {
            name: Some("maas".into()),
            protocol,
            auth,
            headers: vec![(
                HeaderName::from_static("x-org"),
                HeaderSource::Literal(HeaderValue::from_static("acme")),
            )],
            allow_caller_headers: true,
            ..RouteConfig::to(reqwest::Url::parse("http://h").unwrap())
        }
    }

    #[test]
    fn passthrough_keeps_the_callers_credentials() {
        let out = outbound_headers(
            &route(UpstreamAuth::Passthrough, Protocol::Openai),
            &map_of(&[("authorization", "Bearer caller")]),
            &InboundAuth::default(),
        )
        .unwrap();
        assert_eq!(out["authorization"], "Bearer caller");
        assert_eq!(out["x-org"], "acme");
    }

    #[test]
    fn a_missing_key_fails_closed() {
        let r = route(
            UpstreamAuth::Env("TRACEGATE_TEST_SURELY_UNSET_KEY".into()),
            Protocol::Openai,
        );
        assert_eq!(
            outbound_headers(&r, &HeaderMap::new(), &InboundAuth::default()).unwrap_err(),
            OutboundError::MissingSecret
        );
    }

    #[test]
    fn the_inbound_token_is_never_forwarded() {
        let auth = InboundAuth {
            tokens: vec!["t".into()],
            header: Some(HeaderName::from_static("x-tracegate-key")),
        };
        let out = outbound_headers(
            &route(UpstreamAuth::Passthrough, Protocol::Openai),
            &map_of(&[("x-tracegate-key", "t"), ("authorization", "Bearer caller")]),
            &auth,
        )
        .unwrap();
        assert!(out.get("x-tracegate-key").is_none());
        assert_eq!(out["authorization"], "Bearer caller");
    }

    #[test]
    fn a_bearer_gateway_token_is_never_forwarded_even_on_passthrough() {
        // Config refuses this pairing; the header builder holds the line
        // on its own all the same.
        let auth = InboundAuth {
            tokens: vec!["gateway-token".into()],
            header: None,
        };
        let out = outbound_headers(
            &route(UpstreamAuth::Passthrough, Protocol::Openai),
            &map_of(&[("authorization", "Bearer gateway-token")]),
            &auth,
        )
        .unwrap();
        assert!(out.get("authorization").is_none());
    }

    #[test]
    fn caller_headers_pass_the_blocklist_and_route_headers_win() {
        let data = r#"{"maas_extra_headers": {"X-MAAS-Subscription": "free-tier", "Authorization": "Bearer evil", "x-org": "spoof", "Host": "evil", "X-Forwarded-For": "1.2.3.4"}, "other_extra_headers": {"X-Other": "no"}}"#;
        let out = outbound_headers(
            &route(UpstreamAuth::Passthrough, Protocol::Openai),
            &map_of(&[("x-tracegate-provider-data", data)]),
            &InboundAuth::default(),
        )
        .unwrap();
        assert_eq!(out["x-maas-subscription"], "free-tier");
        assert!(out.get("authorization").is_none(), "blocked");
        assert!(out.get("host").is_none(), "blocked");
        assert!(out.get("x-forwarded-for").is_none(), "blocked");
        assert!(out.get("x-other").is_none(), "another route's field");
        assert_eq!(out["x-org"], "acme", "the deployer's header wins");
        assert!(
            out.get("x-tracegate-provider-data").is_none(),
            "never forwarded"
        );
    }

    #[test]
    fn malformed_provider_data_is_an_error() {
        let r = route(UpstreamAuth::Passthrough, Protocol::Openai);
        for data in [
            "not json",
            "[1]",
            r#"{"maas_extra_headers": "x"}"#,
            r#"{"maas_extra_headers": {"bad name": "v"}}"#,
            r#"{"maas_extra_headers": {"x-a": 1}}"#,
        ] {
            let e = outbound_headers(
                &r,
                &map_of(&[("x-tracegate-provider-data", data)]),
                &InboundAuth::default(),
            )
            .unwrap_err();
            assert!(matches!(e, OutboundError::BadProviderData(_)), "{data}");
        }
    }
}
