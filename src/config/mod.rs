//! Configuration: a TOML file, `TRACEGATE_*` environment variables and
//! command-line flags, merged into one validated [`Config`].
//!
//! Precedence is flags > environment > file > defaults, key by key. Flags and
//! environment variables are declared together (clap reads both), the file is
//! read with unknown keys rejected, and every value is validated here, once,
//! with an error that names the key — so the rest of the gateway never sees a
//! bad value and a user never sees a stack trace. With no configuration at all
//! the gateway serves: it listens on `127.0.0.1:9090`, stores traces in
//! `./tracegate.db`, and forwards to `$OPENAI_BASE_URL` (else OpenAI),
//! passing the caller's credentials through.

mod export;
mod routes;

pub use export::{ExportConfig, OtlpProtocol};
pub use routes::{
    ApiProtocol, HeaderSource, RouteConfig, UpstreamAuth, UpstreamKind, WorkerConfig, parse_auth,
};

use reqwest::Url;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9090";
/// The default database path.
pub const DEFAULT_DB: &str = "./tracegate.db";
/// The upstream used when none is configured and `$OPENAI_BASE_URL` is unset.
pub const DEFAULT_UPSTREAM: &str = "https://api.openai.com/v1";
/// The default request body limit: 32 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Flags of `tracegate serve`; each can also come from its `TRACEGATE_*`
/// variable. Values stay strings here so that [`Config::load`] can name the key
/// in its error whatever the source.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "TRACEGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9090].
    #[arg(long, env = "TRACEGATE_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// SQLite database file [default: ./tracegate.db].
    #[arg(long, env = "TRACEGATE_DB", value_name = "PATH")]
    pub db: Option<String>,
    /// Upstream base URL, e.g. http://localhost:8000/v1 (repeatable; the
    /// environment variable takes a comma-separated list)
    /// [default: $OPENAI_BASE_URL, else https://api.openai.com/v1].
    #[arg(
        long,
        env = "TRACEGATE_UPSTREAM",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub upstream: Vec<String>,
    /// Largest request body accepted, in bytes (suffixes KiB, MiB, GiB)
    /// [default: 32MiB].
    #[arg(long, env = "TRACEGATE_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<String>,
    /// Time allowed to connect to the upstream [default: 10s].
    #[arg(long, env = "TRACEGATE_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Longest silence allowed while reading the upstream's answer; "none"
    /// disables it [default: 10m].
    #[arg(long, env = "TRACEGATE_READ_TIMEOUT", value_name = "DURATION")]
    pub read_timeout: Option<String>,
    /// Total time allowed for one upstream call; "none" disables it
    /// [default: none — LLM calls are long].
    #[arg(long, env = "TRACEGATE_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub request_timeout: Option<String>,
    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish
    /// [default: 30s].
    #[arg(long, env = "TRACEGATE_SHUTDOWN_GRACE", value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// What the upstream is: vllm, openai, anthropic or generic; vllm turns
    /// on the token-data options below [default: generic].
    #[arg(long, env = "TRACEGATE_KIND", value_name = "KIND")]
    pub kind: Option<String>,
    /// Ask the upstream for logprobs on chat and completions calls
    /// [default: true for vllm, else false].
    #[arg(long, env = "TRACEGATE_INJECT_LOGPROBS", value_name = "BOOL")]
    pub inject_logprobs: Option<String>,
    /// Ask the upstream for token ids (`return_token_ids`)
    /// [default: true for vllm, else false].
    #[arg(long, env = "TRACEGATE_INJECT_RETURN_TOKEN_IDS", value_name = "BOOL")]
    pub inject_return_token_ids: Option<String>,
    /// Remove vLLM's extra fields (token ids, prompt logprobs, logprobs the
    /// client did not ask for) from what the client receives
    /// [default: true for vllm, else false].
    #[arg(long, env = "TRACEGATE_STRIP_VLLM_FIELDS", value_name = "BOOL")]
    pub strip_vllm_fields: Option<String>,
    /// Keep embedding vectors in stored raw responses [default: false].
    #[arg(long, env = "TRACEGATE_STORE_EMBEDDINGS", value_name = "BOOL")]
    pub store_embeddings: Option<String>,
    /// Send the upstream the gateway span's `traceparent` (off: remove any
    /// incoming one too) [default: true].
    #[arg(long, env = "TRACEGATE_PROPAGATE_TRACEPARENT", value_name = "BOOL")]
    pub propagate_traceparent: Option<String>,
    /// OTLP collector endpoint; turns span export on. Overrides
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: grpc or http/protobuf. Overrides
    /// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL and OTEL_EXPORTER_OTLP_PROTOCOL
    /// [default: grpc for port 4317, else http/protobuf].
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,
    /// Put message content on exported spans [default: false].
    #[arg(long, env = "TRACEGATE_EXPORT_INCLUDE_CONTENT", value_name = "BOOL")]
    pub export_include_content: Option<String>,
    /// Routes by model, as a JSON array of route objects (the same keys as
    /// the file's [[routes]]).
    #[arg(long, env = "TRACEGATE_ROUTES", value_name = "JSON")]
    pub routes: Option<String>,
    /// Upstream credentials of the single-upstream route: passthrough or
    /// env:VARIABLE [default: passthrough].
    #[arg(long, env = "TRACEGATE_UPSTREAM_AUTH", value_name = "AUTH")]
    pub upstream_auth: Option<String>,
    /// Tokens callers must present to use the gateway (comma-separated in the
    /// environment variable); turns inbound auth on.
    #[arg(
        long,
        env = "TRACEGATE_AUTH_TOKENS",
        value_name = "TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub auth_tokens: Vec<String>,
    /// The header carrying the gateway token, when not Authorization (so
    /// callers' own Authorization can pass through to upstreams).
    #[arg(long, env = "TRACEGATE_AUTH_HEADER", value_name = "HEADER")]
    pub auth_header: Option<String>,
    /// How often worker health is checked [default: 10s].
    #[arg(long, env = "TRACEGATE_HEALTH_CHECK_INTERVAL", value_name = "DURATION")]
    pub health_check_interval: Option<String>,
}

