//! The `record` column: what is left of a record once its columns and its
//! shared content are taken out, as compact JSON.
//!
//! Every scalar fact of a record is a column of `traces` (ids, identity,
//! model, times, status, usage counts); the messages, the answer, the tools
//! and the token data are shared rows; the headers and raw bodies are the
//! `request`/`response` blobs. What remains — request parameters, the
//! choices' finish reasons and extra messages, the usage details,
//! embeddings, metadata, the attempts — is this JSON, with three rules that keep it small
//! and the record exact:
//!
//! * a field equal to its empty value (`[]`, `{}`, `null`) is left out;
//! * a field the record repeats (`finish_reason`, `finish_reasons`,
//!   `tool_calls`, `token_counts`, the first choice's `message`, token ids
//!   and logprobs, a choice's `index`) is left out when it equals what the
//!   rest of the record says it is, and kept, whatever its value, when it
//!   does not — so reading it back gives exactly what was written;
//! * usage counts that fit the integer columns are only there.

use crate::record::{
    self, Attempt, CallError, Choice, Embeddings, RetryReason, TopLogprob, TraceRecord, Usage,
};
use crate::store::codec::CodecError;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The record JSON's fields.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Rest {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    identity_errors: Vec<String>,
    /// Absent: the raw request's parameters (below).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    request_params: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    choices: Vec<RestChoice>,
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<Value>>,
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    finish_reason: Option<Option<String>>,
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    finish_reasons: Option<Vec<String>>,
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    completion_token_ids: Option<Vec<u32>>,
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    logprobs: Option<Option<Vec<f64>>>,
    /// vLLM's per-token expert routing (kept here whole: nothing else in
    /// the store holds it, and a session's calls share none of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    routing_matrices: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    embeddings: Option<Embeddings>,
    #[serde(skip_serializing_if = "RestUsage::is_empty")]
    usage: RestUsage,
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    token_counts: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    metadata: Map<String, Value>,
    /// Only when the `first_chunk_us` column cannot hold it.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_chunk_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_closed_at: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attempts: Vec<RestAttempt>,
    /// Absent: the number of `attempts`.
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    attempt_count: Option<u32>,
    #[serde(skip_serializing_if = "is_zero")]
    heartbeats: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A choice, without its token data (the `completions` table's).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct RestChoice {
    /// Absent: the choice's position.
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    /// Absent: the record's `response_message` for the first choice, `{}`
    /// for the others.
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    message: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<String>,
}

/// An attempt, without what the record says of it: the upstream (when the
/// record's) and the HTTP status (the last attempt's is the call's); its
/// start as microseconds after the call's when that gives back its exact
/// text. A call's usual single attempt is then its worker, start offset and
/// duration.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct RestAttempt {
    worker: String,
    /// Absent: the record's `upstream`.
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<String>,
    /// Microseconds after the record's `started_at`, when exact.
    #[serde(skip_serializing_if = "Option::is_none")]
    start_us: Option<i64>,
    /// Absent: `start_us` says it.
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    duration_ms: f64,
    /// Absent: the record's `http_status` for the last attempt, none for
    /// the others.
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    http_status: Option<Option<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<CallError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_reason: Option<RetryReason>,
}

/// The HTTP status the record says the attempt at `position` of `count`
/// had: the call's for the last one, none for the others.
fn derived_http_status(record: &TraceRecord, position: usize, count: usize) -> Option<u16> {
    record.http_status.filter(|_| position + 1 == count)
}

/// `at` as microseconds after `start`, when that gives back exactly its text.
fn offset_of(start: &str, at: &str) -> Option<i64> {
    let micros = |t: &str| -> Option<i128> {
        let at = humantime::parse_rfc3339(t).ok()?;
        let since = at.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(since.as_micros() as i128)
    };
    let us = i64::try_from(micros(at)? - micros(start)?).ok()?;
    (at_offset(start, us).as_deref() == Some(at)).then_some(us)
}

