//! The `tracegate` command line: clap definitions and dispatch, nothing else.
//!
//! Two families of subcommands share the binary:
//!
//! * the gateway and its helpers — `serve` (the gateway), `mock-upstream` (a
//!   deterministic model server) and `demo` (both, plus a sample agent
//!   episode) — which run on a tokio runtime;
//! * the queries over a database file — `runs`, `sessions`, `traces list`,
//!   `traces show`, `export`, `stats`, `feedback list` and `prune` — which
//!   need no server and
//!   no runtime: they open the SQLite file themselves (read-only, except
//!   `prune`) and are safe while a gateway writes to it, because WAL lets
//!   readers see the last commit without blocking the writer.
//!
//! Each query command lives in its own file ([`runs`], [`traces`],
//! [`export`], [`stats`], [`feedback`], [`prune`]) as a thin layer: parse flags, ask the
//! store (a `store::Reader`, or a `store::Pruner`, opened on the file),
//! format through [`output`]. The SQL stays in the store. Every query command takes `--db PATH` (env `TRACEGATE_DB`,
//! default `./tracegate.db`) like `serve`.
//!
//! Exit codes: 0 on success, 2 for a configuration or usage error (one line
//! saying what is wrong — a bad flag, a missing database), 1 for anything
//! that fails at run time.

mod banner;
mod export;
mod feedback;
mod feedback_filter;
mod logging;
mod output;
mod prune;
mod runs;
mod stats;
mod traces;

use crate::config::{Config, LogFormat, ServeArgs};
use crate::export::self_tracing;
use crate::mock_upstream::{self, MockOptions};
use crate::record::Status;
use crate::store::{Database, Pruner, Reader, StoreError, TraceFilter};
use crate::time_bound::TimeBound;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// tracegate: a trace-recording gateway for LLM traffic.
#[derive(Debug, Parser)]
#[command(name = "tracegate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(Box<ServeArgs>),
    /// Run the built-in deterministic model server (OpenAI and Anthropic APIs).
    MockUpstream {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000", value_name = "ADDR")]
        listen: SocketAddr,
        #[command(flatten)]
        options: MockOptions,
    },
    /// Run a sample agent episode through a gateway and a mock model, and
    /// print what was recorded. Needs no API key.
    Demo(crate::demo::DemoArgs),
    /// List runs, newest first: sessions, calls, errors, tokens, first and
    /// last seen.
    Runs(runs::RunsArgs),
    /// List sessions, newest first: calls, errors, tokens, first and last seen.
    Sessions(runs::SessionsArgs),
    /// List recorded calls, or show one.
    Traces {
        #[command(subcommand)]
        command: traces::TracesCommand,
    },
    /// Write traces as JSON Lines to a file, or to standard output when it
    /// is piped: one TraceRecord per line in the HTTP API's JSON, one
    /// session's trajectory, or one call in the chat fine-tuning form
    /// (--format).
    Export(export::ExportArgs),
    /// Calls, error rate, latency and TTFT percentiles, and tokens per model
    /// and route.
    Stats(stats::StatsArgs),
    /// List the feedback (rewards, scores) of a call, session or run, or
    /// add one through a running gateway.
    Feedback {
        #[command(subcommand)]
        command: feedback::FeedbackCommand,
    },
    /// Delete traces older than a duration, the sessions and runs they leave
    /// empty, and reclaim the space.
    Prune(prune::PruneArgs),
}

/// Why a command failed, which decides its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A configuration or usage error: exit 2.
    Usage(String),
    /// A failure at run time: exit 1.
    Runtime(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Runtime(message)
    }
}

impl From<StoreError> for Failure {
    /// A missing database or a file that is not one is a usage error (the
    /// `--db` flag is wrong); anything else failed at run time.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Missing(_) => Failure::Usage(format!(
                "{e} (pass --db PATH or set TRACEGATE_DB; \
                 `tracegate serve` or `tracegate demo` create one)"
            )),
            StoreError::NotAStore { .. } => Failure::Usage(e.to_string()),
            other => Failure::Runtime(other.to_string()),
        }
    }
}

