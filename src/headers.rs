//! The header policy, in one place.
//!
//! A gateway sits between two parties that must not be able to reach each
//! other's plumbing. Every rule about which header may cross the gateway, in
//! which direction, and which header may be written to disk, lives in this file
//! and nowhere else:
//!
//! * **hop-by-hop** headers describe one TCP connection, not the message; they
//!   never cross the gateway in either direction, and neither does any header
//!   the `Connection` header names;
//! * **identity carriers** (`X-RLLM-*`) are ours: they are read by `identity`
//!   and always stripped before upstream, so providers never see them;
//! * **framing** headers (`host`, `content-length`) are recomputed by the HTTP
//!   client for the bytes it actually sends;
//! * `accept-encoding` is replaced by `identity` upstream: capture must read
//!   the response body, so the upstream must not compress it. The client still
//!   receives exactly the upstream's bytes.
//! * `traceparent`/`tracestate` are replaced by the gateway span's own, both
//!   upstream (unless `propagate_traceparent` is off, which removes them) and
//!   back to the client, so each hop names its real parent.
//! * `via` carries the hops a request has made: the caller's entries pass
//!   upstream, and the gateway appends its own (`1.1 tracegate-<instance>`,
//!   `forward::hop`) after every other rule has run, so neither a caller's
//!   extra headers nor a route's static ones can replace or remove it — a
//!   request that comes back carrying it is a loop (508);
//! * **blocked for callers**: a route may let callers add per-request headers
//!   (`X-Tracegate-Provider-Data`), but never ones that carry credentials,
//!   framing, routing or client identity — request smuggling, credential
//!   override and origin spoofing are what such headers are for;
//! * **protected from routes** (checked by `config` at start): a route's
//!   static headers cannot set credentials or framing either — keys go
//!   through `auth = "env:VAR"`;
//! * **session affinity** (`x-session-affinity`, `x-multi-turn-session-id`):
//!   for a route that asks for them (default for vLLM), a call with a
//!   session carries its id in both upstream, as rLLM's gateway sends them,
//!   so sticky load balancers and per-replica prefix caches keep a session
//!   on one replica; a caller that set them keeps its own values;
//! * **redacted** headers are credentials: stored traces keep the header name
//!   with the value replaced by `[REDACTED]`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

/// Connection-scoped headers that never cross the gateway (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// Headers whose values are credentials (or carry them): never stored,
/// logged or exported.
pub const REDACTED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "set-cookie",
    PROVIDER_DATA,
];

/// The caller's credentials, which a route with its own key
/// (`auth = "env:VAR"`) removes: the caller must not override the
/// deployer's key, nor send its own to a provider it does not choose.
pub const CALLER_CREDENTIALS: &[&str] = &["authorization", "x-api-key", "api-key", "cookie"];

/// The caller's per-request extra headers for a route
/// (`{"<route>_extra_headers": {...}}`): read by `route`, never forwarded,
/// never stored with its values.
pub const PROVIDER_DATA: &str = "x-tracegate-provider-data";

/// Headers a caller may not set through provider data: the
/// hop-by-hop ones, framing, host, cookies, every credential header, and the
/// forwarding and client-IP headers — plus `x-forwarded-*`, the identity
/// carriers and the gateway's own headers, checked by prefix in
/// [`is_blocked_for_caller`].
pub const BLOCKED_FOR_CALLER: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "cookie",
    "set-cookie",
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "forwarded",
    "x-real-ip",
    "cf-connecting-ip",
    "true-client-ip",
    TRACEPARENT,
    TRACESTATE,
    VIA,
];

/// Headers a route's static `headers` may not set ("protected"),
/// beside hop-by-hop and framing headers: credentials go through
/// `auth = "env:VAR"`, and the body's framing and the hop list are the
/// gateway's.
pub const PROTECTED_FROM_ROUTE: &[&str] = &[
    "authorization",
    "x-api-key",
    "content-type",
    "anthropic-version",
    VIA,
];

/// The hops a request has made (RFC 9110 §7.6.3); the gateway appends
/// itself and refuses a request that already names it.
pub const VIA: &str = "via";

/// True for a header a caller may not add to an upstream request.
pub fn is_blocked_for_caller(name: &HeaderName) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n)
        || BLOCKED_FOR_CALLER.contains(&n)
        || n.starts_with("x-forwarded-")
        || n.starts_with(IDENTITY_PREFIX)
        || n.starts_with("x-tracegate-")
}

/// The placeholder stored instead of a credential.
pub const REDACTED_VALUE: &str = "[REDACTED]";

/// Prefix of the identity carrier headers (`X-RLLM-Session-Id`, ...).
pub const IDENTITY_PREFIX: &str = "x-rllm-";

/// The response header carrying the record's id back to the caller.
pub const TRACE_ID_HEADER: &str = "x-rllm-trace-id";

