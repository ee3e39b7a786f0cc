//! Routes: which upstream serves which model, with which credentials and
//! headers — validated at start, never at request time.
//!
//! With no `[[routes]]` the gateway has implicit routes built from the
//! top-level keys (`upstream`, `kind`, `upstream_auth`, ...): one, to
//! `upstream`, which is the single-upstream behaviour; or, with neither
//! `upstream` nor `kind` set, one per protocol, to where each SDK goes by
//! default (`$OPENAI_BASE_URL`, `$ANTHROPIC_BASE_URL`, else the provider). With routes (from the file, or the
//! `TRACEGATE_ROUTES` variable as a JSON array of the same objects), each
//! names its model prefix, its upstream or worker pool, its API protocol and
//! kind, and how it authenticates upstream. Both sources arrive as the same
//! raw tables (a JSON route and a TOML route are one shape, the TOML one
//! with lines), whose fields are the [`RouteKey`] and [`WorkerKey`] tables.
//! Every mistake is refused with a message naming the route and the field —
//! a route is never skipped with a warning, because a skipped route silently
//! sends traffic somewhere else.
//!
//! Two rules are security rules: a route's static `headers` may not set the
//! headers that carry credentials or framing (`authorization`, `x-api-key`,
//! `content-type`, `anthropic-version`, hop-by-hop and framing headers), and
//! a route that passes the caller's credentials through is refused when the
//! gateway itself checks a bearer token in `Authorization` (the gateway's
//! token would be forwarded as the upstream's credential) — unless the
//! gateway's token travels in its own header (`auth.header`).

use super::error::{ConfigError, Origin};
use super::key::{Key, keys};
use super::policy::{self, CallPolicy, PolicyKey};
use super::raw::{Raw, Setting, Settings, alternatives};
use super::upstream_url::parse_upstream;
use super::{DEFAULT_ANTHROPIC_UPSTREAM, DEFAULT_UPSTREAM, InboundAuth};
use crate::headers;
use crate::protocol::Protocol;
use http::{HeaderName, HeaderValue};
use reqwest::Url;
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

/// What an upstream is. It sets the defaults of the token-data options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UpstreamKind {
    /// Decided at start (`route::kind`): `vllm` when the upstream's
    /// `GET /v1/models` says `owned_by: "vllm"`, else `generic`. No route
    /// is still `auto` once the gateway serves.
    #[default]
    Auto,
    /// A vLLM server: token ids and logprobs on by default.
    Vllm,
    /// OpenAI itself (rejects unknown parameters).
    Openai,
    /// Anthropic itself.
    Anthropic,
    /// Any other OpenAI-compatible server.
    Generic,
}

impl UpstreamKind {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Auto => "auto",
            UpstreamKind::Vllm => "vllm",
            UpstreamKind::Openai => "openai",
            UpstreamKind::Anthropic => "anthropic",
            UpstreamKind::Generic => "generic",
        }
    }

    /// The protocol such an upstream speaks unless a route says otherwise.
    pub fn protocol(self) -> Protocol {
        match self {
            UpstreamKind::Anthropic => Protocol::Anthropic,
            _ => Protocol::Openai,
        }
    }
}

/// Why a route has the kind it has: what the start banner, the log and
/// `/admin/routes` say next to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindReason {
    /// Written in the configuration.
    Configured,
    /// A zero-configuration route (one per protocol): never probed, never
    /// given vLLM parameters.
    ZeroConfig,
    /// `auto`, not yet probed (only until the gateway starts).
    Unprobed,
    /// `auto` on a route that speaks the Anthropic protocol: not probed.
    AnthropicProtocol,
    /// `auto` on a hosted OpenAI or Anthropic API (this host): not probed.
    HostedApi(String),
    /// `auto`, and the upstream's `GET /v1/models` named this owner.
    Probed {
        /// The `owned_by` of its first model (empty when it had none).
        owned_by: String,
    },
    /// `auto`, and the probe got no usable answer (why).
    ProbeFailed(String),
}

impl std::fmt::Display for KindReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KindReason::Configured => f.write_str("configured"),
            KindReason::ZeroConfig => f.write_str("zero-configuration default, not probed"),
            KindReason::Unprobed => f.write_str("auto, not probed yet"),
            KindReason::AnthropicProtocol => {
                f.write_str("auto: an Anthropic-protocol route is not probed")
            }
            KindReason::HostedApi(host) => {
                write!(f, "auto: {host} is a hosted API, not probed")
            }
            KindReason::Probed { owned_by } => {
                write!(f, "auto: GET /v1/models says owned_by \"{owned_by}\"")
            }
            KindReason::ProbeFailed(why) => write!(f, "auto: probe failed ({why})"),
        }
    }
}

/// The token-data switches as configured: `None` where the kind decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenSwitches {
    /// `inject_logprobs`.
    pub inject_logprobs: Option<bool>,
    /// `inject_return_token_ids`.
    pub inject_return_token_ids: Option<bool>,
    /// `strip_vllm_fields`.
    pub strip_vllm_fields: Option<bool>,
    /// `session_affinity_headers`.
    pub session_affinity_headers: Option<bool>,
}

/// Which calls keep their raw request and response bodies in the store
/// (headers and everything capture reads from the bodies are kept always).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RawBodies {
    /// Every call's.
    #[default]
    Always,
    /// Only the bodies of calls that did not end `ok`.
    Errors,
    /// None.
    Never,
}

