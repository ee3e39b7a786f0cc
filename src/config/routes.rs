//! Routes: which upstream serves which model, with which credentials and
//! headers — validated at start, never at request time.
//!
//! With no `[[routes]]` the gateway has one implicit route built from the
//! top-level keys (`upstream`, `kind`, `upstream_auth`, ...), which is the
//! single-upstream behaviour. With routes (from the file, or the
//! `TRACEGATE_ROUTES` variable as a JSON array of the same objects), each
//! names its model prefix, its upstream or worker pool, its API protocol and
//! kind, and how it authenticates upstream. Every mistake is refused with a
//! message naming the route and the field — a route is never skipped with a
//! warning, because a skipped route silently sends traffic somewhere else.
//!
//! Two rules are security rules: a route's static `headers` may not set the
//! headers that carry credentials or framing (`authorization`, `x-api-key`,
//! `content-type`, `anthropic-version`, hop-by-hop and framing headers), and
//! a route that passes the caller's credentials through is refused when the
//! gateway itself checks a bearer token in `Authorization` (the gateway's
//! token would be forwarded as the upstream's credential) — unless the
//! gateway's token travels in its own header (`auth.header`).

use super::{ConfigError, err, parse_upstream};
use crate::headers;
use http::{HeaderName, HeaderValue};
use reqwest::Url;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};

/// What an upstream is. It sets the defaults of the token-data options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamKind {
    /// A vLLM server: token ids and logprobs on by default.
    Vllm,
    /// OpenAI itself (rejects unknown parameters).
    Openai,
    /// Anthropic itself.
    Anthropic,
    /// Any other OpenAI-compatible server.
    #[default]
    Generic,
}

impl UpstreamKind {
    /// Parses `vllm`, `openai`, `anthropic` or `generic`.
    pub fn parse(text: &str) -> Option<UpstreamKind> {
        match text.trim().to_ascii_lowercase().as_str() {
            "vllm" => Some(UpstreamKind::Vllm),
            "openai" => Some(UpstreamKind::Openai),
            "anthropic" => Some(UpstreamKind::Anthropic),
            "generic" => Some(UpstreamKind::Generic),
            _ => None,
        }
    }

    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Vllm => "vllm",
            UpstreamKind::Openai => "openai",
            UpstreamKind::Anthropic => "anthropic",
            UpstreamKind::Generic => "generic",
        }
    }
}

/// The API family a route's upstream speaks; it decides how an injected key
/// is sent (`Authorization: Bearer` or `x-api-key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiProtocol {
    /// OpenAI-style APIs.
    Openai,
    /// Anthropic's API.
    Anthropic,
}

/// Where a route's upstream credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// The caller's own `Authorization` / `x-api-key` / `api-key` go upstream.
    Passthrough,
    /// The caller's credentials are removed and the key in this environment
    /// variable is sent instead, read at request time.
    Env(String),
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
    /// The API family.
    pub protocol: ApiProtocol,
    /// What the upstream is.
    pub kind: UpstreamKind,
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
}

impl RouteConfig {
    /// An unnamed route to one upstream with every default: generic,
    /// passthrough, no headers, no vLLM options.
    pub fn to(url: Url) -> RouteConfig {
        RouteConfig {
            name: None,
            model_prefix: None,
            is_default: true,
            workers: vec![WorkerConfig {
                id: "0".into(),
                url,
                weight: 1,
                model_name: None,
            }],
            protocol: ApiProtocol::Openai,
            kind: UpstreamKind::Generic,
            backend_model: None,
            auth: UpstreamAuth::Passthrough,
            headers: Vec::new(),
            allow_caller_headers: false,
            inject_logprobs: false,
            inject_return_token_ids: false,
            strip_vllm_fields: false,
        }
    }

    /// The route's name for messages: its name, or `default`.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("default")
    }

    /// Every environment variable the route reads secrets from.
    pub fn secret_vars(&self) -> impl Iterator<Item = &str> {
        let auth = match &self.auth {
            UpstreamAuth::Env(var) => Some(var.as_str()),
            UpstreamAuth::Passthrough => None,
        };
        let headers = self.headers.iter().filter_map(|(_, source)| match source {
            HeaderSource::Env(var) => Some(var.as_str()),
            HeaderSource::Literal(_) => None,
        });
        auth.into_iter().chain(headers)
    }
}

/// One `[[routes]]` entry (or one object of `TRACEGATE_ROUTES`), as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRoute {
    name: Option<String>,
    model_prefix: Option<String>,
    upstream: Option<String>,
    workers: Option<Vec<FileWorker>>,
    protocol: Option<String>,
    kind: Option<String>,
    backend_model: Option<String>,
    auth: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    allow_caller_headers: Option<bool>,
    default: Option<bool>,
    inject_logprobs: Option<bool>,
    inject_return_token_ids: Option<bool>,
    strip_vllm_fields: Option<bool>,
}