/// The configuration file, as written. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    db: Option<String>,
    upstream: Option<OneOrMany>,
    max_body_bytes: Option<ByteSize>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    request_timeout: Option<String>,
    shutdown_grace: Option<String>,
    kind: Option<String>,
    inject_logprobs: Option<bool>,
    inject_return_token_ids: Option<bool>,
    strip_vllm_fields: Option<bool>,
    propagate_traceparent: Option<bool>,
    upstream_auth: Option<String>,
    health_check_interval: Option<String>,
    session_affinity_capacity: Option<usize>,
    routes: Option<Vec<routes::FileRoute>>,
    auth: Option<FileAuth>,
    store: Option<FileStore>,
    capture: Option<FileCapture>,
    export: Option<export::FileExport>,
}

/// The `[auth]` table: inbound auth.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    tokens: Option<Vec<String>>,
    header: Option<String>,
}

/// The `[capture]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCapture {
    store_embeddings: Option<bool>,
}

/// The `[store]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStore {
    queue_capacity: Option<usize>,
    batch_max: Option<usize>,
}

/// A key that takes one string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "expected a URL or a list of URLs")]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A byte count written as an integer or a string with a unit.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a byte count like 33554432 or \"32MiB\""
)]
enum ByteSize {
    Bytes(u64),
    Text(String),
}

/// The validated configuration of a running gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The address the gateway listens on.
    pub listen: SocketAddr,
    /// The SQLite database file.
    pub db: PathBuf,
    /// Where calls go: the routes in match order (one implicit route when
    /// none is configured).
    pub routes: Vec<RouteConfig>,
    /// Inbound auth: who may use the gateway.
    pub auth: InboundAuth,
    /// How often worker health is checked.
    pub health_check_interval: Duration,
    /// How many sessions remember their worker (least recently used forgotten).
    pub session_affinity_capacity: usize,
    /// What capture keeps.
    pub capture: CaptureOptions,
    /// Where spans are exported; `None` when export is off.
    pub export: Option<ExportConfig>,
    /// Whether the upstream gets the gateway span's `traceparent`.
    pub propagate_traceparent: bool,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Time allowed to connect to an upstream.
    pub connect_timeout: Duration,
    /// Longest silence allowed while reading an upstream answer.
    pub read_timeout: Option<Duration>,
    /// Total time allowed for one upstream call.
    pub request_timeout: Option<Duration>,
    /// How long in-flight calls may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Store tuning.
    pub store: StoreOptions,
}

/// Inbound auth: the tokens callers present, and where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundAuth {
    /// Accepted tokens; empty means auth is off.
    pub tokens: Vec<String>,
    /// The header carrying the token; `None` for `Authorization: Bearer`.
    pub header: Option<http::HeaderName>,
}

