//! Prometheus metrics: what an operator graphs and alerts on.
//!
//! The records answer "what happened in this call"; metrics answer "how is
//! the gateway doing" without a query: throughput, latency, tokens, errors,
//! and whether the store and the span export keep up. `GET /metrics` serves
//! them in the text format the scraper asks for ([`exposition`]: OpenMetrics
//! or Prometheus 0.0.4), encoded by the official `prometheus-client` crate.
//!
//! A call's metrics are the OpenTelemetry GenAI client metrics, named and
//! labelled as the semantic conventions say they appear in Prometheus
//! (`gen_ai.client.operation.duration` is
//! `gen_ai_client_operation_duration_seconds`, the attribute
//! `gen_ai.request.model` the label `gen_ai_request_model`), so dashboards
//! and alerts written for the conventions work unchanged. Everything else
//! is tracegate's own, under `tracegate_`.
//!
//! One [`Metrics`] per gateway, shared by `Arc` — never a process global, so
//! tests running several gateways in one process each see their own. Who
//! writes what:
//!
//! * a call's metrics are observed once, from its finished record
//!   ([`Metrics::observe_call`]), so they agree with the store by
//!   construction: duration (seconds, from the request to the end of the
//!   response; a failed call carries `error_type`), time to first chunk of
//!   streamed calls, tokens by type;
//! * requests in flight are counted by a guard the call holds
//!   ([`InFlight`]) from its arrival until its record is built;
//! * forward counts each retry, by route and reason, as it decides it
//!   ([`Metrics::retried`]);
//! * the store writer times each commit and counts records written (and
//!   the rare record SQLite refuses);
//! * the exporter counts spans sent and failed attempts;
//! * the scrape itself sets what is cheapest to read at scrape time: the
//!   store queue depth, whether the store is degraded and the backlog it
//!   keeps meanwhile, the export backlog and lag, and each worker's health.
//!
//! Label values come from callers (the model name), so their number is
//! bounded: past [`MAX_MODELS`] distinct models, new ones are counted as
//! `other` — a caller sending random model names cannot grow the scrape
//! without bound. The other labels are typed (the record's [`Operation`]
//! and [`ErrorKind`], the retry reason, the token type) or come from the
//! configuration (provider, upstream address, route), so a series can only
//! carry a value the vocabulary or the operator wrote.

pub mod exposition;

use crate::protocol::Operation;
use crate::record::{RetryReason, TraceRecord};
use exposition::Format;
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};
use reqwest::Url;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The most distinct model label values; later models are `other`.
pub const MAX_MODELS: usize = 500;

/// The most distinct feedback names counted; later names are `other`.
pub const MAX_FEEDBACK_NAMES: usize = 100;

/// The label value of models past [`MAX_MODELS`] (and feedback names past
/// [`MAX_FEEDBACK_NAMES`]).
const OTHER_MODEL: &str = "other";

/// Bucket boundaries (seconds) the GenAI conventions advise for the client
/// durations: `gen_ai.client.operation.duration` and
/// `gen_ai.client.operation.time_to_first_chunk`.
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Bucket boundaries (tokens) the conventions advise for
/// `gen_ai.client.token.usage`: powers of 4 from 1 to 4^13.
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Bucket boundaries (seconds) of a store commit.
const COMMIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS.iter().copied())
}

fn token_histogram() -> Histogram {
    Histogram::new(TOKEN_BUCKETS.iter().copied())
}

/// Label values are the vocabulary's wire names.
macro_rules! wire_name_label {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}
wire_name_label!(RetryReason, BacklogPlace, OtlpRejection);

