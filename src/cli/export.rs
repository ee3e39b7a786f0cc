//! `tracegate export`: traces to a JSON Lines file, one TraceRecord a line.
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
//! gets no escape codes, and `--out -` (standard output) never mixes a bar
//! into the data.

use super::output::Output;
use super::{DbArg, Failure, FilterArgs};
use crate::store::Reader;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
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
        summary.text(&format!(
            "exported {written} traces to {}\n",
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
    let bar = if !to_stdout && std::io::stderr().is_terminal() {
        progress_bar(reader.count_traces(&filter)?)
    } else {
        ProgressBar::hidden()
    };
    let written = reader.for_each_trace(&filter, |record| {
        out.json_line(&record)?;
        bar.inc(1);
        Ok::<_, Failure>(if out.is_closed() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    });
    bar.finish_and_clear();
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
