//! Feedback: a named value — a reward, a pass/fail, a judge's label — that a
//! harness attaches to a call, a session or a run.
//!
//! RL trainers and eval runners score what they recorded: an episode's
//! reward, a test's `pass@1`, a judge's score of one answer. tracegate keeps
//! those scores beside the records, so a trainer reads calls and rewards from
//! one file (`GET /sessions/{sid}/trajectory`, `tracegate export --where
//! 'reward>0'`). A score often arrives before the call it scores is
//! committed (a harness scores an episode the moment its last answer ends),
//! so feedback names its target by id and is joined with it when read, never
//! refused for a target the store does not have yet.
//!
//! A harness that retries a post must not count a reward twice: each item
//! has an id — the client's (an idempotency key), or a UUIDv7 — and posting
//! the same id again with the same content changes nothing, while the same
//! id with other content is a conflict (409).
//!
//! This file is the plain data and its validation; the table is
//! `store::feedback`'s, the endpoints `api::feedback`'s. Each item is also
//! exported as an OpenTelemetry span in the GenAI evaluation shape
//! ([`Feedback::evaluation_span`]).

use crate::record::{Attribute, AttributeValue, Span, unix_nanos};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::SystemTime;

/// The longest name, id or string value feedback may have, in characters.
pub const MAX_SHORT_TEXT: usize = 256;

/// The longest comment, in characters.
pub const MAX_COMMENT: usize = 10_000;

crate::wire_enum! {
    /// What a feedback item is about.
    #[derive(PartialOrd, Ord)]
    pub enum TargetKind {
        /// One call (its `trace_id`).
        Trace = "trace",
        /// A session (an episode).
        Session = "session",
        /// A run.
        Run = "run",
    }
}

crate::wire_enum! {
    /// The type of a feedback value (the `value_type` column).
    pub enum ValueType {
        /// A finite number.
        Number = "number",
        /// `true` or `false`.
        Boolean = "boolean",
        /// A short string (a label: `pass`, `A`, ...).
        String = "string",
    }
}

/// A feedback value: a number, a boolean or a short string, as JSON has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeedbackValue {
    /// `true` or `false`.
    Boolean(bool),
    /// A number.
    Number(f64),
    /// A short string.
    String(String),
}

impl FeedbackValue {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            FeedbackValue::Boolean(_) => ValueType::Boolean,
            FeedbackValue::Number(_) => ValueType::Number,
            FeedbackValue::String(_) => ValueType::String,
        }
    }

    /// The value as a number: a number itself, a boolean as 1 or 0; none
    /// for a string.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            FeedbackValue::Boolean(b) => Some(f64::from(u8::from(*b))),
            FeedbackValue::Number(n) => Some(*n),
            FeedbackValue::String(_) => None,
        }
    }

    /// The value as a label: a string itself, a boolean as `true`/`false`;
    /// none for a number.
    pub fn as_label(&self) -> Option<String> {
        match self {
            FeedbackValue::Boolean(b) => Some(b.to_string()),
            FeedbackValue::Number(_) => None,
            FeedbackValue::String(s) => Some(s.clone()),
        }
    }
}

/// One stored feedback item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// The item's id: the client's idempotency id, or a UUIDv7.
    pub id: String,
    /// What it is about.
    pub target_kind: TargetKind,
    /// The id of what it is about (a trace, session or run id).
    pub target_id: String,
    /// What is measured: `reward`, `pass@1`, `judge_score`, ...
    pub name: String,
    /// The value.
    pub value: FeedbackValue,
    /// A free-text explanation.
    pub comment: Option<String>,
    /// Anything else the client keeps with it.
    pub metadata: Map<String, Value>,
    /// When it was first accepted (RFC 3339, UTC).
    pub created_at: String,
}

/// One item as a client posts it: exactly one of `trace_id`, `session_id`
/// and `run_id`, a `name` and a `value`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackInput {
    /// The idempotency id; a UUIDv7 when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// A call to score.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// A session to score.
    #[serde(default)]
    pub session_id: Option<String>,
    /// A run to score.
    #[serde(default)]
    pub run_id: Option<String>,
    /// What is measured.
    #[serde(default)]
    pub name: Option<String>,
    /// The value.
    #[serde(default)]
    pub value: Option<FeedbackValue>,
    /// A free-text explanation.
    #[serde(default)]
    pub comment: Option<String>,
    /// Anything else to keep with it.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