impl RawBodies {
    /// Whether a call that ended `ok` (or not) keeps its raw bodies.
    pub fn keeps(self, ok: bool) -> bool {
        match self {
            RawBodies::Always => true,
            RawBodies::Errors => !ok,
            RawBodies::Never => false,
        }
    }
}

/// Where a route's upstream credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// The caller's own `Authorization` / `x-api-key` / `api-key` go upstream.
    Passthrough,
    /// The caller's credentials are removed and the key in this environment
    /// variable is sent instead, read at request time.
    Env(String),
    /// The caller's credentials are removed and none are sent: an upstream
    /// without a key (a local vLLM), behind a gateway that may check its own.
    None,
}

impl std::fmt::Display for UpstreamAuth {
    /// As the configuration writes it; the variable's name, never its value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAuth::Passthrough => f.write_str("passthrough"),
            UpstreamAuth::Env(var) => write!(f, "env:{var}"),
            UpstreamAuth::None => f.write_str("none"),
        }
    }
}

/// A text that is neither `passthrough`, `none` nor `env:VARIABLE`. The text
/// is not repeated: a key pasted in by mistake must not reach the logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be passthrough, none or env:VARIABLE")]
pub struct InvalidUpstreamAuth;

impl FromStr for UpstreamAuth {
    type Err = InvalidUpstreamAuth;

    /// `passthrough`, `none` or `env:VAR`.
    fn from_str(text: &str) -> Result<UpstreamAuth, InvalidUpstreamAuth> {
        match text.trim() {
            "passthrough" => Ok(UpstreamAuth::Passthrough),
            "none" => Ok(UpstreamAuth::None),
            t => match t.strip_prefix("env:") {
                Some(var) if is_env_name(var) => Ok(UpstreamAuth::Env(var.to_string())),
                _ => Err(InvalidUpstreamAuth),
            },
        }
    }
}

/// A static header value: literal, or read from the environment per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    /// A value written in the configuration.
    Literal(HeaderValue),
    /// The value of this environment variable (a secret).
    Env(String),
}

/// One worker of a route's pool.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// The worker's id (configured, else its position).
    pub id: String,
    /// Its base URL.
    pub url: Url,
    /// Its share of new sessions relative to the others.
    pub weight: u32,
    /// The model it serves, if declared.
    pub model_name: Option<String>,
}

/// A route: the upstreams calls go to and how they are treated.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// The route's name (`None` for the implicit single-upstream route).
    pub name: Option<String>,
    /// Lower-case model prefix it serves; `*` serves every model; `None` for
    /// the implicit route, which serves everything.
    pub model_prefix: Option<String>,
    /// Serves requests no other route matches (and requests without model).
    pub is_default: bool,
    /// The worker pool (one worker for a single `upstream`).
    pub workers: Vec<WorkerConfig>,
    /// The API family the upstream speaks; it decides how an injected key is
    /// sent (`Authorization: Bearer` or `x-api-key`).
    pub protocol: Protocol,
    /// What the upstream is (never `auto` once the gateway serves).
    pub kind: UpstreamKind,
    /// Why it is that kind.
    pub kind_reason: KindReason,
    /// The token-data switches as written; the four flags below are these,
    /// with the kind's default where one is not written.
    pub switches: TokenSwitches,
    /// The model name sent upstream instead of the requested one.
    pub backend_model: Option<String>,
    /// Upstream credentials.
    pub auth: UpstreamAuth,
    /// Headers added to every upstream request.
    pub headers: Vec<(HeaderName, HeaderSource)>,
    /// Whether callers may add headers via `X-Tracegate-Provider-Data`.
    pub allow_caller_headers: bool,
    /// Add `logprobs` to chat and completions requests that lack it.
    pub inject_logprobs: bool,
    /// Add `return_token_ids` to chat and completions requests that lack it.
    pub inject_return_token_ids: bool,
    /// Remove vLLM's extra fields from what the client receives.
    pub strip_vllm_fields: bool,
    /// Add `x-session-affinity` / `x-multi-turn-session-id` to a session's
    /// calls that lack them.
    pub session_affinity_headers: bool,
    /// Which calls keep their raw bodies in the store.
    pub raw_bodies: RawBodies,
    /// How its calls are carried: timeouts, retries, heartbeats, and what
    /// happens when a client leaves.
    pub policy: CallPolicy,
}

impl RouteConfig {
    /// An unnamed route to one upstream with every default: generic,
    /// passthrough, no headers, no vLLM options.
    pub fn to(url: Url) -> RouteConfig {
        RouteConfig::over(vec![WorkerConfig {
            id: "0".into(),
            url,
            weight: 1,
            model_name: None,
        }])
    }

    /// The unnamed default route over `workers`, with every default (see
    /// [`RouteConfig::to`]).
    fn over(workers: Vec<WorkerConfig>) -> RouteConfig {
        RouteConfig {
            name: None,
            model_prefix: None,
            is_default: true,
            workers,
            protocol: Protocol::Openai,
            kind: UpstreamKind::Generic,
            kind_reason: KindReason::Configured,
            switches: TokenSwitches::default(),
            backend_model: None,
            auth: UpstreamAuth::Passthrough,
            headers: Vec::new(),
            allow_caller_headers: false,
            inject_logprobs: false,
            inject_return_token_ids: false,
            strip_vllm_fields: false,
            session_affinity_headers: false,
            raw_bodies: RawBodies::Always,
            policy: CallPolicy::default(),
        }
    }

