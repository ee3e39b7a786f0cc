//! The `tracegate` command line.
//!
//! Subcommands: `serve` (the gateway), `mock-upstream` (a deterministic model
//! server) and `demo` (both, plus a sample agent episode). Exit codes: 0 on
//! success, 2 for a configuration or usage error (one line, naming the key),
//! 1 for anything that fails at run time.

use crate::config::{Config, ServeArgs};
use crate::mock_upstream::{self, MockOptions};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    Demo {
        /// SQLite database file to record into.
        #[arg(long, default_value = crate::config::DEFAULT_DB, value_name = "PATH")]
        db: PathBuf,
    },
}

/// Parses the command line, runs the command, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info",
    };
    init_logging(default_log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tracegate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => match Config::load(&args) {
            Ok(config) => runtime.block_on(serve(config)),
            Err(e) => {
                eprintln!("tracegate: {e}");
                return ExitCode::from(2);
            }
        },
        Command::MockUpstream { listen, options } => {
            runtime.block_on(mock_upstream::serve(listen, options))
        }
        Command::Demo { db } => runtime
            .block_on(crate::demo::run(&db))
            .map(|report| print(&report)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracegate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a closed pipe (`tracegate ... | head`) is not an error.
fn print(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

async fn serve(config: Config) -> Result<(), String> {
    let server = crate::server::Server::bind(&config).await?;
    let upstreams: Vec<&str> = config.route.upstreams.iter().map(|u| u.as_str()).collect();
    tracing::info!(
        "tracegate listening on http://{} → upstream {} · db {}",
        server.local_addr(),
        upstreams.join(", "),
        config.db.display()
    );
    server.run(crate::server::shutdown_signal()).await
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
