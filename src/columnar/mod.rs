//! Training data as Parquet: `tracegate export --format parquet`.
//!
//! Trainers read columns, not JSON: a Parquet file of token ids, loss masks
//! and logprobs loads into pyarrow, pandas, polars, Hugging Face `datasets`
//! or Spark without a parser, and typed: ids are `int64` (what PyTorch
//! indexes with), masks `uint8`, logprobs `float64` — the very numbers the
//! clients received, since JSON numbers are read as doubles, so nothing is
//! rounded on the way.
//!
//! Two shapes ([`Shape`]), each a [`Rows`] buffer of Arrow column builders:
//!
//! * [`segments::SegmentRows`] (`--shape trajectory`, the default): one row
//!   per segment of each session's trajectory (`schema/trajectory.md`) — one
//!   training sample each — with its calls' ids, versions and finish
//!   reasons, the session's and its calls' feedback, and the steps (calls
//!   and tool executions) it covers;
//! * [`calls::CallRows`] (`--shape calls`): one row per call, its token data,
//!   identity, usage, timing, messages and feedback.
//!
//! A store can hold millions of calls, so the file is streamed: items are
//! pushed one at a time, every [`BATCH_ROWS`] rows (or [`BATCH_BYTES`] of
//! buffered values, whichever first) the buffer becomes one Arrow record
//! batch handed to the Parquet writer, and a row group is closed every
//! [`ROW_GROUP_BYTES`] of values or [`ROW_GROUP_ROWS`] rows. Memory is then bounded by a
//! batch and a row group, not by the export. Columns are zstd-compressed
//! (zstd is already the store's codec; level 1, fast).

pub mod calls;
mod feedback;
pub mod segments;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use std::io::Write;
use std::time::UNIX_EPOCH;

/// Rows buffered before they are written as one record batch.
pub const BATCH_ROWS: usize = 1024;
/// Buffered values (approximate bytes) before a batch is written anyway:
/// long episodes make large rows.
pub const BATCH_BYTES: usize = 1 << 20;
/// Values (approximate bytes, before encoding) after which a row group is
/// closed. The writer keeps a row group's pages in memory until then, in
/// buffers sized for the values rather than for their compressed bytes, so
/// a limit on encoded bytes alone let a 100 000-call export grow.
pub const ROW_GROUP_BYTES: usize = 8 << 20;
/// Rows after which one is closed anyway (readers split work by row group).
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

crate::wire_enum! {
    /// What one row of a Parquet export is.
    pub enum Shape {
        /// A segment of a session's trajectory.
        Trajectory = "trajectory",
        /// A call.
        Calls = "calls",
    }
}

/// A buffer of rows of one shape, as Arrow column builders.
pub trait Rows: Default {
    /// What a row is made from.
    type Item;
    /// The file's schema.
    fn schema() -> SchemaRef;
    /// Adds the rows of `item` (a trajectory may make none, or several).
    fn push(&mut self, item: &Self::Item);
    /// Rows buffered.
    fn rows(&self) -> usize;
    /// Approximate bytes of the values buffered.
    fn bytes(&self) -> usize;
    /// The buffered rows as a record batch; the buffer is empty after.
    fn batch(&mut self) -> Result<RecordBatch, ArrowError>;
}

/// A Parquet file being written from items of one shape.
pub struct ParquetSink<W: Write + Send, R: Rows> {
    writer: ArrowWriter<W>,
    rows: R,
    written: u64,
    /// Bytes of values written since the last row group was closed.
    in_row_group: usize,
}

impl<W: Write + Send, R: Rows> ParquetSink<W, R> {
    /// A file written to `out` (which needs no seeking: a pipe will do).
    pub fn new(out: W) -> Result<Self, ParquetError> {
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        Ok(ParquetSink {
            writer: ArrowWriter::try_new(out, R::schema(), Some(properties))?,
            rows: R::default(),
            written: 0,
            in_row_group: 0,
        })
    }

    /// Adds an item's rows, writing a batch when the buffer is full.
    pub fn push(&mut self, item: &R::Item) -> Result<(), ParquetError> {
        self.rows.push(item);
        if self.rows.rows() >= BATCH_ROWS || self.rows.bytes() >= BATCH_BYTES {
            self.write_batch()?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<(), ParquetError> {
        if self.rows.rows() == 0 {
            return Ok(());
        }
        self.in_row_group += self.rows.bytes();
        let batch = self.rows.batch()?;
        self.written += batch.num_rows() as u64;
        self.writer.write(&batch)?;
        if self.in_row_group >= ROW_GROUP_BYTES {
            self.writer.flush()?;
            self.in_row_group = 0;
        }
        Ok(())
    }

    /// Writes what is buffered and the file's footer; returns the rows
    /// written and the output.
    pub fn finish(mut self) -> Result<(u64, W), ParquetError> {
        self.write_batch()?;
        let out = self.writer.into_inner()?;
        Ok((self.written, out))
    }
}

/// Microseconds since the epoch of an RFC 3339 time (`None` if it does not
/// read as one).
fn unix_micros(rfc3339: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    let micros = t.duration_since(UNIX_EPOCH).ok()?.as_micros();
    i64::try_from(micros).ok()
}

/// A count of tokens as Parquet's signed integers.
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
