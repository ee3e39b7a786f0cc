//! Who made a call: the identity a harness stamps on it.
//!
//! Eight fields, three carriers. A harness may put a field in an
//! `X-RLLM-*` header, in the JSON body under `metadata.rllm` or `rllm`, or (the
//! session only) in the path `/sessions/{sid}/v1/...`. Precedence is header >
//! body > path **field by field**: a request may carry its session in the path
//! and its run in a header, and both count. Within the body, `metadata.rllm`
//! wins over a top-level `rllm`, again field by field.
//!
//! Values are trimmed and an empty value counts as absent; the first carrier
//! with a value decides the field. Header values are read as UTF-8 (a header
//! that is not UTF-8 is noted and skipped). A value must keep the field's
//! rules, which are part of the table: `step_id` and `weight_version` are
//! integers (a JSON integer, or a string holding one); a text value is at most
//! [`MAX_TEXT_BYTES`] and holds no control character (they are ids and names
//! that end up in an indexed column, in span attributes and in terminals).
//! A value that breaks a rule never fails the agent's call: the field is
//! left empty (`null`) and `identity_errors` says what was wrong, quoting at
//! most the start of the value.
//!
//! The fields are one table, [`IdentityField::ALL`]: the extractor reads each
//! field's carriers from it, the store makes a column of each, and the schema
//! and `docs/recording.md` describe each (tests check both). Adding a field is adding a
//! variant here and a struct field in [`Identity`].
//!
//! The carriers are ours, not the provider's: [`strip_body`] removes them from
//! the body (headers are removed by the `headers` policy, by their common
//! `x-rllm-` prefix), and a body that carries none of them is never touched,
//! so it is forwarded byte for byte.

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The identity of one call. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Identity {
    /// The agent episode (or conversation) the call belongs to; `""` in
    /// JSON when absent (rLLM's type).
    #[serde(with = "crate::record::empty_as_none")]
    pub session_id: Option<String>,
    /// The evaluation or training run the session belongs to.
    pub run_id: Option<String>,
    /// The harness (agent framework) that made the call.
    pub harness: Option<String>,
    /// The call's step within its session.
    pub step_id: Option<i64>,
    /// The harness's id of the call's parent (a step, a tool call, a sub-agent).
    pub parent_span_id: Option<String>,
    /// The project the run belongs to.
    pub project: Option<String>,
    /// The experiment the run belongs to.
    pub experiment: Option<String>,
    /// The policy (weights) version that produced the call. A harness may
    /// set it; else it is the version current when the call was dispatched
    /// (`POST /admin/weight_version`), else the upstream's own
    /// `weight_version` answer field.
    pub weight_version: Option<i64>,
}

/// One identity field: a row of the identity table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityField {
    /// `session_id`.
    SessionId,
    /// `run_id`.
    RunId,
    /// `harness`.
    Harness,
    /// `step_id` (an integer).
    StepId,
    /// `parent_span_id`.
    ParentSpanId,
    /// `project`.
    Project,
    /// `experiment`.
    Experiment,
    /// `weight_version` (an integer).
    WeightVersion,
}

/// The longest text identity value, in bytes (after trimming).
pub const MAX_TEXT_BYTES: usize = 256;

/// The longest part of a rejected value that `identity_errors` quotes.
const QUOTED_CHARS: usize = 64;

/// A typed identity value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// A text field's value.
    Text(&'a str),
    /// An integer field's value.
    Integer(i64),
}

impl IdentityField {
    /// The identity table, in the record's order.
    pub const ALL: [IdentityField; 8] = [
        IdentityField::SessionId,
        IdentityField::RunId,
        IdentityField::Harness,
        IdentityField::StepId,
        IdentityField::ParentSpanId,
        IdentityField::Project,
        IdentityField::Experiment,
        IdentityField::WeightVersion,
    ];

    /// Its name in the body (`rllm.<name>`), the record and the store.
    pub fn name(self) -> &'static str {
        match self {
            IdentityField::SessionId => "session_id",
            IdentityField::RunId => "run_id",
            IdentityField::Harness => "harness",
            IdentityField::StepId => "step_id",
            IdentityField::ParentSpanId => "parent_span_id",
            IdentityField::Project => "project",
            IdentityField::Experiment => "experiment",
            IdentityField::WeightVersion => "weight_version",
        }
    }

    /// Its header (lower case; header names are case-insensitive).
    pub fn header(self) -> &'static str {
        match self {
            IdentityField::SessionId => "x-rllm-session-id",
            IdentityField::RunId => "x-rllm-run-id",
            IdentityField::Harness => "x-rllm-harness",
            IdentityField::StepId => "x-rllm-step-id",
            IdentityField::ParentSpanId => "x-rllm-parent-span-id",
            IdentityField::Project => "x-rllm-project",
            IdentityField::Experiment => "x-rllm-experiment",
            IdentityField::WeightVersion => "x-rllm-weight-version",
        }
    }

    /// Whether its value must be an integer.
    pub fn is_integer(self) -> bool {
        matches!(self, IdentityField::StepId | IdentityField::WeightVersion)
    }

    /// The longest value it takes, in bytes; `None` for an integer.
    pub fn max_bytes(self) -> Option<usize> {
        (!self.is_integer()).then_some(MAX_TEXT_BYTES)
    }

    /// Whether the path `/sessions/{sid}/v1/...` carries it.
    pub fn in_path(self) -> bool {
        self == IdentityField::SessionId
    }
}