/// Why a feedback item is refused (a 400; its text is one line).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeedbackError {
    /// None, or more than one, of the three target ids.
    #[error("give exactly one of trace_id, session_id and run_id")]
    Target,
    /// No `name`.
    #[error("name is required")]
    NoName,
    /// No `value`, or one of another JSON type.
    #[error("value must be a number, a boolean or a string")]
    NoValue,
    /// A short text that is empty or blank.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A text over its length limit (in characters).
    #[error("{what} is longer than {max} characters")]
    TooLong {
        /// Which text.
        what: &'static str,
        /// Its limit.
        max: usize,
    },
}

impl FeedbackInput {
    /// The item to store, accepted at `now`, or what is wrong with it.
    pub fn into_feedback(self, now: SystemTime) -> Result<Feedback, FeedbackError> {
        let targets = [
            (TargetKind::Trace, self.trace_id),
            (TargetKind::Session, self.session_id),
            (TargetKind::Run, self.run_id),
        ];
        let mut named = targets
            .into_iter()
            .filter_map(|(k, id)| id.map(|id| (k, id)));
        let (target_kind, target_id) = match (named.next(), named.next()) {
            (Some(target), None) => target,
            _ => return Err(FeedbackError::Target),
        };
        let name = self.name.ok_or(FeedbackError::NoName)?;
        let value = self.value.ok_or(FeedbackError::NoValue)?;
        short("target id", &target_id)?;
        short("name", &name)?;
        if let FeedbackValue::String(s) = &value {
            short("a string value", s)?;
        }
        if let Some(id) = &self.id {
            short("id", id)?;
        }
        if self
            .comment
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_COMMENT)
        {
            return Err(FeedbackError::TooLong {
                what: "comment",
                max: MAX_COMMENT,
            });
        }
        Ok(Feedback {
            id: self.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            target_kind,
            target_id,
            name,
            value,
            comment: self.comment,
            metadata: self.metadata.unwrap_or_default(),
            created_at: crate::record::rfc3339(now),
        })
    }
}

/// Refuses an empty text, or one longer than [`MAX_SHORT_TEXT`].
fn short(what: &'static str, text: &str) -> Result<(), FeedbackError> {
    if text.trim().is_empty() {
        return Err(FeedbackError::Empty(what));
    }
    if text.chars().count() > MAX_SHORT_TEXT {
        return Err(FeedbackError::TooLong {
            what,
            max: MAX_SHORT_TEXT,
        });
    }
    Ok(())
}

impl Feedback {
    /// Whether `other` says the same as this item (its acceptance time
    /// aside): posting it again is then a no-op, not a conflict.
    pub fn same_content(&self, other: &Feedback) -> bool {
        let content = |f: &Feedback| {
            (
                f.id.clone(),
                f.target_kind,
                f.target_id.clone(),
                f.name.clone(),
                f.value.clone(),
                f.comment.clone(),
                f.metadata.clone(),
            )
        };
        content(self) == content(other)
    }

