//! `tracegate prune`: delete what is older than a duration, reclaim the space.
//!
//! The one query command that writes. The work is the store's `Pruner`'s;
//! this file turns `--older-than` into a cutoff time, opens the store (a dry
//! run opens the file read-only, so it cannot change anything even by
//! mistake), and reports what went. `VACUUM` follows a real prune unless
//! `--no-vacuum`: it shrinks the file but holds the write lock while it
//! rewrites it, so on a large store that a gateway is writing to, prune with
//! `--no-vacuum` and vacuum when the gateway is stopped.

use super::output::Output;
use super::{DbArg, Failure, parse_duration};
use crate::store::prune::{PruneOptions, TableRows};
use clap::Args;
use std::time::{Duration, SystemTime};

/// Flags of `tracegate prune`.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    db: DbArg,
    /// Delete what started longer ago than this (e.g. 30d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    older_than: Duration,
    /// Report what would be deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also delete what has not been exported yet (OTLP spans, once the
    /// exporter keeps them).
    #[arg(long)]
    force: bool,
    /// Skip the VACUUM that gives the freed space back to the file system.
    #[arg(long)]
    no_vacuum: bool,
}

/// Runs `tracegate prune`.
pub fn prune(args: &PruneArgs) -> Result<(), Failure> {
    let cutoff = SystemTime::now()
        .checked_sub(args.older_than)
        .ok_or_else(|| Failure::Usage("--older-than reaches back before the epoch".to_string()))?;
    let options = PruneOptions {
        cutoff: crate::record::rfc3339(cutoff),
        dry_run: args.dry_run,
        force: args.force,
    };
    let mut pruner = args.db.pruner(args.dry_run)?;
    let report = pruner.prune(&options)?;
    let (deleted, recounted) = if args.dry_run {
        ("would delete", "would recount")
    } else {
        ("deleted", "recounted")
    };
    let mut text = format!(
        "cutoff {} (older than {})\n{deleted}: {}\n{recounted}: {}\n",
        options.cutoff,
        humantime::format_duration(args.older_than),
        counts(&report.deleted),
        counts(&report.recounted),
    );
    if args.dry_run {
        text.push_str("dry run: nothing was changed\n");
    }
    print(&text)?;
    if !args.dry_run && !args.no_vacuum {
        let reclaimed = pruner.vacuum()?;
        print(&format!(
            "reclaimed {} ({} → {})\n",
            mib(reclaimed.before.saturating_sub(reclaimed.after)),
            mib(reclaimed.before),
            mib(reclaimed.after),
        ))?;
        if !reclaimed.log_truncated {
            print(
                "the write-ahead log (-wal file) keeps its size for now: another process \
                 was reading; it is emptied at the next checkpoint\n",
            )?;
        }
    }
    Ok(())
}

/// Prints at once, so the report is out before a slow VACUUM starts.
fn print(text: &str) -> Result<(), Failure> {
    let mut out = Output::stdout();
    out.text(text)?;
    out.finish()
}

/// `traces 12, sessions 3, runs 1`.
fn counts(rows: &[TableRows]) -> String {
    rows.iter()
        .map(|r| format!("{} {}", r.table, r.rows))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
