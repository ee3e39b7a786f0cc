//! The flag and environment layers: `tracegate serve`'s arguments, which
//! clap reads from the command line or from `TRACEGATE_*` variables.
//!
//! Flags and their variables are declared together in [`ServeArgs`], so clap
//! already applies "flag over variable" per argument; what it does not keep
//! in the struct is which of the two gave a value. [`ServeArgs::note_sources`]
//! records it from clap's matches, and [`layers`] splits the arguments into
//! the environment layer and the flag layer, each value with its origin
//! (`TRACEGATE_READ_TIMEOUT`, `--read-timeout`), so that an error names the
//! one the user has to change. Names come from clap's own definition of the
//! arguments, never spelled twice.

use super::error::{ConfigError, Origin};
use super::key::Key;
use super::raw::{Layer, Raw, Setting};
use super::routes;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Flags of `tracegate serve`; each can also come from its `TRACEGATE_*`
/// variable. Values stay strings here: they become raw settings of the flag
/// or environment layer, and [`Config::load`](super::Config::load) gives
/// them their types.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "TRACEGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9090].
    #[arg(long, env = "TRACEGATE_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// SQLite database file, or a postgres:// URL [default: ./tracegate.db].
    #[arg(long, env = "TRACEGATE_DB", value_name = "PATH|URL")]
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
    /// Total time allowed for one call, retries and body included; "none"
    /// disables it [default: none — LLM calls are long].
    #[arg(long, env = "TRACEGATE_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub request_timeout: Option<String>,
    /// Longest wait for the upstream's response headers, per attempt;
    /// "none" disables it [default: read_timeout].
    #[arg(long, env = "TRACEGATE_FIRST_BYTE_TIMEOUT", value_name = "DURATION")]
    pub first_byte_timeout: Option<String>,
    /// Longest silence between two chunks of the upstream's body; "none"
    /// disables it [default: read_timeout].
    #[arg(long, env = "TRACEGATE_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish
    /// [default: 30s].
    #[arg(long, env = "TRACEGATE_SHUTDOWN_GRACE", value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// What the upstream is: auto, vllm, openai, anthropic or generic; vllm
    /// turns on the token-data options below; auto asks the upstream's
    /// GET /v1/models once at start and is vllm when it says vLLM, else
    /// generic [default: auto].
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
    /// Add `x-session-affinity` and `x-multi-turn-session-id` (the session
    /// id) to a session's upstream calls that lack them, so sticky load
    /// balancers and prefix caches keep a session on one replica
    /// [default: true for vllm, else false].
    #[arg(long, env = "TRACEGATE_SESSION_AFFINITY_HEADERS", value_name = "BOOL")]
    pub session_affinity_headers: Option<String>,
    /// Remove vLLM's extra fields (token ids, prompt logprobs, logprobs the
    /// client did not ask for) from what the client receives
    /// [default: true for vllm, else false].
    #[arg(long, env = "TRACEGATE_STRIP_VLLM_FIELDS", value_name = "BOOL")]
    pub strip_vllm_fields: Option<String>,
    /// Which calls keep their raw request and response bodies in the store:
    /// always, errors (calls that did not end ok) or never [default: always].
    #[arg(long, env = "TRACEGATE_RAW_BODIES", value_name = "WHEN")]
    pub raw_bodies: Option<String>,
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
    /// Address of the OTLP/gRPC receiver for harness spans, like
    /// 127.0.0.1:4317 [default: off].
    #[arg(long, env = "TRACEGATE_OTLP_GRPC_LISTEN", value_name = "ADDR")]
    pub otlp_grpc_listen: Option<String>,
    /// Put message content on exported spans [default: false].
    #[arg(long, env = "TRACEGATE_EXPORT_INCLUDE_CONTENT", value_name = "BOOL")]
    pub export_include_content: Option<String>,
    /// Also export the gateway's own work (upstream attempts, backoffs, the
    /// hand-over to the store) as child spans of each call [default: false].
    #[arg(long, env = "TRACEGATE_EXPORT_SELF_TRACING", value_name = "BOOL")]
    pub export_self_tracing: Option<String>,
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
    /// How log lines are written: text, or json (one object a line)
    /// [default: text].
    #[arg(long, env = "TRACEGATE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// How often worker health is checked [default: 10s].
    #[arg(long, env = "TRACEGATE_HEALTH_CHECK_INTERVAL", value_name = "DURATION")]
    pub health_check_interval: Option<String>,
    /// The arguments whose value clap read from their environment variable
    /// rather than the command line, by argument id (see
    /// [`ServeArgs::note_sources`]). Empty when the struct is built in code:
    /// its values then all count as flags.
    #[arg(skip)]
    pub from_env: BTreeSet<String>,
}

impl ServeArgs {
    /// Records which values came from environment variables, from clap's
    /// matches of the `serve` arguments.
    pub fn note_sources(&mut self, matches: &ArgMatches) {
        self.from_env = serve_command()
            .get_arguments()
            .map(|arg| arg.get_id().as_str())
            .filter(|id| matches.value_source(id) == Some(ValueSource::EnvVariable))
            .map(str::to_string)
            .collect();
    }

    /// The configuration file, if one is named, with where it was named.
    pub(super) fn config_file(&self) -> Option<(&PathBuf, Origin)> {
        let path = self.config.as_ref()?;
        Some((path, Sources::new(self).origin("config")))
    }
}

