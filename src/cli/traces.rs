//! `tracegate traces list` and `tracegate traces show`: the recorded calls.
//!
//! `list` answers "which calls?" from the indexed columns alone (no record is
//! decoded), newest first, filtered by run, session, model, harness, errors
//! and time. Its JSON objects are summaries that keep the record's field
//! names; the full record is what `show` and `export` are for.
//!
//! `show` answers "what happened in this call?" for a person: who made it,
//! where it went, how long it took, the conversation it sent, the tools it
//! offered, the answer (text, reasoning, tool calls) and usage, then the
//! error if any. `--raw` prints instead the raw exchange: the request
//! headers as received from the client, its body as forwarded, and the
//! response as the upstream sent it (an SSE stream as its text).

use super::output::{Align, Format, Table, ms, or_dash, print_listing, short_time};
use super::{DbArg, Failure, FilterArgs};
use crate::record::{HarnessSpan, TraceRecord};
use crate::store::TraceFilter;
use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// `tracegate traces ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum TracesCommand {
    /// List calls, newest first.
    List(ListArgs),
    /// Show one call, readable: identity, route, timing, messages, tool
    /// calls, the answer, usage and error.
    Show(ShowArgs),
}

/// Flags of `tracegate traces list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    db: DbArg,
    #[command(flatten)]
    filter: FilterArgs,
    /// At most this many calls (the newest).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Flags of `tracegate traces show`.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    db: DbArg,
    /// The trace id (as `traces list` prints it, or from the
    /// `X-RLLM-Trace-Id` response header).
    id: String,
    /// Print the raw request and response (headers and bodies) instead.
    #[arg(long)]
    raw: bool,
}

/// Runs a `tracegate traces` subcommand.
pub fn run(command: &TracesCommand) -> Result<(), Failure> {
    match command {
        TracesCommand::List(args) => list(args),
        TracesCommand::Show(args) => show(args),
    }
}

fn list(args: &ListArgs) -> Result<(), Failure> {
    let filter = TraceFilter {
        limit: args.limit,
        newest_first: true,
        ..args.filter.to_filter()
    };
    let traces = args.db.reader()?.summaries(&filter)?;
    print_listing(args.format, &traces, |traces| {
        let mut table = Table::new(&[
            ("STARTED", Align::Left),
            ("TRACE", Align::Left),
            ("SESSION", Align::Left),
            ("STEP", Align::Right),
            ("MODEL", Align::Left),
            ("STATUS", Align::Left),
            ("LATENCY MS", Align::Right),
            ("TTFT MS", Align::Right),
            ("IN", Align::Right),
            ("OUT", Align::Right),
            ("ERROR", Align::Left),
        ]);
        for t in traces {
            let status = match t.http_status {
                Some(code) => format!("{} {code}", t.status.as_str()),
                None => t.status.as_str().to_string(),
            };
            let model = match (&t.model, t.stream) {
                (Some(model), true) => format!("{model} (stream)"),
                (model, _) => or_dash(model.as_deref()),
            };
            table.row(vec![
                short_time(&t.started_at),
                t.trace_id.clone(),
                or_dash(t.session_id.as_deref()),
                or_dash(t.step_id),
                model,
                status,
                ms(t.latency_ms),
                or_dash(t.ttft_ms.map(ms)),
                or_dash(t.usage.input_tokens),
                or_dash(t.usage.output_tokens),
                or_dash(t.error.as_ref().map(|e| e.kind.as_str())),
            ]);
        }
        table
    })?;
    Ok(())
}

fn show(args: &ShowArgs) -> Result<(), Failure> {
    let reader = args.db.reader()?;
    let record = reader
        .trace(&args.id)?
        .ok_or_else(|| Failure::Runtime(format!("no trace {} in {}", args.id, args.db.db)))?;
    let enclosing = match &record.otel_parent_span_id {
        Some(span_id) => reader.harness_span(&record.otel_trace_id, span_id)?,
        None => None,
    };
    let text = if args.raw {
        render_raw(&record)
    } else {
        render(&record, enclosing.as_ref())
    };
    let mut out = super::output::Output::stdout();
    out.text(&text)?;
    out.finish()?;
    Ok(())
}

/// Appends `label value` lines, the label padded to one width; absent
/// values are skipped.
fn fields(out: &mut String, pairs: &[(&str, Option<String>)]) {
    for (label, value) in pairs {
        if let Some(value) = value {
            let _ = writeln!(out, "{label:<11}{value}");
        }
    }
}

