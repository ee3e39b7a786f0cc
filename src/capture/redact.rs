//! Secrets never stored: every configured secret value is scrubbed from a
//! record before it is written.
//!
//! Header redaction (the `headers` policy) removes credentials by header
//! name. This is the second net, by value: the route keys and env-sourced
//! headers the gateway injected, and its own inbound tokens, are replaced by
//! `[REDACTED]` wherever they appear in the record — a caller echoing a key
//! in a prompt, an upstream error message quoting a header, a token pasted
//! into a custom header. Values shorter than [`MIN_SECRET_LEN`] are ignored:
//! scrubbing them would mangle ordinary text, and they are not secrets.

use crate::headers::REDACTED_VALUE;
use crate::record::TraceRecord;
use serde_json::{Map, Value};

/// Shorter values are not scrubbed.
pub const MIN_SECRET_LEN: usize = 6;

/// Replaces every occurrence of each secret in the record's text.
pub fn secrets(record: &mut TraceRecord, secrets: &[String]) {
    let secrets: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| s.len() >= MIN_SECRET_LEN)
        .collect();
    if secrets.is_empty() {
        return;
    }
    let scrub = |text: &mut String| {
        for secret in &secrets {
            if text.contains(secret) {
                *text = text.replace(secret, REDACTED_VALUE);
            }
        }
    };
    let scrub_value = |value: &mut Value| walk(value, &scrub);
    let scrub_map = |map: &mut Map<String, Value>| map.values_mut().for_each(|v| walk(v, &scrub));
    record.messages.iter_mut().for_each(scrub_value);
    record.tools.iter_mut().for_each(scrub_value);
    record.tool_calls.iter_mut().for_each(scrub_value);
    scrub_map(&mut record.request_params);
    scrub_map(&mut record.response_message);
    scrub_map(&mut record.request_headers);
    scrub_map(&mut record.response_headers);
    scrub_map(&mut record.metadata);
    for choice in &mut record.choices {
        scrub_map(&mut choice.message);
    }
    record.raw_request.iter_mut().for_each(scrub_value);
    record.raw_response.iter_mut().for_each(scrub_value);
    if let Some(error) = &mut record.error {
        scrub(&mut error.message);
    }
    for text in [
        &mut record.session_id,
        &mut record.run_id,
        &mut record.harness,
        &mut record.parent_span_id,
        &mut record.project,
        &mut record.experiment,
    ]
    .into_iter()
    .flatten()
    {
        scrub(text);
    }
    record.identity_errors.iter_mut().for_each(scrub);
}

fn walk(value: &mut Value, scrub: &impl Fn(&mut String)) {
    match value {
        Value::String(text) => scrub(text),
        Value::Array(items) => items.iter_mut().for_each(|v| walk(v, scrub)),
        Value::Object(map) => map.values_mut().for_each(|v| walk(v, scrub)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_scrubbed_everywhere() {
        let mut r = TraceRecord {
            messages: vec![json!({"role": "user", "content": "my key is sk-live-123456 ok"})],
            raw_response: Some(json!({"error": {"message": "bad key sk-live-123456"}})),
            run_id: Some("run-sk-live-123456".into()),
            ..TraceRecord::default()
        };
        secrets(&mut r, &["sk-live-123456".into(), "abc".into()]);
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("sk-live-123456"), "{text}");
        assert_eq!(r.messages[0]["content"], "my key is [REDACTED] ok");
    }

    #[test]
    fn short_values_are_left_alone() {
        let mut r = TraceRecord {
            messages: vec![json!({"role": "user", "content": "abc"})],
            ..TraceRecord::default()
        };
        secrets(&mut r, &["abc".into()]);
        assert_eq!(r.messages[0]["content"], "abc");
    }
}