/// The attempts as the record JSON keeps them.
fn rest_attempts(record: &TraceRecord) -> Vec<RestAttempt> {
    let count = record.attempts.len();
    let attempts = record.attempts.iter().enumerate();
    attempts
        .map(|(i, a)| {
            let start_us = offset_of(&record.started_at, &a.started_at);
            RestAttempt {
                worker: a.worker.clone(),
                upstream: (a.upstream != record.upstream).then(|| a.upstream.clone()),
                start_us,
                started_at: start_us.is_none().then(|| a.started_at.clone()),
                duration_ms: a.duration_ms,
                http_status: unless_derived(&a.http_status, derived_http_status(record, i, count)),
                error: a.error.clone(),
                retry_reason: a.retry_reason,
            }
        })
        .collect()
}

/// The attempts the record JSON keeps, whole again.
fn attempts_of(rest: Vec<RestAttempt>, record: &TraceRecord) -> Vec<Attempt> {
    let count = rest.len();
    let attempts = rest.into_iter().enumerate();
    attempts
        .map(|(i, a)| {
            let started_at = match (a.started_at, a.start_us) {
                (Some(text), _) => Some(text),
                (None, Some(us)) => at_offset(&record.started_at, us),
                (None, None) => None,
            };
            Attempt {
                worker: a.worker,
                upstream: a.upstream.unwrap_or_else(|| record.upstream.clone()),
                started_at: started_at.unwrap_or_default(),
                duration_ms: a.duration_ms,
                http_status: a
                    .http_status
                    .unwrap_or_else(|| derived_http_status(record, i, count)),
                error: a.error,
                retry_reason: a.retry_reason,
            }
        })
        .collect()
}

/// Usage, without the counts the columns hold.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct RestUsage {
    #[serde(skip_serializing_if = "Option::is_none")]
    input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_tokens: Option<u64>,
    /// Absent: input plus output.
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    total_tokens: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_tokens: Option<u64>,
}

impl RestUsage {
    fn is_empty(&self) -> bool {
        self.total_tokens.is_none()
            && [
                self.input_tokens,
                self.output_tokens,
                self.cached_input_tokens,
                self.cache_creation_input_tokens,
                self.reasoning_tokens,
            ]
            .iter()
            .all(Option::is_none)
    }
}

/// A field that is present, even as `null` (`Some(None)`); an absent one
/// stays `None` through `#[serde(default)]`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `value` when it differs from what the record says it is.
fn unless_derived<T: PartialEq + Clone>(value: &T, derived: T) -> Option<T> {
    (*value != derived).then(|| value.clone())
}

/// `first_chunk_at` as microseconds after `started_at`, when that gives
/// back exactly its text (what the `first_chunk_us` column holds).
pub(crate) fn first_chunk_offset(record: &TraceRecord) -> Option<i64> {
    offset_of(&record.started_at, record.first_chunk_at.as_deref()?)
}

/// The time `us` microseconds after the RFC 3339 time `start`, in the form
/// every stored time takes.
pub(crate) fn at_offset(start: &str, us: i64) -> Option<String> {
    let start = humantime::parse_rfc3339(start).ok()?;
    let delta = std::time::Duration::from_micros(us.unsigned_abs());
    let at = if us >= 0 {
        start.checked_add(delta)?
    } else {
        start.checked_sub(delta)?
    };
    Some(crate::record::rfc3339(at))
}

/// The usage count a column holds (one that fits its integer).
pub(crate) fn count_column(n: Option<u64>) -> Option<i64> {
    n.and_then(|n| i64::try_from(n).ok())
}