crate::wire_enum! {
    /// Why the OTLP receiver refused spans (`tracegate_otlp_rejected_total`).
    pub enum OtlpRejection {
        /// A payload that does not decode (the whole request: 400).
        Malformed = "malformed",
        /// A content type other than protobuf or JSON (415).
        ContentType = "content_type",
        /// A span with an unusable id (counted per span).
        InvalidSpan = "invalid_span",
        /// A span past `otlp.max_spans_per_request` (counted per span).
        TooManySpans = "too_many_spans",
        /// The store could not take the spans (503, the sender retries).
        StoreUnavailable = "store_unavailable",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OtlpLabels {
    reason: OtlpRejection,
}

/// Where the store keeps records it cannot commit yet (the `place` label of
/// `tracegate_store_backlog_records`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum BacklogPlace {
    Spill,
    Memory,
}

impl BacklogPlace {
    fn as_str(self) -> &'static str {
        match self {
            BacklogPlace::Spill => "spill",
            BacklogPlace::Memory => "memory",
        }
    }
}

/// The labels of the store's backlog.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BacklogLabels {
    place: BacklogPlace,
}

/// The kinds of tokens counted (the `gen_ai_token_type` label): the
/// conventions' `input` and `output`, and the parts of them tracegate
/// counts on its own, `cached_input` (of input) and `reasoning` (of output).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum TokenType {
    Input,
    Output,
    CachedInput,
    Reasoning,
}

impl TokenType {
    fn as_str(self) -> &'static str {
        match self {
            TokenType::Input => "input",
            TokenType::Output => "output",
            TokenType::CachedInput => "cached_input",
            TokenType::Reasoning => "reasoning",
        }
    }
}

/// A call's attributes, as the GenAI conventions name them: the labels of
/// every call metric. A label without a value is left out (`error_type`
/// appears only on failed calls, `gen_ai_request_model` only when the
/// caller named a model), as the conventions ask.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct CallLabels {
    /// `gen_ai.operation.name`.
    operation: Operation,
    /// `gen_ai.provider.name`: `openai`, `anthropic`, `vllm`, ...
    provider: &'static str,
    /// `gen_ai.request.model` (bounded: see [`MAX_MODELS`]).
    model: String,
    /// `server.address` and `server.port`: the upstream the call went to.
    server_address: String,
    server_port: Option<u16>,
    /// `tracegate.route`: the route that served the call.
    route: String,
    /// `error.type`: the error kind of a failed call.
    error_type: Option<&'static str>,
}

impl CallLabels {
    /// The labels as `(name, value)` pairs, empty ones left out.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let port = self.server_port.map(|p| p.to_string());
        [
            (
                "gen_ai_operation_name",
                Some(self.operation.as_str().into()),
            ),
            ("gen_ai_provider_name", Some(self.provider.into())),
            ("gen_ai_request_model", Some(self.model.clone())),
            ("server_address", Some(self.server_address.clone())),
            ("server_port", port),
            ("tracegate_route", Some(self.route.clone())),
            ("error_type", self.error_type.map(String::from)),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.filter(|v| !v.is_empty())?)))
        .collect()
    }
}

impl EncodeLabelSet for CallLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        self.pairs().encode(encoder)
    }
}

/// The labels of token counts: the call's, and the token type.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct TokenLabels {
    call: CallLabels,
    token_type: TokenType,
}

impl EncodeLabelSet for TokenLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> std::fmt::Result {
        let mut pairs = self.call.pairs();
        pairs.push(("gen_ai_token_type", self.token_type.as_str().into()));
        pairs.encode(encoder)
    }
}

/// The labels of spending: the model asked for.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    gen_ai_request_model: String,
}

/// The labels of a retry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    tracegate_route: String,
    reason: RetryReason,
}

/// The labels of feedback: its name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedbackLabels {
    name: String,
}

/// The labels of a pool worker.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    tracegate_route: String,
    worker: String,
}

/// `value` as a label value: itself while fewer than `max` values are
/// `known` (or it is one of them), else `other`.
fn bounded(known: &Mutex<HashSet<String>>, value: &str, max: usize) -> String {
    let mut known = crate::sync::lock(known);
    if known.contains(value) {
        return value.to_string();
    }
    if known.len() < max {
        known.insert(value.to_string());
        return value.to_string();
    }
    OTHER_MODEL.to_string()
}

/// Registers metrics as they are made, in the order they are exposed.
struct Registrar(Registry);

