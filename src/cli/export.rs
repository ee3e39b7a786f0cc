//! `tracegate export`: traces as JSON Lines or Parquet, to a file or to
//! standard output, in one of five forms (`--format`):
//!
//! * `jsonl` (the default, also spelled `traces`): one TraceRecord a line, exactly what
//!   `GET /traces/{id}` answers — rLLM's field names, token ids and logprobs
//!   as arrays, raw request and response decompressed, feedback joined — so
//!   a training pipeline can read an export and the API interchangeably;
//! * `json`: the same records as one JSON array;
//! * `trajectory`: one session a line, as `GET /sessions/{sid}/trajectory`
//!   answers (`schema/trajectory.md`): token sequences with loss masks, for
//!   RL trainers;
//! * `chat`: one call a line as `{"messages": [...], "tools": [...]}` — its
//!   messages and its answer — the form SFT and eval pipelines read; with
//!   `--shape sessions`, one session a line, its last successful call's
//!   conversation (a multi-turn session once, not each growing prefix);
//! * `parquet`: a Parquet file (`crate::columnar`), of a row per trajectory
//!   segment (`--shape trajectory`, the default) or per call (`--shape
//!   calls`). Parquet needs no seeking, so it goes to a pipe as well as to
//!   a file, under the same rule as the other forms.
//!
//! Without `--out` the export goes to standard output when that is piped
//! (`tracegate export | jq`, `> file`), as other tools' data commands do;
//! at a terminal it asks for `--out` rather than flood the screen. `--out -`
//! is standard output always. `--limit N` stops after N lines (records,
//! sessions or calls), in the export's order (oldest first).
//!
//! `--where 'reward>0'` keeps what has feedback satisfying it: a session (by
//! its own feedback or its calls'), a call (by its own or its session's).
//!
//! Stores reach tens of gigabytes, so the export streams: one row is read,
//! decoded, written and dropped before the next (the store's
//! `Reader::for_each_trace`; a trajectory is one session's calls), and
//! memory stays flat whatever the size (Parquet buffers one record batch
//! and one row group).
//! Counting and reading happen in one snapshot, so the count behind the
//! progress bar and the lines written describe the same state even while a
//! gateway keeps writing.
//!
//! The progress bar (indicatif) is drawn on stderr only when stderr is a
//! terminal and the export goes to a file: a pipe, a log file or a CI job
//! gets no escape codes, and standard output never mixes a bar into the
//! data.

use super::feedback_filter::{self, FeedbackFilter};
use super::output::Output;
use super::{DbArg, Failure, FilterArgs};
use crate::columnar::calls::CallRows;
use crate::columnar::segments::SegmentRows;
use crate::columnar::{ParquetSink, Rows, Shape};
use crate::feedback::{Feedback, TargetKind};
use crate::record::{Status, TraceRecord};
use crate::store::feedback::FeedbackScope;
use crate::store::{Reader, TraceFilter};
use crate::trajectory::{self, Trajectory};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// Flags of `tracegate export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    db: DbArg,
    #[command(flatten)]
    filter: FilterArgs,
    /// The file to write (replaced if it exists); `-` for standard output,
    /// which is also where the export goes without `--out` when it is piped.
    #[arg(long, visible_alias = "output", value_name = "FILE")]
    out: Option<PathBuf>,
    /// At most this many lines (records, sessions or calls; the first,
    /// oldest first); for Parquet, sessions (`--shape trajectory`) or calls.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// What is written: TraceRecords (a line each, or one JSON array), a
    /// session's trajectory a line, a call a line in the chat fine-tuning
    /// form, or a Parquet file (see --shape).
    #[arg(long, value_enum, default_value_t)]
    format: ExportFormat,
    /// What a row or line is. With --format parquet: `trajectory` (a
    /// segment of a session's trajectory, the default) or `calls` (a call).
    /// With --format chat: `calls` (a call, the default) or `sessions` (a
    /// session's conversation).
    #[arg(long, value_enum, value_name = "SHAPE")]
    shape: Option<ExportShape>,
    /// Only what has feedback satisfying NAME OP VALUE (operators > >= < <=
    /// = !=), e.g. 'reward>0'.
    #[arg(long = "where", value_name = "CONDITION", value_parser = feedback_filter::parse)]
    where_: Option<FeedbackFilter>,
}

/// What one row or line is, for the forms that offer a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportShape {
    /// A segment of a session's trajectory (Parquet).
    Trajectory,
    /// A call (Parquet, chat).
    Calls,
    /// A session's conversation (chat).
    Sessions,
}