impl Identity {
    /// The value of one field.
    pub fn get(&self, field: IdentityField) -> Option<FieldValue<'_>> {
        let text = match field {
            IdentityField::StepId => return self.step_id.map(FieldValue::Integer),
            IdentityField::WeightVersion => {
                return self.weight_version.map(FieldValue::Integer);
            }
            IdentityField::SessionId => &self.session_id,
            IdentityField::RunId => &self.run_id,
            IdentityField::Harness => &self.harness,
            IdentityField::ParentSpanId => &self.parent_span_id,
            IdentityField::Project => &self.project,
            IdentityField::Experiment => &self.experiment,
        };
        text.as_deref().map(FieldValue::Text)
    }

    /// Sets a field from a carrier's raw value, or leaves it unset and says
    /// which rule the value breaks.
    fn set(&mut self, field: IdentityField, raw: &Raw<'_>) -> Result<(), Broken> {
        let slot = match field {
            IdentityField::StepId => {
                self.step_id = Some(raw.integer().ok_or(Broken::NotAnInteger)?);
                return Ok(());
            }
            IdentityField::WeightVersion => {
                self.weight_version = Some(raw.integer().ok_or(Broken::NotAnInteger)?);
                return Ok(());
            }
            IdentityField::SessionId => &mut self.session_id,
            IdentityField::RunId => &mut self.run_id,
            IdentityField::Harness => &mut self.harness,
            IdentityField::ParentSpanId => &mut self.parent_span_id,
            IdentityField::Project => &mut self.project,
            IdentityField::Experiment => &mut self.experiment,
        };
        let text = raw.text().unwrap_or_default();
        if let Some(limit) = field.max_bytes().filter(|limit| text.len() > *limit) {
            return Err(Broken::TooLong {
                bytes: text.len(),
                limit,
            });
        }
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(Broken::ControlCharacter(c));
        }
        *slot = Some(text);
        Ok(())
    }
}

/// The rule an identity value breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Broken {
    /// An integer field's value is not an integer.
    #[error("is not an integer")]
    NotAnInteger,
    /// A text value is longer than its field takes.
    #[error("is {bytes} bytes, over the limit of {limit}; ignored")]
    TooLong { bytes: usize, limit: usize },
    /// A text value holds a control character.
    #[error("has a control character (U+{:04X}); ignored", u32::from(*.0))]
    ControlCharacter(char),
}

/// A raw identity value as found in one carrier, before typing.
enum Raw<'a> {
    Text(String),
    Json(&'a Value),
}

impl Raw<'_> {
    /// The value as trimmed text; `None` when empty or not a scalar.
    fn text(&self) -> Option<String> {
        let s = match self {
            Raw::Text(s) => s.trim().to_string(),
            Raw::Json(Value::String(s)) => s.trim().to_string(),
            Raw::Json(Value::Number(n)) => n.to_string(),
            Raw::Json(Value::Bool(b)) => b.to_string(),
            Raw::Json(_) => return None,
        };
        (!s.is_empty()).then_some(s)
    }

    /// The raw value as an error message quotes it: escaped, and cut after
    /// [`QUOTED_CHARS`] characters.
    fn describe(&self) -> String {
        let text = match self {
            Raw::Text(s) => s.clone(),
            Raw::Json(Value::String(s)) => s.clone(),
            Raw::Json(v) => v.to_string(),
        };
        let mut quoted: String = text.chars().take(QUOTED_CHARS).collect();
        if quoted.len() < text.len() {
            quoted.push('…');
        }
        quoted.escape_debug().to_string()
    }

    /// The value as an integer.
    fn integer(&self) -> Option<i64> {
        match self {
            Raw::Json(Value::Number(n)) => n.as_i64(),
            _ => self.text()?.parse().ok(),
        }
    }
}