impl Registrar {
    /// `metric`, registered as `name` with `help`.
    fn add<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }

    /// `metric`, registered as `name` with `help`, measured in seconds.
    fn seconds<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0
            .register_with_unit(name, help, Unit::Seconds, metric.clone());
        metric
    }
}

/// What calls report, from their records and while they are served.
struct CallMetrics {
    operation_duration: Family<CallLabels, Histogram, fn() -> Histogram>,
    time_to_first_chunk: Family<CallLabels, Histogram, fn() -> Histogram>,
    token_usage: Family<TokenLabels, Histogram, fn() -> Histogram>,
    token_usage_detail: Family<TokenLabels, Counter>,
    cost: Family<CostLabels, Counter<f64, AtomicU64>>,
    retries: Family<RetryLabels, Counter>,
    in_flight: Gauge,
}

impl CallMetrics {
    fn registered(r: &mut Registrar) -> CallMetrics {
        CallMetrics {
            operation_duration: r.seconds(
                "gen_ai_client_operation_duration",
                "GenAI operation duration: each proxied call, from the request to the end of the response; error_type on failed calls",
                Family::new_with_constructor(duration_histogram),
            ),
            time_to_first_chunk: r.seconds(
                "gen_ai_client_operation_time_to_first_chunk",
                "Time from the request to the first response chunk, of streamed calls only",
                Family::new_with_constructor(duration_histogram),
            ),
            token_usage: r.add(
                "gen_ai_client_token_usage",
                "Number of input and output tokens used, per call, by gen_ai_token_type",
                Family::new_with_constructor(token_histogram),
            ),
            token_usage_detail: r.add(
                "tracegate_token_usage_detail",
                "Tokens that are part of gen_ai_client_token_usage: cached_input (of input), reasoning (of output)",
                Family::default(),
            ),
            cost: r.add(
                "tracegate_cost_usd",
                "USD spent on calls whose model has a [[prices]] entry, by model",
                Family::default(),
            ),
            retries: r.add(
                "tracegate_retries",
                "Upstream attempts retried before anything reached the client, by reason (connect, reset, timeout, 429, 500, 502, 503, 504)",
                Family::default(),
            ),
            in_flight: r.add(
                "tracegate_requests_in_flight",
                "Proxied calls being served now",
                Gauge::default(),
            ),
        }
    }
}

/// What the store writer reports.
struct StoreMetrics {
    queue_depth: Gauge,
    commit_duration: Histogram,
    records_written: Counter,
    commit_failures: Counter,
    records_rejected: Counter,
    degraded: Gauge,
    backlog: Family<BacklogLabels, Gauge>,
    backlog_oldest: Gauge<f64, AtomicU64>,
}

impl StoreMetrics {
    fn registered(r: &mut Registrar) -> StoreMetrics {
        StoreMetrics {
            queue_depth: r.add(
                "tracegate_store_queue_depth",
                "Records waiting for the store writer",
                Gauge::default(),
            ),
            commit_duration: r.seconds(
                "tracegate_store_commit_duration",
                "Time to commit one batch of records",
                Histogram::new(COMMIT_BUCKETS.iter().copied()),
            ),
            records_written: r.add(
                "tracegate_store_records_written",
                "Records committed to the store",
                Counter::default(),
            ),
            commit_failures: r.add(
                "tracegate_store_commit_failures",
                "Failed commit attempts (each is retried)",
                Counter::default(),
            ),
            records_rejected: r.add(
                "tracegate_store_records_rejected",
                "Records SQLite refused for what they hold (each is logged)",
                Counter::default(),
            ),
            degraded: r.add(
                "tracegate_store_degraded",
                "1 while the store cannot commit (records are kept until it can), else 0",
                Gauge::default(),
            ),
            backlog: r.add(
                "tracegate_store_backlog_records",
                "Records kept until the store can commit them, by place: spill (the spill file), memory",
                Family::default(),
            ),
            backlog_oldest: r.seconds(
                "tracegate_store_backlog_oldest",
                "Age of the oldest record kept for the store (0 when none)",
                Gauge::default(),
            ),
        }
    }
}

