//! A trajectory's steps: its calls and the harness's tool executions in the
//! order they happened, so a trainer sees the environment steps too.
//!
//! A harness that sends its OpenTelemetry spans to the gateway's OTLP
//! receiver (`otlp`) wraps each tool call in an `execute_tool` span (the
//! GenAI conventions' name). Those spans are the environment's turns: the
//! command the agent ran, how long it took, whether it failed. They are
//! merged with the calls by start time: a tool span goes before the first
//! call that started after it, so it sits between the two calls it
//! separates (a tool that itself calls the model comes before that call).
//! Agent spans (`invoke_agent`) enclose calls rather than separate them, and
//! are left to `GET /sessions/{sid}/spans`.
//!
//! A tool step carries its name, duration and status, and only chosen
//! attributes — the tool's name, type and call id, its arguments and result
//! when the harness records them, the error type — not the whole span: the
//! trajectory is what a trainer reads, the span stays in the store.

use crate::record::{HarnessSpan, HarnessStatusCode, TraceRecord};
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::UNIX_EPOCH;

/// The span name (prefix) and `gen_ai.operation.name` of a tool execution.
const EXECUTE_TOOL: &str = "execute_tool";

/// The attributes a tool step keeps besides its name and call id.
const CHOSEN: [&str; 5] = [
    "gen_ai.tool.type",
    "gen_ai.tool.description",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "error.type",
];

/// One step of a trajectory.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// An LLM call, by its record id (`calls[].trace_id`).
    Call {
        /// The record's id.
        trace_id: String,
    },
    /// A tool execution the harness reported as an `execute_tool` span.
    Tool(Box<ToolStep>),
}

/// A tool execution between calls.
#[derive(Debug, Clone, Serialize)]
pub struct ToolStep {
    /// The span's name (`execute_tool bash`).
    pub name: String,
    /// `gen_ai.tool.name`.
    pub tool_name: Option<String>,
    /// `gen_ai.tool.call.id`: the tool call of the completion it answers.
    pub tool_call_id: Option<String>,
    /// The span's OpenTelemetry trace id.
    pub otel_trace_id: String,
    /// The span's id (`GET /sessions/{sid}/spans` has the whole span).
    pub span_id: String,
    /// When it started (RFC 3339).
    pub start: String,
    /// How long it ran, in milliseconds.
    pub duration_ms: f64,
    /// Its status code.
    pub status: HarnessStatusCode,
    /// Its status message, if any.
    pub status_message: Option<String>,
    /// The chosen attributes it has, besides name and call id.
    pub attributes: Map<String, Value>,
}

/// Whether a harness span is a tool execution.
pub fn is_tool(span: &HarnessSpan) -> bool {
    span.name.starts_with(EXECUTE_TOOL)
        || span.attributes.get("gen_ai.operation.name") == Some(&Value::String(EXECUTE_TOOL.into()))
}

/// The steps of a session: its calls (`records`, in step order) with the
/// tool spans among `spans` that belong to it merged in by start time.
pub fn interleave(session_id: &str, records: &[TraceRecord], spans: Vec<HarnessSpan>) -> Vec<Step> {
    let mut tools: Vec<HarnessSpan> = spans
        .into_iter()
        .filter(|s| {
            is_tool(s)
                && s.identity
                    .session_id
                    .as_deref()
                    .is_none_or(|id| id == session_id)
        })
        .collect();
    tools.sort_by_key(|s| s.start_unix_nanos);
    let mut tools = tools.into_iter().peekable();
    let mut steps = Vec::with_capacity(records.len());
    for record in records {
        let start = started_nanos(record);
        while let Some(tool) = tools.next_if(|t| t.start_unix_nanos < start) {
            steps.push(Step::Tool(Box::new(tool_step(tool))));
        }
        steps.push(Step::Call {
            trace_id: record.trace_id.clone(),
        });
    }
    steps.extend(tools.map(|t| Step::Tool(Box::new(tool_step(t)))));
    steps
}

/// When a call started, in nanoseconds since the epoch (from `started_at`,
/// else the coarser `timestamp`).
fn started_nanos(record: &TraceRecord) -> u64 {
    humantime::parse_rfc3339_weak(&record.started_at)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .unwrap_or((record.timestamp * 1e9) as u64)
}

fn tool_step(span: HarnessSpan) -> ToolStep {
    let text = |key: &str| {
        span.attributes
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let attributes = CHOSEN
        .iter()
        .filter_map(|key| Some((key.to_string(), span.attributes.get(*key)?.clone())))
        .collect();
    let nanos = span.end_unix_nanos.saturating_sub(span.start_unix_nanos);
    ToolStep {
        tool_name: text("gen_ai.tool.name"),
        tool_call_id: text("gen_ai.tool.call.id"),
        name: span.name,
        otel_trace_id: span.trace_id,
        span_id: span.span_id,
        start: span.start,
        duration_ms: nanos as f64 / 1e6,
        status: span.status_code,
        status_message: span.status_message,
        attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, started_at: &str) -> TraceRecord {
        TraceRecord {
            trace_id: id.into(),
            started_at: started_at.into(),
            ..TraceRecord::default()
        }
    }

    fn span(name: &str, start_ns: u64) -> HarnessSpan {
        HarnessSpan {
            trace_id: "t".into(),
            span_id: format!("s{start_ns}"),
            parent_span_id: None,
            name: name.into(),
            kind: crate::record::HarnessSpanKind::Internal,
            start: String::new(),
            end: String::new(),
            start_unix_nanos: start_ns,
            end_unix_nanos: start_ns + 2_500_000,
            status_code: HarnessStatusCode::Ok,
            status_message: None,
            attributes: Map::new(),
            events: Vec::new(),
            resource: Map::new(),
            identity: Default::default(),
        }
    }

    #[test]
    fn a_tool_span_goes_between_the_calls_it_separates() {
        // 1970-01-01T00:00:01Z and ...:03Z; the tool starts at 2 s.
        let calls = [
            call("a", "1970-01-01T00:00:01Z"),
            call("b", "1970-01-01T00:00:03Z"),
        ];
        let spans = vec![
            span("execute_tool bash", 2_000_000_000),
            span("invoke_agent solver", 500_000_000),
        ];
        let steps = interleave("s", &calls, spans);
        let kinds: Vec<String> = steps
            .iter()
            .map(|s| match s {
                Step::Call { trace_id } => trace_id.clone(),
                Step::Tool(t) => t.name.clone(),
            })
            .collect();
        assert_eq!(kinds, ["a", "execute_tool bash", "b"]);
        let Step::Tool(tool) = &steps[1] else {
            panic!()
        };
        assert_eq!(tool.duration_ms, 2.5);
    }
}