    /// Sets the route's kind, and the token-data flags its switches leave
    /// to the kind (on for `vllm`, off otherwise).
    pub fn set_kind(&mut self, kind: UpstreamKind, reason: KindReason) {
        let vllm = kind == UpstreamKind::Vllm;
        self.kind = kind;
        self.kind_reason = reason;
        self.inject_logprobs = self.switches.inject_logprobs.unwrap_or(vllm);
        self.inject_return_token_ids = self.switches.inject_return_token_ids.unwrap_or(vllm);
        self.strip_vllm_fields = self.switches.strip_vllm_fields.unwrap_or(vllm);
        self.session_affinity_headers = self.switches.session_affinity_headers.unwrap_or(vllm);
    }

    /// The route with its kind set (see [`RouteConfig::set_kind`]).
    fn with_kind(mut self, kind: UpstreamKind, reason: KindReason) -> RouteConfig {
        self.set_kind(kind, reason);
        self
    }

    /// The route's name for messages: its name, or `default`.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("default")
    }

    /// Every environment variable the route reads secrets from.
    pub fn secret_vars(&self) -> impl Iterator<Item = &str> {
        let auth = match &self.auth {
            UpstreamAuth::Env(var) => Some(var.as_str()),
            UpstreamAuth::Passthrough | UpstreamAuth::None => None,
        };
        let headers = self.headers.iter().filter_map(|(_, source)| match source {
            HeaderSource::Env(var) => Some(var.as_str()),
            HeaderSource::Literal(_) => None,
        });
        auth.into_iter().chain(headers)
    }
}

keys! {
    /// The fields of one `[[routes]]` entry (or one `TRACEGATE_ROUTES` object).
    enum RouteKey {
        Name => "name",
        ModelPrefix => "model_prefix",
        Upstream => "upstream",
        Workers => "workers",
        Protocol => "protocol",
        Kind => "kind",
        BackendModel => "backend_model",
        Auth => "auth",
        Headers => "headers",
        AllowCallerHeaders => "allow_caller_headers",
        Default => "default",
        InjectLogprobs => "inject_logprobs",
        InjectReturnTokenIds => "inject_return_token_ids",
        StripVllmFields => "strip_vllm_fields",
        SessionAffinityHeaders => "session_affinity_headers",
        RawBodies => "raw_bodies",
    }
}

keys! {
    /// The fields of a worker written as a table (a worker may also be a URL).
    enum WorkerKey {
        Url => "url",
        Weight => "weight",
        WorkerId => "worker_id",
        ModelName => "model_name",
    }
}

/// The name JSON routes are known by; errors in the JSON itself name it.
const JSON_ROUTES: &str = "TRACEGATE_ROUTES";

/// Why passthrough and bearer inbound auth cannot go together.
const PASSTHROUGH_WITH_BEARER: &str = "passthrough would forward the gateway token upstream while \
     inbound auth reads Authorization; use env:VARIABLE (or none for an upstream without a \
     key), or set auth.header (e.g. x-tracegate-key) for the gateway token";

/// Reads `TRACEGATE_ROUTES` / `--routes`, a JSON array of route objects,
/// into the raw routes, every part from `origin`.
pub(super) fn from_json(text: &str, origin: Origin) -> Result<Setting, ConfigError> {
    let fail = |message: String| {
        let message = format!("not a JSON array of routes: {message}");
        ConfigError::new(JSON_ROUTES, message, origin.clone())
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| fail(e.to_string()))?;
    if !value.is_array() {
        return Err(fail("expected an array".to_string()));
    }
    let routes = Setting::from_json(value, &origin).map_err(|e| fail(e.to_string()))?;
    check_fields(&routes).map_err(|e| fail(format!("{}: {}", e.key, e.message)))?;
    Ok(routes)
}

/// Refuses a field no route or worker has, as `routes[i].field` (or
/// `routes[i].workers[j].field`), with the fields there are.
pub(super) fn check_fields(routes: &Setting) -> Result<(), ConfigError> {
    let Raw::List(list) = &routes.raw else {
        return Ok(());
    };
    let route_names: Vec<&str> = RouteKey::ALL
        .iter()
        .map(|k| k.name())
        .chain(PolicyKey::ALL.iter().map(|k| k.name()))
        .collect();
    let worker_names: Vec<&str> = WorkerKey::ALL.iter().map(|k| k.name()).collect();
    for (i, route) in list.iter().enumerate() {
        let Raw::Table(fields) = &route.raw else {
            continue;
        };
        let at = format!("routes[{i}]");
        unknown_field(
            &at,
            fields,
            |name| RouteKey::named(name).is_some() || PolicyKey::named(name).is_some(),
            &route_names,
        )?;
        let Some(Setting {
            raw: Raw::List(workers),
            ..
        }) = fields.get(RouteKey::Workers.name())
        else {
            continue;
        };
        for (j, worker) in workers.iter().enumerate() {
            if let Raw::Table(fields) = &worker.raw {
                let at = format!("{at}.workers[{j}]");
                unknown_field(
                    &at,
                    fields,
                    |name| WorkerKey::named(name).is_some(),
                    &worker_names,
                )?;
            }
        }
    }
    Ok(())
}

