//! The start banner of `tracegate serve`: where everything is.
//!
//! A newcomer's first questions are where to point the SDK, where to look,
//! where the data goes and where the calls go — and, when they go somewhere
//! unexpected, why. So the banner names the listen URL, the UI and
//! `/metrics`, the database as an absolute path (a relative one depends on
//! a working directory nobody remembers), and each route with its upstream
//! and where that upstream was set: a flag, a variable (`OPENAI_BASE_URL`
//! set in the shell), a file line, or the built-in default.

use crate::config::{Config, Origin, RouteConfig};
use std::net::SocketAddr;

/// The banner's lines, for a gateway listening on `addr`.
pub(super) fn lines(config: &Config, addr: SocketAddr) -> Vec<String> {
    let base = format!("http://{addr}");
    let db = match config.db.sqlite_path() {
        Some(path) => std::path::absolute(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string(),
        None => config.db.to_string(),
    };
    let mut lines = vec![
        format!("tracegate listening on {base}"),
        format!("  UI:      {base}/ui/"),
        format!("  metrics: {base}/metrics"),
        format!("  db:      {db}"),
    ];
    let origins = config
        .upstream_origins
        .iter()
        .map(Some)
        .chain(std::iter::repeat(None));
    for (route, origin) in config.routes.iter().zip(origins) {
        lines.push(route_line(route, origin));
    }
    lines
}

/// `  route default → https://api.openai.com/v1 (openai; from OPENAI_BASE_URL)`.
fn route_line(route: &RouteConfig, origin: Option<&Origin>) -> String {
    let workers: Vec<&str> = route.workers.iter().map(|w| w.url.as_str()).collect();
    let serves = match &route.model_prefix {
        Some(prefix) if prefix == "*" => " (every model)".to_string(),
        Some(prefix) => format!(" (models {prefix}*)"),
        None => String::new(),
    };
    let from = match origin {
        Some(Origin::Default) | None => "the built-in default".to_string(),
        Some(origin) => origin.to_string(),
    };
    format!(
        "  route {}{serves} → {} ({}; from {from})",
        route.label(),
        workers.join(", "),
        route.protocol
    )
}