/// The record JSON of `record` (the whole record).
pub(crate) fn encode(record: &TraceRecord) -> Result<String, CodecError> {
    let choices = record
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| RestChoice {
            index: (c.index as usize != i).then_some(c.index),
            message: (c.message != derived_message(i, &record.response_message))
                .then(|| c.message.clone()),
            finish_reason: c.finish_reason.clone(),
        })
        .collect();
    let u = &record.usage;
    let beyond = |n: Option<u64>| n.filter(|_| count_column(n).is_none());
    let rest = Rest {
        identity_errors: record.identity_errors.clone(),
        request_params: unless_derived(&record.request_params, derived_params(record)),
        choices,
        tool_calls: unless_derived(&record.tool_calls, record::tool_calls_of(&record.choices)),
        finish_reason: unless_derived(
            &record.finish_reason,
            derived_finish_reason(&record.choices),
        ),
        finish_reasons: unless_derived(
            &record.finish_reasons,
            record::finish_reasons_of(&record.choices),
        ),
        completion_token_ids: unless_derived(
            &record.completion_token_ids,
            first(&record.choices)
                .map(|c| c.token_ids.clone())
                .unwrap_or_default(),
        ),
        logprobs: unless_derived(
            &record.logprobs,
            first(&record.choices).and_then(|c| c.logprobs.clone()),
        ),
        routing_matrices: record.routing_matrices.clone(),
        embeddings: record.embeddings.clone(),
        usage: RestUsage {
            input_tokens: beyond(u.input_tokens),
            output_tokens: beyond(u.output_tokens),
            total_tokens: unless_derived(&u.total_tokens, derived_total(u)),
            cached_input_tokens: u.cached_input_tokens,
            cache_creation_input_tokens: u.cache_creation_input_tokens,
            reasoning_tokens: u.reasoning_tokens,
        },
        token_counts: unless_derived(&record.token_counts, record::token_counts_of(u)),
        metadata: record.metadata.clone(),
        first_chunk_at: record
            .first_chunk_at
            .clone()
            .filter(|_| first_chunk_offset(record).is_none()),
        client_closed_at: record.client_closed_at.clone(),
        attempts: rest_attempts(record),
        attempt_count: unless_derived(&record.attempt_count, count_of(&record.attempts)),
        heartbeats: record.heartbeats,
    };
    Ok(serde_json::to_string(&rest)?)
}

/// One choice's token data, from the `completions` table.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ChoiceTokens {
    /// The choice's position.
    pub choice: usize,
    /// Its completion token ids.
    pub token_ids: Vec<u32>,
    /// Its logprobs.
    pub logprobs: Option<Vec<f64>>,
    /// Its top logprobs.
    pub top_logprobs: Option<Vec<Vec<TopLogprob>>>,
}

/// Completes `record` — whose columns, messages, answer, tools, prompt ids
/// and raw parts are in place — with its record JSON and its choices' token
/// data. `usage.input_tokens` and `output_tokens` hold the columns' values.
/// (The raw request must be in place: the parameters derive from it.)
pub(crate) fn restore(
    json: &str,
    record: &mut TraceRecord,
    tokens: Vec<ChoiceTokens>,
) -> Result<(), CodecError> {
    let rest: Rest = serde_json::from_str(json)?;
    record.identity_errors = rest.identity_errors;
    record.routing_matrices = rest.routing_matrices;
    record.request_params = rest
        .request_params
        .unwrap_or_else(|| derived_params(record));
    record.choices = restore_choices(rest.choices, record, tokens)?;
    record.usage = restore_usage(rest.usage, &record.usage);
    let choices = &record.choices;
    record.tool_calls = rest
        .tool_calls
        .unwrap_or_else(|| record::tool_calls_of(choices));
    record.finish_reason = rest
        .finish_reason
        .unwrap_or_else(|| derived_finish_reason(choices));
    record.finish_reasons = rest
        .finish_reasons
        .unwrap_or_else(|| record::finish_reasons_of(choices));
    record.completion_token_ids = rest.completion_token_ids.unwrap_or_else(|| {
        first(choices)
            .map(|c| c.token_ids.clone())
            .unwrap_or_default()
    });
    record.logprobs = rest
        .logprobs
        .unwrap_or_else(|| first(choices).and_then(|c| c.logprobs.clone()));
    record.embeddings = rest.embeddings;
    record.token_counts = rest
        .token_counts
        .unwrap_or_else(|| record::token_counts_of(&record.usage));
    record.metadata = rest.metadata;
    if rest.first_chunk_at.is_some() {
        record.first_chunk_at = rest.first_chunk_at;
    }
    record.client_closed_at = rest.client_closed_at;
    record.attempts = attempts_of(rest.attempts, record);
    record.attempt_count = rest
        .attempt_count
        .unwrap_or_else(|| count_of(&record.attempts));
    record.heartbeats = rest.heartbeats;
    Ok(())
}

