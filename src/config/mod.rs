//! Configuration: a TOML file, `TRACEGATE_*` environment variables and
//! command-line flags, merged into one validated [`Config`].
//!
//! Loading is a pipeline with one shape in the middle:
//!
//! 1. **Layers.** Each source produces a layer: a map from a key of the
//!    key table (`read_timeout`, `store.batch_max`, ...) to a raw setting —
//!    the value as written, untyped, with its [`Origin`]. The file layer
//!    (`file.rs`) keeps each value's line; the flag and environment layers
//!    (`args.rs`) come from clap, which reads both, and know which one gave
//!    a value; the standard `OTEL_*` variables join the environment layer
//!    (`export.rs`).
//! 2. **Merge.** `Settings::merge` (`raw.rs`) lays the layers over each
//!    other, key by key: flags > environment > file > defaults. Precedence
//!    is decided there and nowhere else.
//! 3. **Validation.** One pass turns the merged settings into [`Config`]:
//!    every value goes through one typed parser whatever its source (so
//!    `read_timeout = 30` in the file and `TRACEGATE_READ_TIMEOUT=30` fail
//!    alike), enums parse through their derives, and the defaults are
//!    applied. Routes (`routes.rs`), their call policies (`policy.rs`:
//!    timeouts, retries, heartbeats, what a leaving client means), the
//!    price table (`prices.rs`) and export (`export.rs`) validate their own
//!    keys.
//!
//! Why one raw shape: with a struct per source, every key was declared
//! three times and merged by hand, and a value's type was decided by its
//! source. Here a key is declared once, in the key table, and an error can
//! always say which key is wrong and where the value came from (a file
//! line, a variable, a flag): a [`ConfigError`]. The rest of the gateway
//! never sees a bad value and a user never sees a stack trace. With no
//! configuration at all the gateway serves: it listens on `127.0.0.1:9090`,
//! stores traces in `./tracegate.db`, and forwards OpenAI calls to
//! `$OPENAI_BASE_URL` (else OpenAI) and Anthropic calls to
//! `$ANTHROPIC_BASE_URL` (else Anthropic), passing the caller's credentials
//! through.

mod args;
mod error;
mod export;
mod file;
mod key;
mod policy;
mod prices;
mod raw;
mod routes;
mod self_upstream;
mod upstream_url;

pub use args::ServeArgs;
pub use error::{ConfigError, Origin};
pub use export::{ExportConfig, OtlpProtocol};
pub use policy::{CallPolicy, Heartbeat, Limit, RetryPolicy, Timeouts};
pub use prices::{Price, Prices};
pub use routes::{
    HeaderSource, InvalidUpstreamAuth, KindReason, RawBodies, RouteConfig, TokenSwitches,
    UpstreamAuth, UpstreamKind, WorkerConfig,
};
pub use upstream_url::{UpstreamUrlError, parse_upstream};

use crate::store::Database;
use key::Key;
use raw::Settings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9090";
/// The default database path.
pub const DEFAULT_DB: &str = "./tracegate.db";
/// The upstream used when none is configured and `$OPENAI_BASE_URL` is unset.
pub const DEFAULT_UPSTREAM: &str = "https://api.openai.com/v1";
/// The Anthropic upstream used when none is configured and
/// `$ANTHROPIC_BASE_URL` is unset.
pub const DEFAULT_ANTHROPIC_UPSTREAM: &str = "https://api.anthropic.com";
/// The default request body limit: 32 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The validated configuration of a running gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The address the gateway listens on.
    pub listen: SocketAddr,
    /// Where records are stored: a SQLite file, or a PostgreSQL URL.
    pub db: Database,
    /// Where calls go: the routes in match order (one implicit route when
    /// none is configured).
    pub routes: Vec<RouteConfig>,
    /// Where each route's upstream was set (a flag, a variable, a file
    /// line, or the default), in route order: the start banner says it.
    pub upstream_origins: Vec<Origin>,
    /// Inbound auth: who may use the gateway.
    pub auth: InboundAuth,
    /// How often worker health is checked.
    pub health_check_interval: Duration,
    /// What capture keeps.
    pub capture: CaptureOptions,
    /// What tokens cost, by model prefix (`[[prices]]`; none built in).
    pub prices: Prices,
    /// Where spans are exported; `None` when export is off.
    pub export: Option<ExportConfig>,
    /// Whether the upstream gets the gateway span's `traceparent`.
    pub propagate_traceparent: bool,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Time allowed to connect to an upstream.
    pub connect_timeout: Duration,
    /// The most idle upstream connections kept open per upstream host.
    pub pool_max_idle: usize,
    /// How long an idle upstream connection is kept open.
    pub pool_idle_timeout: Duration,
    /// Longest silence allowed while reading an upstream answer: the
    /// default of every route's first-byte and idle timeouts.
    pub read_timeout: Option<Duration>,
    /// Total time allowed for one call: the default of every route's.
    pub request_timeout: Option<Duration>,
    /// How long in-flight calls may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Store tuning.
    pub store: StoreOptions,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// How connections are served: deadlines and limits.
    pub server: ServerOptions,
    /// The OTLP receiver's limits.
    pub otlp: OtlpLimits,
    /// Where the OTLP/gRPC receiver listens (`otlp.grpc_listen`); `None`
    /// (the default) when it is off.
    pub otlp_grpc_listen: Option<SocketAddr>,
}