/// The first key of `fields` that `known` refuses.
fn unknown_field(
    at: &str,
    fields: &BTreeMap<String, Setting>,
    known: impl Fn(&str) -> bool,
    names: &[&str],
) -> Result<(), ConfigError> {
    match fields.iter().find(|(name, _)| !known(name)) {
        Some((name, value)) => Err(value.error(
            &format!("{at}.{name}"),
            format!("unknown key; expected one of {}", names.join(", ")),
        )),
        None => Ok(()),
    }
}

/// The routes: the configured ones, else the implicit ones of the
/// top-level keys.
pub(super) fn routes(s: &Settings) -> Result<Vec<RouteConfig>, ConfigError> {
    let inherited = policy::top_level(s)?;
    match s.get(Key::Routes) {
        Some(routes) if !matches!(&routes.raw, Raw::List(list) if list.is_empty()) => {
            // Top-level route keys would be silently ignored: refuse them.
            for key in [Key::Upstream, Key::UpstreamAuth, Key::Kind, Key::RawBodies] {
                if let Some(setting) = s.get(key) {
                    return Err(setting.error(
                        key.name(),
                        "set it per route when routes are configured (a route with \
                         model_prefix = \"*\" takes the rest)",
                    ));
                }
            }
            configured(routes, &inherited)
        }
        _ => implicit_routes(s, inherited),
    }
}

/// The implicit routes of a gateway without `[[routes]]`. With `upstream`
/// or `kind` set, one route serves every call. With neither (zero
/// configuration), each protocol goes where its SDK would go by itself:
/// OpenAI paths to `$OPENAI_BASE_URL` (else OpenAI), `/v1/messages` to
/// `$ANTHROPIC_BASE_URL` (else Anthropic) — one implicit route per protocol.
fn implicit_routes(s: &Settings, policy: CallPolicy) -> Result<Vec<RouteConfig>, ConfigError> {
    let kind: UpstreamKind = match s.get(Key::Kind) {
        Some(kind) => kind.choice(Key::Kind.name(), true)?,
        None if s.get(Key::Upstream).is_none() => {
            let zero = KindReason::ZeroConfig;
            let openai = implicit(s, UpstreamKind::Generic, policy.clone())?;
            let mut anthropic = implicit(s, UpstreamKind::Anthropic, policy)?;
            // Worker ids are unique across routes (the admin API's key).
            anthropic.workers[0].id = Protocol::Anthropic.to_string();
            let anthropic = anthropic.with_kind(UpstreamKind::Anthropic, zero.clone());
            return Ok(vec![
                openai.with_kind(UpstreamKind::Generic, zero),
                anthropic,
            ]);
        }
        None => UpstreamKind::Auto,
    };
    let route = implicit(s, kind, policy)?;
    let (kind, reason) = settled_kind(kind, route.protocol, &route.workers);
    Ok(vec![route.with_kind(kind, reason)])
}

/// An implicit route of `kind` from the top-level keys: the unnamed
/// default route with what they set (its token-data flags not yet set: see
/// [`RouteConfig::set_kind`]).
fn implicit(
    s: &Settings,
    kind: UpstreamKind,
    policy: CallPolicy,
) -> Result<RouteConfig, ConfigError> {
    let auth = match s.get(Key::UpstreamAuth) {
        Some(auth) => upstream_auth(auth, Key::UpstreamAuth.name())?,
        None => UpstreamAuth::Passthrough,
    };
    let workers = implicit_workers(&implicit_upstream(s, kind.protocol()))?;
    Ok(RouteConfig {
        protocol: kind.protocol(),
        kind,
        switches: TokenSwitches {
            inject_logprobs: s.switch(Key::InjectLogprobs)?,
            inject_return_token_ids: s.switch(Key::InjectReturnTokenIds)?,
            strip_vllm_fields: s.switch(Key::StripVllmFields)?,
            session_affinity_headers: s.switch(Key::SessionAffinityHeaders)?,
        },
        auth,
        raw_bodies: match s.get(Key::RawBodies) {
            Some(when) => when.choice(Key::RawBodies.name(), true)?,
            None => RawBodies::Always,
        },
        policy,
        ..RouteConfig::over(workers)
    })
}

/// Hosts whose APIs refuse parameters they do not know: `auto` never
/// probes them nor sends them vLLM's parameters.
const HOSTED_APIS: [&str; 3] = ["openai.com", "anthropic.com", "openai.azure.com"];

/// The kind a route starts with: a written kind stays; `auto` becomes
/// `generic` where probing is pointless or unsafe (an Anthropic-protocol
/// route, a hosted OpenAI or Anthropic API) and stays `auto` (probed at
/// start) everywhere else.
fn settled_kind(
    kind: UpstreamKind,
    protocol: Protocol,
    workers: &[WorkerConfig],
) -> (UpstreamKind, KindReason) {
    if kind != UpstreamKind::Auto {
        return (kind, KindReason::Configured);
    }
    if protocol == Protocol::Anthropic {
        return (UpstreamKind::Generic, KindReason::AnthropicProtocol);
    }
    let hosted = workers
        .iter()
        .filter_map(|w| w.url.host_str())
        .find(|host| {
            HOSTED_APIS
                .iter()
                .any(|api| host == api || host.ends_with(&format!(".{api}")))
        });
    match hosted {
        Some(host) => (
            UpstreamKind::Generic,
            KindReason::HostedApi(host.to_string()),
        ),
        None => (UpstreamKind::Auto, KindReason::Unprobed),
    }
}

