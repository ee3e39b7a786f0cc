//! The trajectory shape: one Parquet row per segment of a session's
//! trajectory — one aligned sample (`tokens`, `loss_mask`, `logprobs`, of
//! equal lengths) — with what a trainer joins to it: the calls it holds
//! (ids, steps, weight versions, finish reasons, in order), the feedback of
//! the session and of those calls, and its steps.
//!
//! A row's `steps` are the session's steps from its first call up to the
//! next segment's first call (the first row also takes those before its
//! first call): so the tool executions after a call, and the calls in no
//! segment, travel with the sample they follow. A session with no token
//! data has no segment, hence no row.

use super::Rows;
use super::feedback::FeedbackColumn;
use crate::trajectory::steps::{Step, ToolStep};
use crate::trajectory::{Trajectory, TrajectoryCall};
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, OffsetBufferBuilder, StringBuilder,
    UInt8Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef};
use serde_json::Value;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// A list field whose items are `item` (nullable or not).
fn list(name: &str, item: DataType, nullable_items: bool) -> Field {
    Field::new_list(name, Field::new_list_field(item, nullable_items), false)
}

/// Rows of the trajectory shape being filled.
#[derive(Debug)]
pub struct SegmentRows {
    run_id: StringBuilder,
    session_id: StringBuilder,
    segment: UInt32Builder,
    segment_count: UInt32Builder,
    start: StringBuilder,
    diverged_at: UInt64Builder,
    trace_ids: ListBuilder<StringBuilder>,
    step_ids: ListBuilder<Int64Builder>,
    weight_versions: ListBuilder<Int64Builder>,
    finish_reasons: ListBuilder<StringBuilder>,
    tokens: ListBuilder<Int64Builder>,
    loss_mask: ListBuilder<UInt8Builder>,
    logprobs: ListBuilder<Float64Builder>,
    has_logprobs: BooleanBuilder,
    feedback: FeedbackColumn,
    steps: StepColumn,
    rows: usize,
    bytes: usize,
}

impl Default for SegmentRows {
    fn default() -> Self {
        SegmentRows {
            run_id: StringBuilder::new(),
            session_id: StringBuilder::new(),
            segment: UInt32Builder::new(),
            segment_count: UInt32Builder::new(),
            start: StringBuilder::new(),
            diverged_at: UInt64Builder::new(),
            trace_ids: ListBuilder::new(StringBuilder::new()),
            step_ids: ListBuilder::new(Int64Builder::new()),
            weight_versions: ListBuilder::new(Int64Builder::new()),
            finish_reasons: ListBuilder::new(StringBuilder::new()),
            tokens: ListBuilder::new(Int64Builder::new()),
            loss_mask: ListBuilder::new(UInt8Builder::new()),
            logprobs: ListBuilder::new(Float64Builder::new()),
            has_logprobs: BooleanBuilder::new(),
            feedback: FeedbackColumn::default(),
            steps: StepColumn::default(),
            rows: 0,
            bytes: 0,
        }
    }
}

impl Rows for SegmentRows {
    type Item = Trajectory;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("run_id", DataType::Utf8, true),
            Field::new("session_id", DataType::Utf8, false),
            Field::new("segment", DataType::UInt32, false),
            Field::new("segment_count", DataType::UInt32, false),
            Field::new("start", DataType::Utf8, false),
            Field::new("diverged_at", DataType::UInt64, true),
            list("trace_ids", DataType::Utf8, true),
            list("step_ids", DataType::Int64, true),
            list("weight_versions", DataType::Int64, true),
            list("finish_reasons", DataType::Utf8, true),
            list("tokens", DataType::Int64, true),
            list("loss_mask", DataType::UInt8, true),
            list("logprobs", DataType::Float64, true),
            Field::new("has_logprobs", DataType::Boolean, false),
            FeedbackColumn::field("feedback"),
            StepColumn::field("steps"),
        ]))
    }

    fn push(&mut self, t: &Trajectory) {
        let calls: HashMap<&str, &TrajectoryCall> =
            t.calls.iter().map(|c| (c.trace_id.as_str(), c)).collect();
        let count = u32::try_from(t.segments.len()).unwrap_or(u32::MAX);
        for (index, (segment, steps)) in t.segments.iter().zip(step_ranges(t)).enumerate() {
            let held: Vec<&TrajectoryCall> = segment
                .trace_ids
                .iter()
                .filter_map(|id| calls.get(id.as_str()).copied())
                .collect();
            self.run_id.append_option(t.run_id.as_deref());
            self.session_id.append_value(&t.session_id);
            self.segment
                .append_value(u32::try_from(index).unwrap_or(u32::MAX));
            self.segment_count.append_value(count);
            self.start.append_option(segment.start.map(|s| s.as_str()));
            self.diverged_at
                .append_option(segment.diverged_at.map(|d| d as u64));
            let ids = segment.trace_ids.iter().map(Some);
            self.trace_ids.append_value(ids);
            self.step_ids.append_value(held.iter().map(|c| c.step_id));
            self.weight_versions
                .append_value(held.iter().map(|c| c.weight_version));
            let reasons = held.iter().map(|c| c.finish_reason.as_deref());
            self.finish_reasons.append_value(reasons);
            let tokens = segment.tokens.iter().map(|t| Some(i64::from(*t)));
            self.tokens.append_value(tokens);
            self.loss_mask
                .append_value(segment.loss_mask.iter().copied().map(Some));
            self.logprobs
                .append_value(segment.logprobs.iter().copied().map(Some));
            self.has_logprobs.append_value(segment.has_logprobs);
            let of_calls = held.iter().flat_map(|c| &c.feedback);
            self.feedback.push(t.feedback.iter().chain(of_calls));
            self.steps.push(&t.steps[steps]);
            self.rows += 1;
            self.bytes += 17 * segment.tokens.len() + 64 * held.len();
        }
    }

    fn rows(&self) -> usize {
        self.rows
    }

    fn bytes(&self) -> usize {
        self.bytes
    }

    fn batch(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.run_id.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.segment.finish()),
            Arc::new(self.segment_count.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.diverged_at.finish()),
            Arc::new(self.trace_ids.finish()),
            Arc::new(self.step_ids.finish()),
            Arc::new(self.weight_versions.finish()),
            Arc::new(self.finish_reasons.finish()),
            Arc::new(self.tokens.finish()),
            Arc::new(self.loss_mask.finish()),
            Arc::new(self.logprobs.finish()),
            Arc::new(self.has_logprobs.finish()),
            self.feedback.finish()?,
            self.steps.finish()?,
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(Self::schema(), columns)
    }
}

