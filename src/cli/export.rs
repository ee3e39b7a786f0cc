//! `tracegate export`: traces as JSON Lines, one TraceRecord a line (or one
//! JSON array with `--format json`), to a file or to standard output.
//!
//! Without `--out` the export goes to standard output when that is piped
//! (`tracegate export | jq`, `> file`), as other tools' data commands do;
//! at a terminal it asks for `--out` rather than flood the screen. `--out -`
//! is standard output always. `--limit N` stops after N traces, in the
//! export's order (oldest first).
//!
//! The lines are exactly what `GET /traces/{id}` answers — rLLM's field names,
//! token ids and logprobs as arrays, raw request and response decompressed —
//! so a training pipeline can read an export and the API interchangeably.
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

use super::output::Output;
use super::{DbArg, Failure, FilterArgs};
use crate::store::{Reader, TraceFilter};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
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
    /// At most this many traces (the first, oldest first).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: ExportFormat,
}

/// How the records are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One record per line (JSON Lines).
    #[default]
    Jsonl,
    /// One JSON array of records.
    Json,
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
    let written = reader.snapshot(|reader| write_records(reader, args, &mut out, to_stdout))?;
    out.finish()?;
    if let Some(path) = file {
        let mut summary = Output::stdout();
        summary.text(&format!(
            "exported {written} traces to {}\n",
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

/// Writes every matching trace in the format, with a progress bar when it
/// helps; returns how many were written.
fn write_records(
    reader: &Reader,
    args: &ExportArgs,
    out: &mut Output,
    to_stdout: bool,
) -> Result<u64, Failure> {
    let filter = TraceFilter {
        limit: args.limit,
        ..args.filter.to_filter()
    };
    let bar = if !to_stdout && std::io::stderr().is_terminal() {
        progress_bar(reader.count_traces(&filter)?)
    } else {
        ProgressBar::hidden()
    };
    let json = args.format == ExportFormat::Json;
    if json {
        out.text("[")?;
    }
    let mut first = true;
    let written = reader.for_each_trace(&filter, |record| {
        if json {
            out.text(if first { "\n" } else { ",\n" })?;
            out.json(&record)?;
        } else {
            out.json_line(&record)?;
        }
        first = false;
        bar.inc(1);
        Ok::<_, Failure>(if out.is_closed() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    });
    bar.finish_and_clear();
    if json {
        out.text(if first { "]\n" } else { "\n]\n" })?;
    }
    written
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{wide_bar} {human_pos}/{human_len} traces · {elapsed_precise} · eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