/// An implicit route's pool: one worker per URL of `upstream`.
fn implicit_workers(upstream: &Setting) -> Result<Vec<WorkerConfig>, ConfigError> {
    let key = Key::Upstream.name();
    if upstream.items().is_empty() {
        return Err(upstream.error(key, "at least one upstream URL is needed"));
    }
    let urls = upstream.items().iter().map(|u| upstream_url(u, key));
    urls.enumerate()
        .map(|(i, url)| {
            Ok(WorkerConfig {
                id: i.to_string(),
                url: url?,
                weight: 1,
                model_name: None,
            })
        })
        .collect()
}

/// The upstream of the implicit route for `protocol`: `upstream`, else the
/// protocol's SDK variable (`$OPENAI_BASE_URL`, `$ANTHROPIC_BASE_URL`),
/// else the provider itself.
pub(super) fn implicit_upstream(s: &Settings, protocol: Protocol) -> Setting {
    if let Some(upstream) = s.get(Key::Upstream) {
        return upstream.clone();
    }
    let (var, default) = match protocol {
        Protocol::Openai => ("OPENAI_BASE_URL", DEFAULT_UPSTREAM),
        Protocol::Anthropic => ("ANTHROPIC_BASE_URL", DEFAULT_ANTHROPIC_UPSTREAM),
    };
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Setting::text_from(url, Origin::Env(var.into())),
        _ => Setting::text_from(default, Origin::Default),
    }
}

/// Validates configured routes, in order; what a route's policy does not
/// set it inherits from the top level.
fn configured(routes: &Setting, inherited: &CallPolicy) -> Result<Vec<RouteConfig>, ConfigError> {
    let Raw::List(list) = &routes.raw else {
        return Err(routes.error(Key::Routes.name(), "expected a list of routes ([[routes]])"));
    };
    let mut names = HashSet::new();
    let mut configured = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let entry = Entry::new(i, entry)?;
        let route = entry.config(inherited)?;
        if !names.insert(route.label().to_string()) {
            let message = format!("'{}' is used by another route", route.label());
            return Err(entry.error(RouteKey::Name, message));
        }
        configured.push(route);
    }
    let defaults: Vec<&str> = configured
        .iter()
        .filter(|r| r.is_default)
        .map(RouteConfig::label)
        .collect();
    if defaults.len() > 1 {
        let message = format!(
            "only one route can be the default, not {}",
            defaults.join(" and ")
        );
        return Err(routes.error(Key::Routes.name(), message));
    }
    Ok(configured)
}

/// One configured route's fields, with the label its errors carry
/// (`routes[0] (claude)`).
struct Entry<'a> {
    label: String,
    fields: &'a BTreeMap<String, Setting>,
    origin: &'a Origin,
}

impl<'a> Entry<'a> {
    fn new(i: usize, entry: &'a Setting) -> Result<Entry<'a>, ConfigError> {
        let fields = entry.table(&format!("routes[{i}]"))?;
        let name = fields
            .get(RouteKey::Name.name())
            .and_then(|n| n.text("name").ok());
        let label = match name {
            Some(name) => format!("routes[{i}] ({name})"),
            None => format!("routes[{i}]"),
        };
        Ok(Entry {
            label,
            fields,
            origin: &entry.origin,
        })
    }

    /// The route, validated.
    fn config(&self, inherited: &CallPolicy) -> Result<RouteConfig, ConfigError> {
        let name = self.name()?;
        let model_prefix = self.model_prefix()?;
        let workers = self.workers()?;
        let kind: UpstreamKind = match self.get(RouteKey::Kind) {
            Some(kind) => kind.choice(&self.key("kind"), true)?,
            None => UpstreamKind::Auto,
        };
        let auth = match self.get(RouteKey::Auth) {
            Some(auth) => upstream_auth(auth, &self.key("auth"))?,
            None => UpstreamAuth::Passthrough,
        };
        let protocol = self.protocol(kind)?;
        let (kind, kind_reason) = settled_kind(kind, protocol, &workers);
        let route = RouteConfig {
            name: Some(name),
            model_prefix: Some(model_prefix),
            is_default: self.switch(RouteKey::Default)?.unwrap_or(false),
            protocol,
            kind,
            kind_reason: kind_reason.clone(),
            switches: TokenSwitches {
                inject_logprobs: self.switch(RouteKey::InjectLogprobs)?,
                inject_return_token_ids: self.switch(RouteKey::InjectReturnTokenIds)?,
                strip_vllm_fields: self.switch(RouteKey::StripVllmFields)?,
                session_affinity_headers: self.switch(RouteKey::SessionAffinityHeaders)?,
            },
            backend_model: self.backend_model()?,
            auth,
            headers: self.headers()?,
            allow_caller_headers: self.switch(RouteKey::AllowCallerHeaders)?.unwrap_or(false),
            raw_bodies: match self.get(RouteKey::RawBodies) {
                Some(when) => when.choice(&self.key("raw_bodies"), true)?,
                None => RawBodies::Always,
            },
            policy: policy::read(
                |key| self.fields.get(key.name()),
                |key| self.key(key.name()),
                inherited,
            )?,
            // The token-data flags: the kind decides them (`with_kind`).
            ..RouteConfig::over(workers)
        };
        Ok(route.with_kind(kind, kind_reason))
    }

    fn get(&self, field: RouteKey) -> Option<&'a Setting> {
        self.fields.get(field.name())
    }