/// The form of an export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One TraceRecord a line (JSON Lines).
    #[default]
    #[value(alias = "traces")]
    Jsonl,
    /// One JSON array of TraceRecords.
    Json,
    /// One session a line (schema/trajectory.md).
    Trajectory,
    /// One call (or, with --shape sessions, one session) a line:
    /// {"messages": [...], "tools": [...]}.
    Chat,
    /// A Parquet file: a row per trajectory segment, or per call.
    Parquet,
}

impl ExportArgs {
    /// What one line, array item or Parquet item of this export is.
    fn unit(&self) -> &'static str {
        match (self.format, self.shape) {
            (ExportFormat::Jsonl | ExportFormat::Json, _) => "traces",
            (ExportFormat::Trajectory, _) => "sessions",
            (ExportFormat::Parquet, _) if self.parquet_shape() == Shape::Trajectory => "sessions",
            (ExportFormat::Chat, Some(ExportShape::Sessions)) => "sessions",
            (ExportFormat::Chat | ExportFormat::Parquet, _) => "calls",
        }
    }

    /// A Parquet export's rows.
    fn parquet_shape(&self) -> Shape {
        match self.shape {
            Some(ExportShape::Calls) => Shape::Calls,
            _ => Shape::Trajectory,
        }
    }

    /// Why `--shape` does not fit `--format`, if it does not.
    fn misfit(&self) -> Option<&'static str> {
        use ExportShape::{Calls, Sessions, Trajectory};
        match (self.format, self.shape?) {
            (ExportFormat::Parquet, Trajectory | Calls)
            | (ExportFormat::Chat, Calls | Sessions) => None,
            (ExportFormat::Parquet, Sessions) => {
                Some("--format parquet takes --shape trajectory or calls")
            }
            (ExportFormat::Chat, Trajectory) => {
                Some("--format chat takes --shape calls or sessions")
            }
            _ => Some(
                "--shape is for --format parquet or chat (the other forms have one shape each)",
            ),
        }
    }
}

/// Runs `tracegate export`.
pub fn export(args: &ExportArgs) -> Result<(), Failure> {
    if let Some(misfit) = args.misfit() {
        return Err(Failure::Usage(misfit.into()));
    }
    let file = destination(args.out.as_deref())?;
    let reader = args.db.reader()?;
    let show = file.is_some() && std::io::stderr().is_terminal();
    let written = if args.format == ExportFormat::Parquet {
        reader.snapshot(|reader| write_parquet(reader, args, file, show))?
    } else {
        let mut out = match file {
            None => Output::stdout(),
            Some(path) => Output::create(path)?,
        };
        let written = reader.snapshot(|reader| write_lines(reader, args, &mut out, show))?;
        out.finish()?;
        written
    };
    if let Some(path) = file {
        let mut summary = Output::stdout();
        summary.text(&format!(
            "exported {written} {} to {}\n",
            args.unit(),
            path.display()
        ))?;
        summary.finish()?;
    }
    Ok(())
}

/// The file to write, or none for standard output: `--out -`, or no `--out`
/// while standard output is piped. At a terminal `--out` is needed.
fn destination(out: Option<&Path>) -> Result<Option<&Path>, Failure> {
    match out {
        Some(path) if path.as_os_str() == "-" => Ok(None),
        Some(path) => Ok(Some(path)),
        None if std::io::stdout().is_terminal() => Err(Failure::Usage(
            "standard output is a terminal: pass --out FILE, or --out - to print the records here"
                .into(),
        )),
        None => Ok(None),
    }
}

/// Whether an export that has written `written` items goes on.
fn below_limit(args: &ExportArgs, written: u64) -> bool {
    args.limit.is_none_or(|limit| written < limit)
}

/// Writes every matching trace as JSON (a line each, an array, or the chat
/// form), or every session's trajectory a line; returns how many were
/// written.
fn write_lines(
    reader: &Reader,
    args: &ExportArgs,
    out: &mut Output,
    show: bool,
) -> Result<u64, Failure> {
    if args.format == ExportFormat::Trajectory {
        return each_trajectory(reader, args, show, |t| {
            out.json_line(t)?;
            Ok(!out.is_closed())
        });
    }
    if args.shape == Some(ExportShape::Sessions) {
        return each_session_chat(reader, args, show, |chat| {
            out.json_line(&chat)?;
            Ok(!out.is_closed())
        });
    }
    let array = args.format == ExportFormat::Json;
    if array {
        out.text("[")?;
    }
    let mut first = true;
    let written = each_record(reader, args, show, |record| {
        match args.format {
            ExportFormat::Chat => out.json_line(&chat(record))?,
            ExportFormat::Json => {
                out.text(if first { "\n" } else { ",\n" })?;
                out.json(&record)?;
            }
            _ => out.json_line(&record)?,
        }
        first = false;
        Ok(!out.is_closed())
    })?;
    if array {
        out.text(if written == 0 { "]\n" } else { "\n]\n" })?;
    }
    Ok(written)
}

