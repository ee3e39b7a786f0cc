//! The OTLP side of export: the `opentelemetry-otlp` exporter for the
//! configured transport, and our stored spans as the SDK's `SpanData`.
//!
//! The exporter's own retries are disabled: the outbox loop (`export`)
//! retries whole batches with its own backoff, and only moves its cursor on
//! success, so there is one retry policy, not two stacked.

use super::ExportError;
use crate::config::{ExportConfig, OtlpProtocol};
use crate::record::{AttributeValue, HarnessSpan, HarnessSpanKind, HarnessStatusCode, Span};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{
    Protocol, RetryPolicy, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

/// Builds the exporter for `config`, with tracegate's resource
/// (`service.name`, `service.version`, and `OTEL_RESOURCE_ATTRIBUTES`).
pub fn exporter(config: &ExportConfig) -> Result<SpanExporter, ExportError> {
    let mut exporter = match config.protocol {
        OtlpProtocol::Grpc => {
            let mut headers = http::HeaderMap::new();
            for (key, value) in &config.headers {
                let name = http::HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes())
                    .map_err(|_| ExportError::HeaderName(key.clone()))?;
                // Never echo the value: it is usually a credential.
                let value = http::HeaderValue::from_str(value)
                    .map_err(|_| ExportError::HeaderValue(key.clone()))?;
                headers.insert(name, value);
            }
            let metadata = MetadataMap::from_headers(headers);
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&config.endpoint)
                .with_timeout(config.timeout)
                .with_metadata(metadata)
                .with_retry_policy(RetryPolicy::disabled())
                .build()
        }
        OtlpProtocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(&config.endpoint)
            .with_timeout(config.timeout)
            .with_headers(config.headers.iter().cloned().collect())
            .with_retry_policy(RetryPolicy::disabled())
            .build(),
    }?;
    exporter.set_resource(&resource(&config.service_name));
    Ok(exporter)
}