/// Joins the present `label value` parts with ` · `; none if all absent.
fn joined(parts: &[(&str, Option<String>)]) -> Option<String> {
    let present: Vec<String> = parts
        .iter()
        .filter_map(|(label, value)| value.as_ref().map(|v| format!("{label} {v}")))
        .collect();
    (!present.is_empty()).then(|| present.join(" · "))
}

/// The record, readable: its summary (with the harness span it ran
/// under, if one is stored), the conversation it sent, and the answer.
fn render(t: &TraceRecord, enclosing: Option<&HarnessSpan>) -> String {
    let mut out = String::new();
    summary(&mut out, t);
    if let Some(span) = enclosing {
        let line = format!(
            "{} ({}, span {})",
            span.name,
            span.kind.as_str(),
            span.span_id
        );
        fields(&mut out, &[("within", Some(line))]);
    }
    conversation(&mut out, t);
    answer(&mut out, t);
    out
}

/// Who made the call, where it went, how it went: one labelled line each.
fn summary(out: &mut String, t: &TraceRecord) {
    let identity = joined(&[
        ("run", t.identity.run_id.clone()),
        ("session", t.identity.session_id.clone()),
        ("step", t.identity.step_id.map(|s| s.to_string())),
    ]);
    let context = joined(&[
        ("harness", t.identity.harness.clone()),
        ("project", t.identity.project.clone()),
        ("experiment", t.identity.experiment.clone()),
    ]);
    let span = format!("{} in OTel trace {}", t.span_id, t.otel_trace_id);
    let error = t
        .error
        .as_ref()
        .map(|e| format!("{}: {}", e.kind, e.message));
    fields(
        out,
        &[
            ("trace", Some(t.trace_id.clone())),
            ("identity", identity),
            ("context", context),
            ("parent", t.identity.parent_span_id.clone()),
            ("span", Some(span)),
            ("call", Some(call_line(t))),
            ("model", Some(model_line(t))),
            ("time", Some(time_line(t))),
            ("status", Some(status_line(t))),
            ("usage", usage_line(t)),
            ("error", error),
        ],
    );
    for problem in &t.identity_errors {
        let _ = writeln!(out, "{:<11}{problem}", "identity?");
    }
}

/// `METHOD path → upstream · protocol operation · route r`.
fn call_line(t: &TraceRecord) -> String {
    let route = t
        .route
        .as_deref()
        .map(|r| format!(" · route {r}"))
        .unwrap_or_default();
    format!(
        "{} {} → {} · {} {}{route}",
        t.method, t.path, t.upstream, t.protocol, t.operation
    )
}

/// The model asked for, the one that answered when another, and whether
/// the answer streamed.
fn model_line(t: &TraceRecord) -> String {
    let answered_by = t
        .response_model
        .as_deref()
        .filter(|m| Some(*m) != t.model.as_deref())
        .map(|m| format!(" (answered by {m})"))
        .unwrap_or_default();
    let streamed = if t.stream { " · streamed" } else { "" };
    format!(
        "{}{answered_by}{streamed}",
        t.model.as_deref().unwrap_or("-")
    )
}

/// Start → end, latency and time to first token (of a streamed call).
fn time_line(t: &TraceRecord) -> String {
    let ttft = t
        .ttft_ms
        .filter(|_| t.stream)
        .map(|v| format!(" · ttft {} ms", ms(v)))
        .unwrap_or_default();
    format!(
        "{} → {} · latency {} ms{ttft}",
        t.started_at,
        t.ended_at,
        ms(t.latency_ms)
    )
}

/// The status, and the HTTP status when there was one.
fn status_line(t: &TraceRecord) -> String {
    let http = t
        .http_status
        .map(|s| format!(" · HTTP {s}"))
        .unwrap_or_default();
    format!("{}{http}", t.status.as_str())
}

/// The token counts present; none if there are none.
fn usage_line(t: &TraceRecord) -> Option<String> {
    let u = &t.usage;
    let count = |n: Option<u64>| n.map(|n| n.to_string());
    joined(&[
        ("input", count(u.input_tokens)),
        ("output", count(u.output_tokens)),
        ("total", count(u.total_tokens)),
        ("cached input", count(u.cached_input_tokens)),
        ("reasoning", count(u.reasoning_tokens)),
    ])
}

