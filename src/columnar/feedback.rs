//! The `feedback` column both shapes share: a list of structs, one per
//! feedback item, in the GenAI evaluation form the span export uses too — a
//! number (or a boolean as 1.0 / 0.0) in `value`, a string (or a boolean as
//! `true` / `false`) in `label` — so a reward reads as a float column
//! whatever type the harness posted.

use crate::feedback::Feedback;
use arrow_array::builder::{Float64Builder, OffsetBufferBuilder, StringBuilder};
use arrow_array::{ArrayRef, ListArray, StructArray};
use arrow_schema::{ArrowError, DataType, Field, Fields};
use std::sync::Arc;

/// A `list<struct<...>>` column of feedback being filled.
#[derive(Debug)]
pub(super) struct FeedbackColumn {
    target_kind: StringBuilder,
    target_id: StringBuilder,
    name: StringBuilder,
    value: Float64Builder,
    label: StringBuilder,
    comment: StringBuilder,
    lengths: OffsetBufferBuilder<i32>,
}

impl Default for FeedbackColumn {
    fn default() -> Self {
        FeedbackColumn {
            target_kind: StringBuilder::new(),
            target_id: StringBuilder::new(),
            name: StringBuilder::new(),
            value: Float64Builder::new(),
            label: StringBuilder::new(),
            comment: StringBuilder::new(),
            lengths: OffsetBufferBuilder::new(0),
        }
    }
}

/// The struct's fields.
fn fields() -> Fields {
    Fields::from(vec![
        Field::new("target_kind", DataType::Utf8, false),
        Field::new("target_id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("label", DataType::Utf8, true),
        Field::new("comment", DataType::Utf8, true),
    ])
}

/// The list's item field.
fn item() -> Field {
    Field::new_list_field(DataType::Struct(fields()), false)
}

impl FeedbackColumn {
    /// The column's field in a schema.
    pub fn field(name: &str) -> Field {
        Field::new_list(name, item(), false)
    }

    /// Adds one row: the items of `feedback`.
    pub fn push<'a>(&mut self, feedback: impl IntoIterator<Item = &'a Feedback>) {
        let mut count = 0;
        for f in feedback {
            self.target_kind.append_value(f.target_kind.as_str());
            self.target_id.append_value(&f.target_id);
            self.name.append_value(&f.name);
            self.value.append_option(f.value.as_number());
            self.label.append_option(f.value.as_label());
            self.comment.append_option(f.comment.as_deref());
            count += 1;
        }
        self.lengths.push_length(count);
    }

    /// The rows added so far as an array; the column is empty after.
    pub fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.target_kind.finish()),
            Arc::new(self.target_id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.label.finish()),
            Arc::new(self.comment.finish()),
        ];
        let items = StructArray::try_new(fields(), children, None)?;
        let offsets = std::mem::replace(&mut self.lengths, OffsetBufferBuilder::new(0)).finish();
        let list = ListArray::try_new(Arc::new(item()), offsets, Arc::new(items), None)?;
        Ok(Arc::new(list))
    }
}