    /// The key of a field in messages: `routes[0] (claude): auth`.
    fn key(&self, field: &str) -> String {
        format!("{}: {field}", self.label)
    }

    /// An error about a field, where its value was written (where the route
    /// was, for a missing field).
    fn error(&self, field: RouteKey, message: impl std::fmt::Display) -> ConfigError {
        let origin = self.get(field).map_or(self.origin, |s| &s.origin);
        ConfigError::new(self.key(field.name()), message, origin.clone())
    }

    fn text(&self, field: RouteKey) -> Result<Option<String>, ConfigError> {
        let key = self.key(field.name());
        self.get(field).map(|s| s.text(&key)).transpose()
    }

    fn switch(&self, field: RouteKey) -> Result<Option<bool>, ConfigError> {
        let key = self.key(field.name());
        self.get(field).map(|s| s.switch(&key)).transpose()
    }

    fn name(&self) -> Result<String, ConfigError> {
        let name = self
            .text(RouteKey::Name)?
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| self.error(RouteKey::Name, "every route needs a name"))?;
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            let message = format!("'{name}' may only use letters, digits, '_' and '-'");
            return Err(self.error(RouteKey::Name, message));
        }
        Ok(name)
    }

    fn model_prefix(&self) -> Result<String, ConfigError> {
        self.text(RouteKey::ModelPrefix)?
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| self.error(RouteKey::ModelPrefix, "needed; use \"*\" for every model"))
    }

    fn workers(&self) -> Result<Vec<WorkerConfig>, ConfigError> {
        match (self.get(RouteKey::Upstream), self.get(RouteKey::Workers)) {
            (Some(url), None) => Ok(vec![WorkerConfig {
                id: "0".into(),
                url: upstream_url(url, &self.key("upstream"))?,
                weight: 1,
                model_name: None,
            }]),
            (None, Some(pool)) => self.pool(pool),
            (Some(_), Some(_)) => Err(self.error(
                RouteKey::Upstream,
                "give either upstream or workers, not both",
            )),
            (None, None) => Err(self.error(RouteKey::Upstream, "needed (or workers)")),
        }
    }

    fn pool(&self, pool: &Setting) -> Result<Vec<WorkerConfig>, ConfigError> {
        let Raw::List(list) = &pool.raw else {
            return Err(self.error(RouteKey::Workers, "expected a list of workers"));
        };
        if list.is_empty() {
            return Err(self.error(RouteKey::Workers, "the pool is empty"));
        }
        let mut ids = HashSet::new();
        let mut workers = Vec::with_capacity(list.len());
        for (i, entry) in list.iter().enumerate() {
            let worker = self.worker(i, entry)?;
            if !ids.insert(worker.id.clone()) {
                let key = self.key(&format!("workers[{i}].worker_id"));
                return Err(entry.error(&key, format!("'{}' is used twice", worker.id)));
            }
            workers.push(worker);
        }
        Ok(workers)
    }

    /// A worker: a URL, or a table of [`WorkerKey`] fields.
    fn worker(&self, i: usize, entry: &Setting) -> Result<WorkerConfig, ConfigError> {
        let key = |field: WorkerKey| self.key(&format!("workers[{i}].{}", field.name()));
        let fields = match &entry.raw {
            Raw::Table(fields) => Some(fields),
            _ => None,
        };
        let get = |field: WorkerKey| fields.and_then(|f| f.get(field.name()));
        let text = |field: WorkerKey| get(field).map(|s| s.text(&key(field))).transpose();
        let url = match fields {
            Some(_) => {
                get(WorkerKey::Url).ok_or_else(|| entry.error(&key(WorkerKey::Url), "needed"))?
            }
            None => entry,
        };
        let weight = match get(WorkerKey::Weight) {
            Some(weight) => match weight.number::<u32>(&key(WorkerKey::Weight))? {
                0 => return Err(weight.error(&key(WorkerKey::Weight), "must be at least 1")),
                n => n,
            },
            None => 1,
        };
        Ok(WorkerConfig {
            id: text(WorkerKey::WorkerId)?.unwrap_or_else(|| i.to_string()),
            url: upstream_url(url, &key(WorkerKey::Url))?,
            weight,
            model_name: text(WorkerKey::ModelName)?,
        })
    }

    fn protocol(&self, kind: UpstreamKind) -> Result<Protocol, ConfigError> {
        let Some(setting) = self.get(RouteKey::Protocol) else {
            return Ok(kind.protocol());
        };
        let key = self.key("protocol");
        let text = setting.text(&key)?;
        Protocol::parse(text.trim()).ok_or_else(|| {
            let names: Vec<String> = Protocol::ALL.iter().map(|p| p.to_string()).collect();
            setting.error(&key, format!("'{text}' is not {}", alternatives(&names)))
        })
    }

    fn backend_model(&self) -> Result<Option<String>, ConfigError> {
        match self.text(RouteKey::BackendModel)? {
            Some(model) if model.trim().is_empty() => {
                Err(self.error(RouteKey::BackendModel, "must not be empty"))
            }
            model => Ok(model),
        }
    }

    fn headers(&self) -> Result<Vec<(HeaderName, HeaderSource)>, ConfigError> {
        let Some(headers) = self.get(RouteKey::Headers) else {
            return Ok(Vec::new());
        };
        headers
            .table(&self.key("headers"))?
            .iter()
            .map(|(name, value)| static_header(name, value, &self.key(&format!("headers.{name}"))))
            .collect()
    }
}

