//! Where log lines go and how they look: stderr, filtered by `RUST_LOG`
//! (else the command's default level), as text or JSON (`--log-format`),
//! coloured only when stderr is a terminal — redirected logs never carry
//! ANSI escapes. With self-tracing on, the gateway's own spans also become
//! OpenTelemetry spans, returned for export.

use crate::config::LogFormat;
use crate::export::self_tracing;
use std::io::IsTerminal;

/// Installs the process's log subscriber (once; later calls do nothing);
/// with `self_tracing`, returns the spans it finishes.
pub(super) fn init(
    default: &str,
    format: LogFormat,
    self_tracing: bool,
) -> Option<self_tracing::Finished> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Text => log
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => log.json().with_filter(filter).boxed(),
    };
    let (spans, finished) = match self_tracing {
        true => {
            let (layer, finished) = self_tracing::layer();
            (Some(layer), Some(finished))
        }
        false => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(spans)
        .try_init();
    finished
}