fn otlp_limits(s: &Settings) -> Result<OtlpLimits, ConfigError> {
    let defaults = OtlpLimits::default();
    Ok(OtlpLimits {
        max_spans_per_request: s
            .positive_or(Key::OtlpMaxSpansPerRequest, defaults.max_spans_per_request)?,
        max_attributes_per_span: s.positive_or(
            Key::OtlpMaxAttributesPerSpan,
            defaults.max_attributes_per_span,
        )?,
        max_attribute_bytes: size_or(s, Key::OtlpMaxAttributeBytes, defaults.max_attribute_bytes)?,
    })
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

/// How log lines are written (`log_format`, `--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal only.
    #[default]
    Text,
    /// One JSON object a line, for a log collector.
    Json,
}

/// What capture keeps beyond the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureOptions {
    /// Keep embedding vectors in stored raw responses.
    pub store_embeddings: bool,
}

/// Tuning of the store writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Records that may wait for the writer before callers wait for room.
    pub queue_capacity: usize,
    /// Most records committed in one transaction.
    pub batch_max: usize,
    /// How long SQLite waits for a lock held by another connection before
    /// it gives up (`PRAGMA busy_timeout`).
    pub busy_timeout: Duration,
    /// Most bytes of records the writer holds in memory while the store
    /// cannot commit and the spill file cannot be written; past it, capture
    /// tasks wait.
    pub backlog_memory: usize,
    /// Where records wait while the store cannot commit; `None`: next to the
    /// database, `<db>-spill.jsonl`.
    pub spill_file: Option<PathBuf>,
    /// The most the database may hold, in bytes; `None`: no cap.
    pub max_size: Option<u64>,
    /// How long a flush waits for records the store cannot commit; `None`:
    /// no limit.
    pub flush_timeout: Option<Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            batch_max: 512,
            busy_timeout: Duration::from_secs(5),
            backlog_memory: 256 << 20,
            spill_file: None,
            max_size: None,
            flush_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// How the gateway serves its connections: the deadlines a connection
/// without a call in flight has, and the limits on what a request head and
/// the listener may hold (`[server]`; `docs/configuration.md`, "Connections, limits and loops"
/// says what happens past each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// Time a request head may take: from the connection's opening, or from
    /// its first byte after an idle spell, to its last header.
    pub header_read_timeout: Duration,
    /// How long a connection with no call in flight may stay silent.
    pub idle_timeout: Duration,
    /// Most header fields one request may carry.
    pub max_headers: usize,
    /// Most bytes the header fields of one request may take.
    pub max_header_bytes: usize,
    /// Most connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            // Longer than the 60 s idle timeout of the usual load balancers,
            // so that they, not the gateway, close an idle connection first.
            idle_timeout: Duration::from_secs(75),
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            max_connections: 4096,
        }
    }
}

/// The OTLP receiver's limits (`[otlp]`): what one request may carry, and
/// how much of a span is kept (`otlp::decode` applies them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtlpLimits {
    /// Most spans kept from one request; the rest are rejected.
    pub max_spans_per_request: usize,
    /// Most attributes kept per span (and per event and resource).
    pub max_attributes_per_span: usize,
    /// Longest string attribute value kept, in bytes.
    pub max_attribute_bytes: usize,
}

