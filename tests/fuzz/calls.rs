//! Calls through the real gateway, over real sockets: whatever the body,
//! the client gets the upstream's answer and the call is recorded.
//!
//! Each case is a real HTTP call to an in-process gateway in front of the
//! mock upstream, so this property runs an eighth of `PROPTEST_CASES`.

use crate::common::{Gateway, Setup};
use crate::{check_with, generate};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use tokio::runtime::Runtime;

/// A request body: arbitrary bytes, a JSON value that is not an object,
/// an object cut short, or an object in the APIs' vocabulary.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        generate::bytes(),
        generate::value()
            .prop_filter("not an object", |v| !v.is_object())
            .prop_map(|v| v.to_string().into_bytes()),
        (generate::object(), any::<proptest::sample::Index>()).prop_map(|(o, cut)| {
            let text = Value::Object(o).to_string().into_bytes();
            text[..cut.index(text.len())].to_vec()
        }),
        generate::object().prop_map(|o| Value::Object(o).to_string().into_bytes()),
    ]
}

/// One call with `body`: the answer is the upstream's JSON, and the call
/// has a record with the answer's status; a body that is not a JSON
/// object reaches the upstream byte for byte.
async fn answered_and_recorded(gw: &Setup, body: Vec<u8>) -> Result<(), TestCaseError> {
    let before = gw.received().len();
    let answer = gw
        .post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body.clone())
        .answer()
        .await;
    let json: Result<Value, _> = serde_json::from_slice(&answer.body);
    prop_assert!(json.is_ok(), "{}: {}", answer.status, answer.text());
    let trace_id = answer.trace_id();
    let records = gw.records().await;
    let record = records.iter().find(|r| r.trace_id == trace_id);
    prop_assert!(record.is_some(), "no record for {}", trace_id);
    prop_assert_eq!(
        record.and_then(|r| r.http_status),
        Some(answer.status.as_u16())
    );
    let received = gw.received();
    prop_assert_eq!(received.len(), before + 1);
    let parsed: Option<serde_json::Map<String, Value>> = serde_json::from_slice(&body).ok();
    if parsed.is_none() {
        prop_assert_eq!(&received[before].raw_body[..], &body[..]);
        prop_assert_eq!(answer.status.as_u16(), 400);
    }
    Ok(())
}

#[test]
fn any_body_is_answered_and_recorded() {
    let runtime = Runtime::new().unwrap();
    let gw = runtime.block_on(Setup::new());
    check_with("gateway_calls", 8, body(), |body| {
        runtime.block_on(answered_and_recorded(&gw, body))
    });
}