/// The messages sent, the tools offered and the request's parameters.
fn conversation(out: &mut String, t: &TraceRecord) {
    let _ = writeln!(out, "\nmessages ({})", t.messages.len());
    for message in &t.messages {
        if let Some(message) = message.as_object() {
            message_lines(out, message);
        }
    }
    if !t.tools.is_empty() {
        let names: Vec<&str> = t
            .tools
            .iter()
            .map(|tool| {
                tool.pointer("/function/name")
                    .or_else(|| tool.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            })
            .collect();
        let _ = writeln!(out, "\ntools offered: {}", names.join(", "));
    }
    if !t.request_params.is_empty() {
        let _ = writeln!(
            out,
            "parameters: {}",
            Value::Object(t.request_params.clone())
        );
    }
}

/// Each choice of the answer, with its finish reason.
fn answer(out: &mut String, t: &TraceRecord) {
    let _ = writeln!(out, "\nanswer");
    if t.choices.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for choice in &t.choices {
        let finish = choice.finish_reason.as_deref().unwrap_or("-");
        if t.choices.len() > 1 {
            let _ = writeln!(out, "  choice {} (finish: {finish})", choice.index);
        } else {
            let _ = writeln!(out, "  finish: {finish}");
        }
        message_lines(out, &choice.message);
    }
}

/// A message: its role (and tool call id), then its reasoning, content,
/// refusal and tool calls, indented.
fn message_lines(out: &mut String, message: &Map<String, Value>) {
    let text = |key: &str| message.get(key).and_then(Value::as_str);
    let mut head = format!("  [{}]", text("role").unwrap_or("?"));
    if let Some(name) = text("name") {
        let _ = write!(head, " {name}");
    }
    if let Some(id) = text("tool_call_id") {
        let _ = write!(head, " (result of {id})");
    }
    let _ = writeln!(out, "{head}");
    for (label, key) in [
        ("reasoning: ", "reasoning_content"),
        ("refusal: ", "refusal"),
    ] {
        if let Some(value) = text(key) {
            indented(out, &format!("{label}{value}"));
        }
    }
    if let Some(content) = message.get("content") {
        let content = content_text(content);
        if !content.is_empty() {
            indented(out, &content);
        }
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let function = call.get("function");
        let field = |key: &str| {
            function
                .and_then(|f| f.get(key))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let id = call.get("id").and_then(Value::as_str).unwrap_or("-");
        indented(
            out,
            &format!(
                "tool call {}({}) id {id}",
                field("name"),
                field("arguments")
            ),
        );
    }
}

/// A message content as text: a string as is; a list of parts with its text
/// parts as they are and other parts as `[type]`; anything else as JSON.
fn content_text(content: &Value) -> String {
    match content {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("text").and_then(Value::as_str) {
                Some(text) => text.to_string(),
                None => format!(
                    "[{}]",
                    part.get("type").and_then(Value::as_str).unwrap_or("part")
                ),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

fn indented(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "      {line}");
    }
}

/// The raw exchange: request headers as received, body as forwarded, the
/// response as sent.
fn render_raw(t: &TraceRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "request: {} {} → {}", t.method, t.path, t.upstream);
    headers(&mut out, &t.request_headers);
    let _ = writeln!(out, "\n{}", body_text(t.raw_request.as_ref()));
    let _ = writeln!(
        out,
        "\nresponse: {}",
        t.http_status
            .map_or_else(|| "no HTTP status".to_string(), |s| format!("HTTP {s}"))
    );
    headers(&mut out, &t.response_headers);
    let _ = writeln!(out, "\n{}", body_text(t.raw_response.as_ref()));
    out
}

fn headers(out: &mut String, headers: &Map<String, Value>) {
    for (name, value) in headers {
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string);
        let _ = writeln!(out, "{name}: {value}");
    }
}

/// A stored body: JSON pretty-printed; a non-JSON body (stored as
/// `{content_type, encoding, body}`) as its text.
fn body_text(body: Option<&Value>) -> String {
    let Some(body) = body else {
        return "(no body)".to_string();
    };
    if let Some(wrapper) = body
        .as_object()
        .filter(|o| o.len() == 3 && o.contains_key("content_type") && o.contains_key("encoding"))
        && let Some(text) = wrapper.get("body").and_then(Value::as_str)
    {
        return match wrapper.get("encoding").and_then(Value::as_str) {
            Some("utf8") => text.to_string(),
            _ => format!("(binary, base64) {text}"),
        };
    }
    serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string())
}
