//! `tracegate export`: traces to a JSON Lines file, in one of three forms
//! (`--format`):
//!
//! * `traces` (the default): one TraceRecord a line, exactly what
//!   `GET /traces/{id}` answers — rLLM's field names, token ids and logprobs
//!   as arrays, raw request and response decompressed, feedback joined — so
//!   a training pipeline can read an export and the API interchangeably;
//! * `trajectory`: one session a line, as `GET /sessions/{sid}/trajectory`
//!   answers (`schema/trajectory.md`): token sequences with loss masks, for
//!   RL trainers;
//! * `chat`: one call a line as `{"messages": [...], "tools": [...]}` — its
//!   messages and its answer — the form SFT and eval pipelines read.
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
//! gets no escape codes, and `--out -` (standard output) never mixes a bar
//! into the data.

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
use std::path::PathBuf;

/// Flags of `tracegate export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    db: DbArg,
    #[command(flatten)]
    filter: FilterArgs,
    /// The file to write (replaced if it exists); `-` for standard output.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// What a line is: a TraceRecord, a session's trajectory, or a call in
    /// the chat fine-tuning form.
    #[arg(long, value_enum, default_value_t)]
    format: ExportFormat,
    /// Only what has feedback satisfying NAME OP VALUE (operators > >= < <=
    /// = !=), e.g. 'reward>0'.
    #[arg(long = "where", value_name = "CONDITION", value_parser = feedback_filter::parse)]
    where_: Option<FeedbackFilter>,
}

/// The form of an export's lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One TraceRecord a line.
    #[default]
    Traces,
    /// One session a line (schema/trajectory.md).
    Trajectory,
    /// One call a line: {"messages": [...], "tools": [...]}.
    Chat,
}

/// Runs `tracegate export`.
pub fn export(args: &ExportArgs) -> Result<(), Failure> {
    let reader = args.db.reader()?;
    let to_stdout = args.out.as_os_str() == "-";
    let mut out = if to_stdout {
        Output::stdout()
    } else {
        Output::create(&args.out)?
    };
    let written = reader.snapshot(|reader| write_lines(reader, args, &mut out, to_stdout))?;
    out.finish()?;
    if !to_stdout {
        let mut summary = Output::stdout();
        let what = match args.format {
            ExportFormat::Traces => "traces",
            ExportFormat::Trajectory => "sessions",
            ExportFormat::Chat => "calls",
        };
        summary.text(&format!(
            "exported {written} {what} to {}\n",
            args.out.display()
        ))?;
        summary.finish()?;
    }
    Ok(())
}

/// Writes a line per matching trace, with a progress bar when it helps;
/// returns how many were written.
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
    let mut sessions = SessionFeedback::default();
    let mut written = 0;
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
            _ => out.json_line(&record)?,
        }
        written += 1;
        Ok::<_, Failure>(if out.is_closed() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
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
        if out.is_closed() {
            break;
        }
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
