//! Export settings: where spans go, read from the standard
//! `OTEL_EXPORTER_OTLP_*` variables, the `[export]` table, and flags.
//!
//! The standard variables are one more part of the environment layer
//! ([`standard_variables`]), merged with the rest: flags win over them and
//! they win over the file. They follow the OpenTelemetry specification: a
//! signal-specific variable (`..._TRACES_...`) wins over the generic one, a
//! traces endpoint is a full URL while the generic endpoint is a base that
//! gets `/v1/traces` for HTTP, and a timeout is in milliseconds. Those
//! formats belong to the variables, so the value's origin says which one it
//! is written in. Export is on as soon as an endpoint is given anywhere.

use super::error::{ConfigError, Origin};
use super::key::Key;
use super::raw::{Layer, Raw, Setting, Settings};
use reqwest::Url;
use std::time::Duration;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (usually port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (usually port 4318).
    #[value(name = "http/protobuf")]
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
    /// Whether the gateway's own work (each upstream attempt, each retry's
    /// backoff, each record's hand-over to the store) is exported too, as
    /// child spans of the calls' spans.
    pub self_tracing: bool,
}

/// The variable whose endpoint is a full traces URL.
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";

/// The standard variables of each export key, the signal-specific one first.
const STANDARD_VARIABLES: [(Key, &[&str]); 5] = [
    (
        Key::ExportEndpoint,
        &[TRACES_ENDPOINT, "OTEL_EXPORTER_OTLP_ENDPOINT"],
    ),
    (
        Key::ExportProtocol,
        &[
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ],
    ),
    (
        Key::ExportHeaders,
        &[
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ],
    ),
    (
        Key::ExportTimeout,
        &[
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ],
    ),
    (Key::ExportServiceName, &["OTEL_SERVICE_NAME"]),
];

/// The export keys the standard `OTEL_*` variables of the process set.
pub(super) fn standard_variables() -> Layer {
    from_variables(|var| std::env::var(var).ok())
}

/// The export keys set by the variables `lookup` finds (blank ones are
/// unset).
fn from_variables(lookup: impl Fn(&str) -> Option<String>) -> Layer {
    let mut layer = Layer::new();
    for (key, variables) in STANDARD_VARIABLES {
        let set = variables.iter().find_map(|var| {
            let value = lookup(var).filter(|v| !v.trim().is_empty())?;
            Some(Setting::text_from(value, Origin::Env(var.to_string())))
        });
        if let Some(setting) = set {
            layer.insert(key, setting);
        }
    }
    layer
}

/// The export settings; `None` when no endpoint is given anywhere.
pub(super) fn export_config(s: &Settings) -> Result<Option<ExportConfig>, ConfigError> {
    let Some(endpoint) = s.get(Key::ExportEndpoint) else {
        return Ok(None);
    };
    let url = collector_url(endpoint)?;
    let protocol = match s.get(Key::ExportProtocol) {
        Some(protocol) => protocol
            .choice(Key::ExportProtocol.name(), false)
            .map_err(|e| ConfigError {
                message: format!("{} (http/json is not supported)", e.message),
                ..e
            })?,
        // The conventional ports say which transport a collector listens on.
        None if url.port() == Some(4317) => OtlpProtocol::Grpc,
        None => OtlpProtocol::HttpProtobuf,
    };
    let full = endpoint.origin == Origin::Env(TRACES_ENDPOINT.into());
    Ok(Some(ExportConfig {
        endpoint: traces_url(&url, protocol, full),
        protocol,
        headers: match s.get(Key::ExportHeaders) {
            Some(headers) => export_headers(headers)?,
            None => Vec::new(),
        },
        timeout: timeout(s)?,
        service_name: s
            .text(Key::ExportServiceName)?
            .unwrap_or_else(|| "tracegate".to_string()),
        include_content: s.switch_or(Key::ExportIncludeContent, false)?,
        batch_size: s.positive_or(Key::ExportBatchSize, 512)?,
        self_tracing: s.switch_or(Key::ExportSelfTracing, false)?,
    }))
}

