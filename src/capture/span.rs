//! A record as an OpenTelemetry span, following the GenAI semantic
//! conventions.
//!
//! The span is named `{gen_ai.operation.name} {model}`, is of kind CLIENT,
//! starts and ends with the call, and has status error (with `error.type`)
//! when the call failed. Its attributes are the GenAI ones tracing backends
//! understand (`gen_ai.*`, using `gen_ai.provider.name`, not the deprecated
//! `gen_ai.system`), the HTTP and server ones, `session.id` and
//! `gen_ai.conversation.id` (both the session), and tracegate's identity under
//! `rllm.*`. Message content (`gen_ai.input.messages`,
//! `gen_ai.output.messages`, as JSON strings) is opt-in: prompts may hold
//! what a tracing backend should not.
//!
//! The attribute table is documented in `schema/span_attributes.md`; a test
//! checks that every attribute this file can set is listed there.

use crate::config::UpstreamKind;
use crate::identity::{FieldValue, IdentityField};
use crate::protocol::{Operation, Protocol};
use crate::record::{Attribute, AttributeValue, Span, Status, TraceRecord, unix_nanos};
use crate::trace_context::TraceContext;
use reqwest::Url;
use serde_json::Value;
use std::time::SystemTime;

/// What a span needs beyond its record.
pub struct SpanInputs<'a> {
    /// Where the span hangs.
    pub trace: &'a TraceContext,
    /// `gen_ai.provider.name`: `openai`, `anthropic`, `vllm`, ...
    pub provider: &'a str,
    /// When the call arrived and ended.
    pub started: SystemTime,
    /// When the call ended.
    pub ended: SystemTime,
    /// Whether message content goes on the span.
    pub include_content: bool,
}

/// The span of a recorded call.
pub fn of(record: &TraceRecord, inputs: &SpanInputs<'_>) -> Span {
    let model = record
        .model
        .as_deref()
        .or(record.response_model.as_deref())
        .unwrap_or_default();
    let operation = record.operation.as_str();
    let name = if model.is_empty() {
        operation.to_string()
    } else {
        format!("{operation} {model}")
    };
    let mut a = Attributes(Vec::new());
    a.call(record, inputs.provider);
    a.parameters(record);
    a.usage(record);
    a.server(record);
    a.identity(record);
    let error = a.error(record);
    if inputs.include_content {
        a.content(record);
    }
    Span {
        trace_id: inputs.trace.trace_id.clone(),
        span_id: inputs.trace.span_id.clone(),
        parent_span_id: inputs.trace.parent_span_id.clone(),
        parent_is_remote: inputs.trace.parent_is_remote,
        trace_state: inputs.trace.trace_state.clone(),
        name,
        start_unix_nanos: unix_nanos(inputs.started),
        end_unix_nanos: unix_nanos(inputs.ended),
        error,
        attributes: a.0,
        children: Vec::new(),
    }
}

/// `gen_ai.provider.name` for an upstream of this kind spoken to over this
/// protocol: the kind when it names the provider, else the protocol.
pub fn provider(kind: UpstreamKind, protocol: Protocol) -> &'static str {
    match kind {
        UpstreamKind::Generic | UpstreamKind::Auto => protocol.as_str(),
        named => named.as_str(),
    }
}

/// `error.type` of a call that did not end ok: its error kind, else its
/// status (the span's attribute and the metrics' label agree).
pub fn error_type(record: &TraceRecord) -> Option<&'static str> {
    match (record.status, &record.error) {
        (Status::Ok, _) => None,
        (_, Some(e)) => Some(e.kind.as_str()),
        (status, None) => Some(status.as_str()),
    }
}

/// Attributes being collected; absent values are skipped.
struct Attributes(Vec<Attribute>);

impl Attributes {
    fn push(&mut self, key: &str, value: AttributeValue) {
        self.0.push(Attribute {
            key: key.to_string(),
            value,
        });
    }