impl InboundAuth {
    /// Whether callers must present a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }
}

/// What capture keeps beyond the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureOptions {
    /// Keep embedding vectors in stored raw responses.
    pub store_embeddings: bool,
}

/// Tuning of the store writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Records that may wait for the writer before callers wait for room.
    pub queue_capacity: usize,
    /// Most records committed in one transaction.
    pub batch_max: usize,
    /// How long a statement waits for another process's lock (a prune's
    /// `VACUUM`, say) before it fails and the writer retries the batch.
    pub busy_timeout: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            batch_max: 512,
            busy_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// A configuration error: one line, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(key: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{key}: {message}"))
}

impl Config {
    /// Builds the configuration from flags and environment (`args`, as clap
    /// parsed them), the file they name, and the defaults.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let routes = load_routes(args, &mut file)?;
        let auth = inbound_auth(args, file.auth.take().unwrap_or_default())?;
        check_auth_against_routes(&auth, &routes)?;
        let health_check_interval = duration(
            "health_check_interval",
            pick(
                &args.health_check_interval,
                file.health_check_interval.take(),
            ),
            "10s",
        )?
        .ok_or_else(|| err("health_check_interval", "cannot be disabled"))?;
        let session_affinity_capacity = positive(
            "session_affinity_capacity",
            file.session_affinity_capacity.unwrap_or(100_000),
        )?;
        let store_file = file.store.unwrap_or_default();

        let listen_text = pick(&args.listen, file.listen).unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_text.parse().map_err(|_| {
            err(
                "listen",
                format!("'{listen_text}' is not an address like 127.0.0.1:9090"),
            )
        })?;

        let db = PathBuf::from(pick(&args.db, file.db).unwrap_or_else(|| DEFAULT_DB.into()));
        if db.as_os_str().is_empty() {
            return Err(err("db", "must not be empty"));
        }

        let capture = CaptureOptions {
            store_embeddings: flag(
                "capture.store_embeddings",
                &args.store_embeddings,
                file.capture.and_then(|c| c.store_embeddings),
            )?
            .unwrap_or(false),
        };

        let max_body_bytes = match (args.max_body_bytes.clone(), file.max_body_bytes) {
            (Some(text), _) | (None, Some(ByteSize::Text(text))) => {
                parse_bytes(&text).ok_or_else(|| {
                    err(
                        "max_body_bytes",
                        format!("'{text}' is not a size like 32MiB"),
                    )
                })?
            }
            (None, Some(ByteSize::Bytes(n))) => n,
            (None, None) => DEFAULT_MAX_BODY_BYTES as u64,
        };
        if max_body_bytes == 0 {
            return Err(err("max_body_bytes", "must be greater than zero"));
        }

        let connect_timeout = duration(
            "connect_timeout",
            pick(&args.connect_timeout, file.connect_timeout),
            "10s",
        )?
        .ok_or_else(|| err("connect_timeout", "cannot be disabled"))?;
        let read_timeout = duration(
            "read_timeout",
            pick(&args.read_timeout, file.read_timeout),
            "10m",
        )?;
        let request_timeout = duration(
            "request_timeout",
            pick(&args.request_timeout, file.request_timeout),
            "none",
        )?;
        let shutdown_grace = duration(
            "shutdown_grace",
            pick(&args.shutdown_grace, file.shutdown_grace),
            "30s",
        )?
        .unwrap_or(Duration::ZERO);

        let defaults = StoreOptions::default();
        let store = StoreOptions {
            queue_capacity: positive(
                "store.queue_capacity",
                store_file.queue_capacity.unwrap_or(defaults.queue_capacity),
            )?,
            batch_max: positive(
                "store.batch_max",
                store_file.batch_max.unwrap_or(defaults.batch_max),
            )?,
            busy_timeout: defaults.busy_timeout,
        };

        let propagate_traceparent = flag(
            "propagate_traceparent",
            &args.propagate_traceparent,
            file.propagate_traceparent,
        )?
        .unwrap_or(true);
        let export = export::export_config(args, file.export.unwrap_or_default())?;

        Ok(Config {
            listen,
            db,
            routes,
            auth,
            health_check_interval,
            session_affinity_capacity,
            capture,
            export,
            propagate_traceparent,
            max_body_bytes: usize::try_from(max_body_bytes)
                .map_err(|_| err("max_body_bytes", "too large for this machine"))?,
            connect_timeout,
            read_timeout,
            request_timeout,
            shutdown_grace,
            store,
        })
    }
}