/// For each segment, the range of `t.steps` it covers: from its first call
/// to the next segment's first call; the first segment from the start.
fn step_ranges(t: &Trajectory) -> Vec<Range<usize>> {
    let mut starts = Vec::with_capacity(t.segments.len());
    let mut from = 0;
    for (i, segment) in t.segments.iter().enumerate() {
        if i > 0
            && let Some(first) = segment.trace_ids.first()
        {
            let found = t.steps[from..]
                .iter()
                .position(|s| matches!(s, Step::Call { trace_id } if trace_id == first));
            from += found.unwrap_or(0);
        }
        starts.push(from);
    }
    let ends = starts.iter().skip(1).copied().chain([t.steps.len()]);
    starts.iter().zip(ends).map(|(s, e)| *s..e).collect()
}

/// The `steps` column: a list of structs, a call (its `trace_id`) or a tool
/// execution (its span's name, tool, duration, status and chosen
/// attributes as JSON).
#[derive(Debug)]
struct StepColumn {
    kind: StringBuilder,
    trace_id: StringBuilder,
    name: StringBuilder,
    tool_name: StringBuilder,
    tool_call_id: StringBuilder,
    span_id: StringBuilder,
    start: StringBuilder,
    duration_ms: Float64Builder,
    status: StringBuilder,
    attributes: StringBuilder,
    lengths: OffsetBufferBuilder<i32>,
}

impl Default for StepColumn {
    fn default() -> Self {
        StepColumn {
            kind: StringBuilder::new(),
            trace_id: StringBuilder::new(),
            name: StringBuilder::new(),
            tool_name: StringBuilder::new(),
            tool_call_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            start: StringBuilder::new(),
            duration_ms: Float64Builder::new(),
            status: StringBuilder::new(),
            attributes: StringBuilder::new(),
            lengths: OffsetBufferBuilder::new(0),
        }
    }
}

impl StepColumn {
    fn fields() -> Fields {
        let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
        Fields::from(vec![
            text("kind", false),
            text("trace_id", true),
            text("name", true),
            text("tool_name", true),
            text("tool_call_id", true),
            text("span_id", true),
            text("start", true),
            Field::new("duration_ms", DataType::Float64, true),
            text("status", true),
            text("attributes", true),
        ])
    }

    fn item() -> Field {
        Field::new_list_field(DataType::Struct(Self::fields()), false)
    }

    fn field(name: &str) -> Field {
        Field::new_list(name, Self::item(), false)
    }

    fn push(&mut self, steps: &[Step]) {
        for step in steps {
            match step {
                Step::Call { trace_id } => {
                    self.kind.append_value("call");
                    self.trace_id.append_value(trace_id);
                    self.tool(None);
                }
                Step::Tool(tool) => {
                    self.kind.append_value("tool");
                    self.trace_id.append_null();
                    self.tool(Some(tool));
                }
            }
        }
        self.lengths.push_length(steps.len());
    }

    /// The tool fields of a step (nulls for a call).
    fn tool(&mut self, tool: Option<&ToolStep>) {
        self.name.append_option(tool.map(|t| &t.name));
        self.tool_name
            .append_option(tool.and_then(|t| t.tool_name.as_ref()));
        self.tool_call_id
            .append_option(tool.and_then(|t| t.tool_call_id.as_ref()));
        self.span_id.append_option(tool.map(|t| &t.span_id));
        self.start.append_option(tool.map(|t| &t.start));
        self.duration_ms.append_option(tool.map(|t| t.duration_ms));
        self.status.append_option(tool.map(|t| t.status.as_str()));
        let attributes = tool.map(|t| Value::Object(t.attributes.clone()).to_string());
        self.attributes.append_option(attributes);
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.kind.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.tool_name.finish()),
            Arc::new(self.tool_call_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.duration_ms.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.attributes.finish()),
        ];
        let items = StructArray::try_new(Self::fields(), children, None)?;
        let offsets = std::mem::replace(&mut self.lengths, OffsetBufferBuilder::new(0)).finish();
        let list = ListArray::try_new(Arc::new(Self::item()), offsets, Arc::new(items), None)?;
        Ok(Arc::new(list))
    }
}
