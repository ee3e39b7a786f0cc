//! Export settings: where spans go, read from the standard
//! `OTEL_EXPORTER_OTLP_*` variables, the `[export]` table, and flags.
//!
//! The standard variables follow the OpenTelemetry specification: a
//! signal-specific variable (`..._TRACES_...`) wins over the generic one, a
//! traces endpoint is a full URL while the generic endpoint is a base that
//! gets `/v1/traces` for HTTP. Flags win over both; the file comes last.
//! Export is on as soon as an endpoint is given anywhere.

use super::{ConfigError, ServeArgs, duration, err, flag, positive};
use reqwest::Url;
use serde::Deserialize;
use std::time::Duration;

/// The `[export]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileExport {
    endpoint: Option<String>,
    protocol: Option<String>,
    headers: Option<std::collections::BTreeMap<String, String>>,
    timeout: Option<String>,
    service_name: Option<String>,
    include_content: Option<bool>,
    batch_size: Option<usize>,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (usually port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (usually port 4318).
    HttpProtobuf,
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    /// The collector URL: for gRPC its base, for HTTP the full traces URL
    /// (`.../v1/traces`).
    pub endpoint: String,
    /// The transport.
    pub protocol: OtlpProtocol,
    /// Headers sent with each export (a collector's API key, say).
    pub headers: Vec<(String, String)>,
    /// Time allowed for one export request.
    pub timeout: Duration,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Whether message content goes on spans.
    pub include_content: bool,
    /// Most spans per export request.
    pub batch_size: usize,
}

/// An `OTEL_*` variable, when set to something.
fn otel_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The export settings: flags, then the standard `OTEL_EXPORTER_OTLP_*`
/// variables (the traces-specific one first), then the `[export]` table.
/// Export is on when an endpoint is given anywhere.
pub(super) fn export_config(
    args: &ServeArgs,
    file: FileExport,
) -> Result<Option<ExportConfig>, ConfigError> {
    // A traces endpoint is the full URL; the others are bases.
    let (endpoint, full) = match (
        &args.otlp_endpoint,
        otel_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    ) {
        (Some(flag), _) => (flag.clone(), false),
        (None, Some(traces)) => (traces, true),
        (None, None) => match otel_env("OTEL_EXPORTER_OTLP_ENDPOINT").or(file.endpoint) {
            Some(base) => (base, false),
            None => return Ok(None),
        },
    };
    let url = Url::parse(endpoint.trim()).map_err(|e| {
        err(
            "export.endpoint",
            format!("'{endpoint}' is not a URL ({e})"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err(
            "export.endpoint",
            format!("'{endpoint}' must start with http:// or https://"),
        ));
    }
    let protocol_text = args
        .otlp_protocol
        .clone()
        .or_else(|| otel_env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
        .or_else(|| otel_env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .or(file.protocol);
    let protocol = match protocol_text.as_deref().map(str::trim) {
        Some("grpc") => OtlpProtocol::Grpc,
        Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
        Some(other) => {
            return Err(err(
                "export.protocol",
                format!("'{other}' is not grpc or http/protobuf (http/json is not supported)"),
            ));
        }
        // The conventional ports say which transport a collector listens on.
        None if url.port() == Some(4317) => OtlpProtocol::Grpc,
        None => OtlpProtocol::HttpProtobuf,
    };
    let endpoint = match protocol {
        OtlpProtocol::HttpProtobuf if !full && !url.path().ends_with("/v1/traces") => {
            format!("{}/v1/traces", url.as_str().trim_end_matches('/'))
        }
        _ => url.as_str().trim_end_matches('/').to_string(),
    };
    let headers = match otel_env("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .or_else(|| otel_env("OTEL_EXPORTER_OTLP_HEADERS"))
    {
        Some(text) => parse_otel_headers(&text)?,
        None => file.headers.unwrap_or_default().into_iter().collect(),
    };
    let timeout = match otel_env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| otel_env("OTEL_EXPORTER_OTLP_TIMEOUT"))
    {
        Some(ms) => Duration::from_millis(
            ms.trim()
                .parse()
                .map_err(|_| err("export.timeout", format!("'{ms}' is not milliseconds")))?,
        ),
        None => duration("export.timeout", file.timeout, "10s")?
            .ok_or_else(|| err("export.timeout", "cannot be disabled"))?,
    };
    Ok(Some(ExportConfig {
        endpoint,
        protocol,
        headers,
        timeout,
        service_name: otel_env("OTEL_SERVICE_NAME")
            .or(file.service_name)
            .unwrap_or_else(|| "tracegate".to_string()),
        include_content: flag(
            "export.include_content",
            &args.export_include_content,
            file.include_content,
        )?
        .unwrap_or(false),
        batch_size: positive("export.batch_size", file.batch_size.unwrap_or(512))?,
    }))
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs separated by commas,
/// values percent-encoded.
fn parse_otel_headers(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                // Never echo the value: it is usually a credential.
                err("OTEL_EXPORTER_OTLP_HEADERS", "each entry must be key=value")
            })?;
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8_lossy()
                .into_owned();
            Ok((key.trim().to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otel_headers_are_pairs_with_encoded_values() {
        let h = parse_otel_headers("api-key=abc%3D%3D, x-team = ml ").unwrap();
        assert_eq!(
            h,
            vec![
                ("api-key".into(), "abc==".into()),
                ("x-team".into(), "ml".into())
            ]
        );
        let e = parse_otel_headers("secret-without-equals").unwrap_err();
        assert!(!e.0.contains("secret"), "the value is never echoed");
    }

    #[test]
    fn export_endpoints_resolve_per_protocol() {
        let resolve = |endpoint: &str, protocol: Option<&str>| {
            let args = ServeArgs {
                otlp_endpoint: Some(endpoint.into()),
                otlp_protocol: protocol.map(str::to_string),
                ..ServeArgs::default()
            };
            let c = export_config(&args, FileExport::default())
                .unwrap()
                .unwrap();
            (c.endpoint, c.protocol)
        };
        assert_eq!(
            resolve("http://c:4317", None),
            ("http://c:4317".into(), OtlpProtocol::Grpc)
        );
        assert_eq!(
            resolve("http://c:4318", None),
            ("http://c:4318/v1/traces".into(), OtlpProtocol::HttpProtobuf)
        );
        assert_eq!(
            resolve("https://otlp.example.com/otlp/", Some("http/protobuf")).0,
            "https://otlp.example.com/otlp/v1/traces"
        );
        assert!(export_config(&ServeArgs::default(), FileExport::default()).is_ok());
    }
}