/// The resource every span is exported with.
pub fn resource(service_name: &str) -> Resource {
    Resource::builder()
        .with_service_name(service_name.to_string())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The instrumentation scope of tracegate's spans.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("tracegate")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// The instrumentation scope harness spans are forwarded under (the
/// receiver keeps their resource, not their scope).
pub fn harness_scope() -> InstrumentationScope {
    InstrumentationScope::builder("tracegate.otlp_receiver")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// A stored span and its children (a retried call's attempts), as the
/// SDK's `SpanData`; spans whose ids are unusable are left out.
pub fn span_tree(span: &Span, scope: &InstrumentationScope) -> Vec<SpanData> {
    let mut out: Vec<SpanData> = span_data(span, scope).into_iter().collect();
    for child in &span.children {
        out.extend(span_tree(child, scope));
    }
    out
}

/// A span's trace, span and parent ids from their hex; `None` if the trace
/// or span id is unusable, the parent invalid (a root) if it is.
fn ids(trace_id: &str, span_id: &str, parent: Option<&str>) -> Option<(TraceId, SpanId, SpanId)> {
    let parent = parent.and_then(|p| SpanId::from_hex(p).ok());
    Some((
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        parent.unwrap_or(SpanId::INVALID),
    ))
}

/// A stored span as the SDK's `SpanData`; `None` if its ids are unusable.
pub fn span_data(span: &Span, scope: &InstrumentationScope) -> Option<SpanData> {
    let (trace_id, span_id, parent_span_id) = ids(
        &span.trace_id,
        &span.span_id,
        span.parent_span_id.as_deref(),
    )?;
    let trace_state = span
        .trace_state
        .as_deref()
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    Some(SpanData {
        span_context: SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, false, trace_state),
        parent_span_id,
        parent_span_is_remote: span.parent_is_remote,
        span_kind: SpanKind::Client,
        name: span.name.clone().into(),
        start_time: UNIX_EPOCH + Duration::from_nanos(span.start_unix_nanos),
        end_time: UNIX_EPOCH + Duration::from_nanos(span.end_unix_nanos),
        attributes: span
            .attributes
            .iter()
            .map(|a| KeyValue::new(a.key.clone(), value(&a.value)))
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match &span.error {
            Some(message) => Status::error(message.clone()),
            None => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    })
}

/// A harness span (received by the OTLP receiver) as the SDK's
/// `SpanData`, to forward as it came: its kind, status, attributes and
/// events (its resource is set on the exporter by the caller); `None` if
/// its ids are unusable.
pub fn harness_span_data(span: &HarnessSpan, scope: &InstrumentationScope) -> Option<SpanData> {
    let (trace_id, span_id, parent_span_id) = ids(
        &span.trace_id,
        &span.span_id,
        span.parent_span_id.as_deref(),
    )?;
    let time = |nanos| UNIX_EPOCH + Duration::from_nanos(nanos);
    let mut events = SpanEvents::default();
    events.events = span
        .events
        .iter()
        .map(|e| {
            let at = e["time"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .unwrap_or(UNIX_EPOCH);
            let name = e["name"].as_str().unwrap_or_default().to_string();
            opentelemetry::trace::Event::new(name, at, json_attributes(&e["attributes"]), 0)
        })
        .collect();
    Some(SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id,
        parent_span_is_remote: false,
        span_kind: match span.kind {
            HarnessSpanKind::Server => SpanKind::Server,
            HarnessSpanKind::Client => SpanKind::Client,
            HarnessSpanKind::Producer => SpanKind::Producer,
            HarnessSpanKind::Consumer => SpanKind::Consumer,
            HarnessSpanKind::Internal | HarnessSpanKind::Unspecified => SpanKind::Internal,
        },
        name: span.name.clone().into(),
        start_time: time(span.start_unix_nanos),
        end_time: time(span.end_unix_nanos),
        attributes: json_attributes(&serde_json::Value::Object(span.attributes.clone())),
        dropped_attributes_count: 0,
        events,
        links: SpanLinks::default(),
        status: match span.status_code {
            HarnessStatusCode::Ok => Status::Ok,
            HarnessStatusCode::Error => {
                Status::error(span.status_message.clone().unwrap_or_default())
            }
            HarnessStatusCode::Unset => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    })
}

/// The resource a harness span came with, to forward it under.
pub fn harness_resource(span: &HarnessSpan) -> Resource {
    Resource::builder_empty()
        .with_attributes(json_attributes(&serde_json::Value::Object(
            span.resource.clone(),
        )))
        .build()
}

/// JSON attributes (as the receiver stored them) as OTel key-values:
/// scalars and lists of one scalar type as they are, anything else as its
/// JSON text.
fn json_attributes(attributes: &serde_json::Value) -> Vec<KeyValue> {
    use serde_json::Value as Json;
    let Some(map) = attributes.as_object() else {
        return Vec::new();
    };
    let one = |v: &Json| -> Value {
        match v {
            Json::String(s) => Value::String(s.clone().into()),
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::I64(i),
                None => Value::F64(n.as_f64().unwrap_or_default()),
            },
            other => Value::String(other.to_string().into()),
        }
    };
    map.iter()
        .map(|(k, v)| {
            let value = match v {
                Json::Array(list) if list.iter().all(Json::is_string) => {
                    Value::Array(Array::String(
                        list.iter()
                            .filter_map(|s| s.as_str())
                            .map(|s| StringValue::from(s.to_string()))
                            .collect(),
                    ))
                }
                Json::Array(list) if list.iter().all(Json::is_i64) => {
                    Value::Array(Array::I64(list.iter().filter_map(Json::as_i64).collect()))
                }
                other => one(other),
            };
            KeyValue::new(k.clone(), value)
        })
        .collect()
}

fn value(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::String(s) => Value::String(s.clone().into()),
        AttributeValue::Int(i) => Value::I64(*i),
        AttributeValue::Float(f) => Value::F64(*f),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Strings(list) => Value::Array(Array::String(
            list.iter().cloned().map(StringValue::from).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Attribute;

    #[test]
    fn stored_spans_become_client_spans() {
        let span = Span {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            parent_span_id: Some("00f067aa0ba902b7".into()),
            parent_is_remote: true,
            trace_state: Some("vendor=x".into()),
            name: "chat m".into(),
            start_unix_nanos: 1_000,
            end_unix_nanos: 2_000,
            error: Some("boom".into()),
            attributes: vec![Attribute {
                key: "gen_ai.response.finish_reasons".into(),
                value: AttributeValue::Strings(vec!["stop".into()]),
            }],
            children: Vec::new(),
        };
        let data = span_data(&span, &scope()).unwrap();
        assert_eq!(data.span_kind, SpanKind::Client);
        assert_eq!(data.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert!(data.parent_span_is_remote);
        assert_eq!(data.span_context.trace_state().header(), "vendor=x");
        assert_eq!(data.status, Status::error("boom"));
        assert_eq!(
            data.end_time.duration_since(data.start_time).unwrap(),
            Duration::from_nanos(1000)
        );
    }

    #[test]
    fn spans_with_broken_ids_are_refused() {
        let span = Span {
            trace_id: "nope".into(),
            ..Span::default()
        };
        assert!(span_data(&span, &scope()).is_none());
    }
}