/// Extracts the identity of a call from its headers, its parsed JSON body (if
/// the body is a JSON object) and the session segment of its path (if any).
///
/// Returns the identity and the identity errors (values that were present but
/// unusable), each a human-readable line.
pub fn extract(
    headers: &HeaderMap,
    body: Option<&Map<String, Value>>,
    path_session: Option<&str>,
) -> (Identity, Vec<String>) {
    let bodies = [
        (
            "metadata.rllm",
            body.and_then(|b| b.get("metadata")?.get("rllm")?.as_object()),
        ),
        ("rllm", body.and_then(|b| b.get("rllm")?.as_object())),
    ];
    let mut identity = Identity::default();
    let mut errors = Vec::new();
    for field in IdentityField::ALL {
        let mut candidates: Vec<(&str, Raw)> = Vec::new();
        if let Some(value) = headers.get(field.header()) {
            // Header values are bytes; UTF-8 ones are text like any other.
            match std::str::from_utf8(value.as_bytes()) {
                Ok(s) => candidates.push(("header", Raw::Text(s.to_string()))),
                Err(_) => errors.push(format!(
                    "{}: header {} is not valid UTF-8; ignored",
                    field.name(),
                    field.header()
                )),
            }
        }
        for (carrier, object) in bodies {
            if let Some(v) = object.and_then(|o| o.get(field.name())) {
                candidates.push((carrier, Raw::Json(v)));
            }
        }
        if let Some(sid) = path_session.filter(|_| field.in_path()) {
            candidates.push(("path", Raw::Text(sid.to_string())));
        }
        // The first carrier with a non-empty value decides the field.
        let Some((carrier, raw)) = candidates.into_iter().find(|(_, raw)| raw.text().is_some())
        else {
            continue;
        };
        if let Err(broken) = identity.set(field, &raw) {
            let (name, value) = (field.name(), raw.describe());
            errors.push(format!("{name}: {carrier} value {value} {broken}"));
        }
    }
    (identity, errors)
}

