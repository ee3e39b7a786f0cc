//! `tracegate runs` and `tracegate sessions`: the top two levels of the
//! run → session → step tree.
//!
//! Both read the `runs` and `sessions` tables, whose counters the writer keeps
//! up to date, so they answer at once on any store size. Their JSON is the
//! HTTP API's (`GET /runs`, `GET /sessions`): the same query functions
//! produce both, in the same order (newest first, like `traces list`).

use super::output::{Align, COST, Format, Table, or_dash, print_listing, short_time, usd};
use super::{DbArg, Failure};
use crate::store::{RunFilter, SessionFilter};
use clap::Args;

/// Flags of `tracegate runs`.
#[derive(Debug, Clone, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    db: DbArg,
    /// At most this many runs (the newest).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Flags of `tracegate sessions`.
#[derive(Debug, Clone, Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    db: DbArg,
    /// Only sessions of this run.
    #[arg(long, value_name = "RUN_ID")]
    run: Option<String>,
    /// At most this many sessions (the newest).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

const COUNTS: [(&str, Align); 5] = [
    ("CALLS", Align::Right),
    ("ERRORS", Align::Right),
    ("TOKENS", Align::Right),
    ("FIRST SEEN", Align::Left),
    ("LAST SEEN", Align::Left),
];

/// Runs `tracegate runs`.
pub fn runs(args: &RunsArgs) -> Result<(), Failure> {
    let filter = RunFilter {
        limit: args.limit,
        ..RunFilter::default()
    };
    let runs = args.db.reader()?.runs(&filter)?;
    print_listing(args.format, &runs, |runs| {
        let priced = runs.iter().any(|r| r.cost_usd.is_some());
        let mut columns = vec![("RUN", Align::Left), ("SESSIONS", Align::Right)];
        columns.extend(COUNTS);
        columns.extend(priced.then_some(COST));
        let mut table = Table::new(&columns);
        for run in runs {
            let mut row = vec![
                run.run_id.clone(),
                run.session_count.to_string(),
                run.trace_count.to_string(),
                run.error_count.to_string(),
                run.tokens.to_string(),
                short_time(&run.first_seen),
                short_time(&run.last_seen),
            ];
            row.extend(priced.then(|| or_dash(run.cost_usd.map(usd))));
            table.row(row);
        }
        table
    })?;
    Ok(())
}

/// Runs `tracegate sessions`.
pub fn sessions(args: &SessionsArgs) -> Result<(), Failure> {
    let filter = SessionFilter {
        run_id: args.run.clone(),
        limit: args.limit,
        newest_first: true,
        ..SessionFilter::default()
    };
    let sessions = args.db.reader()?.sessions(&filter)?;
    print_listing(args.format, &sessions, |sessions| {
        let priced = sessions.iter().any(|s| s.cost_usd.is_some());
        let mut columns = vec![("SESSION", Align::Left), ("RUN", Align::Left)];
        columns.extend(COUNTS);
        columns.extend(priced.then_some(COST));
        let mut table = Table::new(&columns);
        for s in sessions {
            let mut row = vec![
                s.session_id.clone(),
                or_dash(s.run_id.as_deref()),
                s.trace_count.to_string(),
                s.error_count.to_string(),
                s.tokens.to_string(),
                or_dash(s.first_seen.as_deref().map(short_time)),
                or_dash(s.last_seen.as_deref().map(short_time)),
            ];
            row.extend(priced.then(|| or_dash(s.cost_usd.map(usd))));
            table.row(row);
        }
        table
    })?;
    Ok(())
}