/// A value that must be an upstream base URL.
fn upstream_url(setting: &Setting, key: &str) -> Result<Url, ConfigError> {
    parse_upstream(&setting.text(key)?).map_err(|e| setting.error(key, e))
}

/// A value that must be `passthrough`, `none` or `env:VAR`.
fn upstream_auth(setting: &Setting, key: &str) -> Result<UpstreamAuth, ConfigError> {
    setting
        .text(key)?
        .parse()
        .map_err(|e: InvalidUpstreamAuth| setting.error(key, e))
}

fn is_env_name(var: &str) -> bool {
    !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A route's static header, checked against the protected and connection
/// headers. The value is never echoed: it may be a secret.
fn static_header(
    name: &str,
    value: &Setting,
    key: &str,
) -> Result<(HeaderName, HeaderSource), ConfigError> {
    let header = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| value.error(key, format!("'{name}' is not a header name")))?;
    if headers::PROTECTED_FROM_ROUTE.contains(&header.as_str()) {
        return Err(value.error(
            key,
            format!(
                "'{name}' cannot be set as a route header (credentials, framing and the hop \
                 list are the gateway's); use auth = \"env:VAR\" for keys"
            ),
        ));
    }
    if headers::is_hop_by_hop_or_framing(&header) || headers::is_identity_carrier(&header) {
        let message =
            format!("'{name}' is a connection, framing or identity header and cannot be set");
        return Err(value.error(key, message));
    }
    let text = value.text(key)?;
    let source = match text.trim().strip_prefix("env:") {
        Some(var) if is_env_name(var) => HeaderSource::Env(var.to_string()),
        Some(_) => return Err(value.error(key, "env: must name an environment variable")),
        None => HeaderSource::Literal(
            HeaderValue::from_str(&text)
                .map_err(|_| value.error(key, "the value is not a valid header value"))?,
        ),
    };
    Ok((header, source))
}

/// With inbound auth in `Authorization`, a passthrough route would hand the
/// gateway's own token to the upstream as a credential.
pub(super) fn check_passthrough(
    auth: &InboundAuth,
    routes: &[RouteConfig],
    s: &Settings,
) -> Result<(), ConfigError> {
    if !auth.enabled() || auth.header.is_some() {
        return Ok(());
    }
    let passthrough = routes
        .iter()
        .enumerate()
        .find(|(_, r)| r.auth == UpstreamAuth::Passthrough);
    let (key, origin) = match passthrough {
        None => return Ok(()),
        Some((
            i,
            RouteConfig {
                name: Some(name), ..
            },
        )) => (format!("routes ({name}): auth"), auth_origin(s, i)),
        Some((_, _)) => (
            Key::UpstreamAuth.name().to_string(),
            s.origin(Key::UpstreamAuth),
        ),
    };
    Err(ConfigError::new(key, PASSTHROUGH_WITH_BEARER, origin))
}

