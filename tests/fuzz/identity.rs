//! Identity extraction and stripping: any headers, body and path; no
//! carrier left behind.

use crate::check;
use crate::generate::{self, KEYS};
use http::{HeaderMap, HeaderValue};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};
use tracegate::config::{InboundAuth, RouteConfig};
use tracegate::identity::{self, FieldValue, Identity, IdentityField};
use tracegate::route;

/// A carrier's contents: identity fields (valid or not) among other keys,
/// or a value that is not an object at all.
fn carrier() -> impl Strategy<Value = Value> {
    let names: Vec<&str> = IdentityField::ALL.iter().map(|f| f.name()).collect();
    let field = prop_oneof![
        3 => select(names).prop_map(str::to_string),
        1 => select(KEYS).prop_map(str::to_string),
    ];
    prop_oneof![
        6 => vec((field, generate::value()), 0..8)
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        1 => generate::value(),
    ]
}

/// A request body with carriers where the extractor reads them (`rllm`,
/// `metadata.rllm`), or not, among anything else.
fn body() -> impl Strategy<Value = Map<String, Value>> {
    let metadata = prop_oneof![
        3 => (generate::object(), proptest::option::of(carrier())).prop_map(|(mut m, rllm)| {
            if let Some(rllm) = rllm {
                m.insert("rllm".into(), rllm);
            }
            Value::Object(m)
        }),
        1 => generate::value(),
    ];
    (
        generate::object(),
        proptest::option::of(carrier()),
        proptest::option::of(metadata),
    )
        .prop_map(|(mut body, rllm, metadata)| {
            if let Some(rllm) = rllm {
                body.insert("rllm".into(), rllm);
            }
            if let Some(metadata) = metadata {
                body.insert("metadata".into(), metadata);
            }
            body
        })
}

/// The header's value, trimmed, when it is text (UTF-8, not empty): the
/// header then decides the field, whatever the body says.
fn header_text(headers: &HeaderMap, field: IdentityField) -> Option<&str> {
    let text = std::str::from_utf8(headers.get(field.header())?.as_bytes())
        .ok()?
        .trim();
    (!text.is_empty()).then_some(text)
}

/// What the field holds when its header says `text`: the value, unless it
/// breaks an identity rule (too long, a control character, not an
/// integer), when the field is empty.
fn expected_value(field: IdentityField, text: &str) -> Option<FieldValue<'_>> {
    if field.is_integer() {
        return text.parse().ok().map(FieldValue::Integer);
    }
    let too_long = field.max_bytes().is_some_and(|limit| text.len() > limit);
    (!too_long && !text.chars().any(char::is_control)).then_some(FieldValue::Text(text))
}

#[test]
fn extraction_takes_any_headers_body_and_path_and_headers_win() {
    let path = proptest::option::of("\\PC{0,12}");
    check(
        "identity_extract",
        (generate::header_map(), body(), path),
        |(headers, body, path)| {
            let (identity, _) = identity::extract(&headers, Some(&body), path.as_deref());
            identity::extract(&headers, None, path.as_deref());
            for field in IdentityField::ALL {
                let Some(text) = header_text(&headers, field) else {
                    continue;
                };
                let expected = expected_value(field, text);
                prop_assert_eq!(identity.get(field), expected, "{}", field.name());
            }
            Ok(())
        },
    );
}

#[test]
fn a_stripped_body_carries_no_identity() {
    check("identity_strip_body", body(), |original| {
        let mut body = original.clone();
        let changed = identity::strip_body(&mut body);
        let nothing = (Identity::default(), Vec::<String>::new());
        prop_assert_eq!(
            identity::extract(&HeaderMap::new(), Some(&body), None),
            nothing.clone()
        );
        prop_assert!(body.get("rllm").is_none());
        prop_assert!(body.get("metadata").and_then(|m| m.get("rllm")).is_none());
        if changed {
            // What goes upstream is the body re-encoded: read it back.
            let sent: Map<String, Value> =
                serde_json::from_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
            prop_assert_eq!(
                identity::extract(&HeaderMap::new(), Some(&sent), None),
                nothing
            );
        } else {
            // The original bytes go upstream: they carried nothing.
            prop_assert_eq!(&body, &original);
        }
        Ok(())
    });
}

/// A route that lets callers add headers, and the provider data asking
/// for these extra headers.
fn caller_extras() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((generate::header_name(), "[ -~]{0,10}"), 0..6)
}

#[test]
fn no_identity_header_goes_upstream_in_any_case_or_way() {
    let route = RouteConfig {
        name: Some("r".into()),
        allow_caller_headers: true,
        ..RouteConfig::to(reqwest::Url::parse("http://127.0.0.1:1/v1").unwrap())
    };
    check(
        "identity_headers_upstream",
        (generate::header_map(), caller_extras(), any::<bool>()),
        |(mut headers, extras, auth)| {
            let extras: Map<String, Value> = extras
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let data = serde_json::json!({ "r_extra_headers": extras }).to_string();
            headers.insert(
                "x-tracegate-provider-data",
                HeaderValue::from_str(&data).unwrap(),
            );
            let inbound = InboundAuth {
                tokens: if auth {
                    vec!["token".into()]
                } else {
                    Vec::new()
                },
                header: None,
            };
            let policy = tracegate::headers::upstream_request_headers(&headers);
            prop_assert!(policy.keys().all(|k| !k.as_str().starts_with("x-rllm-")));
            if let Ok(out) = route::outbound_headers(&route, &headers, &inbound) {
                for name in out.keys() {
                    prop_assert!(!name.as_str().starts_with("x-rllm-"), "{}", name);
                    prop_assert!(!name.as_str().starts_with("x-tracegate-"), "{}", name);
                }
            }
            Ok(())
        },
    );
}
