//! The header policy: any header map, in either direction, and for storage.

use crate::check;
use crate::generate;
use http::{HeaderMap, HeaderName};
use proptest::prelude::*;
use tracegate::headers::{self, HOP_BY_HOP, REDACTED_VALUE};

/// The header names a `Connection` header lists, read from its raw bytes
/// (a value need not be UTF-8 text to name a header).
fn named_by_connection(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .collect()
}

/// No hop-by-hop header, and none the `Connection` header named but the
/// ones the gateway sets itself (`set_by_gateway`).
fn no_hop_by_hop(
    out: &HeaderMap,
    incoming: &HeaderMap,
    set_by_gateway: &[&str],
) -> Result<(), TestCaseError> {
    for name in HOP_BY_HOP {
        prop_assert!(out.get(*name).is_none(), "{}", name);
    }
    for name in named_by_connection(incoming) {
        if set_by_gateway.contains(&name.as_str()) {
            continue;
        }
        prop_assert!(out.get(&name).is_none(), "{} (named by connection)", name);
    }
    Ok(())
}

#[test]
fn upstream_requests_carry_no_hop_by_hop_identity_or_framing_header() {
    check("headers_upstream", generate::header_map(), |incoming| {
        let out = headers::upstream_request_headers(&incoming);
        no_hop_by_hop(&out, &incoming, &["accept-encoding"])?;
        for name in out.keys() {
            prop_assert!(!headers::is_identity_carrier(name), "{}", name);
        }
        for name in [
            "host",
            "content-length",
            "proxy-authorization",
            headers::PROVIDER_DATA,
        ] {
            prop_assert!(out.get(name).is_none(), "{}", name);
        }
        prop_assert_eq!(out.get_all("accept-encoding").iter().count(), 1);
        prop_assert_eq!(&out["accept-encoding"], "identity");
        Ok(())
    });
}

#[test]
fn client_responses_carry_no_hop_by_hop_header_and_keep_the_rest() {
    check(
        "headers_client_response",
        generate::header_map(),
        |upstream| {
            let out = headers::client_response_headers(&upstream);
            no_hop_by_hop(&out, &upstream, &[])?;
            let dropped = named_by_connection(&upstream);
            for name in upstream.keys() {
                if HOP_BY_HOP.contains(&name.as_str()) || dropped.contains(name) {
                    continue;
                }
                let sent: Vec<_> = out.get_all(name).iter().collect();
                let got: Vec<_> = upstream.get_all(name).iter().collect();
                prop_assert_eq!(sent, got, "{}", name);
            }
            Ok(())
        },
    );
}

#[test]
fn stored_headers_keep_every_name_and_no_secret() {
    check("headers_for_storage", generate::header_map(), |incoming| {
        let stored = headers::for_storage(&incoming);
        prop_assert_eq!(stored.len(), incoming.keys_len());
        for name in incoming.keys() {
            let value = &stored[name.as_str()];
            if headers::is_redacted(name) {
                prop_assert_eq!(value, REDACTED_VALUE);
            }
        }
        Ok(())
    });
}