impl Default for OtlpLimits {
    fn default() -> Self {
        Self {
            max_spans_per_request: 10_000,
            max_attributes_per_span: 128,
            max_attribute_bytes: 64 * 1024,
        }
    }
}

impl Config {
    /// Builds the configuration from flags and environment (`args`, as clap
    /// parsed them; values set in code count as flags), the file they name,
    /// and the defaults.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match args.config_file() {
            Some((path, origin)) => file::read(path, &origin)?,
            None => raw::Layer::new(),
        };
        let [from_env, flags] = args::layers(args)?;
        let mut environment = export::standard_variables();
        environment.extend(from_env);
        Config::validate(&Settings::merge([file, environment, flags]))
    }

    /// Turns the merged settings into the configuration, applying defaults.
    fn validate(s: &Settings) -> Result<Config, ConfigError> {
        let listen = listen(s)?;
        let routes = routes::routes(s)?;
        let auth = inbound_auth(s)?;
        routes::check_passthrough(&auth, &routes, s)?;
        self_upstream::check(listen, &routes, s)?;
        let upstream_origins = (routes.iter().enumerate())
            .map(|(i, route)| self_upstream::whence(s, route, i, 0).1)
            .collect();
        Ok(Config {
            listen,
            db: db(s)?,
            routes,
            upstream_origins,
            auth,
            health_check_interval: s.limit(Key::HealthCheckInterval, Duration::from_secs(10))?,
            capture: CaptureOptions {
                store_embeddings: s.switch_or(Key::CaptureStoreEmbeddings, false)?,
            },
            prices: match s.get(Key::Prices) {
                Some(table) => prices::read(table)?,
                None => Prices::default(),
            },
            export: export::export_config(s)?,
            propagate_traceparent: s.switch_or(Key::PropagateTraceparent, true)?,
            max_body_bytes: max_body_bytes(s)?,
            connect_timeout: s.limit(Key::ConnectTimeout, Duration::from_secs(10))?,
            pool_max_idle: pool_max_idle(s)?,
            pool_idle_timeout: s.limit(Key::PoolIdleTimeout, DEFAULT_POOL_IDLE_TIMEOUT)?,
            read_timeout: s.duration_or(Key::ReadTimeout, Some(policy::DEFAULT_READ_TIMEOUT))?,
            request_timeout: s.duration_or(Key::RequestTimeout, None)?,
            shutdown_grace: s
                .duration_or(Key::ShutdownGrace, Some(Duration::from_secs(30)))?
                .unwrap_or(Duration::ZERO),
            store: store_options(s)?,
            log_format: match s.get(Key::LogFormat) {
                Some(format) => format.choice(Key::LogFormat.name(), true)?,
                None => LogFormat::default(),
            },
            server: server_options(s)?,
            otlp: otlp_limits(s)?,
            otlp_grpc_listen: otlp_grpc_listen(s)?,
        })
    }
}

/// `key`'s setting, else `default` as the default would be written.
fn or_default(s: &Settings, key: Key, default: &str) -> raw::Setting {
    s.get(key)
        .cloned()
        .unwrap_or_else(|| raw::Setting::text_from(default, Origin::Default))
}

fn listen(s: &Settings) -> Result<SocketAddr, ConfigError> {
    let setting = or_default(s, Key::Listen, DEFAULT_LISTEN);
    let text = setting.text("listen")?;
    parse_listen(&text).ok_or_else(|| {
        setting.error(
            "listen",
            format!(
                "'{text}' is not an address like 127.0.0.1:9090, 0.0.0.0:9090, \
                 localhost:9090, :9090 or 9090"
            ),
        )
    })
}

/// The port of `listen` when the value names only a host.
const DEFAULT_PORT: u16 = 9090;

/// The port of `otlp.grpc_listen` when the value names only a host: OTLP's
/// gRPC port.
const DEFAULT_OTLP_GRPC_PORT: u16 = 4317;

/// `otlp.grpc_listen`, in the forms `listen` takes; unset is off.
fn otlp_grpc_listen(s: &Settings) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(setting) = s.get(Key::OtlpGrpcListen) else {
        return Ok(None);
    };
    let key = Key::OtlpGrpcListen.name();
    let text = setting.text(key)?;
    match parse_address(&text, DEFAULT_OTLP_GRPC_PORT) {
        Some(addr) => Ok(Some(addr)),
        None => Err(setting.error(
            key,
            format!("'{text}' is not an address like 127.0.0.1:4317, 0.0.0.0:4317, :4317 or 4317"),
        )),
    }
}