/// The choices of the record JSON, with their token data.
fn restore_choices(
    rest: Vec<RestChoice>,
    record: &TraceRecord,
    tokens: Vec<ChoiceTokens>,
) -> Result<Vec<Choice>, CodecError> {
    let mut choices: Vec<Choice> = rest
        .into_iter()
        .enumerate()
        .map(|(i, c)| Choice {
            index: c.index.unwrap_or(i as u32),
            message: c
                .message
                .unwrap_or_else(|| derived_message(i, &record.response_message)),
            finish_reason: c.finish_reason,
            ..Choice::default()
        })
        .collect();
    for t in tokens {
        let Some(choice) = choices.get_mut(t.choice) else {
            return Err(CodecError::Dangling("choice"));
        };
        choice.token_ids = t.token_ids;
        choice.logprobs = t.logprobs;
        choice.top_logprobs = t.top_logprobs;
    }
    Ok(choices)
}

/// The usage of the record JSON, completed with the counts the columns
/// hold (`columns`: input and output tokens).
fn restore_usage(rest: RestUsage, columns: &Usage) -> Usage {
    let (input_tokens, output_tokens) = (
        columns.input_tokens.or(rest.input_tokens),
        columns.output_tokens.or(rest.output_tokens),
    );
    Usage {
        input_tokens,
        output_tokens,
        total_tokens: rest.total_tokens.unwrap_or_else(|| {
            derived_total(&Usage {
                input_tokens,
                output_tokens,
                ..Usage::default()
            })
        }),
        cached_input_tokens: rest.cached_input_tokens,
        cache_creation_input_tokens: rest.cache_creation_input_tokens,
        reasoning_tokens: rest.reasoning_tokens,
    }
}

/// How many attempts a call made, as capture counts them.
fn count_of(attempts: &[Attempt]) -> u32 {
    u32::try_from(attempts.len()).unwrap_or(u32::MAX)
}

/// The parameters of the raw request, as capture lists them.
fn derived_params(record: &TraceRecord) -> Map<String, Value> {
    match &record.raw_request {
        Some(Value::Object(body)) => record::request_params(body),
        _ => Map::new(),
    }
}

fn first(choices: &[Choice]) -> Option<&Choice> {
    choices.first()
}

/// A choice's message unless stored: the answer for the first, else `{}`.
fn derived_message(position: usize, answer: &Map<String, Value>) -> Map<String, Value> {
    if position == 0 {
        answer.clone()
    } else {
        Map::new()
    }
}

fn derived_finish_reason(choices: &[Choice]) -> Option<String> {
    first(choices).and_then(|c| c.finish_reason.clone())
}