/// A flag's value that does not parse: clap prints it after the flag's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// Parses the command line, runs the command, and returns the exit code.
/// `on_idle` runs on a runtime thread each time it runs out of work (the
/// binary hands idle threads' freed memory back to the system there).
pub fn main(on_idle: fn()) -> ExitCode {
    let cli = parse_command_line();
    // `serve` sets up its logs once its configuration says how (the log
    // format, and whether the gateway traces itself).
    match cli.command {
        Command::Serve(_) => {}
        Command::MockUpstream { .. } => {
            logging::init("info", LogFormat::Text, false);
        }
        _ => {
            logging::init("warn", LogFormat::Text, false);
        }
    }
    let result = match cli.command {
        Command::Runs(args) => runs::runs(&args),
        Command::Sessions(args) => runs::sessions(&args),
        Command::Traces { command } => traces::run(&command),
        Command::Export(args) => export::export(&args),
        Command::Stats(args) => stats::stats(&args),
        Command::Feedback { command } => feedback::run(&command),
        Command::Prune(args) => prune::prune(&args),
        gateway => run_gateway(gateway, on_idle),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("tracegate: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("tracegate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line. `serve`'s arguments also learn which values
/// came from environment variables, so that a configuration error names the
/// variable rather than the flag.
fn parse_command_line() -> Cli {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches)
        .map_err(|e| e.format(&mut Cli::command()))
        .unwrap_or_else(|e| e.exit());
    if let (Command::Serve(args), Some(("serve", serve))) = (&mut cli.command, matches.subcommand())
    {
        args.note_sources(serve);
    }
    cli
}

/// Runs `serve`, `mock-upstream` or `demo` on a tokio runtime whose
/// threads call `on_idle` when they park.
fn run_gateway(command: Command, on_idle: fn()) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(on_idle)
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    match command {
        Command::Serve(args) => {
            let config = Config::load(&args).map_err(|e| Failure::Usage(e.to_string()))?;
            let self_tracing = config.export.as_ref().is_some_and(|e| e.self_tracing);
            let finished = logging::init("info", config.log_format, self_tracing);
            runtime.block_on(serve(config, finished))?;
        }
        Command::MockUpstream { listen, options } => {
            runtime
                .block_on(mock_upstream::serve(listen, options))
                .map_err(|e| Failure::Runtime(e.to_string()))?;
        }
        Command::Demo(args) => {
            let report = runtime
                .block_on(crate::demo::run(&args))
                .map_err(|e| Failure::Runtime(e.to_string()))?;
            let mut out = output::Output::stdout();
            out.text(&report)?;
            out.finish()?;
        }
        _ => {}
    }
    Ok(())
}

async fn serve(config: Config, finished: Option<self_tracing::Finished>) -> Result<(), Failure> {
    let server = crate::server::Server::bind(&config)
        .await
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let (stop_self_tracing, stopped) = tokio::sync::oneshot::channel::<()>();
    let self_tracing = match (finished, &config.export) {
        (Some(finished), Some(export)) => Some(tokio::spawn(self_tracing::export(
            finished,
            export.clone(),
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(2),
        ))),
        _ => None,
    };
    for line in banner::lines(&config, server.local_addr()) {
        tracing::info!("{line}");
    }
    let served = server.run(crate::server::shutdown_signal()).await;
    if let Some(task) = self_tracing {
        let _ = stop_self_tracing.send(());
        let _ = task.await;
    }
    Ok(served?)
}

/// `--db`, as every query command takes it (the same flag and variable as
/// `serve`).
#[derive(Debug, Clone, Args)]
pub struct DbArg {
    /// SQLite database file, or a postgres:// URL.
    #[arg(
        long,
        env = "TRACEGATE_DB",
        default_value = crate::config::DEFAULT_DB,
        value_name = "PATH|URL",
        value_parser = |text: &str| Ok::<_, std::convert::Infallible>(Database::parse(text))
    )]
    pub db: Database,
}

impl DbArg {
    /// The store at the path, read-only; a usage error when there is no
    /// tracegate database there.
    pub fn reader(&self) -> Result<Reader, Failure> {
        Ok(Reader::open(&self.db)?)
    }

    /// The store at the path, to prune (read-only for a dry run); never
    /// creates one.
    pub fn pruner(&self, dry_run: bool) -> Result<Pruner, Failure> {
        Ok(Pruner::open_database(&self.db, !dry_run)?)
    }
}

/// The filters `traces list`, `export` and `stats` share.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only calls of this run.
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    /// Only calls of this session.
    #[arg(long, value_name = "SESSION_ID")]
    pub session: Option<String>,
    /// Only calls that asked for this model.
    #[arg(long)]
    pub model: Option<String>,
    /// Only calls of this harness.
    #[arg(long)]
    pub harness: Option<String>,
    /// Only calls made by this policy (weights) version.
    #[arg(long, value_name = "N")]
    pub weight_version: Option<i64>,
    /// Only calls that did not end ok (upstream errors, gateway errors,
    /// client disconnects).
    #[arg(long)]
    pub errors: bool,
    /// Only calls that ended with this status.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<Status>,
    /// Only calls that started after this: a duration back from now (90m,
    /// 1h, 7d), an RFC 3339 time, a UTC date (2026-11-01) or seconds since
    /// the epoch.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<TimeBound>,
    /// Only calls that started before this (the same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<TimeBound>,
}

impl FilterArgs {
    /// The store filter these flags describe (oldest first, no limit).
    pub fn to_filter(&self) -> TraceFilter {
        TraceFilter {
            session_ids: self.session.iter().cloned().collect(),
            run_id: self.run.clone(),
            since: self.since.map(TimeBound::epoch_seconds),
            until: self.until.map(TimeBound::epoch_seconds),
            status: self.status,
            model: self.model.clone(),
            harness: self.harness.clone(),
            weight_version: self.weight_version,
            errors_only: self.errors,
            ..TraceFilter::default()
        }
    }
}

/// Parses `--status`: a status's wire name.
fn parse_status(text: &str) -> Result<Status, InvalidValue> {
    Status::parse(text.trim()).ok_or_else(|| {
        let names: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        InvalidValue(format!("'{text}' is not a status ({})", names.join(", ")))
    })
}

/// Parses a duration such as `30d`, `12h` or `90m`.
fn parse_duration(text: &str) -> Result<Duration, InvalidValue> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        InvalidValue(format!(
            "'{text}' is not a duration like 90m, 12h or 30d ({e})"
        ))
    })
}