/// Reads a listen address in the forms people write: `HOST:PORT` with an IP
/// address, `PORT` and `:PORT` (on the loopback address, like the default:
/// listening on every interface is written `0.0.0.0:PORT`), `localhost`
/// (`127.0.0.1`), and a host without port (on port 9090). Other host names
/// are refused: a listen address is resolved once, and a name that
/// resolves elsewhere later would be a surprise.
fn parse_listen(text: &str) -> Option<SocketAddr> {
    parse_address(text, DEFAULT_PORT)
}

/// An address in the forms of [`parse_listen`], `default_port` when the
/// text names only a host.
fn parse_address(text: &str, default_port: u16) -> Option<SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr};
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(addr) = t.parse() {
        return Some(addr);
    }
    let bare = t.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, default_port));
    }
    let (host, port) = match t.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => match t.parse() {
            Ok(port) => ("", port),
            Err(_) => (t, default_port),
        },
    };
    match host {
        "" => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        h if h.eq_ignore_ascii_case("localhost") => {
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
        }
        _ => None,
    }
}

fn db(s: &Settings) -> Result<Database, ConfigError> {
    let setting = or_default(s, Key::Db, DEFAULT_DB);
    let text = setting.text("db")?;
    if text.is_empty() {
        return Err(setting.error("db", "must not be empty"));
    }
    Ok(Database::parse(&text))
}

fn max_body_bytes(s: &Settings) -> Result<usize, ConfigError> {
    size_or(s, Key::MaxBodyBytes, DEFAULT_MAX_BODY_BYTES)
}

/// `key` as a size of at least one byte, else `default`.
fn size_or(s: &Settings, key: Key, default: usize) -> Result<usize, ConfigError> {
    let Some(setting) = s.get(key) else {
        return Ok(default);
    };
    let key = key.name();
    match setting.bytes(key)? {
        0 => Err(setting.error(key, "must be greater than zero")),
        n => usize::try_from(n).map_err(|_| setting.error(key, "too large for this machine")),
    }
}

/// Idle upstream connections kept per host, by default: enough for a
/// steady stream of calls to reuse them, few enough that a burst of 1000
/// streams does not leave 1000 open connections (and their buffers, ~20 KiB
/// each) behind it.
const DEFAULT_POOL_MAX_IDLE: usize = 64;

/// How long an idle upstream connection stays open, by default.
const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// `pool_max_idle`: a count, where `0` keeps no idle connection.
fn pool_max_idle(s: &Settings) -> Result<usize, ConfigError> {
    s.get(Key::PoolMaxIdle)
        .map_or(Ok(DEFAULT_POOL_MAX_IDLE), |setting| {
            setting.number(Key::PoolMaxIdle.name())
        })
}

fn store_options(s: &Settings) -> Result<StoreOptions, ConfigError> {
    let defaults = StoreOptions::default();
    let backlog_memory = match size(s, Key::StoreBacklogMemory)? {
        Some(bytes) => usize::try_from(bytes).unwrap_or(usize::MAX),
        None => defaults.backlog_memory,
    };
    Ok(StoreOptions {
        queue_capacity: s.positive_or(Key::StoreQueueCapacity, defaults.queue_capacity)?,
        batch_max: s.positive_or(Key::StoreBatchMax, defaults.batch_max)?,
        busy_timeout: s.limit(Key::StoreBusyTimeout, defaults.busy_timeout)?,
        backlog_memory,
        spill_file: spill_file(s)?,
        max_size: size(s, Key::StoreMaxSize)?.filter(|bytes| *bytes > 0),
        flush_timeout: s.duration_or(Key::StoreFlushTimeout, defaults.flush_timeout)?,
    })
}

/// A size in bytes, if set; `none` is `Some(0)`.
fn size(s: &Settings, key: Key) -> Result<Option<u64>, ConfigError> {
    let Some(setting) = s.get(key) else {
        return Ok(None);
    };
    if setting
        .text(key.name())?
        .trim()
        .eq_ignore_ascii_case("none")
    {
        return Ok(Some(0));
    }
    setting.bytes(key.name()).map(Some)
}

fn spill_file(s: &Settings) -> Result<Option<PathBuf>, ConfigError> {
    let Some(setting) = s.get(Key::StoreSpillFile) else {
        return Ok(None);
    };
    let key = Key::StoreSpillFile.name();
    match setting.text(key)?.trim() {
        "" => Err(setting.error(key, "must not be empty")),
        path => Ok(Some(PathBuf::from(path))),
    }
}