/// Where configured route `i` set its `auth`, else where the route is.
fn auth_origin(s: &Settings, i: usize) -> Origin {
    let Some(route) = s.get(Key::Routes).and_then(|routes| routes.items().get(i)) else {
        return Origin::Default;
    };
    let auth = match &route.raw {
        Raw::Table(fields) => fields.get(RouteKey::Auth.name()),
        _ => None,
    };
    auth.unwrap_or(route).origin.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(json: &str) -> Result<Vec<RouteConfig>, ConfigError> {
        configured(
            &from_json(json, Origin::Env(JSON_ROUTES.into()))?,
            &CallPolicy::default(),
        )
    }

    /// The error as the key and message read, without the origin.
    fn detail(e: ConfigError) -> String {
        format!("{}: {}", e.key, e.message)
    }

    #[test]
    fn a_full_route_parses() {
        let r = route(r#"[{"name": "claude", "model_prefix": "Claude-", "upstream": "https://api.anthropic.com",
            "kind": "anthropic", "auth": "env:ANTHROPIC_API_KEY", "headers": {"X-Org": "acme", "X-Key": "env:ORG_KEY"},
            "backend_model": "claude-sonnet-4-5", "allow_caller_headers": true}]"#).unwrap();
        let r = &r[0];
        assert_eq!(
            r.model_prefix.as_deref(),
            Some("claude-"),
            "prefixes compare case-insensitively"
        );
        assert_eq!(r.protocol, Protocol::Anthropic);
        assert_eq!(r.auth, UpstreamAuth::Env("ANTHROPIC_API_KEY".into()));
        assert_eq!(
            r.secret_vars().collect::<Vec<_>>(),
            ["ANTHROPIC_API_KEY", "ORG_KEY"]
        );
    }

    #[test]
    fn errors_name_the_route_and_the_field() {
        let cases = [
            (
                r#"[{"model_prefix": "a", "upstream": "http://h"}]"#,
                "routes[0]: name",
            ),
            (
                r#"[{"name": "a", "upstream": "http://h"}]"#,
                "routes[0] (a): model_prefix",
            ),
            (
                r#"[{"name": "a", "model_prefix": "x"}]"#,
                "routes[0] (a): upstream",
            ),
            (
                r#"[{"name": "a", "model_prefix": "x", "upstream": "ftp://h"}]"#,
                "routes[0] (a): upstream",
            ),
            (
                r#"[{"name": "a", "model_prefix": "x", "upstream": "http://h", "auth": "token"}]"#,
                "routes[0] (a): auth",
            ),
            (
                r#"[{"name": "a", "model_prefix": "x", "upstream": "http://h", "kind": "llama"}]"#,
                "routes[0] (a): kind",
            ),
            (
                r#"[{"name": "a", "model_prefix": "x", "upstream": "http://h", "headers": {"Authorization": "x"}}]"#,
                "routes[0] (a): headers.Authorization",
            ),
            (
                r#"[{"name": "a", "model_prefix": "x", "upstream": "http://h", "headers": {"anthropic-version": "x"}}]"#,
                "routes[0] (a): headers.anthropic-version",
            ),
            (
                r#"[{"name": "a", "model_prefix": "x", "workers": [{"url": "http://h", "weight": 0}]}]"#,
                "routes[0] (a): workers[0].weight",
            ),
            (
                r#"[{"name": "a", "model_prefix": "x", "upstream": "http://h"}, {"name": "a", "model_prefix": "y", "upstream": "http://h"}]"#,
                "routes[1] (a): name",
            ),
            (
                r#"[{"name": "a", "model_prefix": "x", "upstream": "http://h", "bogus": 1}]"#,
                "TRACEGATE_ROUTES",
            ),
        ];
        for (json, want) in cases {
            let e = detail(route(json).unwrap_err());
            assert!(e.starts_with(want), "{json}: {e}");
        }
    }

    #[test]
    fn a_route_cannot_set_the_hop_header() {
        let e = route(r#"[{"name": "a", "model_prefix": "x", "upstream": "http://h", "headers": {"Via": "1.1 elsewhere"}}]"#)
            .unwrap_err();
        assert_eq!(e.key, "routes[0] (a): headers.Via");
        assert!(e.message.contains("the hop list"), "{}", e.message);
    }

    #[test]
    fn literal_header_values_are_never_echoed() {
        let e = route(r#"[{"name": "a", "model_prefix": "x", "upstream": "http://h", "headers": {"X-K": "sec\u0001ret"}}]"#)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("sec"), "{e}");
    }

    #[test]
    fn kinds_protocols_and_auth_parse_their_spellings() {
        let r = route(
            r#"[{"name": "a", "model_prefix": "x", "upstream": "http://h", "kind": " VLLM ",
                "protocol": "anthropic", "auth": "passthrough", "default": "yes"}]"#,
        )
        .unwrap();
        assert_eq!(
            (r[0].kind, r[0].protocol, &r[0].auth, r[0].is_default),
            (
                UpstreamKind::Vllm,
                Protocol::Anthropic,
                &UpstreamAuth::Passthrough,
                true
            )
        );
        assert!(r[0].inject_logprobs, "vllm turns token data on");
        assert_eq!("env:KEY_1".parse(), Ok(UpstreamAuth::Env("KEY_1".into())));
        assert_eq!("env:".parse::<UpstreamAuth>(), Err(InvalidUpstreamAuth));
        let e = route(
            r#"[{"name": "a", "model_prefix": "x", "upstream": "http://h", "protocol": "grpc"}]"#,
        )
        .unwrap_err();
        assert_eq!(e.message, "'grpc' is not openai or anthropic");
    }

    #[test]
    fn auto_is_the_default_and_is_probed_only_where_it_is_safe() {
        let r = route(
            r#"[{"name": "a", "model_prefix": "a", "upstream": "http://vllm:8000/v1"},
                {"name": "b", "model_prefix": "b", "upstream": "https://api.openai.com/v1"},
                {"name": "c", "model_prefix": "c", "upstream": "http://h", "protocol": "anthropic"},
                {"name": "d", "model_prefix": "d", "upstream": "http://h", "kind": "auto",
                 "inject_logprobs": true}]"#,
        )
        .unwrap();
        let kinds: Vec<(UpstreamKind, &KindReason)> =
            r.iter().map(|r| (r.kind, &r.kind_reason)).collect();
        assert_eq!(
            kinds,
            [
                (UpstreamKind::Auto, &KindReason::Unprobed),
                (
                    UpstreamKind::Generic,
                    &KindReason::HostedApi("api.openai.com".into())
                ),
                (UpstreamKind::Generic, &KindReason::AnthropicProtocol),
                (UpstreamKind::Auto, &KindReason::Unprobed),
            ]
        );
        assert!(!r[0].inject_logprobs, "nothing injected before the probe");
        assert!(r[3].inject_logprobs, "a written switch stands");
        let mut probed = r[0].clone();
        probed.set_kind(
            UpstreamKind::Vllm,
            KindReason::Probed {
                owned_by: "vllm".into(),
            },
        );
        assert!(probed.inject_logprobs && probed.inject_return_token_ids);
        assert!(probed.strip_vllm_fields && probed.session_affinity_headers);
    }

    #[test]
    fn an_unknown_key_is_named_with_the_fields_there_are() {
        let e = route(r#"[{"name": "a", "model_prefix": "x", "workers": [{"url": "http://h", "wieght": 2}]}]"#)
            .unwrap_err();
        assert_eq!(e.key, JSON_ROUTES);
        assert!(
            e.message
                .contains("routes[0].workers[0].wieght: unknown key; expected one of url, weight"),
            "{}",
            e.message
        );
    }
}