/// The routes: `TRACEGATE_ROUTES` / `--routes`, else the file's
/// `[[routes]]`, else the implicit route of the top-level keys.
fn load_routes(args: &ServeArgs, file: &mut FileConfig) -> Result<Vec<RouteConfig>, ConfigError> {
    let configured = match &args.routes {
        Some(json) => routes::routes_from_json(json)?,
        None => file.routes.take().unwrap_or_default(),
    };
    if !configured.is_empty() {
        // Top-level route keys would be silently ignored: refuse them.
        let ignored = [
            (
                "upstream",
                !args.upstream.is_empty() || file.upstream.is_some(),
            ),
            (
                "upstream_auth",
                args.upstream_auth.is_some() || file.upstream_auth.is_some(),
            ),
            ("kind", args.kind.is_some() || file.kind.is_some()),
        ];
        if let Some((key, _)) = ignored.iter().find(|(_, set)| *set) {
            return Err(err(
                key,
                "set it per route when routes are configured (a route with model_prefix = \"*\" takes the rest)",
            ));
        }
        return routes::configured_routes(configured);
    }
    let upstream_texts = if !args.upstream.is_empty() {
        args.upstream.clone()
    } else {
        match file.upstream.take() {
            Some(OneOrMany::One(u)) => vec![u],
            Some(OneOrMany::Many(list)) => list,
            None => vec![default_upstream()],
        }
    };
    if upstream_texts.is_empty() {
        return Err(err("upstream", "at least one upstream URL is needed"));
    }
    let upstreams = upstream_texts
        .iter()
        .map(|u| parse_upstream(u).map_err(|m| err("upstream", m)))
        .collect::<Result<Vec<_>, _>>()?;
    let kind = match pick(&args.kind, file.kind.take()) {
        Some(text) => UpstreamKind::parse(&text).ok_or_else(|| {
            err(
                "kind",
                format!("'{text}' is not one of vllm, openai, anthropic, generic"),
            )
        })?,
        None => UpstreamKind::Generic,
    };
    let top = routes::TopLevel {
        upstreams,
        kind,
        auth: pick(&args.upstream_auth, file.upstream_auth.take()),
        inject_logprobs: flag(
            "inject_logprobs",
            &args.inject_logprobs,
            file.inject_logprobs,
        )?,
        inject_return_token_ids: flag(
            "inject_return_token_ids",
            &args.inject_return_token_ids,
            file.inject_return_token_ids,
        )?,
        strip_vllm_fields: flag(
            "strip_vllm_fields",
            &args.strip_vllm_fields,
            file.strip_vllm_fields,
        )?,
    };
    Ok(vec![routes::implicit_route(top)?])
}

/// Inbound auth: tokens from `TRACEGATE_AUTH_TOKENS` / `--auth-tokens`, else
/// the file's `[auth]`.
fn inbound_auth(args: &ServeArgs, file: FileAuth) -> Result<InboundAuth, ConfigError> {
    let tokens = if args.auth_tokens.is_empty() {
        file.tokens.unwrap_or_default()
    } else {
        args.auth_tokens.clone()
    };
    let tokens: Vec<String> = tokens.into_iter().map(|t| t.trim().to_string()).collect();
    if tokens.iter().any(String::is_empty) {
        return Err(err("auth.tokens", "a token must not be empty"));
    }
    let header = match pick(&args.auth_header, file.header) {
        Some(name) => {
            let name = http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| err("auth.header", format!("'{name}' is not a header name")))?;
            (name != http::header::AUTHORIZATION).then_some(name)
        }
        None => None,
    };
    Ok(InboundAuth { tokens, header })
}

/// With inbound auth in `Authorization`, a passthrough route would hand the
/// gateway's own token to the upstream as a credential.
fn check_auth_against_routes(
    auth: &InboundAuth,
    routes: &[RouteConfig],
) -> Result<(), ConfigError> {
    if !auth.enabled() || auth.header.is_some() {
        return Ok(());
    }
    match routes.iter().find(|r| r.auth == UpstreamAuth::Passthrough) {
        Some(route) => {
            let key = match &route.name {
                Some(name) => format!("routes ({name}): auth"),
                None => "upstream_auth".to_string(),
            };
            Err(err(
                &key,
                "passthrough would forward the gateway token upstream while inbound auth reads \
                 Authorization; use env:VARIABLE, or set auth.header (e.g. x-tracegate-key) for the \
                 gateway token",
            ))
        }
        None => Ok(()),
    }
}