fn server_options(s: &Settings) -> Result<ServerOptions, ConfigError> {
    let defaults = ServerOptions::default();
    Ok(ServerOptions {
        header_read_timeout: s.limit(Key::ServerHeaderReadTimeout, defaults.header_read_timeout)?,
        idle_timeout: s.limit(Key::ServerIdleTimeout, defaults.idle_timeout)?,
        max_headers: s.positive_or(Key::ServerMaxHeaders, defaults.max_headers)?,
        max_header_bytes: size_or(s, Key::ServerMaxHeaderBytes, defaults.max_header_bytes)?,
        max_connections: s.positive_or(Key::ServerMaxConnections, defaults.max_connections)?,
    })
}

/// Inbound auth: the tokens callers present (`auth.tokens`), and the header
/// they travel in (`auth.header`, `None` for `Authorization: Bearer`).
fn inbound_auth(s: &Settings) -> Result<InboundAuth, ConfigError> {
    let key = Key::AuthTokens.name();
    let tokens = s.get(Key::AuthTokens).map_or(&[][..], |t| t.items());
    let tokens = tokens
        .iter()
        .map(|token| match token.text(key)?.trim() {
            "" => Err(token.error(key, "a token must not be empty")),
            text => Ok(text.to_string()),
        })
        .collect::<Result<_, _>>()?;
    let header = match s.get(Key::AuthHeader) {
        Some(setting) => {
            let key = Key::AuthHeader.name();
            let name = setting.text(key)?;
            let header = http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| setting.error(key, format!("'{name}' is not a header name")))?;
            (header != http::header::AUTHORIZATION).then_some(header)
        }
        None => None,
    };
    Ok(InboundAuth { tokens, header })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration file for one test, removed with it.
    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracegate.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn listen_takes_the_forms_people_write() {
        for (text, addr) in [
            ("127.0.0.1:9091", "127.0.0.1:9091"),
            ("0.0.0.0:80", "0.0.0.0:80"),
            ("[::1]:9091", "[::1]:9091"),
            ("localhost:9091", "127.0.0.1:9091"),
            ("LOCALHOST", "127.0.0.1:9090"),
            (":9091", "127.0.0.1:9091"),
            ("9091", "127.0.0.1:9091"),
            ("0.0.0.0", "0.0.0.0:9090"),
            ("::1", "[::1]:9090"),
        ] {
            assert_eq!(
                parse_listen(text).map(|a| a.to_string()),
                Some(addr.into()),
                "{text}"
            );
        }
        for bad in ["example.com:80", "localhost:http", ":99999", "", "1.2.3:4"] {
            assert_eq!(parse_listen(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_otlp_grpc_receiver_is_off_by_default_and_listens_where_it_is_told() {
        let upstream = vec!["http://h".to_string()];
        let load = |grpc: Option<&str>| {
            Config::load(&ServeArgs {
                upstream: upstream.clone(),
                otlp_grpc_listen: grpc.map(str::to_string),
                ..ServeArgs::default()
            })
        };
        assert_eq!(load(None).unwrap().otlp_grpc_listen, None);
        for (text, addr) in [
            ("127.0.0.1:5317", "127.0.0.1:5317"),
            ("0.0.0.0", "0.0.0.0:4317"),
        ] {
            let c = load(Some(text)).unwrap();
            assert_eq!(c.otlp_grpc_listen.map(|a| a.to_string()), Some(addr.into()));
        }
        let e = load(Some("collector:4317")).unwrap_err();
        assert_eq!(
            (e.key.as_str(), &e.origin),
            (
                "otlp.grpc_listen",
                &Origin::Flag("--otlp-grpc-listen".into())
            )
        );
    }

    #[test]
    fn a_bad_file_value_names_its_line() {
        let (_dir, path) = file("db = \"x.db\"\n\nread_timeout = 30\n");
        let e = Config::load(&ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert_eq!(e.origin, Origin::File { path, line: 3 });
        assert!(e.to_string().starts_with(
            "invalid configuration: read_timeout: '30' is not a duration like 10s, 500ms or none ("
        ));
    }

    #[test]
    fn a_bad_environment_value_names_its_variable() {
        let mut args = ServeArgs {
            read_timeout: Some("soon".into()),
            ..ServeArgs::default()
        };
        args.from_env.insert("read_timeout".into());
        let e = Config::load(&args).unwrap_err().to_string();
        assert!(e.ends_with("(TRACEGATE_READ_TIMEOUT)"), "{e}");
        assert!(
            e.starts_with("invalid configuration: read_timeout: 'soon'"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_flag_names_the_flag() {
        let e = Config::load(&ServeArgs {
            max_body_bytes: Some("lots".into()),
            ..ServeArgs::default()
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "invalid configuration: max_body_bytes: 'lots' is not a size like 32MiB (--max-body-bytes)"
        );
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file() {
        let (_dir, path) = file(
            "listen = \"127.0.0.1:1\"\ndb = \"file.db\"\nread_timeout = \"1s\"\n[store]\nbusy_timeout = \"2s\"\n",
        );
        let mut args = ServeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:2".into()),
            db: Some("env.db".into()),
            ..ServeArgs::default()
        };
        args.from_env.insert("db".into());
        let c = Config::load(&args).unwrap();
        assert_eq!(c.listen.port(), 2, "the flag wins over the file");
        assert_eq!(
            c.db,
            Database::parse("env.db"),
            "the variable wins over the file"
        );
        assert_eq!(
            c.read_timeout,
            Some(Duration::from_secs(1)),
            "the file wins over the default"
        );
        assert_eq!(c.store.busy_timeout, Duration::from_secs(2));
    }

    #[test]
    fn defaults_fill_what_nobody_set() {
        let c = Config::load(&ServeArgs {
            upstream: vec!["http://h/v1/".into()],
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.store, StoreOptions::default());
        assert_eq!(c.store.busy_timeout, Duration::from_secs(5));
        assert_eq!(c.read_timeout, Some(Duration::from_secs(600)));
        assert_eq!(c.routes[0].workers[0].url.as_str(), "http://h/v1");
    }

    #[test]
    fn the_store_keeps_records_where_and_as_long_as_the_file_says() {
        let (_dir, path) = file(
            "[store]\nbacklog_memory = \"64MiB\"\nspill_file = \"/other/disk/spill.jsonl\"\n\
             max_size = \"10GiB\"\nflush_timeout = \"none\"\n",
        );
        let c = Config::load(&ServeArgs {
            config: Some(path),
            upstream: vec!["http://h".into()],
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(c.store.backlog_memory, 64 << 20);
        assert_eq!(
            c.store.spill_file,
            Some(PathBuf::from("/other/disk/spill.jsonl"))
        );
        assert_eq!(c.store.max_size, Some(10 << 30));
        assert_eq!(c.store.flush_timeout, None);
    }

    #[test]
    fn server_limits_come_from_their_section_with_defaults() {
        let upstream = vec!["http://h/v1".to_string()];
        let c = Config::load(&ServeArgs {
            upstream: upstream.clone(),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(c.server, ServerOptions::default());
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(30));
        let (_dir, path) = file(
            "[server]\nheader_read_timeout = \"2s\"\nmax_header_bytes = \"8KiB\"\nmax_connections = 2\n",
        );
        let c = Config::load(&ServeArgs {
            config: Some(path),
            upstream: upstream.clone(),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.server.max_header_bytes, 8192);
        assert_eq!(c.server.max_connections, 2);
        assert_eq!(c.server.max_headers, 100);
        let (_dir, path) = file("[server]\nidle_timeout = \"none\"\n");
        let e = Config::load(&ServeArgs {
            config: Some(path),
            upstream,
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert_eq!(e.key, "server.idle_timeout");
    }

    #[test]
    fn every_server_key_is_in_the_documented_limits_table() {
        let page = include_str!("../../docs/configuration.md");
        let section = page
            .split("## Connections, limits and loops")
            .nth(1)
            .unwrap();
        for name in Key::names_in(Some("server")) {
            let row = format!("| `server.{name}` |");
            assert!(section.contains(&row), "{row}");
        }
    }

    #[test]
    fn a_passthrough_route_under_bearer_auth_is_refused_at_its_default() {
        let e = Config::load(&ServeArgs {
            upstream: vec!["http://h".into()],
            auth_tokens: vec!["t".into()],
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert_eq!(
            (e.key.as_str(), &e.origin),
            ("upstream_auth", &Origin::Default)
        );
    }
}