/// The arguments of `serve`, as clap defines them.
fn serve_command() -> Command {
    <ServeArgs as clap::Args>::augment_args(Command::new("serve"))
}

/// Where each argument's value came from.
struct Sources<'a> {
    command: Command,
    args: &'a ServeArgs,
}

impl<'a> Sources<'a> {
    fn new(args: &'a ServeArgs) -> Sources<'a> {
        Sources {
            command: serve_command(),
            args,
        }
    }

    /// The origin of argument `id`: its variable when clap read it from
    /// there, else its flag.
    fn origin(&self, id: &str) -> Origin {
        let arg = self.command.get_arguments().find(|a| a.get_id() == id);
        let env = arg.and_then(Arg::get_env).map(|var| var.to_string_lossy());
        match env {
            Some(var) if self.args.from_env.contains(id) => Origin::Env(var.into_owned()),
            _ => Origin::Flag(format!("--{}", arg.and_then(Arg::get_long).unwrap_or(id))),
        }
    }
}

/// An argument of `serve` as a raw setting: the key it sets, its clap id
/// (its field's name) and its field.
type Argument<T> = (Key, &'static str, fn(&ServeArgs) -> &T);

/// `Key => field` pairs as [`Argument`]s: the clap id is the field's name,
/// written once.
macro_rules! arguments {
    ($($key:ident => $field:ident),* $(,)?) => {
        &[$((Key::$key, stringify!($field), |args| &args.$field)),*]
    };
}

/// The arguments that hold one text value.
const TEXTS: &[Argument<Option<String>>] = arguments![
    Listen => listen,
    Db => db,
    MaxBodyBytes => max_body_bytes,
    ConnectTimeout => connect_timeout,
    ReadTimeout => read_timeout,
    RequestTimeout => request_timeout,
    FirstByteTimeout => first_byte_timeout,
    IdleTimeout => idle_timeout,
    ShutdownGrace => shutdown_grace,
    Kind => kind,
    InjectLogprobs => inject_logprobs,
    InjectReturnTokenIds => inject_return_token_ids,
    SessionAffinityHeaders => session_affinity_headers,
    StripVllmFields => strip_vllm_fields,
    RawBodies => raw_bodies,
    CaptureStoreEmbeddings => store_embeddings,
    PropagateTraceparent => propagate_traceparent,
    ExportEndpoint => otlp_endpoint,
    ExportProtocol => otlp_protocol,
    OtlpGrpcListen => otlp_grpc_listen,
    ExportIncludeContent => export_include_content,
    ExportSelfTracing => export_self_tracing,
    UpstreamAuth => upstream_auth,
    AuthHeader => auth_header,
    LogFormat => log_format,
    HealthCheckInterval => health_check_interval,
];

/// The arguments that hold a list (repeated flags, comma-separated
/// variables); an empty list is unset.
const LISTS: &[Argument<Vec<String>>] = arguments![
    Upstream => upstream,
    AuthTokens => auth_tokens,
];

/// The environment layer and the flag layer of `args`, in that order.
pub(super) fn layers(args: &ServeArgs) -> Result<[Layer; 2], ConfigError> {
    let sources = Sources::new(args);
    let mut set = Vec::new();
    for (key, id, field) in TEXTS {
        if let Some(text) = field(args) {
            set.push((*key, Setting::text_from(text, sources.origin(id))));
        }
    }
    for (key, id, field) in LISTS {
        let values = field(args);
        if !values.is_empty() {
            let origin = sources.origin(id);
            let items = values
                .iter()
                .map(|v| Setting::text_from(v, origin.clone()))
                .collect();
            set.push((
                *key,
                Setting {
                    raw: Raw::List(items),
                    origin,
                },
            ));
        }
    }
    if let Some(json) = &args.routes {
        set.push((
            Key::Routes,
            routes::from_json(json, sources.origin("routes"))?,
        ));
    }
    let (environment, flags) = set
        .into_iter()
        .partition(|(_, setting)| matches!(setting.origin, Origin::Env(_)));
    Ok([environment, flags])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_argument_of_the_tables_is_a_clap_argument() {
        let ids = TEXTS
            .iter()
            .map(|(_, id, _)| *id)
            .chain(LISTS.iter().map(|(_, id, _)| *id))
            .chain(["routes", "config"]);
        let command = serve_command();
        for id in ids {
            let arg = command.get_arguments().find(|a| a.get_id() == id);
            assert!(arg.is_some(), "{id} is not an argument of serve");
        }
    }

    #[test]
    fn values_name_their_variable_or_their_flag() {
        let matches = serve_command()
            .try_get_matches_from(["serve", "--listen", "127.0.0.1:1"])
            .unwrap();
        let mut args = ServeArgs {
            listen: Some("127.0.0.1:1".into()),
            read_timeout: Some("30".into()),
            ..ServeArgs::default()
        };
        args.note_sources(&matches);
        assert!(
            args.from_env.is_empty(),
            "nothing came from the environment"
        );
        args.from_env.insert("read_timeout".into());
        let [environment, flags] = layers(&args).unwrap();
        assert_eq!(
            environment[&Key::ReadTimeout].origin,
            Origin::Env("TRACEGATE_READ_TIMEOUT".into())
        );
        assert_eq!(flags[&Key::Listen].origin, Origin::Flag("--listen".into()));
    }
}
