//! The calls shape: one Parquet row per call — its identity, model, status,
//! timing and usage, its token data exactly as recorded (the first choice's
//! completion ids and logprobs, `null` logprobs when none were returned),
//! its messages, tools and answer as JSON text (the chat form, for SFT), and
//! its feedback.

use super::feedback::FeedbackColumn;
use super::{Rows, signed, unix_micros};
use crate::record::TraceRecord;
use arrow_array::builder::{
    Float64Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::Value;
use std::sync::Arc;

/// Rows of the calls shape being filled.
#[derive(Debug)]
pub struct CallRows {
    trace_id: StringBuilder,
    run_id: StringBuilder,
    session_id: StringBuilder,
    harness: StringBuilder,
    step_id: Int64Builder,
    weight_version: Int64Builder,
    model: StringBuilder,
    status: StringBuilder,
    finish_reason: StringBuilder,
    started_at: TimestampMicrosecondBuilder,
    latency_ms: Float64Builder,
    input_tokens: Int64Builder,
    output_tokens: Int64Builder,
    cost_usd: Float64Builder,
    prompt_token_ids: ListBuilder<Int64Builder>,
    completion_token_ids: ListBuilder<Int64Builder>,
    logprobs: ListBuilder<Float64Builder>,
    messages: StringBuilder,
    tools: StringBuilder,
    response_message: StringBuilder,
    feedback: FeedbackColumn,
    rows: usize,
    bytes: usize,
}

/// The zone of `started_at`.
const UTC: &str = "UTC";

impl Default for CallRows {
    fn default() -> Self {
        CallRows {
            trace_id: StringBuilder::new(),
            run_id: StringBuilder::new(),
            session_id: StringBuilder::new(),
            harness: StringBuilder::new(),
            step_id: Int64Builder::new(),
            weight_version: Int64Builder::new(),
            model: StringBuilder::new(),
            status: StringBuilder::new(),
            finish_reason: StringBuilder::new(),
            started_at: TimestampMicrosecondBuilder::new().with_timezone(UTC),
            latency_ms: Float64Builder::new(),
            input_tokens: Int64Builder::new(),
            output_tokens: Int64Builder::new(),
            cost_usd: Float64Builder::new(),
            prompt_token_ids: ListBuilder::new(Int64Builder::new()),
            completion_token_ids: ListBuilder::new(Int64Builder::new()),
            logprobs: ListBuilder::new(Float64Builder::new()),
            messages: StringBuilder::new(),
            tools: StringBuilder::new(),
            response_message: StringBuilder::new(),
            feedback: FeedbackColumn::default(),
            rows: 0,
            bytes: 0,
        }
    }
}

impl Rows for CallRows {
    type Item = TraceRecord;

    fn schema() -> SchemaRef {
        let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
        let int = |name: &str| Field::new(name, DataType::Int64, true);
        let list = |name: &str, item: DataType, nullable: bool| {
            Field::new_list(name, Field::new_list_field(item, true), nullable)
        };
        let micros = DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()));
        Arc::new(Schema::new(vec![
            text("trace_id", false),
            text("run_id", true),
            text("session_id", true),
            text("harness", true),
            int("step_id"),
            int("weight_version"),
            text("model", true),
            text("status", false),
            text("finish_reason", true),
            Field::new("started_at", micros, true),
            Field::new("latency_ms", DataType::Float64, false),
            int("input_tokens"),
            int("output_tokens"),
            Field::new("cost_usd", DataType::Float64, true),
            list("prompt_token_ids", DataType::Int64, false),
            list("completion_token_ids", DataType::Int64, false),
            list("logprobs", DataType::Float64, true),
            text("messages", false),
            text("tools", false),
            text("response_message", false),
            FeedbackColumn::field("feedback"),
        ]))
    }

    fn push(&mut self, r: &TraceRecord) {
        let id = &r.identity;
        self.trace_id.append_value(&r.trace_id);
        self.run_id.append_option(id.run_id.as_deref());
        self.session_id.append_option(id.session_id.as_deref());
        self.harness.append_option(id.harness.as_deref());
        self.step_id.append_option(id.step_id);
        self.weight_version.append_option(id.weight_version);
        self.model.append_option(r.model.as_deref());
        self.status.append_value(r.status.as_str());
        self.finish_reason.append_option(r.finish_reason.as_deref());
        self.started_at.append_option(unix_micros(&r.started_at));
        self.latency_ms.append_value(r.latency_ms);
        self.input_tokens
            .append_option(r.usage.input_tokens.map(signed));
        self.output_tokens
            .append_option(r.usage.output_tokens.map(signed));
        self.cost_usd.append_option(r.cost_usd);
        self.prompt_token_ids.append_value(ids(&r.prompt_token_ids));
        self.completion_token_ids
            .append_value(ids(&r.completion_token_ids));
        let logprobs = r.logprobs.as_ref().map(|l| l.iter().copied().map(Some));
        self.logprobs.append_option(logprobs);
        let messages = Value::from(r.messages.clone()).to_string();
        let tools = Value::from(r.tools.clone()).to_string();
        let answer = Value::Object(r.response_message.clone()).to_string();
        self.bytes += messages.len() + tools.len() + answer.len();
        self.messages.append_value(messages);
        self.tools.append_value(tools);
        self.response_message.append_value(answer);
        self.feedback.push(&r.feedback);
        self.rows += 1;
        self.bytes += 200 + 8 * (r.prompt_token_ids.len() + 2 * r.completion_token_ids.len());
    }

    fn rows(&self) -> usize {
        self.rows
    }

    fn bytes(&self) -> usize {
        self.bytes
    }

    fn batch(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.run_id.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.harness.finish()),
            Arc::new(self.step_id.finish()),
            Arc::new(self.weight_version.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.finish_reason.finish()),
            Arc::new(self.started_at.finish()),
            Arc::new(self.latency_ms.finish()),
            Arc::new(self.input_tokens.finish()),
            Arc::new(self.output_tokens.finish()),
            Arc::new(self.cost_usd.finish()),
            Arc::new(self.prompt_token_ids.finish()),
            Arc::new(self.completion_token_ids.finish()),
            Arc::new(self.logprobs.finish()),
            Arc::new(self.messages.finish()),
            Arc::new(self.tools.finish()),
            Arc::new(self.response_message.finish()),
            self.feedback.finish()?,
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(Self::schema(), columns)
    }
}

/// Token ids as Parquet's `int64` items.
fn ids(ids: &[u32]) -> impl Iterator<Item = Option<i64>> + '_ {
    ids.iter().map(|t| Some(i64::from(*t)))
}