    /// The item as an OpenTelemetry span in the GenAI evaluation shape: a
    /// zero-length span named `gen_ai.evaluation.result` carrying that
    /// event's attributes (`gen_ai.evaluation.name`,
    /// `gen_ai.evaluation.score.value`, `gen_ai.evaluation.score.label`,
    /// `gen_ai.evaluation.explanation`) and what it is about. `parent` is
    /// the scored call's span (its OpenTelemetry trace and span ids) when
    /// that call is stored: the conventions parent an evaluation to the
    /// operation it evaluates. Without one, the span starts its own trace.
    pub fn evaluation_span(&self, parent: Option<(String, String)>, at: SystemTime) -> Span {
        let ids = uuid::Uuid::now_v7().simple().to_string();
        let (trace_id, parent_span_id) = match parent {
            Some((trace_id, span_id)) => (trace_id, Some(span_id)),
            None => (uuid::Uuid::new_v4().simple().to_string(), None),
        };
        let text = |key: &str, value: &str| Attribute {
            key: key.into(),
            value: AttributeValue::String(value.to_string()),
        };
        let mut attributes = vec![text("gen_ai.evaluation.name", &self.name)];
        if let Some(score) = self.value.as_number() {
            attributes.push(Attribute {
                key: "gen_ai.evaluation.score.value".into(),
                value: AttributeValue::Float(score),
            });
        }
        if let Some(label) = self.value.as_label() {
            attributes.push(text("gen_ai.evaluation.score.label", &label));
        }
        if let Some(comment) = &self.comment {
            attributes.push(text("gen_ai.evaluation.explanation", comment));
        }
        attributes.push(text("tracegate.feedback.id", &self.id));
        attributes.push(text(
            "tracegate.feedback.target_kind",
            self.target_kind.as_str(),
        ));
        attributes.push(text("tracegate.feedback.target_id", &self.target_id));
        let nanos = unix_nanos(at);
        Span {
            trace_id,
            // The low 64 bits of a fresh UUIDv7: its random part.
            span_id: ids[16..].to_string(),
            parent_span_id,
            name: "gen_ai.evaluation.result".into(),
            start_unix_nanos: nanos,
            end_unix_nanos: nanos,
            attributes,
            ..Span::default()
        }
    }
}

/// What a run's feedback says about one name: how many values, and the
/// spread of the numeric ones (booleans count as 1 and 0).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedbackSummary {
    /// The feedback name.
    pub name: String,
    /// How many items have it.
    pub count: u64,
    /// How many of them are numeric (numbers and booleans).
    pub numeric: u64,
    /// The mean of the numeric values.
    pub mean: Option<f64>,
    /// The smallest numeric value.
    pub min: Option<f64>,
    /// The largest numeric value.
    pub max: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(value: Value) -> Result<Feedback, Box<dyn std::error::Error>> {
        let input: FeedbackInput = serde_json::from_value(value)?;
        Ok(input.into_feedback(SystemTime::now())?)
    }

    #[test]
    fn a_value_keeps_its_json_type() {
        for (value, kind) in [
            (json!(0.5), ValueType::Number),
            (json!(3), ValueType::Number),
            (json!(true), ValueType::Boolean),
            (json!("pass"), ValueType::String),
        ] {
            let f = input(json!({"trace_id": "t", "name": "r", "value": value})).unwrap();
            assert_eq!(f.value.value_type(), kind);
            assert_eq!(
                serde_json::to_value(&f.value).unwrap().as_f64(),
                value.as_f64()
            );
        }
    }

    #[test]
    fn an_item_names_exactly_one_target_a_name_and_a_value() {
        for bad in [
            json!({"name": "r", "value": 1}),
            json!({"trace_id": "t", "run_id": "r", "name": "r", "value": 1}),
            json!({"trace_id": "t", "value": 1}),
            json!({"trace_id": "t", "name": "r"}),
            json!({"trace_id": "t", "name": "", "value": 1}),
            json!({"trace_id": "t", "name": "r", "value": [1]}),
            json!({"trace_id": "t", "name": "r", "value": 1, "extra": 1}),
        ] {
            assert!(input(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_evaluation_span_has_the_conventions_attributes() {
        let f = input(
            json!({"id": "f1", "trace_id": "t", "name": "pass", "value": true,
                             "comment": "all tests"}),
        )
        .unwrap();
        let span = f.evaluation_span(Some(("a".repeat(32), "b".repeat(16))), SystemTime::now());
        assert_eq!(span.name, "gen_ai.evaluation.result");
        assert_eq!(span.parent_span_id.as_deref(), Some("bbbbbbbbbbbbbbbb"));
        assert_eq!(span.span_id.len(), 16);
        let keys: Vec<&str> = span.attributes.iter().map(|a| a.key.as_str()).collect();
        assert!(keys.starts_with(&[
            "gen_ai.evaluation.name",
            "gen_ai.evaluation.score.value",
            "gen_ai.evaluation.score.label",
            "gen_ai.evaluation.explanation"
        ]));
    }
}