    fn text(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.push(key, AttributeValue::String(v.to_string()));
        }
    }

    fn count(&mut self, key: &str, value: Option<u64>) {
        if let Some(v) = value {
            self.push(
                key,
                AttributeValue::Int(i64::try_from(v).unwrap_or(i64::MAX)),
            );
        }
    }

    fn int(&mut self, key: &str, value: Option<&Value>) {
        if let Some(v) = value.and_then(Value::as_i64) {
            self.push(key, AttributeValue::Int(v));
        }
    }

    fn float(&mut self, key: &str, value: Option<&Value>) {
        if let Some(v) = value.and_then(Value::as_f64) {
            self.push(key, AttributeValue::Float(v));
        }
    }

    /// What was called and what answered: operation, provider, models,
    /// response id and finish reasons.
    fn call(&mut self, record: &TraceRecord, provider: &str) {
        self.text("gen_ai.operation.name", Some(record.operation.as_str()));
        self.text("gen_ai.provider.name", Some(provider));
        self.text("gen_ai.request.model", record.model.as_deref());
        self.text("gen_ai.response.model", record.response_model.as_deref());
        self.text("gen_ai.response.id", record.response_id.as_deref());
        if !record.finish_reasons.is_empty() {
            self.push(
                "gen_ai.response.finish_reasons",
                AttributeValue::Strings(record.finish_reasons.clone()),
            );
        }
    }

    /// The request's sampling parameters, and whether it streamed.
    fn parameters(&mut self, record: &TraceRecord) {
        let params = &record.request_params;
        self.float("gen_ai.request.temperature", params.get("temperature"));
        self.int(
            "gen_ai.request.max_tokens",
            ["max_tokens", "max_completion_tokens", "max_output_tokens"]
                .iter()
                .find_map(|k| params.get(*k)),
        );
        self.float("gen_ai.request.top_p", params.get("top_p"));
        self.int("gen_ai.request.seed", params.get("seed"));
        self.int("gen_ai.request.choice.count", params.get("n"));
        if record.operation != Operation::Embeddings {
            self.push("gen_ai.request.stream", AttributeValue::Bool(record.stream));
        }
    }

    /// Tokens by type, and the time to the first chunk of a stream.
    fn usage(&mut self, record: &TraceRecord) {
        let u = &record.usage;
        self.count("gen_ai.usage.input_tokens", u.input_tokens);
        self.count("gen_ai.usage.output_tokens", u.output_tokens);
        self.count(
            "gen_ai.usage.cache_read.input_tokens",
            u.cached_input_tokens,
        );
        self.count(
            "gen_ai.usage.cache_creation.input_tokens",
            u.cache_creation_input_tokens,
        );
        self.count("gen_ai.usage.reasoning.output_tokens", u.reasoning_tokens);
        // Time to first chunk is a streaming measure (as the conventions define it).
        if let Some(ttft) = record.ttft_ms.filter(|_| record.stream) {
            self.push(
                "gen_ai.response.time_to_first_chunk",
                AttributeValue::Float(ttft / 1000.0),
            );
        }
    }

    /// The upstream's address and port, and the HTTP status it answered.
    fn server(&mut self, record: &TraceRecord) {
        if let Ok(url) = Url::parse(&record.upstream) {
            self.text("server.address", url.host_str());
            self.count("server.port", url.port_or_known_default().map(u64::from));
        }
        self.count(
            "http.response.status_code",
            record.http_status.map(u64::from),
        );
    }

    /// Who made the call: the session (under the conventions' names), then
    /// tracegate's identity under `rllm.*`, and the route.
    fn identity(&mut self, record: &TraceRecord) {
        let identity = &record.identity;
        self.text("session.id", identity.session_id.as_deref());
        self.text("gen_ai.conversation.id", identity.session_id.as_deref());
        self.text("rllm.trace_id", Some(&record.trace_id));
        // The session is `session.id` (the conventions' name); the rest are ours.
        for field in IdentityField::ALL
            .into_iter()
            .filter(|f| *f != IdentityField::SessionId)
        {
            let key = format!("rllm.{}", field.name());
            match identity.get(field) {
                Some(FieldValue::Text(text)) => self.text(&key, Some(text)),
                Some(FieldValue::Integer(n)) => self.push(&key, AttributeValue::Int(n)),
                None => {}
            }
        }
        self.text("rllm.span_type", Some(&record.span_type));
        self.text("tracegate.route", record.route.as_deref());
        if let Some(cost) = record.cost_usd {
            self.push("tracegate.cost_usd", AttributeValue::Float(cost));
        }
    }

    /// `error.type` of a failed call; returns the span's status
    /// description (`None` for a call that succeeded).
    fn error(&mut self, record: &TraceRecord) -> Option<String> {
        let error_type = error_type(record)?;
        self.text("error.type", Some(error_type));
        Some(match &record.error {
            Some(e) => e.message.clone(),
            None => error_type.to_string(),
        })
    }

    /// The messages sent and answered, as JSON strings (opt-in).
    fn content(&mut self, record: &TraceRecord) {
        self.text(
            "gen_ai.input.messages",
            Some(&Value::from(record.messages.clone()).to_string()),
        );
        let output: Vec<Value> = record
            .choices
            .iter()
            .map(|c| Value::Object(c.message.clone()))
            .collect();
        self.text(
            "gen_ai.output.messages",
            Some(&Value::from(output).to_string()),
        );
    }
}

