//! `tracegate export`: traces to a JSON Lines file, one TraceRecord a line.
//!
//! The lines are exactly what `GET /traces/{id}` answers — rLLM's field names,
//! token ids and logprobs as arrays, raw request and response decompressed —
//! so a training pipeline can read an export and the API interchangeably.
//!
//! Stores reach tens of gigabytes, so the export streams: one row is read,
//! decoded, written and dropped before the next (`store::read::
//! for_each_trace`), and memory stays flat whatever the size. Counting and
//! reading happen in one read transaction, so the count behind the progress
//! bar and the lines written describe the same snapshot even while a gateway
//! keeps writing.
//!
//! The progress bar (indicatif) is drawn on stderr only when stderr is a
//! terminal and the export goes to a file: a pipe, a log file or a CI job
//! gets no escape codes, and `--out -` (standard output) never mixes a bar
//! into the data.

use super::output::Output;
use super::{DbArg, Failure, FilterArgs};
use crate::store::read;
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
    let conn = args.db.open_read_only()?;
    let filter = args.filter.to_filter();
    let to_stdout = args.out.as_os_str() == "-";
    // One snapshot for the count and the rows.
    let snapshot = conn
        .unchecked_transaction()
        .map_err(|e| format!("cannot start a read transaction: {e}"))?;
    let total = read::count_traces(&conn, &filter)?;
    let mut out = if to_stdout {
        Output::stdout()
    } else {
        Output::create(&args.out)?
    };
    let bar = if !to_stdout && std::io::stderr().is_terminal() {
        progress_bar(total)
    } else {
        ProgressBar::hidden()
    };
    let written = read::for_each_trace(&conn, &filter, |record| {
        out.json_line(&record)?;
        bar.inc(1);
        Ok(if out.is_closed() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    });
    bar.finish_and_clear();
    let written = written?;
    drop(snapshot);
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

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{wide_bar} {human_pos}/{human_len} traces · {elapsed_precise} · eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