/// Input plus output tokens, when both are known.
fn derived_total(usage: &Usage) -> Option<u64> {
    usage.input_tokens?.checked_add(usage.output_tokens?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A record's rest, restored onto a record holding what the columns and
    /// content hold.
    fn round_trip(record: &TraceRecord) -> TraceRecord {
        let json = encode(record).unwrap();
        let mut back = TraceRecord {
            response_message: record.response_message.clone(),
            upstream: record.upstream.clone(),
            started_at: record.started_at.clone(),
            http_status: record.http_status,
            usage: Usage {
                input_tokens: record.usage.input_tokens.filter(|n| *n <= i64::MAX as u64),
                output_tokens: record.usage.output_tokens.filter(|n| *n <= i64::MAX as u64),
                ..Usage::default()
            },
            ..TraceRecord::default()
        };
        let tokens = record
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| ChoiceTokens {
                choice: i,
                token_ids: c.token_ids.clone(),
                logprobs: c.logprobs.clone(),
                top_logprobs: c.top_logprobs.clone(),
            })
            .collect();
        restore(&json, &mut back, tokens).unwrap();
        back
    }

    fn choice(index: u32, content: &str, finish: &str) -> Choice {
        Choice {
            index,
            message: serde_json::from_value(json!({"role": "assistant", "content": content}))
                .unwrap(),
            finish_reason: Some(finish.into()),
            token_ids: vec![index + 1, 2],
            logprobs: Some(vec![-0.5, -0.25]),
            ..Choice::default()
        }
    }

    /// What capture makes: every repeated field equal to its derivation.
    fn captured() -> TraceRecord {
        let choices = vec![choice(0, "a", "stop"), choice(1, "b", "length")];
        let usage = Usage {
            input_tokens: Some(3),
            output_tokens: Some(4),
            total_tokens: Some(7),
            ..Usage::default()
        };
        TraceRecord {
            response_message: choices[0].message.clone(),
            finish_reason: Some("stop".into()),
            finish_reasons: vec!["stop".into(), "length".into()],
            completion_token_ids: choices[0].token_ids.clone(),
            logprobs: choices[0].logprobs.clone(),
            token_counts: record::token_counts_of(&usage),
            request_params: serde_json::from_value(json!({"temperature": 0.7})).unwrap(),
            usage,
            choices,
            ..TraceRecord::default()
        }
    }

    #[test]
    fn a_captured_record_keeps_only_what_it_does_not_repeat() {
        let record = captured();
        let json = encode(&record).unwrap();
        assert_eq!(
            json,
            r#"{"request_params":{"temperature":0.7},"choices":[{"finish_reason":"stop"},{"message":{"role":"assistant","content":"b"},"finish_reason":"length"}]}"#
        );
        assert_eq!(round_trip(&record), record);
        assert_eq!(encode(&TraceRecord::default()).unwrap(), "{}");
        assert_eq!(round_trip(&TraceRecord::default()), TraceRecord::default());
    }

    #[test]
    fn repeated_fields_that_differ_are_kept_exactly() {
        let mut record = captured();
        record.finish_reason = None;
        record.finish_reasons = Vec::new();
        record.tool_calls = vec![json!({"id": "x"})];
        record.completion_token_ids = Vec::new();
        record.logprobs = Some(Vec::new());
        record.token_counts = Map::new();
        record.choices[1].index = 7;
        record.choices[0].message = Map::new();
        record.usage.input_tokens = Some(u64::MAX);
        assert_eq!(round_trip(&record), record);
        let json = encode(&record).unwrap();
        assert!(json.contains(r#""finish_reason":null"#), "{json}");
        assert!(json.contains(r#""token_counts":{}"#), "{json}");
        assert!(
            json.contains(r#""input_tokens":18446744073709551615"#),
            "{json}"
        );
        for total in [None, Some(1)] {
            record.usage.input_tokens = Some(1);
            record.usage.total_tokens = total;
            assert_eq!(round_trip(&record), record);
        }
    }

    #[test]
    fn attempts_heartbeats_and_a_client_that_left_read_back_exactly() {
        let mut record = captured();
        record.attempts = vec![Attempt::default(), Attempt::default()];
        record.attempt_count = 2;
        record.heartbeats = 3;
        record.client_closed_at = Some("2026-12-01T13:00:00.000001Z".into());
        assert_eq!(round_trip(&record), record);
        assert!(!encode(&record).unwrap().contains("attempt_count"));
        record.attempt_count = 5;
        assert_eq!(round_trip(&record), record);
    }

    /// A call's usual attempt: the call's upstream, started 1.5 ms after
    /// the call, answered with the call's status.
    fn attempted() -> TraceRecord {
        let mut record = captured();
        record.upstream = "http://127.0.0.1:8000/v1".into();
        record.started_at = "2026-12-01T13:00:00.000001Z".into();
        record.http_status = Some(200);
        record.attempts = vec![Attempt {
            worker: "0".into(),
            upstream: record.upstream.clone(),
            started_at: "2026-12-01T13:00:00.001501Z".into(),
            duration_ms: 12.5,
            http_status: Some(200),
            ..Attempt::default()
        }];
        record.attempt_count = 1;
        record
    }

    #[test]
    fn an_attempt_keeps_only_what_the_call_does_not_say() {
        let record = attempted();
        let json = encode(&record).unwrap();
        assert!(
            json.ends_with(r#""attempts":[{"worker":"0","start_us":1500,"duration_ms":12.5}]}"#),
            "{json}"
        );
        assert_eq!(round_trip(&record), record);
    }

    #[test]
    fn attempts_that_differ_from_the_call_read_back_exactly() {
        let mut record = attempted();
        let first = Attempt {
            worker: "1".into(),
            upstream: "http://10.0.0.2:8000/v1".into(),
            started_at: "not a time".into(),
            http_status: Some(503),
            retry_reason: Some(RetryReason::ServiceUnavailable),
            ..record.attempts[0].clone()
        };
        let failed = Attempt {
            http_status: None,
            error: Some(CallError {
                kind: record::ErrorKind::UpstreamUnreachable,
                message: "refused".into(),
            }),
            ..record.attempts[0].clone()
        };
        record.attempts = vec![first, failed];
        record.attempt_count = 2;
        assert_eq!(round_trip(&record), record);
    }
}
