//! Export: the span outbox, sent to an OTLP collector, losing nothing.
//!
//! Every call's span is written to the store's `spans` table in the same
//! transaction as its record (see `store::writer`). This task reads the spans
//! past its cursor, in order, a batch at a time, sends them with
//! `opentelemetry-otlp` ([`otlp`]), and advances the cursor — saved in the
//! store — only when the collector accepted the batch. So:
//!
//! * a collector that is down, slow or refusing (a 503) delays export but
//!   never loses a span: the batch is retried with capped exponential backoff
//!   (100 ms doubling to 30 s) until it is accepted;
//! * a proxied request never waits for export: requests only ever hand
//!   records to the writer thread, which writes the span beside the record;
//! * a restart resumes from the saved cursor: spans queued before it are sent
//!   after it. Delivery is at least once — a batch accepted just before a
//!   crash, whose cursor was not yet saved, is sent again.
//!
//! The backlog (spans waiting, the oldest one's age, the last error) is what
//! `GET /health` reports under `export`. Export is off unless an endpoint is
//! configured.

pub mod otlp;
pub mod self_tracing;

use crate::config::{ExportConfig, OtlpProtocol};
use crate::metrics::Metrics;
use crate::store::{ExportProgress, StoreReader, StoreWriter, outbox};
use opentelemetry_sdk::trace::SpanExporter as _;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The first wait after a failed export.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest wait between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often an idle exporter looks for spans it was not told about.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// A running exporter.
pub struct Exporter {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// What `GET /health` says about export.
#[derive(Debug, Clone, Serialize)]
pub struct ExportHealth {
    /// The collector.
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: &'static str,
    /// Spans waiting to be exported.
    pub waiting: i64,
    /// Seconds since the oldest waiting span was written.
    pub oldest_waiting_seconds: Option<f64>,
    /// Spans exported so far.
    pub exported: i64,
    /// When the last export succeeded.
    pub last_success_at: Option<String>,
    /// The last export error (kept after a later success, with its time).
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_at: Option<String>,
}

/// The export health of the store at `reader`.
pub async fn health(config: &ExportConfig, reader: &StoreReader) -> Result<ExportHealth, String> {
    let (state, backlog) = reader
        .call(|conn| {
            let state = outbox::state(conn)?;
            let backlog = outbox::backlog(conn, state.cursor)?;
            Ok((state, backlog))
        })
        .await?;
    let oldest_waiting_seconds = backlog
        .oldest_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|t| t.elapsed().ok())
        .map(|d| d.as_secs_f64());
    Ok(ExportHealth {
        endpoint: config.endpoint.clone(),
        protocol: match config.protocol {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        },
        waiting: backlog.waiting,
        oldest_waiting_seconds,
        exported: state.exported,
        last_success_at: state.last_success_at,
        last_error: state.last_error,
        last_error_at: state.last_error_at,
    })
}

impl Exporter {
    /// Starts exporting the outbox of the store behind `reader`/`writer`;
    /// `wake` is notified when new spans are committed.
    pub fn start(
        config: ExportConfig,
        reader: StoreReader,
        writer: StoreWriter,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Result<Exporter, String> {
        let exporter = otlp::exporter(&config)?;
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(run(
            config, exporter, reader, writer, wake, stopping, metrics,
        ));
        Ok(Exporter { stop, task })
    }

    /// Stops: spans already committed get up to `grace` to be sent; what is
    /// left stays in the outbox for the next start.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            tracing::warn!(
                "span export did not finish in {grace:?}; the rest is kept for next time"
            );
            task.abort();
        }
    }
}

async fn run(
    config: ExportConfig,
    exporter: opentelemetry_otlp::SpanExporter,
    reader: StoreReader,
    writer: StoreWriter,
    wake: Arc<Notify>,
    mut stopping: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let scope = otlp::scope();
    let mut cursor = match reader.call(outbox::state).await {
        Ok(state) => state.cursor,
        Err(e) => {
            tracing::error!("span export cannot start: {e}");
            return;
        }
    };
    let mut backoff = BACKOFF_START;
    loop {
        let size = config.batch_size;
        let batch = match reader
            .call(move |conn| outbox::spans_after(conn, cursor, size))
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!("cannot read the span outbox: {e}");
                if pause(&mut stopping, IDLE_POLL).await {
                    return;
                }
                continue;
            }
        };
        if batch.last_id == cursor {
            // Nothing waiting: done if stopping, else wait for new spans.
            if *stopping.borrow() {
                return;
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
                _ = stopping.changed() => {}
            }
            continue;
        }
        let spans: Vec<_> = batch
            .spans
            .iter()
            .flat_map(|s| otlp::span_tree(s, &scope))
            .collect();
        let count = spans.len() as u64;
        let sent = if spans.is_empty() {
            Ok(())
        } else {
            match tokio::time::timeout(config.timeout, exporter.export(spans)).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "the collector did not answer within {:?}",
                    config.timeout
                )),
            }
        };
        match sent {
            Ok(()) => {
                metrics.spans_exported(count);
                cursor = batch.last_id;
                backoff = BACKOFF_START;
                let progress = ExportProgress {
                    cursor,
                    exported: count,
                    error: None,
                };
                if writer.export_progress(progress).await.is_err() {
                    return; // the store is closing
                }
            }
            Err(error) => {
                metrics.export_failed();
                tracing::warn!("span export failed, retrying in {backoff:?}: {error}");
                let progress = ExportProgress {
                    cursor,
                    exported: 0,
                    error: Some(error),
                };
                if writer.export_progress(progress).await.is_err()
                    || pause(&mut stopping, backoff).await
                {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Waits `duration`; true if the exporter was told to stop meanwhile (a
/// failing collector is not retried during shutdown).
async fn pause(stopping: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    if *stopping.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(duration) => *stopping.borrow(),
        _ = stopping.changed() => true,
    }
}