/// A worker as written: a URL, or a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a URL or {url, weight, worker_id, model_name}"
)]
enum FileWorker {
    Url(String),
    Table {
        url: String,
        weight: Option<u32>,
        worker_id: Option<String>,
        model_name: Option<String>,
    },
}

/// The keys of the implicit route (no `[[routes]]`), already merged from
/// flags, environment and file.
pub(super) struct TopLevel {
    pub upstreams: Vec<Url>,
    pub kind: UpstreamKind,
    pub auth: Option<String>,
    pub inject_logprobs: Option<bool>,
    pub inject_return_token_ids: Option<bool>,
    pub strip_vllm_fields: Option<bool>,
}

/// Parses `TRACEGATE_ROUTES` (a JSON array of route objects).
pub(super) fn routes_from_json(text: &str) -> Result<Vec<FileRoute>, ConfigError> {
    serde_json::from_str(text).map_err(|e| {
        err(
            "TRACEGATE_ROUTES",
            format!("not a JSON array of routes: {e}"),
        )
    })
}

/// The implicit route of a gateway without `[[routes]]`.
pub(super) fn implicit_route(top: TopLevel) -> Result<RouteConfig, ConfigError> {
    let vllm = top.kind == UpstreamKind::Vllm;
    let workers = top
        .upstreams
        .into_iter()
        .enumerate()
        .map(|(i, url)| WorkerConfig {
            id: i.to_string(),
            url,
            weight: 1,
            model_name: None,
        })
        .collect();
    Ok(RouteConfig {
        name: None,
        model_prefix: None,
        is_default: true,
        workers,
        protocol: if top.kind == UpstreamKind::Anthropic {
            ApiProtocol::Anthropic
        } else {
            ApiProtocol::Openai
        },
        kind: top.kind,
        backend_model: None,
        auth: match top.auth {
            Some(text) => parse_auth(&text).map_err(|m| err("upstream_auth", m))?,
            None => UpstreamAuth::Passthrough,
        },
        headers: Vec::new(),
        allow_caller_headers: false,
        inject_logprobs: top.inject_logprobs.unwrap_or(vllm),
        inject_return_token_ids: top.inject_return_token_ids.unwrap_or(vllm),
        strip_vllm_fields: top.strip_vllm_fields.unwrap_or(vllm),
    })
}

