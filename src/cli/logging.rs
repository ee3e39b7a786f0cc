//! Where log lines go and how they look: stderr, filtered by `RUST_LOG`
//! (else the command's default level), as text or JSON (`--log-format`),
//! coloured only when stderr is a terminal — redirected logs never carry
//! ANSI escapes.

use crate::config::LogFormat;
use std::io::IsTerminal;

/// Installs the process's log subscriber (once; later calls do nothing).
pub(super) fn init(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
