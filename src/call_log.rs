//! One log line per finished call: what a user watching the terminal sees.
//!
//! A gateway that records silently leaves its user guessing whether calls
//! arrive and how they end: an upstream 500 or an unknown model looked like
//! nothing at all. So every finished record is logged once, beside the
//! metrics that observe it — at `info` when it ended `ok`, at `warn`, with
//! its error kind, when it did not — as fields (`method`, `path`, `model`,
//! `status`, `latency_ms`, `input_tokens`, `output_tokens`, `trace_id`)
//! that `--log-format json` turns into keys. The target is
//! `tracegate::call`, so `RUST_LOG=tracegate::call=warn` keeps only the
//! failures. Nothing from the bodies is logged: no message, no key.

use crate::record::{Status, TraceRecord};

/// Logs `record`'s one line.
pub fn log_call(record: &TraceRecord) {
    let model = record.model.as_deref().unwrap_or("-");
    let status = record.http_status.map_or(0, u32::from);
    let input = record.usage.input_tokens.unwrap_or(0);
    let output = record.usage.output_tokens.unwrap_or(0);
    let latency_ms = (record.latency_ms * 10.0).round() / 10.0;
    // A client that left has no error kind: its status says it.
    let error = (record.status != Status::Ok)
        .then(|| (record.error.as_ref()).map_or(record.status.as_str(), |e| e.kind.as_str()));
    // `event!` wants its level as a constant: one expansion per level.
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: "tracegate::call",
                $level,
                method = %record.method,
                path = %record.path,
                model,
                status,
                latency_ms,
                input_tokens = input,
                output_tokens = output,
                trace_id = %record.trace_id,
                error,
                "{}",
                if error.is_some() { "call failed" } else { "call" }
            )
        };
    }
    match error {
        Some(_) => line!(tracing::Level::WARN),
        None => line!(tracing::Level::INFO),
    }
}
