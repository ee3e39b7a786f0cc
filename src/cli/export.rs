//! `tracegate export`: traces as JSON Lines, to a file or to standard
//! output, in one of four forms (`--format`):
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
//!   messages and its answer — the form SFT and eval pipelines read.
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
//! `Reader::for_each_trace`), and memory stays flat whatever the size.
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
use crate::feedback::{Feedback, TargetKind};
use crate::record::TraceRecord;
use crate::store::Reader;
use crate::store::feedback::FeedbackScope;
use crate::trajectory;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
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
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// At most this many lines (records, sessions or calls; the first,
    /// oldest first).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// What is written: TraceRecords (a line each, or one JSON array), a
    /// session's trajectory a line, or a call a line in the chat
    /// fine-tuning form.
    #[arg(long, value_enum, default_value_t)]
    format: ExportFormat,
    /// Only what has feedback satisfying NAME OP VALUE (operators > >= < <=
    /// = !=), e.g. 'reward>0'.
    #[arg(long = "where", value_name = "CONDITION", value_parser = feedback_filter::parse)]
    where_: Option<FeedbackFilter>,
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
    /// One call a line: {"messages": [...], "tools": [...]}.
    Chat,
}

impl ExportFormat {
    /// What one line (or array item) of this form is, for the summary.
    fn unit(self) -> &'static str {
        match self {
            ExportFormat::Jsonl | ExportFormat::Json => "traces",
            ExportFormat::Trajectory => "sessions",
            ExportFormat::Chat => "calls",
        }
    }
}

/// Runs `tracegate export`.
pub fn export(args: &ExportArgs) -> Result<(), Failure> {
    let file = destination(args.out.as_deref())?;
    let reader = args.db.reader()?;
    let mut out = match file {
        None => Output::stdout(),
        Some(path) => Output::create(path)?,
    };
    let to_stdout = file.is_none();
    let written = reader.snapshot(|reader| write_lines(reader, args, &mut out, to_stdout))?;
    out.finish()?;
    if let Some(path) = file {
        let mut summary = Output::stdout();
        summary.text(&format!(
            "exported {written} {} to {}\n",
            args.format.unit(),
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

/// Whether an export that has written `written` lines goes on.
fn goes_on(args: &ExportArgs, out: &Output, written: u64) -> bool {
    !out.is_closed() && args.limit.is_none_or(|limit| written < limit)
}

/// Writes every matching trace in the format, with a progress bar when it
/// helps; returns how many were written.
fn write_lines(
    reader: &Reader,
    args: &ExportArgs,
    out: &mut Output,
    to_stdout: bool,
) -> Result<u64, Failure> {
    let filter = args.filter.to_filter();
    let show = !to_stdout && std::io::stderr().is_terminal();
    if args.format == ExportFormat::Trajectory {
        return write_trajectories(reader, args, out, show);
    }
    let bar = if show {
        progress_bar(reader.count_traces(&filter)?, "traces")
    } else {
        ProgressBar::hidden()
    };
    let array = args.format == ExportFormat::Json;
    if array {
        out.text("[")?;
    }
    let mut sessions = SessionFeedback::default();
    let mut written = 0;
    if goes_on(args, out, written) {
        reader.for_each_trace(&filter, |record| {
            bar.inc(1);
            if let Some(condition) = &args.where_ {
                let session = sessions.of(reader, record.identity.session_id.as_deref())?;
                if !condition.matches(record.feedback.iter().chain(session)) {
                    return Ok(ControlFlow::Continue(()));
                }
            }
            match args.format {
                ExportFormat::Chat => out.json_line(&chat(record))?,
                ExportFormat::Json => {
                    out.text(if written == 0 { "\n" } else { ",\n" })?;
                    out.json(&record)?;
                }
                _ => out.json_line(&record)?,
            }
            written += 1;
            Ok::<_, Failure>(if goes_on(args, out, written) {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            })
        })?;
    }
    bar.finish_and_clear();
    if array {
        out.text(if written == 0 { "]\n" } else { "\n]\n" })?;
    }
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

/// Writes a line per session with matching calls (its trajectory, of the
/// matching calls); returns how many were written.
fn write_trajectories(
    reader: &Reader,
    args: &ExportArgs,
    out: &mut Output,
    show: bool,
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
        if !goes_on(args, out, written) {
            break;
        }
        bar.inc(1);
        let calls = crate::store::TraceFilter {
            session_ids: vec![session_id.clone()],
            limit: None,
            ..filter.clone()
        };
        let records = reader.traces(&calls)?;
        let scope = FeedbackScope::Target(TargetKind::Session, session_id.clone());
        let t = trajectory::build(&session_id, records, reader.feedback(&scope)?);
        let calls_feedback = t.calls.iter().flat_map(|c| &c.feedback);
        if let Some(condition) = &args.where_
            && !condition.matches(t.feedback.iter().chain(calls_feedback))
        {
            continue;
        }
        out.json_line(&t)?;
        written += 1;
    }
    bar.finish_and_clear();
    Ok(written)
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