/// Writes a Parquet file of the matching sessions' trajectory segments or
/// of the matching calls; returns how many sessions or calls it holds.
fn write_parquet(
    reader: &Reader,
    args: &ExportArgs,
    file: Option<&Path>,
    show: bool,
) -> Result<u64, Failure> {
    let (name, out): (String, Box<dyn Write + Send>) = match file {
        None => ("standard output".into(), Box::new(std::io::stdout())),
        Some(path) => {
            let created = std::fs::File::create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            (path.display().to_string(), Box::new(created))
        }
    };
    let failed = |e: parquet::errors::ParquetError| format!("cannot write {name}: {e}");
    let out = std::io::BufWriter::with_capacity(1 << 20, out);
    let written = match args.parquet_shape() {
        Shape::Trajectory => {
            let mut sink = ParquetSink::<_, SegmentRows>::new(out).map_err(failed)?;
            let written = each_trajectory(reader, args, show, |t| {
                sink.push(t).map_err(failed)?;
                Ok(true)
            })?;
            flush(sink, &name)?;
            written
        }
        Shape::Calls => {
            let mut sink = ParquetSink::<_, CallRows>::new(out).map_err(failed)?;
            let written = each_record(reader, args, show, |record| {
                sink.push(&record).map_err(failed)?;
                Ok(true)
            })?;
            flush(sink, &name)?;
            written
        }
    };
    Ok(written)
}

/// Writes the rest of a Parquet file and its footer, and flushes it.
fn flush<W: Write + Send, R: Rows>(sink: ParquetSink<W, R>, name: &str) -> Result<(), Failure> {
    let (_, mut out) = sink
        .finish()
        .map_err(|e| format!("cannot write {name}: {e}"))?;
    out.flush()
        .map_err(|e| Failure::Runtime(format!("cannot write {name}: {e}")))
}

/// Calls `emit` with every matching trace (and `--where`), oldest first,
/// until the limit or until `emit` says stop (`false`); returns how many
/// it was given.
fn each_record(
    reader: &Reader,
    args: &ExportArgs,
    show: bool,
    mut emit: impl FnMut(TraceRecord) -> Result<bool, Failure>,
) -> Result<u64, Failure> {
    let filter = args.filter.to_filter();
    let bar = if show {
        progress_bar(reader.count_traces(&filter)?, "traces")
    } else {
        ProgressBar::hidden()
    };
    let mut sessions = SessionFeedback::default();
    let mut written = 0;
    if below_limit(args, written) {
        reader.for_each_trace(&filter, |record| {
            bar.inc(1);
            if let Some(condition) = &args.where_ {
                let session = sessions.of(reader, record.identity.session_id.as_deref())?;
                if !condition.matches(record.feedback.iter().chain(session)) {
                    return Ok(ControlFlow::Continue(()));
                }
            }
            let goes_on = emit(record)?;
            written += 1;
            Ok::<_, Failure>(if goes_on && below_limit(args, written) {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            })
        })?;
    }
    bar.finish_and_clear();
    Ok(written)
}

/// A call in the chat fine-tuning form: its messages, then its answer.
fn chat(record: TraceRecord) -> serde_json::Value {
    let mut messages = record.messages;
    if !record.response_message.is_empty() {
        messages.push(serde_json::Value::Object(record.response_message));
    }
    json!({"messages": messages, "tools": record.tools})
}

/// The feedback naming the session of the calls being exported, read once
/// per session (calls come in time order, a session's mostly together).
#[derive(Default)]
struct SessionFeedback {
    session_id: Option<String>,
    feedback: Vec<Feedback>,
}

impl SessionFeedback {
    fn of(&mut self, reader: &Reader, session_id: Option<&str>) -> Result<&[Feedback], Failure> {
        if self.session_id.as_deref() != session_id {
            self.feedback = match session_id {
                Some(id) => {
                    reader.feedback(&FeedbackScope::Target(TargetKind::Session, id.into()))?
                }
                None => Vec::new(),
            };
            self.session_id = session_id.map(str::to_string);
        }
        Ok(&self.feedback)
    }
}

