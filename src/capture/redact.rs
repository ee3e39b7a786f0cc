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
//!
//! The scrub walks the record's serialised form, every string of it, so a
//! field added to the record later is covered without anyone listing it. A
//! field whose scrubbed value no longer reads back (a fixed-vocabulary
//! field like `status` that happened to contain a secret-shaped piece) keeps
//! its original value: such values are the gateway's own words, never the
//! caller's text.

use crate::headers::REDACTED_VALUE;
use crate::record::TraceRecord;
use serde_json::{Map, Value};

/// Shorter values are not scrubbed.
pub const MIN_SECRET_LEN: usize = 6;

/// The record with every occurrence of each secret replaced.
pub fn secrets(record: TraceRecord, secrets: &[String]) -> TraceRecord {
    let secrets: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| s.len() >= MIN_SECRET_LEN)
        .collect();
    if secrets.is_empty() {
        return record;
    }
    let Ok(Value::Object(original)) = serde_json::to_value(&record) else {
        return record;
    };
    let mut scrubbed = Value::Object(original.clone());
    if !walk(&mut scrubbed, &secrets) {
        return record;
    }
    match serde_json::from_value(scrubbed.clone()) {
        Ok(record) => record,
        Err(_) => field_by_field(scrubbed, original),
    }
}

/// Reads back a scrubbed record whose whole form did not: each field that
/// does not read back scrubbed keeps its original value.
fn field_by_field(scrubbed: Value, original: Map<String, Value>) -> TraceRecord {
    let Value::Object(scrubbed) = scrubbed else {
        return TraceRecord::default();
    };
    let merged: Map<String, Value> = scrubbed
        .into_iter()
        .map(|(key, value)| {
            let single = Value::Object(Map::from_iter([(key.clone(), value.clone())]));
            if serde_json::from_value::<TraceRecord>(single).is_ok() {
                (key, value)
            } else {
                let kept = original.get(&key).cloned().unwrap_or(Value::Null);
                (key, kept)
            }
        })
        .collect();
    serde_json::from_value(Value::Object(merged)).unwrap_or_default()
}

/// Scrubs every string under `value`; true when anything changed.
fn walk(value: &mut Value, secrets: &[&str]) -> bool {
    match value {
        Value::String(text) => {
            let mut changed = false;
            for secret in secrets {
                if text.contains(secret) {
                    *text = text.replace(secret, REDACTED_VALUE);
                    changed = true;
                }
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| walk(v, secrets) | changed),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, v| walk(v, secrets) | changed),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "sk-live-123456";

    /// A value of the shape `like` has, with the secret in every string.
    fn seeded(like: &Value) -> Value {
        match like {
            Value::Array(items) if items.is_empty() => json!([format!("a {SECRET} b")]),
            Value::Object(map) if map.is_empty() => json!({"k": format!("a {SECRET} b")}),
            Value::Null | Value::String(_) => json!(format!("a {SECRET} b")),
            other => other.clone(),
        }
    }

    #[test]
    fn every_text_field_of_the_record_is_scrubbed() {
        let Value::Object(fields) = serde_json::to_value(TraceRecord::default()).unwrap() else {
            panic!("a record is an object");
        };
        for (key, like) in fields {
            let mut one = Map::new();
            one.insert(key.clone(), seeded(&like));
            let Ok(record) = serde_json::from_value::<TraceRecord>(Value::Object(one)) else {
                continue; // a typed field (number, enum) cannot hold text
            };
            let scrubbed = secrets(record, &[SECRET.into()]);
            let text = serde_json::to_string(&scrubbed).unwrap();
            assert!(!text.contains(SECRET), "{key} was not scrubbed: {text}");
        }
    }

    #[test]
    fn secrets_are_replaced_in_place() {
        let r = TraceRecord {
            messages: vec![json!({"role": "user", "content": "my key is sk-live-123456 ok"})],
            ..TraceRecord::default()
        };
        let r = secrets(r, &[SECRET.into(), "abc".into()]);
        assert_eq!(r.messages[0]["content"], "my key is [REDACTED] ok");
    }

    #[test]
    fn short_values_are_left_alone() {
        let r = TraceRecord {
            messages: vec![json!({"role": "user", "content": "abc"})],
            ..TraceRecord::default()
        };
        let r = secrets(r, &["abc".into()]);
        assert_eq!(r.messages[0]["content"], "abc");
    }

    #[test]
    fn a_secret_that_matches_the_records_own_words_keeps_them() {
        let r = TraceRecord {
            protocol: crate::protocol::Protocol::Anthropic,
            messages: vec![json!({"role": "user", "content": "anthropic"})],
            ..TraceRecord::default()
        };
        let r = secrets(r, &["anthropic".into()]);
        assert_eq!(r.protocol, crate::protocol::Protocol::Anthropic);
        assert_eq!(r.messages[0]["content"], "[REDACTED]");
    }
}