/// True for a header that carries tracegate identity (`X-RLLM-*`).
pub fn is_identity_carrier(name: &HeaderName) -> bool {
    name.as_str().starts_with(IDENTITY_PREFIX)
}

/// Removes hop-by-hop headers, including every header the `Connection` header
/// lists, from `headers`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        // Split the raw bytes: a value with one non-UTF-8 byte (obs-text)
        // still names the headers its other tokens list.
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// True for a hop-by-hop header or one the HTTP client frames itself
/// (`host`, `content-length`): headers no configuration may set.
pub fn is_hop_by_hop_or_framing(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || name == header::HOST || name == header::CONTENT_LENGTH
}

/// The headers to send upstream for a request that arrived with `incoming`
/// (before the route adds or replaces credentials and headers).
pub fn upstream_request_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut out = incoming.clone();
    remove_hop_by_hop(&mut out);
    out.remove(header::HOST);
    out.remove(header::CONTENT_LENGTH);
    out.remove(PROVIDER_DATA);
    // Addressed to this proxy, not to the provider (RFC 9110 §11.7.2).
    out.remove(header::PROXY_AUTHORIZATION);
    let identity: Vec<HeaderName> = out
        .keys()
        .filter(|name| is_identity_carrier(name))
        .cloned()
        .collect();
    for name in identity {
        out.remove(name);
    }
    out.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    out
}

/// The headers to send back to the client for an upstream response.
pub fn client_response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = upstream.clone();
    remove_hop_by_hop(&mut out);
    out
}

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C vendor trace state header.
pub const TRACESTATE: &str = "tracestate";

/// The headers that pin a session to one replica upstream.
pub const SESSION_AFFINITY: &[&str] = &["x-session-affinity", "x-multi-turn-session-id"];

/// Adds the session-affinity headers (the session id) to an upstream
/// request, keeping any the caller set.
pub fn set_session_affinity(headers: &mut HeaderMap, session_id: &str) {
    let Ok(value) = HeaderValue::from_str(session_id) else {
        return;
    };
    for name in SESSION_AFFINITY {
        headers
            .entry(HeaderName::from_static(name))
            .or_insert_with(|| value.clone());
    }
}

/// Replaces the W3C trace context headers: the gateway's own span is the
/// parent of whatever comes next (`traceparent = None` removes them).
pub fn set_trace_context(
    headers: &mut HeaderMap,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) {
    headers.remove(TRACEPARENT);
    headers.remove(TRACESTATE);
    if let Some(value) = traceparent.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(TRACEPARENT, value);
        if let Some(state) = tracestate.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(TRACESTATE, state);
        }
    }
}

/// True for a header whose value must never be stored.
pub fn is_redacted(name: &HeaderName) -> bool {
    REDACTED.contains(&name.as_str())
}

/// Headers as a JSON object for a stored record: credentials replaced by
/// [`REDACTED_VALUE`], repeated headers joined with `, `.
pub fn for_storage(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in headers.keys() {
        let value = if is_redacted(name) {
            REDACTED_VALUE.to_string()
        } else {
            headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.insert(name.as_str().to_string(), Value::String(value));
    }
    out
}

/// A header map of `(name, value)` pairs, in order (for tests).
#[cfg(test)]
pub(crate) fn map_of(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    use map_of as map;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn a_connection_header_with_obs_text_still_names_its_headers() {
        let mut h = map(&[("tracestate", "a=1"), ("x-kept", "yes")]);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"tracestate, \x80").unwrap(),
        );
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn upstream_headers_drop_identity_host_and_length() {
        let h = map(&[
            ("host", "gateway:9090"),
            ("content-length", "12"),
            ("X-RLLM-Session-Id", "s1"),
            ("x-rllm-anything", "v"),
            ("authorization", "Bearer sk-caller"),
            ("accept-encoding", "gzip"),
        ]);
        let out = upstream_request_headers(&h);
        assert!(out.get("host").is_none());
        assert!(out.get("content-length").is_none());
        assert!(out.keys().all(|k| !k.as_str().starts_with("x-rllm-")));
        assert_eq!(out["authorization"], "Bearer sk-caller");
        assert_eq!(out["accept-encoding"], "identity");
    }

    #[test]
    fn storage_redacts_credentials() {
        let h = map(&[
            ("authorization", "Bearer sk-secret"),
            ("x-api-key", "sk-ant"),
            ("cookie", "a=b"),
            ("x-kept", "visible"),
        ]);
        let stored = Value::Object(for_storage(&h)).to_string();
        assert!(!stored.contains("sk-secret"));
        assert!(!stored.contains("sk-ant"));
        assert!(!stored.contains("a=b"));
        assert!(stored.contains("visible"));
    }
}