/// Every attribute key [`of`] can set, for the documentation test.
pub const KEYS: &[&str] = &[
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.response.id",
    "gen_ai.response.finish_reasons",
    "gen_ai.request.temperature",
    "gen_ai.request.max_tokens",
    "gen_ai.request.top_p",
    "gen_ai.request.seed",
    "gen_ai.request.choice.count",
    "gen_ai.request.stream",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.response.time_to_first_chunk",
    "server.address",
    "server.port",
    "http.response.status_code",
    "session.id",
    "gen_ai.conversation.id",
    "rllm.trace_id",
    "rllm.run_id",
    "rllm.harness",
    "rllm.step_id",
    "rllm.parent_span_id",
    "rllm.span_type",
    "rllm.project",
    "rllm.experiment",
    "tracegate.route",
    "tracegate.cost_usd",
    "error.type",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{CallError, Choice, ErrorKind, Identity, Usage};
    use serde_json::json;

    fn trace() -> TraceContext {
        TraceContext {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            parent_span_id: None,
            parent_is_remote: false,
            trace_state: None,
        }
    }

    fn inputs(trace: &TraceContext, content: bool) -> SpanInputs<'_> {
        SpanInputs {
            trace,
            provider: Protocol::Openai.as_str(),
            started: SystemTime::UNIX_EPOCH,
            ended: SystemTime::UNIX_EPOCH,
            include_content: content,
        }
    }

    fn value<'a>(span: &'a Span, key: &str) -> Option<&'a AttributeValue> {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| &a.value)
    }

    #[test]
    fn every_key_set_is_listed() {
        let record = TraceRecord {
            operation: Operation::Chat,
            model: Some("m".into()),
            response_model: Some("m-1".into()),
            response_id: Some("r".into()),
            finish_reasons: vec!["stop".into()],
            request_params:
                json!({"temperature": 0.5, "max_tokens": 9, "top_p": 1, "seed": 3, "n": 2})
                    .as_object()
                    .unwrap()
                    .clone(),
            usage: Usage {
                input_tokens: Some(1),
                output_tokens: Some(2),
                total_tokens: Some(3),
                cached_input_tokens: Some(1),
                cache_creation_input_tokens: Some(0),
                reasoning_tokens: Some(1),
            },
            ttft_ms: Some(5.0),
            stream: true,
            upstream: "http://h:8000/v1".into(),
            http_status: Some(500),
            identity: Identity {
                session_id: Some("s".into()),
                run_id: Some("r".into()),
                harness: Some("h".into()),
                step_id: Some(1),
                parent_span_id: Some("p".into()),
                project: Some("p".into()),
                experiment: Some("e".into()),
                ..Identity::default()
            },
            route: Some("r".into()),
            status: Status::Error,
            error: Some(CallError::new(ErrorKind::UpstreamHttpError, "boom")),
            cost_usd: Some(0.25),
            ..TraceRecord::default()
        };
        let t = trace();
        let span = of(&record, &inputs(&t, true));
        for a in &span.attributes {
            assert!(KEYS.contains(&a.key.as_str()), "{} is not listed", a.key);
        }
        assert_eq!(
            span.attributes.len(),
            KEYS.len(),
            "every listed key is set here"
        );
        assert_eq!(span.name, "chat m");
        assert_eq!(span.error.as_deref(), Some("boom"));
        assert_eq!(
            value(&span, "server.port"),
            Some(&AttributeValue::Int(8000))
        );
        assert_eq!(
            value(&span, "gen_ai.response.time_to_first_chunk"),
            Some(&AttributeValue::Float(0.005))
        );
    }

    #[test]
    fn every_key_is_documented_in_the_schema() {
        let doc = include_str!("../../schema/span_attributes.md");
        for key in KEYS {
            assert!(
                doc.contains(&format!("| `{key}` |")),
                "{key} is not in schema/span_attributes.md"
            );
        }
    }

    #[test]
    fn content_is_opt_in() {
        let record = TraceRecord {
            operation: Operation::Chat,
            messages: vec![json!({"role": "user", "content": "secret"})],
            choices: vec![Choice::default()],
            ..TraceRecord::default()
        };
        let t = trace();
        assert!(value(&of(&record, &inputs(&t, false)), "gen_ai.input.messages").is_none());
        let with = of(&record, &inputs(&t, true));
        assert_eq!(
            value(&with, "gen_ai.input.messages"),
            Some(&AttributeValue::String(
                r#"[{"role":"user","content":"secret"}]"#.into()
            ))
        );
    }

    #[test]
    fn a_call_without_model_is_named_by_its_operation() {
        let record = TraceRecord {
            operation: Operation::Other,
            ..TraceRecord::default()
        };
        let t = trace();
        assert_eq!(of(&record, &inputs(&t, false)).name, "other");
    }
}