/// Calls `emit` with the trajectory of each session with matching calls
/// (of those calls, and passing `--where`), until the limit or until
/// `emit` says stop (`false`); returns how many it was given.
fn each_trajectory(
    reader: &Reader,
    args: &ExportArgs,
    show: bool,
    emit: impl FnMut(&Trajectory) -> Result<bool, Failure>,
) -> Result<u64, Failure> {
    let feedback_of = |t: &Trajectory| {
        let calls = t.calls.iter().flat_map(|c| &c.feedback);
        t.feedback.iter().chain(calls).cloned().collect()
    };
    each_session(reader, args, show, session_trajectory, feedback_of, emit)
}

/// Calls `emit` with the conversation of each session with matching calls
/// in the chat form: its last call that ended `ok`, in step order (step
/// id, then start), with its answer — in a multi-turn session, every
/// message the session exchanged. Sessions pass `--where` by their own
/// feedback or their calls'.
fn each_session_chat(
    reader: &Reader,
    args: &ExportArgs,
    show: bool,
    mut emit: impl FnMut(serde_json::Value) -> Result<bool, Failure>,
) -> Result<u64, Failure> {
    let load = |reader: &Reader, filter: &TraceFilter, session_id: String| {
        let records = reader.traces(&of_session(filter, &session_id))?;
        let scope = FeedbackScope::Target(TargetKind::Session, session_id);
        Ok((records, reader.feedback(&scope)?))
    };
    let feedback_of = |(records, feedback): &(Vec<TraceRecord>, Vec<Feedback>)| {
        let calls = records.iter().flat_map(|r| &r.feedback);
        feedback.iter().chain(calls).cloned().collect()
    };
    each_session(reader, args, show, load, feedback_of, |(records, _)| {
        let last = records
            .iter()
            .filter(|r| r.status == Status::Ok)
            .max_by_key(|r| (r.identity.step_id, r.started_at.clone()));
        match last {
            Some(record) => emit(chat(record.clone())),
            None => Ok(true),
        }
    })
}

/// Calls `emit` with each session with matching calls, as `load` reads it
/// (of those calls), when its feedback (`feedback_of`) passes `--where`,
/// until the limit or until `emit` says stop (`false`); returns how many
/// it was given.
fn each_session<T>(
    reader: &Reader,
    args: &ExportArgs,
    show: bool,
    load: impl Fn(&Reader, &TraceFilter, String) -> Result<T, Failure>,
    feedback_of: impl Fn(&T) -> Vec<Feedback>,
    mut emit: impl FnMut(&T) -> Result<bool, Failure>,
) -> Result<u64, Failure> {
    let filter = args.filter.to_filter();
    let sessions = reader.session_ids(&filter)?;
    let bar = if show {
        progress_bar(sessions.len() as u64, "sessions")
    } else {
        ProgressBar::hidden()
    };
    let mut written = 0;
    for session_id in sessions {
        if !below_limit(args, written) {
            break;
        }
        bar.inc(1);
        let session = load(reader, &filter, session_id)?;
        if let Some(condition) = &args.where_
            && !condition.matches(feedback_of(&session).iter())
        {
            continue;
        }
        let goes_on = emit(&session)?;
        written += 1;
        if !goes_on {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(written)
}

/// `filter`, narrowed to one session's calls, all of them.
fn of_session(filter: &TraceFilter, session_id: &str) -> TraceFilter {
    TraceFilter {
        session_ids: vec![session_id.to_string()],
        limit: None,
        ..filter.clone()
    }
}

/// One session's trajectory, of its calls that match `filter`, with its
/// feedback and harness spans.
fn session_trajectory(
    reader: &Reader,
    filter: &TraceFilter,
    session_id: String,
) -> Result<Trajectory, Failure> {
    let records = reader.traces(&of_session(filter, &session_id))?;
    let mut otel_traces: Vec<String> = records.iter().map(|r| r.otel_trace_id.clone()).collect();
    otel_traces.sort();
    otel_traces.dedup();
    let spans = reader.harness_spans_of_session(&session_id, &otel_traces)?;
    let scope = FeedbackScope::Target(TargetKind::Session, session_id.clone());
    let feedback = reader.feedback(&scope)?;
    Ok(trajectory::build(&session_id, records, feedback, spans))
}

fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{wide_bar}} {{human_pos}}/{{human_len}} {what} · {{elapsed_precise}} · eta {{eta}}"
    )) {
        bar.set_style(style);
    }
    bar
}