/// The flag-or-environment value if given, else the file's.
fn pick(cli: &Option<String>, file: Option<String>) -> Option<String> {
    cli.clone().or(file)
}

/// A boolean: the flag-or-environment text if given (`true`/`false`,
/// `1`/`0`, `yes`/`no`, `on`/`off`), else the file's value.
fn flag(key: &str, cli: &Option<String>, file: Option<bool>) -> Result<Option<bool>, ConfigError> {
    let Some(text) = cli else { return Ok(file) };
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(Some(true)),
        "false" | "0" | "no" | "off" => Ok(Some(false)),
        _ => Err(err(key, format!("'{text}' is not true or false"))),
    }
}

fn default_upstream() -> String {
    std::env::var("OPENAI_BASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_UPSTREAM.to_string())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err("config", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let message = e.message().replace('\n', " ");
        let place = match e.span() {
            Some(span) => {
                let (line, key) = locate(&text, span.start);
                match key {
                    Some(key) => format!("{} line {line}, key {key}", path.display()),
                    None => format!("{} line {line}", path.display()),
                }
            }
            None => path.display().to_string(),
        };
        err("config", format!("{place}: {message}"))
    })
}

/// The line number of `offset` in a TOML text, and the dotted key assigned
/// on that line (with its `[table]` prefix), if the line assigns one.
fn locate(text: &str, offset: usize) -> (usize, Option<String>) {
    let before = &text[..offset.min(text.len())];
    let line_number = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_number - 1).unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = match (table, key) {
        (Some(table), Some(key)) => Some(format!("{table}.{key}")),
        (None, key) => key,
        (Some(_), None) => None,
    };
    (line_number, key)
}

/// Parses an upstream base URL: http or https, no credentials, no query.
pub fn parse_upstream(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("'{text}' is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("'{text}' must start with http:// or https://"));
    }
    if url.host_str().is_none() {
        return Err(format!("'{text}' has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in an upstream URL are not supported".to_string());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("'{text}' must not have a query or fragment"));
    }
    let mut url = url;
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

/// Parses `1048576`, `512KiB`, `32MiB`, `1GiB` (also `KB`/`MB`/`GB`, binary).
fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Parses a duration such as `10s`, `500ms`, `5m`; `none` or `0` mean "no
/// limit" (`None`).
fn duration(
    key: &str,
    value: Option<String>,
    default: &str,
) -> Result<Option<Duration>, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_string());
    let t = text.trim();
    if t.eq_ignore_ascii_case("none") || t == "0" {
        return Ok(None);
    }
    humantime::parse_duration(t).map(Some).map_err(|_| {
        err(
            key,
            format!("'{text}' is not a duration like 10s, 500ms or none"),
        )
    })
}

fn positive(key: &str, n: usize) -> Result<usize, ConfigError> {
    if n == 0 {
        Err(err(key, "must be greater than zero"))
    } else {
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_take_binary_units() {
        assert_eq!(parse_bytes("32MiB"), Some(32 << 20));
        assert_eq!(parse_bytes("512 kb"), Some(512 << 10));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("ten"), None);
        assert_eq!(parse_bytes("5 parsecs"), None);
    }

    #[test]
    fn upstream_urls_lose_their_trailing_slash() {
        assert_eq!(
            parse_upstream("http://h:8000/v1/").unwrap().as_str(),
            "http://h:8000/v1"
        );
        assert!(parse_upstream("ftp://h").is_err());
        assert!(parse_upstream("http://user:pw@h/v1").is_err());
    }

    #[test]
    fn file_errors_name_the_key_and_its_table() {
        let text = "listen = \"x\"\n[store]\nqueue_capacity = \"many\"\n";
        let offset = text.find("\"many\"").unwrap();
        assert_eq!(
            locate(text, offset),
            (3, Some("store.queue_capacity".to_string()))
        );
        assert_eq!(locate(text, 0), (1, Some("listen".to_string())));
    }

    #[test]
    fn none_disables_a_timeout() {
        assert_eq!(duration("k", Some("none".into()), "10s").unwrap(), None);
        assert_eq!(
            duration("k", None, "10s").unwrap(),
            Some(Duration::from_secs(10))
        );
        assert!(
            duration("k", Some("soon".into()), "10s")
                .unwrap_err()
                .0
                .starts_with("k:")
        );
    }
}