/// Validates configured routes, in order.
pub(super) fn configured_routes(file: Vec<FileRoute>) -> Result<Vec<RouteConfig>, ConfigError> {
    let mut names = HashSet::new();
    let mut routes = Vec::with_capacity(file.len());
    for (i, r) in file.into_iter().enumerate() {
        let label = format!(
            "routes[{i}]{}",
            r.name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
        let fail = |field: &str, message: String| err(&format!("{label}: {field}"), message);
        let name = r
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| fail("name", "every route needs a name".into()))?;
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(fail(
                "name",
                format!("'{name}' may only use letters, digits, '_' and '-'"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(fail("name", format!("'{name}' is used by another route")));
        }
        let model_prefix = r
            .model_prefix
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| fail("model_prefix", "needed; use \"*\" for every model".into()))?;
        let workers = match (r.upstream, r.workers) {
            (Some(url), None) => vec![WorkerConfig {
                id: "0".into(),
                url: parse_upstream(&url).map_err(|m| fail("upstream", m))?,
                weight: 1,
                model_name: None,
            }],
            (None, Some(list)) if !list.is_empty() => {
                workers(list).map_err(|(f, m)| fail(&f, m))?
            }
            (None, Some(_)) => return Err(fail("workers", "the pool is empty".into())),
            (Some(_), Some(_)) => {
                return Err(fail(
                    "upstream",
                    "give either upstream or workers, not both".into(),
                ));
            }
            (None, None) => return Err(fail("upstream", "needed (or workers)".into())),
        };
        let kind = match r.kind {
            Some(text) => UpstreamKind::parse(&text).ok_or_else(|| {
                fail(
                    "kind",
                    format!("'{text}' is not one of vllm, openai, anthropic, generic"),
                )
            })?,
            None => UpstreamKind::Generic,
        };
        let protocol = match r.protocol.as_deref().map(str::trim) {
            Some("openai") => ApiProtocol::Openai,
            Some("anthropic") => ApiProtocol::Anthropic,
            Some(other) => {
                return Err(fail(
                    "protocol",
                    format!("'{other}' is not openai or anthropic"),
                ));
            }
            None if kind == UpstreamKind::Anthropic => ApiProtocol::Anthropic,
            None => ApiProtocol::Openai,
        };
        let backend_model = match r.backend_model {
            Some(m) if m.trim().is_empty() => {
                return Err(fail("backend_model", "must not be empty".into()));
            }
            other => other,
        };
        let auth = match r.auth {
            Some(text) => parse_auth(&text).map_err(|m| fail("auth", m))?,
            None => UpstreamAuth::Passthrough,
        };
        let mut headers = Vec::new();
        for (key, value) in r.headers.unwrap_or_default() {
            headers
                .push(static_header(&key, &value).map_err(|m| fail(&format!("headers.{key}"), m))?);
        }
        let vllm = kind == UpstreamKind::Vllm;
        routes.push(RouteConfig {
            name: Some(name),
            model_prefix: Some(model_prefix),
            is_default: r.default.unwrap_or(false),
            workers,
            protocol,
            kind,
            backend_model,
            auth,
            headers,
            allow_caller_headers: r.allow_caller_headers.unwrap_or(false),
            inject_logprobs: r.inject_logprobs.unwrap_or(vllm),
            inject_return_token_ids: r.inject_return_token_ids.unwrap_or(vllm),
            strip_vllm_fields: r.strip_vllm_fields.unwrap_or(vllm),
        });
    }
    let defaults: Vec<&str> = routes
        .iter()
        .filter(|r| r.is_default)
        .map(RouteConfig::label)
        .collect();
    if defaults.len() > 1 {
        return Err(err(
            "routes",
            format!(
                "only one route can be the default, not {}",
                defaults.join(" and ")
            ),
        ));
    }
    Ok(routes)
}

fn workers(list: Vec<FileWorker>) -> Result<Vec<WorkerConfig>, (String, String)> {
    let mut ids = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, w) in list.into_iter().enumerate() {
        let field = format!("workers[{i}]");
        let (url, weight, id, model_name) = match w {
            FileWorker::Url(url) => (url, None, None, None),
            FileWorker::Table {
                url,
                weight,
                worker_id,
                model_name,
            } => (url, weight, worker_id, model_name),
        };
        let url = parse_upstream(&url).map_err(|m| (format!("{field}.url"), m))?;
        let weight = weight.unwrap_or(1);
        if weight == 0 {
            return Err((format!("{field}.weight"), "must be at least 1".into()));
        }
        let id = id.unwrap_or_else(|| i.to_string());
        if !ids.insert(id.clone()) {
            return Err((
                format!("{field}.worker_id"),
                format!("'{id}' is used twice"),
            ));
        }
        out.push(WorkerConfig {
            id,
            url,
            weight,
            model_name,
        });
    }
    Ok(out)
}

/// `passthrough` or `env:VAR`.
pub fn parse_auth(text: &str) -> Result<UpstreamAuth, String> {
    match text.trim() {
        "passthrough" => Ok(UpstreamAuth::Passthrough),
        t => match t.strip_prefix("env:") {
            Some(var) if is_env_name(var) => Ok(UpstreamAuth::Env(var.to_string())),
            _ => Err(format!("'{t}' is not passthrough or env:VARIABLE")),
        },
    }
}

fn is_env_name(var: &str) -> bool {
    !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A route's static header, checked against the protected and connection
/// headers.
fn static_header(key: &str, value: &str) -> Result<(HeaderName, HeaderSource), String> {
    let name = HeaderName::from_bytes(key.trim().as_bytes())
        .map_err(|_| format!("'{key}' is not a header name"))?;
    if headers::PROTECTED_FROM_ROUTE.contains(&name.as_str()) {
        return Err(format!(
            "'{key}' cannot be set as a route header (credentials and framing are the gateway's); use auth = \"env:VAR\" for keys"
        ));
    }
    if headers::is_hop_by_hop_or_framing(&name) || headers::is_identity_carrier(&name) {
        return Err(format!(
            "'{key}' is a connection, framing or identity header and cannot be set"
        ));
    }
    let source = match value.trim().strip_prefix("env:") {
        Some(var) if is_env_name(var) => HeaderSource::Env(var.to_string()),
        Some(_) => return Err("env: must name an environment variable".into()),
        // Never echo the value: it may be a secret.
        None => HeaderSource::Literal(
            HeaderValue::from_str(value)
                .map_err(|_| "the value is not a valid header value".to_string())?,
        ),
    };
    Ok((name, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(json: &str) -> Result<Vec<RouteConfig>, ConfigError> {
        configured_routes(routes_from_json(json)?)
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
        assert_eq!(r.protocol, ApiProtocol::Anthropic);
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
            let e = route(json).unwrap_err().0;
            assert!(e.starts_with(want), "{json}: {e}");
        }
    }

    #[test]
    fn literal_header_values_are_never_echoed() {
        let e = route(r#"[{"name": "a", "model_prefix": "x", "upstream": "http://h", "headers": {"X-K": "sec\u0001ret"}}]"#)
            .unwrap_err()
            .0;
        assert!(!e.contains("sec"), "{e}");
    }
}