/// Removes the identity carriers from a JSON body: `rllm`, `metadata.rllm`, and
/// `metadata` itself when that leaves it empty. Returns true when the body
/// changed (and so must be re-serialised before forwarding).
pub fn strip_body(body: &mut Map<String, Value>) -> bool {
    let mut changed = body.shift_remove("rllm").is_some();
    if let Some(Value::Object(metadata)) = body.get_mut("metadata")
        && metadata.shift_remove("rllm").is_some()
    {
        changed = true;
        if metadata.is_empty() {
            body.shift_remove("metadata");
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_identity_field_is_in_the_record_schema() {
        let schema: Value =
            serde_json::from_str(include_str!("../schema/trace_record.schema.json")).unwrap();
        for field in IdentityField::ALL {
            let name = field.name();
            assert!(schema["properties"].get(name).is_some(), "{name}");
            assert!(
                schema["required"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(name)),
                "{name}"
            );
        }
    }

    #[test]
    fn every_identity_field_is_in_the_readme_table_with_its_header() {
        let readme = include_str!("../docs/recording.md");
        for field in IdentityField::ALL {
            let header = field.header().strip_prefix("x-rllm-").unwrap();
            assert!(
                readme
                    .to_ascii_lowercase()
                    .contains(&format!("`x-rllm-{header}`")),
                "{}",
                field.name()
            );
            assert!(
                readme.contains(&format!("rllm.{}`", field.name())),
                "{}",
                field.name()
            );
        }
    }

    #[test]
    fn every_carrier_header_is_stripped_by_the_identity_prefix() {
        for field in IdentityField::ALL {
            let name = http::HeaderName::from_static(field.header());
            assert!(crate::headers::is_identity_carrier(&name), "{name}");
        }
    }

    #[test]
    fn identity_reads_back_what_it_serialises() {
        let identity = Identity {
            session_id: Some("s".into()),
            step_id: Some(3),
            ..Identity::default()
        };
        for field in IdentityField::ALL {
            let json = serde_json::to_value(&identity).unwrap();
            let expected = match identity.get(field) {
                Some(FieldValue::Text(t)) => json!(t),
                Some(FieldValue::Integer(n)) => json!(n),
                None if field == IdentityField::SessionId => json!(""),
                None => Value::Null,
            };
            assert_eq!(json[field.name()], expected, "{}", field.name());
        }
    }

    #[test]
    fn header_names_are_case_insensitive_and_values_trimmed() {
        let (id, errors) = extract(&headers(&[("X-RLLM-RUN-ID", "  run-1  ")]), None, None);
        assert_eq!(id.run_id.as_deref(), Some("run-1"));
        assert!(errors.is_empty());
    }

    #[test]
    fn empty_header_counts_as_absent() {
        let body = object(json!({"rllm": {"harness": "swe"}}));
        let (id, _) = extract(&headers(&[("x-rllm-harness", "   ")]), Some(&body), None);
        assert_eq!(id.harness.as_deref(), Some("swe"));
    }

    #[test]
    fn metadata_rllm_wins_over_top_level_rllm_field_by_field() {
        let body = object(json!({
            "metadata": {"rllm": {"run_id": "from-metadata"}},
            "rllm": {"run_id": "from-top", "project": "p-top"}
        }));
        let (id, _) = extract(&HeaderMap::new(), Some(&body), None);
        assert_eq!(id.run_id.as_deref(), Some("from-metadata"));
        assert_eq!(id.project.as_deref(), Some("p-top"));
    }

    #[test]
    fn step_id_accepts_integers_and_integer_strings() {
        let body = object(json!({"rllm": {"step_id": 7}}));
        assert_eq!(
            extract(&HeaderMap::new(), Some(&body), None).0.step_id,
            Some(7)
        );
        let (id, _) = extract(&headers(&[("x-rllm-step-id", " 12 ")]), None, None);
        assert_eq!(id.step_id, Some(12));
    }

    #[test]
    fn bad_step_id_is_recorded_not_fatal() {
        let (id, errors) = extract(&headers(&[("x-rllm-step-id", "three")]), None, None);
        assert_eq!(id.step_id, None);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("three"), "{errors:?}");
    }

    #[test]
    fn fractional_step_id_is_an_error() {
        let body = object(json!({"rllm": {"step_id": 2.5}}));
        let (id, errors) = extract(&HeaderMap::new(), Some(&body), None);
        assert_eq!(id.step_id, None);
        assert!(errors[0].contains("2.5"));
    }

    #[test]
    fn a_value_over_the_limit_is_kept_out_and_quoted_short() {
        let long = "s".repeat(100 * 1024);
        let body = object(json!({"rllm": {"session_id": long, "run_id": "r"}}));
        let (id, errors) = extract(&HeaderMap::new(), Some(&body), Some("from-path"));
        assert_eq!(
            id.session_id, None,
            "the first carrier decides, even when broken"
        );
        assert_eq!(id.run_id.as_deref(), Some("r"));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("session_id: rllm value sss"),
            "{errors:?}"
        );
        assert!(errors[0].ends_with("is 102400 bytes, over the limit of 256; ignored"));
        assert!(errors[0].len() < 200, "{}", errors[0].len());
        let at_limit = "é".repeat(128);
        let body = object(json!({"rllm": {"session_id": at_limit}}));
        let (id, errors) = extract(&HeaderMap::new(), Some(&body), None);
        assert_eq!(id.session_id.as_deref(), Some(at_limit.as_str()));
        assert!(errors.is_empty());
    }

    #[test]
    fn control_characters_are_refused_and_escaped_in_the_error() {
        let body = object(json!({"metadata": {"rllm": {"harness": "a\u{0}b", "project": "p\tq"}}}));
        let (id, errors) = extract(&HeaderMap::new(), Some(&body), Some("s\u{7}"));
        assert_eq!((id.harness, id.project, id.session_id), (None, None, None));
        assert_eq!(
            errors,
            [
                "session_id: path value s\\u{7} has a control character (U+0007); ignored",
                "harness: metadata.rllm value a\\0b has a control character (U+0000); ignored",
                "project: metadata.rllm value p\\tq has a control character (U+0009); ignored",
            ]
        );
    }

    #[test]
    fn utf8_header_values_are_text() {
        let mut h = HeaderMap::new();
        let value = HeaderValue::from_bytes("épisode-17".as_bytes()).unwrap();
        h.insert("x-rllm-session-id", value);
        h.insert(
            "x-rllm-run-id",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        let (id, errors) = extract(&h, None, None);
        assert_eq!(id.session_id.as_deref(), Some("épisode-17"));
        assert_eq!(id.run_id, None);
        assert_eq!(
            errors,
            ["run_id: header x-rllm-run-id is not valid UTF-8; ignored"]
        );
    }

    #[test]
    fn strip_removes_carriers_and_empty_metadata() {
        let mut body = object(json!({
            "model": "m", "rllm": {"run_id": "r"}, "metadata": {"rllm": {"step_id": 1}}
        }));
        assert!(strip_body(&mut body));
        assert_eq!(Value::Object(body), json!({"model": "m"}));
    }

    #[test]
    fn strip_keeps_other_metadata() {
        let mut body = object(json!({"metadata": {"rllm": {}, "user": "u"}}));
        assert!(strip_body(&mut body));
        assert_eq!(Value::Object(body), json!({"metadata": {"user": "u"}}));
    }

    #[test]
    fn strip_reports_untouched_body() {
        let mut body = object(json!({"model": "m", "metadata": {"user": "u"}}));
        assert!(!strip_body(&mut body));
    }
}
