//! Self-tracing: the gateway's own work, exported as child spans of each
//! call's span, so that an operator sees in Jaeger or Tempo where a slow
//! call's time went — each upstream attempt (`tracegate.upstream_attempt`),
//! each retry's backoff (`tracegate.retry_backoff`), the hand-over of the
//! record to the store's writer (`tracegate.record_submit`).
//!
//! Off unless `export.self_tracing` is on. The spans are plain `tracing`
//! spans at TRACE level under the target [`TARGET`]: without this layer a
//! disabled callsite costs a load and a branch. With it, `tracing-opentelemetry`
//! makes them OpenTelemetry spans, and its layer is filtered to that target
//! alone — the HTTP and gRPC crates' own spans and events (`h2`, `tonic`,
//! `hyper`, `reqwest`, `rustls`) are off, so they never become spans, and
//! the exporter's own requests, which go through those crates, cannot loop
//! back. [`attach`] hangs each span under its call's span, whose ids the
//! gateway decided (see `trace_context`).
//!
//! They are diagnostics, not records: they go through a bounded queue
//! (spans beyond it are dropped, and the drop is logged), are batched and
//! sent by a task of their own with the export settings of the calls'
//! spans, not through the store's outbox. What is queued when the gateway
//! stops gets a moment to be sent, then is dropped.

use super::otlp;
use crate::config::ExportConfig;
use crate::trace_context::TraceContext;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Subscriber;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// The `tracing` target of the gateway's own spans.
pub const TARGET: &str = "tracegate::self";

/// Spans waiting to be sent before new ones are dropped.
const QUEUE: usize = 8192;
/// How long a batch waits for more spans once it has one.
const LINGER: Duration = Duration::from_millis(200);

/// Hangs `span` under the call whose trace context is `trace`. Does nothing
/// when self-tracing is off (the span is disabled).
pub fn attach(span: &tracing::Span, trace: &TraceContext) {
    if span.is_disabled() {
        return;
    }
    let (Ok(trace_id), Ok(span_id)) = (
        TraceId::from_hex(&trace.trace_id),
        SpanId::from_hex(&trace.span_id),
    ) else {
        return;
    };
    let call = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(call));
}

/// The spans the layer finished, for [`export`] to send.
pub struct Finished {
    spans: mpsc::Receiver<SpanData>,
    dropped: Arc<AtomicU64>,
    _provider: SdkTracerProvider,
}

/// The layer that turns the gateway's own spans into OpenTelemetry spans,
/// and where they go when they end.
pub fn layer<S>() -> (Box<dyn Layer<S> + Send + Sync>, Finished)
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let (tx, spans) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Queue {
            tx,
            dropped: dropped.clone(),
        })
        .build();
    let tracer = provider.tracer("tracegate");
    let only_ours = Targets::new()
        .with_target(TARGET, LevelFilter::TRACE)
        .with_targets(["h2", "tonic", "hyper", "reqwest", "rustls"].map(|t| (t, LevelFilter::OFF)))
        .with_default(LevelFilter::OFF);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(only_ours);
    let finished = Finished {
        spans,
        dropped,
        _provider: provider,
    };
    (Box::new(layer), finished)
}

/// Sends finished spans to the collector in batches until `stop` resolves,
/// then sends what is queued (for at most `grace`).
pub async fn export(
    mut finished: Finished,
    config: ExportConfig,
    stop: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let exporter = match otlp::exporter(&config) {
        Ok(exporter) => exporter,
        Err(e) => {
            tracing::error!("self-tracing is off: {e}");
            return;
        }
    };
    tokio::pin!(stop);
    loop {
        let first = tokio::select! {
            span = finished.spans.recv() => span,
            () = &mut stop => break,
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < config.batch_size {
            tokio::select! {
                Some(span) = finished.spans.recv() => batch.push(span),
                () = &mut linger => break,
            }
        }
        send(&exporter, batch, &config).await;
        let dropped = finished.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "self-tracing queue full; spans dropped");
        }
    }
    let mut rest = Vec::new();
    while let Ok(span) = finished.spans.try_recv() {
        rest.push(span);
    }
    if !rest.is_empty() {
        let _ = tokio::time::timeout(grace, send(&exporter, rest, &config)).await;
    }
}

async fn send(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: Vec<SpanData>,
    config: &ExportConfig,
) {
    match tokio::time::timeout(config.timeout, exporter.export(batch)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("self-tracing export failed: {e}"),
        Err(_) => tracing::debug!("self-tracing export timed out"),
    }
}

/// The span processor: ended spans into the bounded queue.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<SpanData>,
    dropped: Arc<AtomicU64>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}