/// What the span exporter reports.
struct ExportMetrics {
    spans_exported: Counter,
    failures: Counter,
    spans_waiting: Gauge,
    lag: Gauge<f64, AtomicU64>,
}

impl ExportMetrics {
    fn registered(r: &mut Registrar) -> ExportMetrics {
        ExportMetrics {
            spans_exported: r.add(
                "tracegate_export_spans",
                "Spans accepted by the OTLP collector",
                Counter::default(),
            ),
            failures: r.add(
                "tracegate_export_failures",
                "Failed OTLP export attempts (each is retried)",
                Counter::default(),
            ),
            spans_waiting: r.add(
                "tracegate_export_spans_waiting",
                "Spans stored but not yet exported",
                Gauge::default(),
            ),
            lag: r.seconds(
                "tracegate_export_lag",
                "Age of the oldest span waiting for export (0 when none waits)",
                Gauge::default(),
            ),
        }
    }
}

/// What the OTLP receiver reports.
struct OtlpMetrics {
    received: Counter,
    rejected: Family<OtlpLabels, Counter>,
}

impl OtlpMetrics {
    fn registered(r: &mut Registrar) -> OtlpMetrics {
        let rejected: Family<OtlpLabels, Counter> = r.add(
            "tracegate_otlp_rejected",
            "OTLP requests or spans the receiver refused, by reason",
            Family::default(),
        );
        // Every reason is a series from the start: a dashboard's rate is 0,
        // not missing, before the first refusal.
        for reason in OtlpRejection::ALL {
            drop(rejected.get_or_create(&OtlpLabels { reason }));
        }
        OtlpMetrics {
            received: r.add(
                "tracegate_otlp_received_spans",
                "Harness spans the OTLP receiver stored",
                Counter::default(),
            ),
            rejected,
        }
    }
}

