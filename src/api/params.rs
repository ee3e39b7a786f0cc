//! How the API's request fields are read, for `#[serde(deserialize_with)]`:
//! each parser accepts what the API always accepted and refuses the rest
//! with a message saying what the field must be.
//!
//! Query-string values arrive as text; the extractor puts the field's name
//! before a parser's message (`limit: 'x' is not a non-negative integer`).
//! Body fields arrive as JSON values and name themselves (`limit must be a
//! non-negative integer`). A JSON `null` is the same as an absent field.

use crate::store::TraceKey;
use crate::time_bound::{TimeBound, TimeBoundError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{Deserialize, Deserializer, Error};
use serde_json::{Map, Value};

/// Query: a time bound (`since`, `until`) in any form [`TimeBound`] reads
/// (RFC 3339, epoch seconds, a duration back from now), as epoch seconds.
pub fn time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let text = String::deserialize(d)?;
    TimeBound::parse(&text)
        .map(|bound| Some(bound.epoch_seconds()))
        .map_err(D::Error::custom)
}

/// Body: an integer — a JSON integer, or a string holding one (as
/// Python's `int()` reads it); `None` for anything else.
pub fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Query: a count (`limit`).
pub fn limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map(Some)
        .map_err(|_| D::Error::custom(format!("'{text}' is not a non-negative integer")))
}

/// Query: a cursor from an earlier page (`after`).
pub fn cursor<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim().parse::<i64>() {
        Ok(cursor) if cursor >= 0 => Ok(Some(cursor)),
        _ => Err(D::Error::custom(format!(
            "'{text}' is not a cursor (a non-negative integer)"
        ))),
    }
}

/// Query: a page cursor of `GET /traces` (a previous page's
/// `next_cursor`), as the key of the trace the page ended at.
pub fn page_cursor<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TraceKey>, D::Error> {
    let text = String::deserialize(d)?;
    let refusal = || D::Error::custom(format!("'{text}' is not a previous page's next_cursor"));
    let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| refusal())?;
    let key = String::from_utf8(bytes).map_err(|_| refusal())?;
    let (started_at, trace_id) = key.split_once(' ').ok_or_else(refusal)?;
    // A start time the store never wrote would page from a wrong place.
    humantime::parse_rfc3339(started_at).map_err(|_| refusal())?;
    Ok(Some(TraceKey {
        started_at: started_at.to_string(),
        trace_id: trace_id.to_string(),
    }))
}

/// The `next_cursor` naming the trace a page ended at: opaque to callers
/// (URL-safe base64 of its start time and id), read back by
/// [`page_cursor`].
pub fn encode_cursor(started_at: &str, trace_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{started_at} {trace_id}"))
}

/// Query: how many time buckets a chart has (`buckets`), 1 to 500.
pub fn buckets<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=500).contains(&n) => Ok(Some(n)),
        _ => Err(D::Error::custom(format!(
            "'{text}' is not an integer from 1 to 500"
        ))),
    }
}

/// Query: a switch, `1`/`true` or `0`/`false` (empty is off).
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim() {
        "" | "0" | "false" => Ok(false),
        "1" | "true" => Ok(true),
        other => Err(D::Error::custom(format!(
            "'{other}' is not 1, true, 0 or false"
        ))),
    }
}

/// Query: free text, trimmed; empty is absent.
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim();
    Ok((!text.is_empty()).then(|| text.to_string()))
}

/// Reads a body field: `null` is absent, `pick` takes what it accepts, and
/// anything else is refused with `refusal`.
fn body_field<'de, D: Deserializer<'de>, T>(
    d: D,
    refusal: &str,
    pick: impl FnOnce(Value) -> Option<T>,
) -> Result<Option<T>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        value => pick(value)
            .map(Some)
            .ok_or_else(|| D::Error::custom(refusal)),
    }
}

/// Body: a list of session ids (`session_ids`); absent is empty.
pub fn session_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let ids = body_field(d, "session_ids must be a list", |v| match v {
        Value::Array(ids) => Some(ids),
        _ => None,
    })?;
    ids.unwrap_or_default()
        .into_iter()
        .map(|id| match id {
            Value::String(id) => Ok(id),
            _ => Err(D::Error::custom("session_ids must be strings")),
        })
        .collect()
}

/// Body: a time bound (`since`): epoch seconds as a JSON number (rLLM's
/// form), or a string in any form [`TimeBound`] reads.
pub fn body_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_f64()
            .and_then(crate::time_bound::epoch)
            .map(|at| Some(crate::record::epoch_seconds(at)))
            .ok_or_else(|| D::Error::custom(format!("since: {}", TimeBoundError(n.to_string())))),
        Value::String(text) => TimeBound::parse(&text)
            .map(|bound| Some(bound.epoch_seconds()))
            .map_err(|e| D::Error::custom(format!("since: {e}"))),
        other => Err(D::Error::custom(format!(
            "since: {}",
            TimeBoundError(other.to_string())
        ))),
    }
}

/// Body: a count (`limit`).
pub fn body_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    body_field(d, "limit must be a non-negative integer", |v| {
        v.as_u64().and_then(|n| usize::try_from(n).ok())
    })
}

/// Body: a session id to create (`session_id`), trimmed.
pub fn session_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    body_field(d, "session_id must be a non-empty string", |v| {
        let id = v.as_str()?.trim();
        (!id.is_empty()).then(|| id.to_string())
    })
}

/// Body: free-form metadata (`metadata`); absent is empty.
pub fn metadata<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    let metadata = body_field(d, "metadata must be a JSON object", |v| match v {
        Value::Object(m) => Some(m),
        _ => None,
    })?;
    Ok(metadata.unwrap_or_default())
}

/// Body: a session's sampling parameters (`sampling_params`), a JSON
/// object.
pub fn sampling_params<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    body_field(d, "sampling_params must be a JSON object", |v| match v {
        Value::Object(m) => Some(m),
        _ => None,
    })
}

/// Body: a pool weight (`weight`), a positive integer.
pub fn weight<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    body_field(d, "weight must be a positive integer", |v| {
        v.as_u64()
            .and_then(|w| u32::try_from(w).ok())
            .filter(|w| *w > 0)
    })
}

/// Body: a text field where anything but a string counts as absent.
pub fn lenient_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(text) => Some(text),
        _ => None,
    })
}