/// The collector's URL, http or https.
fn collector_url(endpoint: &Setting) -> Result<Url, ConfigError> {
    let key = Key::ExportEndpoint.name();
    let text = endpoint.text(key)?;
    let url = Url::parse(text.trim())
        .map_err(|e| endpoint.error(key, format!("'{text}' is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        let message = format!("'{text}' must start with http:// or https://");
        return Err(endpoint.error(key, message));
    }
    Ok(url)
}

/// Where spans are sent: a base gets `/v1/traces` for HTTP, unless it is
/// already a full traces URL.
fn traces_url(url: &Url, protocol: OtlpProtocol, full: bool) -> String {
    let base = url.as_str().trim_end_matches('/');
    match protocol {
        OtlpProtocol::HttpProtobuf if !full && !url.path().ends_with("/v1/traces") => {
            format!("{base}/v1/traces")
        }
        _ => base.to_string(),
    }
}

/// Headers: a table in the file, `key=value,...` in the standard variables.
fn export_headers(headers: &Setting) -> Result<Vec<(String, String)>, ConfigError> {
    let key = Key::ExportHeaders.name();
    match &headers.raw {
        Raw::Table(table) => table
            .iter()
            .map(|(name, value)| Ok((name.clone(), value.text(&format!("{key}.{name}"))?)))
            .collect(),
        _ => parse_otel_headers(headers),
    }
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs separated by commas,
/// values percent-encoded.
fn parse_otel_headers(headers: &Setting) -> Result<Vec<(String, String)>, ConfigError> {
    let key = Key::ExportHeaders.name();
    let text = headers.text(key)?;
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            // Never echo the value: it is usually a credential.
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| headers.error(key, "each entry must be key=value"))?;
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8_lossy()
                .into_owned();
            Ok((name.trim().to_string(), value))
        })
        .collect()
}

/// The export timeout: milliseconds in the standard variables, a duration
/// elsewhere.
fn timeout(s: &Settings) -> Result<Duration, ConfigError> {
    let key = Key::ExportTimeout;
    match s.get(key) {
        Some(ms) if matches!(&ms.origin, Origin::Env(var) if var.starts_with("OTEL_")) => {
            let text = ms.text(key.name())?;
            let ms_count = text
                .trim()
                .parse()
                .map_err(|_| ms.error(key.name(), format!("'{text}' is not milliseconds")))?;
            Ok(Duration::from_millis(ms_count))
        }
        _ => s.limit(key, Duration::from_secs(10)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::ServeArgs;
    use super::super::args;
    use super::*;

    fn flags(args: ServeArgs) -> Settings {
        Settings::merge(args::layers(&args).unwrap())
    }

    #[test]
    fn otel_headers_are_pairs_with_encoded_values() {
        let env =
            |text: &str| Setting::text_from(text, Origin::Env("OTEL_EXPORTER_OTLP_HEADERS".into()));
        let h = parse_otel_headers(&env("api-key=abc%3D%3D, x-team = ml ")).unwrap();
        assert_eq!(
            h,
            vec![
                ("api-key".into(), "abc==".into()),
                ("x-team".into(), "ml".into())
            ]
        );
        let e = parse_otel_headers(&env("secret-without-equals")).unwrap_err();
        assert!(
            !e.to_string().contains("secret"),
            "the value is never echoed"
        );
    }

    #[test]
    fn export_endpoints_resolve_per_protocol() {
        let resolve = |endpoint: &str, protocol: Option<&str>| {
            let s = flags(ServeArgs {
                otlp_endpoint: Some(endpoint.into()),
                otlp_protocol: protocol.map(str::to_string),
                ..ServeArgs::default()
            });
            let c = export_config(&s).unwrap().unwrap();
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
        assert!(export_config(&Settings::default()).is_ok());
    }

    #[test]
    fn standard_variables_keep_their_own_formats_under_the_flags() {
        let variables = from_variables(|var| match var {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => Some("http://c:4318/custom".into()),
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://ignored:4318".into()),
            "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("1500".into()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".into()),
            _ => None,
        });
        let flags = args::layers(&ServeArgs {
            otlp_protocol: Some("http/protobuf".into()),
            ..ServeArgs::default()
        })
        .unwrap();
        let s = Settings::merge([variables].into_iter().chain(flags));
        let c = export_config(&s).unwrap().unwrap();
        assert_eq!(
            c.endpoint, "http://c:4318/custom",
            "a traces URL is used whole"
        );
        assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf, "the flag wins");
        assert_eq!(c.timeout, Duration::from_millis(1500));
    }

    #[test]
    fn otlp_protocols_parse_their_names() {
        let protocol = |text: &str| {
            Setting::text_from(text, Origin::Flag("--otlp-protocol".into()))
                .choice::<OtlpProtocol>("export.protocol", false)
        };
        assert_eq!(protocol(" grpc").unwrap(), OtlpProtocol::Grpc);
        assert_eq!(
            protocol("http/protobuf").unwrap(),
            OtlpProtocol::HttpProtobuf
        );
        assert!(protocol("http/json").is_err());
    }
}
