//! `tracegate stats`: how the calls went, per model and route.
//!
//! For each (requested model, route) pair: calls, error rate, latency and
//! time-to-first-byte percentiles (P50, P95, P99) and input and output
//! tokens. Percentiles are exact — the nearest-rank value over every
//! matching call, computed by the store's `Reader::stats` — not estimates from a
//! histogram, so a test (or a user with `sqlite3`) can check them by hand.
//! It takes the same filters as `traces list`, so `stats --run R` describes
//! one run and `stats --since 1h` the last hour. Calls without a model
//! (operation `other`: a model list, a token count) are left out unless
//! `--other` asks for them, as the UI's statistics and step trees leave
//! them out: they would add a model-less group and dilute the latencies.

use super::output::{Align, COST, Format, Table, ms, or_dash, print_listing, usd};
use super::{DbArg, Failure, FilterArgs};
use crate::store::TraceFilter;
use crate::store::summary::Percentiles;
use clap::Args;

/// Flags of `tracegate stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    db: DbArg,
    #[command(flatten)]
    filter: FilterArgs,
    /// Count the calls without a model (operation `other`) too.
    #[arg(long)]
    other: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Runs `tracegate stats`.
pub fn stats(args: &StatsArgs) -> Result<(), Failure> {
    let filter = TraceFilter {
        skip_other: !args.other,
        ..args.filter.to_filter()
    };
    let groups = args.db.reader()?.stats(&filter)?;
    print_listing(args.format, &groups, |groups| {
        let priced = groups.iter().any(|g| g.cost_usd.is_some());
        let mut columns = vec![
            ("MODEL", Align::Left),
            ("ROUTE", Align::Left),
            ("CALLS", Align::Right),
            ("ERRORS", Align::Right),
            ("P50 MS", Align::Right),
            ("P95 MS", Align::Right),
            ("P99 MS", Align::Right),
            ("TTFT P50", Align::Right),
            ("TTFT P95", Align::Right),
            ("TTFT P99", Align::Right),
            ("IN TOKENS", Align::Right),
            ("OUT TOKENS", Align::Right),
        ];
        columns.extend(priced.then_some(COST));
        let mut table = Table::new(&columns);
        for g in groups {
            let ttft =
                |pick: fn(&Percentiles) -> f64| or_dash(g.ttft_ms.as_ref().map(pick).map(ms));
            let mut row = vec![
                or_dash(g.model.as_deref()),
                or_dash(g.route.as_deref()),
                g.calls.to_string(),
                format!("{} ({:.1}%)", g.errors, g.error_rate * 100.0),
                ms(g.latency_ms.p50),
                ms(g.latency_ms.p95),
                ms(g.latency_ms.p99),
                ttft(|p| p.p50),
                ttft(|p| p.p95),
                ttft(|p| p.p99),
                g.input_tokens.to_string(),
                g.output_tokens.to_string(),
            ];
            row.extend(priced.then(|| or_dash(g.cost_usd.map(usd))));
            table.row(row);
        }
        table
    })?;
    Ok(())
}
