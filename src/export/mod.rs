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
use crate::store::outbox::Batch;
use crate::store::{ExportProgress, StoreError, StoreReader, StoreWriter};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use serde::Serialize;
use std::ops::ControlFlow;
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
pub async fn health(
    config: &ExportConfig,
    reader: &StoreReader,
) -> Result<ExportHealth, StoreError> {
    let (state, backlog) = reader.export_backlog().await?;
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

/// Why export cannot start: the configuration does not make an exporter.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// An export header's name is not a valid HTTP header name.
    #[error("export header '{0}' is not a valid header name")]
    HeaderName(String),
    /// An export header's value is not a valid HTTP header value (the value
    /// is never shown: it is usually a credential).
    #[error("the value of export header '{0}' is not valid")]
    HeaderValue(String),
    /// `opentelemetry-otlp` refused the configuration.
    #[error("cannot build the OTLP exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Why one batch was not exported (it is retried).
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// The collector refused the batch, or could not be reached.
    #[error("{0}")]
    Collector(#[from] opentelemetry_sdk::error::OTelSdkError),
    /// The collector did not answer in time.
    #[error("the collector did not answer within {0:?}")]
    Timeout(Duration),
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
    ) -> Result<Exporter, ExportError> {
        let exporter = otlp::exporter(&config)?;
        let (stop, stopping) = watch::channel(false);
        let outbox = Outbox {
            scope: otlp::scope(),
            harness_scope: otlp::harness_scope(),
            own_resource: otlp::resource(&config.service_name),
            config,
            exporter,
            reader,
            writer,
            wake,
            stopping,
            metrics,
            cursor: 0,
            backoff: BACKOFF_START,
        };
        let task = tokio::spawn(outbox.run());
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

/// The export task: the outbox past `cursor`, sent batch by batch.
struct Outbox {
    config: ExportConfig,
    exporter: opentelemetry_otlp::SpanExporter,
    scope: opentelemetry::InstrumentationScope,
    /// The scope harness spans are forwarded under.
    harness_scope: opentelemetry::InstrumentationScope,
    /// tracegate's own resource (the exporter's between harness groups).
    own_resource: opentelemetry_sdk::Resource,
    reader: StoreReader,
    writer: StoreWriter,
    wake: Arc<Notify>,
    stopping: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    /// The last span id the collector accepted.
    cursor: i64,
    /// The wait before the next attempt after a failure.
    backoff: Duration,
}

impl Outbox {
    /// Reads, sends and records batches until stopped (and drained) or the
    /// store closes.
    async fn run(mut self) {
        self.cursor = match self.reader.export_state().await {
            Ok(state) => state.cursor,
            Err(e) => {
                tracing::error!("span export cannot start: {e}");
                return;
            }
        };
        loop {
            let cursor = self.cursor;
            let size = self.config.batch_size;
            let step = match self.reader.spans_after(cursor, size).await {
                Err(e) => {
                    tracing::error!("cannot read the span outbox: {e}");
                    self.pause(IDLE_POLL).await
                }
                Ok(batch) if batch.last_id == cursor => self.idle().await,
                Ok(batch) => self.export(batch).await,
            };
            if step.is_break() {
                return;
            }
        }
    }

    /// Nothing waits: done if stopping, else waits for new spans.
    async fn idle(&mut self) -> ControlFlow<()> {
        if *self.stopping.borrow() {
            return ControlFlow::Break(());
        }
        tokio::select! {
            () = self.wake.notified() => {}
            () = tokio::time::sleep(IDLE_POLL) => {}
            _ = self.stopping.changed() => {}
        }
        ControlFlow::Continue(())
    }

    /// Sends one batch and records how it went: the gateway's own spans
    /// under its resource, then the harness spans, under the resource each
    /// came with (one export per resource; a batch that fails part-way is
    /// sent whole again — delivery is at least once).
    async fn export(&mut self, batch: Batch) -> ControlFlow<()> {
        let spans: Vec<_> = batch
            .spans
            .iter()
            .flat_map(|s| otlp::span_tree(s, &self.scope))
            .collect();
        let mut count = spans.len() as u64;
        let mut sent = self.send(spans).await;
        for (resource, spans) in self.harness_groups(&batch.harness) {
            if sent.is_err() {
                break;
            }
            count += spans.len() as u64;
            self.exporter.set_resource(&resource);
            sent = self.send(spans).await;
            self.exporter.set_resource(&self.own_resource);
        }
        match sent {
            Ok(()) => self.exported(batch.last_id, count, batch.claim).await,
            Err(error) => self.failed(error, batch.claim).await,
        }
    }

    /// Harness spans grouped by the resource they came with, in order.
    fn harness_groups(
        &self,
        spans: &[crate::record::HarnessSpan],
    ) -> Vec<(opentelemetry_sdk::Resource, Vec<SpanData>)> {
        let mut groups: Vec<(&serde_json::Map<_, _>, opentelemetry_sdk::Resource, Vec<_>)> =
            Vec::new();
        for span in spans {
            let Some(data) = otlp::harness_span_data(span, &self.harness_scope) else {
                continue;
            };
            match groups.iter_mut().find(|(r, ..)| **r == span.resource) {
                Some((_, _, group)) => group.push(data),
                None => groups.push((&span.resource, otlp::harness_resource(span), vec![data])),
            }
        }
        groups.into_iter().map(|(_, r, spans)| (r, spans)).collect()
    }

    /// Sends spans (none: nothing to send), within the configured timeout.
    async fn send(&self, spans: Vec<SpanData>) -> Result<(), SendError> {
        if spans.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(self.config.timeout, self.exporter.export(spans)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SendError::Timeout(self.config.timeout)),
        }
    }

    /// The collector has the batch up to `last_id`: the cursor moves on.
    async fn exported(
        &mut self,
        last_id: i64,
        count: u64,
        claim: Option<String>,
    ) -> ControlFlow<()> {
        self.metrics.spans_exported(count);
        self.cursor = last_id;
        self.backoff = BACKOFF_START;
        let progress = ExportProgress {
            cursor: last_id,
            exported: count,
            claim,
            error: None,
        };
        if self.writer.export_progress(progress).await.is_err() {
            return ControlFlow::Break(()); // the store is closing
        }
        ControlFlow::Continue(())
    }

    /// The batch failed: the error is recorded, and the same batch is tried
    /// again after the backoff, which doubles.
    async fn failed(&mut self, error: SendError, claim: Option<String>) -> ControlFlow<()> {
        self.metrics.export_failed();
        let backoff = self.backoff;
        tracing::warn!("span export failed, retrying in {backoff:?}: {error}");
        let progress = ExportProgress {
            cursor: self.cursor,
            exported: 0,
            claim,
            error: Some(error.to_string()),
        };
        if self.writer.export_progress(progress).await.is_err() {
            return ControlFlow::Break(());
        }
        self.pause(backoff).await?;
        self.backoff = (backoff * 2).min(BACKOFF_MAX);
        ControlFlow::Continue(())
    }

    /// Waits `duration`; breaks if the exporter was told to stop meanwhile
    /// (a failing collector is not retried during shutdown).
    async fn pause(&mut self, duration: Duration) -> ControlFlow<()> {
        if *self.stopping.borrow() {
            return ControlFlow::Break(());
        }
        let stop = tokio::select! {
            () = tokio::time::sleep(duration) => *self.stopping.borrow(),
            _ = self.stopping.changed() => true,
        };
        if stop {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}