/// Every metric the gateway exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    calls: CallMetrics,
    store: StoreMetrics,
    export: ExportMetrics,
    otlp: OtlpMetrics,
    worker_up: Family<WorkerLabels, Gauge>,
    feedback: Family<FeedbackLabels, Counter>,
    models: Mutex<HashSet<String>>,
    feedback_names: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered, at zero.
    pub fn new() -> Metrics {
        let mut r = Registrar(Registry::default());
        let calls = CallMetrics::registered(&mut r);
        let store = StoreMetrics::registered(&mut r);
        let export = ExportMetrics::registered(&mut r);
        let otlp = OtlpMetrics::registered(&mut r);
        let worker_up = r.add(
            "tracegate_worker_up",
            "1 when a pool worker passes its health checks, else 0",
            Family::default(),
        );
        let feedback = r.add(
            "tracegate_feedback",
            "Feedback items stored (POST /feedback), by name",
            Family::default(),
        );
        Metrics {
            registry: r.0,
            calls,
            store,
            export,
            otlp,
            worker_up,
            feedback,
            models: Mutex::new(HashSet::new()),
            feedback_names: Mutex::new(HashSet::new()),
        }
    }

    /// Observes a finished call from its record; `provider` is its
    /// `gen_ai.provider.name`.
    pub fn observe_call(&self, record: &TraceRecord, provider: &'static str) {
        let labels = self.call_labels(record, provider);
        let calls = &self.calls;
        calls
            .operation_duration
            .get_or_create(&labels)
            .observe(record.latency_ms / 1000.0);
        if let Some(ttft) = record.ttft_ms.filter(|_| record.stream) {
            calls
                .time_to_first_chunk
                .get_or_create(&labels)
                .observe(ttft / 1000.0);
        }
        if let Some(cost) = record.cost_usd {
            let labels = CostLabels {
                gen_ai_request_model: labels.model.clone(),
            };
            calls.cost.get_or_create(&labels).inc_by(cost);
        }
        // Token counts describe what was used, not how the call ended.
        let call = CallLabels {
            error_type: None,
            ..labels
        };
        let tokens = |token_type| TokenLabels {
            call: call.clone(),
            token_type,
        };
        let usage = &record.usage;
        for (token_type, count) in [
            (TokenType::Input, usage.input_tokens),
            (TokenType::Output, usage.output_tokens),
            (TokenType::CachedInput, usage.cached_input_tokens),
            (TokenType::Reasoning, usage.reasoning_tokens),
        ] {
            // Only what the upstream reported: an absent count is not zero.
            let Some(count) = count else { continue };
            let labels = tokens(token_type);
            match token_type {
                TokenType::Input | TokenType::Output => {
                    calls
                        .token_usage
                        .get_or_create(&labels)
                        .observe(count as f64);
                }
                TokenType::CachedInput | TokenType::Reasoning => {
                    calls
                        .token_usage_detail
                        .get_or_create(&labels)
                        .inc_by(count);
                }
            }
        }
    }

    /// The labels of a finished call.
    fn call_labels(&self, record: &TraceRecord, provider: &'static str) -> CallLabels {
        let server = Url::parse(&record.upstream).ok();
        CallLabels {
            operation: record.operation,
            provider,
            model: self.model_label(record.model.as_deref()),
            server_address: server
                .as_ref()
                .and_then(Url::host_str)
                .unwrap_or_default()
                .to_string(),
            server_port: server.as_ref().and_then(Url::port_or_known_default),
            route: record.route.clone().unwrap_or_default(),
            error_type: crate::capture::span::error_type(record),
        }
    }

    /// Counts a retry of a call on `route` (its label) for `reason`.
    pub fn retried(&self, route: &str, reason: RetryReason) {
        self.calls
            .retries
            .get_or_create(&RetryLabels {
                tracegate_route: route.to_string(),
                reason,
            })
            .inc();
    }

    /// Counts a stored feedback item by its name (`other` once
    /// [`MAX_FEEDBACK_NAMES`] names are known).
    pub fn feedback_posted(&self, name: &str) {
        let name = bounded(&self.feedback_names, name, MAX_FEEDBACK_NAMES);
        self.feedback.get_or_create(&FeedbackLabels { name }).inc();
    }

    /// The model's label value: `other` once [`MAX_MODELS`] are known.
    fn model_label(&self, model: Option<&str>) -> String {
        bounded(&self.models, model.unwrap_or(""), MAX_MODELS)
    }

    /// Counts a call in flight until the guard is dropped.
    pub fn in_flight(self: &std::sync::Arc<Self>) -> InFlight {
        self.calls.in_flight.inc();
        InFlight {
            metrics: self.clone(),
        }
    }

    /// Records one store commit: its duration and how many records it wrote.
    pub fn observe_commit(&self, took: Duration, records: usize) {
        self.store.commit_duration.observe(took.as_secs_f64());
        self.store.records_written.inc_by(records as u64);
    }

    /// Counts a failed commit attempt.
    pub fn commit_failed(&self) {
        self.store.commit_failures.inc();
    }

    /// Counts records SQLite refused for what they hold.
    pub fn records_rejected(&self, records: usize) {
        if records > 0 {
            self.store.records_rejected.inc_by(records as u64);
        }
    }

    /// Counts spans the collector accepted.
    pub fn spans_exported(&self, count: u64) {
        self.export.spans_exported.inc_by(count);
    }

    /// Counts a failed export attempt.
    pub fn export_failed(&self) {
        self.export.failures.inc();
    }

    /// Counts harness spans the OTLP receiver stored.
    pub fn otlp_received(&self, spans: usize) {
        self.otlp.received.inc_by(spans as u64);
    }

    /// Counts what the OTLP receiver refused (`count` requests or spans).
    pub fn otlp_rejected(&self, reason: OtlpRejection, count: usize) {
        self.otlp
            .rejected
            .get_or_create(&OtlpLabels { reason })
            .inc_by(count as u64);
    }

    /// Encodes every metric in `format`, after setting the values read at
    /// scrape time.
    pub fn encode(&self, scrape: &Scrape, format: Format) -> String {
        self.set_scraped(scrape);
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!("cannot encode metrics: {e}");
        }
        format.convert(&text)
    }

    /// Sets the metrics whose values are read at scrape time.
    fn set_scraped(&self, scrape: &Scrape) {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let store = &self.store;
        store
            .queue_depth
            .set(i64::try_from(scrape.store_queue_depth).unwrap_or(i64::MAX));
        store.degraded.set(i64::from(scrape.store_degraded));
        for (place, records) in [
            (BacklogPlace::Spill, scrape.store_backlog_spilled),
            (BacklogPlace::Memory, scrape.store_backlog_in_memory),
        ] {
            store
                .backlog
                .get_or_create(&BacklogLabels { place })
                .set(count(records));
        }
        store
            .backlog_oldest
            .set(scrape.store_backlog_oldest_seconds);
        self.export.spans_waiting.set(scrape.export_waiting);
        self.export.lag.set(scrape.export_lag_seconds);
        // Workers come and go at run time: only current ones are reported.
        self.worker_up.clear();
        for (route, worker, up) in &scrape.workers {
            self.worker_up
                .get_or_create(&WorkerLabels {
                    tracegate_route: route.clone(),
                    worker: worker.clone(),
                })
                .set(i64::from(*up));
        }
    }
}

/// Values read when `/metrics` is scraped.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Records waiting for the store writer.
    pub store_queue_depth: usize,
    /// Whether the store cannot commit now.
    pub store_degraded: bool,
    /// Records the store keeps in its spill file until it can commit them.
    pub store_backlog_spilled: u64,
    /// Records the store keeps in memory until it can commit them.
    pub store_backlog_in_memory: u64,
    /// Age of the oldest record the store keeps, in seconds (0 when none).
    pub store_backlog_oldest_seconds: f64,
    /// Spans not yet exported.
    pub export_waiting: i64,
    /// Age of the oldest waiting span, in seconds.
    pub export_lag_seconds: f64,
    /// `(route, worker id, healthy)` of every pool worker.
    pub workers: Vec<(String, String, bool)>,
}

/// A call being served: counted in `tracegate_requests_in_flight` until
/// dropped.
pub struct InFlight {
    metrics: std::sync::Arc<Metrics>,
}

impl InFlight {
    /// The metrics the call reports to.
    pub fn metrics(&self) -> &std::sync::Arc<Metrics> {
        &self.metrics
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.calls.in_flight.dec();
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Operation;
    use crate::record::{CallError, ErrorKind, Status, Usage};

    fn call(model: &str) -> TraceRecord {
        TraceRecord {
            model: Some(model.into()),
            route: Some("judge".into()),
            upstream: "http://h:8000/v1".into(),
            operation: Operation::Chat,
            latency_ms: 250.0,
            ttft_ms: Some(40.0),
            stream: true,
            usage: Usage {
                input_tokens: Some(12),
                output_tokens: Some(5),
                reasoning_tokens: Some(2),
                ..Usage::default()
            },
            ..TraceRecord::default()
        }
    }

    fn encode(metrics: &Metrics, scrape: &Scrape) -> String {
        metrics.encode(scrape, Format::OpenMetrics)
    }

    const LABELS: &str = r#"gen_ai_operation_name="chat",gen_ai_provider_name="vllm",gen_ai_request_model="gpt-4o",server_address="h",server_port="8000",tracegate_route="judge""#;

    #[test]
    fn a_call_is_observed_with_its_labels() {
        let metrics = Metrics::new();
        metrics.observe_call(&call("gpt-4o"), "vllm");
        let text = encode(&metrics, &Scrape::default());
        assert!(
            text.contains(&format!(
                "gen_ai_client_operation_duration_seconds_count{{{LABELS}}} 1"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "gen_ai_client_operation_time_to_first_chunk_seconds_count{{{LABELS}}} 1"
        )));
        assert!(text.contains(&format!(
            r#"gen_ai_client_token_usage_sum{{{LABELS},gen_ai_token_type="input"}} 12.0"#
        )));
        assert!(text.contains(&format!(
            r#"tracegate_token_usage_detail_total{{{LABELS},gen_ai_token_type="reasoning"}} 2"#
        )));
        assert!(
            !text.contains(r#"gen_ai_token_type="cached_input""#),
            "no series for a count the upstream did not report"
        );
        assert!(!text.contains("error_type="), "only failed calls have one");
    }

    #[test]
    fn a_failed_call_counts_its_error_kind() {
        let metrics = Metrics::new();
        let mut record = call("m");
        record.status = Status::Error;
        record.error = Some(CallError {
            kind: ErrorKind::UpstreamUnreachable,
            message: String::new(),
        });
        metrics.observe_call(&record, "openai");
        let text = encode(&metrics, &Scrape::default());
        assert!(
            text.contains(r#"gen_ai_request_model="m",server_address="h",server_port="8000",tracegate_route="judge",error_type="upstream_unreachable"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn labels_without_a_value_are_left_out() {
        let metrics = Metrics::new();
        let record = TraceRecord {
            status: Status::Error,
            error: Some(CallError {
                kind: ErrorKind::ModelNotFound,
                message: String::new(),
            }),
            ..TraceRecord::default()
        };
        metrics.observe_call(&record, "openai");
        let text = encode(&metrics, &Scrape::default());
        assert!(
            text.contains(r#"gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name="chat",gen_ai_provider_name="openai",error_type="model_not_found"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn model_labels_are_bounded() {
        let metrics = Metrics::new();
        for i in 0..MAX_MODELS + 10 {
            metrics.observe_call(&call(&format!("model-{i}")), "openai");
        }
        let text = encode(&metrics, &Scrape::default());
        assert!(text.contains(r#"gen_ai_request_model="other""#));
        assert!(!text.contains(&format!("gen_ai_request_model=\"model-{MAX_MODELS}\"")));
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let metrics = std::sync::Arc::new(Metrics::new());
        let guard = metrics.in_flight();
        assert!(encode(&metrics, &Scrape::default()).contains("tracegate_requests_in_flight 1"));
        drop(guard);
        assert!(encode(&metrics, &Scrape::default()).contains("tracegate_requests_in_flight 0"));
    }

    #[test]
    fn a_degraded_store_shows_its_backlog() {
        let metrics = Metrics::new();
        let text = encode(
            &metrics,
            &Scrape {
                store_degraded: true,
                store_backlog_spilled: 7,
                store_backlog_in_memory: 2,
                store_backlog_oldest_seconds: 12.5,
                ..Scrape::default()
            },
        );
        assert!(text.contains("tracegate_store_degraded 1"), "{text}");
        assert!(text.contains(r#"tracegate_store_backlog_records{place="spill"} 7"#));
        assert!(text.contains(r#"tracegate_store_backlog_records{place="memory"} 2"#));
        assert!(text.contains("tracegate_store_backlog_oldest_seconds 12.5"));
        let text = encode(&metrics, &Scrape::default());
        assert!(text.contains("tracegate_store_degraded 0"));
    }

    #[test]
    fn removed_workers_leave_the_scrape() {
        let metrics = Metrics::new();
        let mut scrape = Scrape {
            workers: vec![
                ("pool".into(), "a".into(), true),
                ("pool".into(), "b".into(), false),
            ],
            ..Scrape::default()
        };
        let text = encode(&metrics, &scrape);
        assert!(text.contains(r#"tracegate_worker_up{tracegate_route="pool",worker="b"} 0"#));
        scrape.workers.pop();
        assert!(!encode(&metrics, &scrape).contains(r#"worker="b""#));
    }

    #[test]
    fn every_family_has_help_text() {
        let metrics = Metrics::new();
        let text = encode(&metrics, &Scrape::default());
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
        assert_eq!(helps.len(), types);
        assert!(helps.iter().all(|h| h.split(' ').count() > 3), "{helps:?}");
    }
}
