//! How calls on a route are carried: how long each phase may last, which
//! failures are retried, the heartbeats that keep long calls alive through
//! tunnels and proxies, and whether the gateway finishes a call whose
//! client left.
//!
//! Every field ([`PolicyKey`]) can be written at the top level, where it is
//! the default of every route (and the policy of the implicit route), and
//! in a route, where it wins; a route's `retry` table replaces the
//! top-level one whole. `read_timeout`, the older "longest silence" key, is
//! the default of both `first_byte_timeout` and `idle_timeout`. Each limit
//! keeps the name of the setting that set it ([`Limit`]), so that a timeout
//! that fires can say which key to change.

use super::error::ConfigError;
use super::key::{Key, keys};
use super::raw::{Raw, Setting, Settings, alternatives};
use crate::record::RetryReason;
use std::time::Duration;

/// `read_timeout`'s default: the longest silence before headers or between
/// chunks.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(600);
/// `heartbeat_every`'s default.
pub const DEFAULT_HEARTBEAT_EVERY: Duration = Duration::from_secs(15);

keys! {
    /// The call-policy fields of a route, also top-level keys.
    pub(super) enum PolicyKey {
        FirstByteTimeout => "first_byte_timeout",
        IdleTimeout => "idle_timeout",
        RequestTimeout => "request_timeout",
        FinishOnClientClose => "finish_on_client_close",
        HeartbeatAfter => "heartbeat_after",
        HeartbeatEvery => "heartbeat_every",
        StreamKeepalive => "stream_keepalive",
        Retry => "retry",
    }
}

keys! {
    /// The fields of a `retry` table.
    enum RetryKey {
        MaxAttempts => "max_attempts",
        On => "on",
        Backoff => "backoff",
        MaxBackoff => "max_backoff",
        MaxRetryAfter => "max_retry_after",
        Deadline => "deadline",
    }
}

/// A time limit, and the setting it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// How long.
    pub after: Duration,
    /// The key that set it (`read_timeout`, `routes[0] (policy): idle_timeout`).
    pub setting: String,
}

/// The time limits of an upstream call's phases; each that fires is its own
/// error kind. The connect timeout is `connect_timeout`, one for the
/// gateway's pooled client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// From an attempt's start to the response headers (`upstream_timeout`).
    pub first_byte: Option<Limit>,
    /// Between two chunks of the body (`upstream_idle_timeout`).
    pub idle: Option<Limit>,
    /// The whole call, every attempt and the body (`upstream_total_timeout`).
    pub total: Option<Limit>,
}

/// Heartbeats for non-streamed calls: the status and headers after `after`,
/// then a space every `every` until the JSON body arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// When the client gets its status and headers if the upstream has not answered.
    pub after: Duration,
    /// How often a whitespace byte follows.
    pub every: Duration,
}

/// Which failures before anything reached the client are tried again, how
/// often and how patiently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts, the first included.
    pub max_attempts: u32,
    /// The failures that are retried.
    pub on: Vec<RetryReason>,
    /// The first backoff's ceiling; it doubles with each retry (full jitter).
    pub backoff: Duration,
    /// The largest backoff ceiling.
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured (a longer one is cut to it).
    pub max_retry_after: Duration,
    /// No attempt starts later than this after the call arrived.
    pub deadline: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            on: RetryReason::DEFAULT.to_vec(),
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(30),
            deadline: Some(Duration::from_secs(60)),
        }
    }
}

/// How calls on one route are carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPolicy {
    /// The phases' time limits.
    pub timeouts: Timeouts,
    /// Retries, when the route has a policy.
    pub retry: Option<RetryPolicy>,
    /// Read the answer to its end (and record it whole) when the client
    /// leaves, instead of cancelling the upstream request.
    pub finish_on_client_close: bool,
    /// Heartbeats for non-streamed calls.
    pub heartbeat: Option<Heartbeat>,
    /// An SSE comment whenever a stream has been silent this long.
    pub stream_keepalive: Option<Duration>,
}

impl Default for CallPolicy {
    /// The policy with every default: `read_timeout` before headers and
    /// between chunks, nothing else.
    fn default() -> Self {
        let silence = Limit {
            after: DEFAULT_READ_TIMEOUT,
            setting: Key::ReadTimeout.name().to_string(),
        };
        CallPolicy {
            timeouts: Timeouts {
                first_byte: Some(silence.clone()),
                idle: Some(silence),
                total: None,
            },
            retry: None,
            finish_on_client_close: false,
            heartbeat: None,
            stream_keepalive: None,
        }
    }
}

/// The top-level key of each policy field.
pub(super) fn top_level_key(key: PolicyKey) -> Key {
    match key {
        PolicyKey::FirstByteTimeout => Key::FirstByteTimeout,
        PolicyKey::IdleTimeout => Key::IdleTimeout,
        PolicyKey::RequestTimeout => Key::RequestTimeout,
        PolicyKey::FinishOnClientClose => Key::FinishOnClientClose,
        PolicyKey::HeartbeatAfter => Key::HeartbeatAfter,
        PolicyKey::HeartbeatEvery => Key::HeartbeatEvery,
        PolicyKey::StreamKeepalive => Key::StreamKeepalive,
        PolicyKey::Retry => Key::Retry,
    }
}

/// The top-level policy: every route's defaults.
pub(super) fn top_level(s: &Settings) -> Result<CallPolicy, ConfigError> {
    let silence = s
        .duration_or(Key::ReadTimeout, Some(DEFAULT_READ_TIMEOUT))?
        .map(|after| Limit {
            after,
            setting: Key::ReadTimeout.name().to_string(),
        });
    let inherited = CallPolicy {
        timeouts: Timeouts {
            first_byte: silence.clone(),
            idle: silence,
            total: None,
        },
        ..CallPolicy::default()
    };
    read(
        |key| s.get(top_level_key(key)),
        |key| key.name().to_string(),
        &inherited,
    )
}

/// A policy from the fields `get` finds (named `name` in messages), over
/// `inherited` for the fields it does not set.
pub(super) fn read<'a>(
    get: impl Fn(PolicyKey) -> Option<&'a Setting>,
    name: impl Fn(PolicyKey) -> String,
    inherited: &CallPolicy,
) -> Result<CallPolicy, ConfigError> {
    let limit = |key: PolicyKey, inherited: &Option<Limit>| match get(key) {
        None => Ok(inherited.clone()),
        Some(setting) => Ok(setting.duration(&name(key))?.map(|after| Limit {
            after,
            setting: name(key),
        })),
    };
    let timeouts = Timeouts {
        first_byte: limit(PolicyKey::FirstByteTimeout, &inherited.timeouts.first_byte)?,
        idle: limit(PolicyKey::IdleTimeout, &inherited.timeouts.idle)?,
        total: limit(PolicyKey::RequestTimeout, &inherited.timeouts.total)?,
    };
    let retry = match get(PolicyKey::Retry) {
        None => inherited.retry.clone(),
        Some(setting) => Some(retry(setting, &name(PolicyKey::Retry))?),
    };
    let finish_on_client_close = match get(PolicyKey::FinishOnClientClose) {
        None => inherited.finish_on_client_close,
        Some(setting) => setting.switch(&name(PolicyKey::FinishOnClientClose))?,
    };
    let stream_keepalive = match get(PolicyKey::StreamKeepalive) {
        None => inherited.stream_keepalive,
        Some(setting) => setting.duration(&name(PolicyKey::StreamKeepalive))?,
    };
    Ok(CallPolicy {
        timeouts,
        retry,
        finish_on_client_close,
        heartbeat: heartbeat(&get, &name, inherited.heartbeat)?,
        stream_keepalive,
    })
}

/// `heartbeat_after` and `heartbeat_every`, over the inherited heartbeat.
fn heartbeat<'a>(
    get: &impl Fn(PolicyKey) -> Option<&'a Setting>,
    name: &impl Fn(PolicyKey) -> String,
    inherited: Option<Heartbeat>,
) -> Result<Option<Heartbeat>, ConfigError> {
    let after = match get(PolicyKey::HeartbeatAfter) {
        None => inherited.map(|h| h.after),
        Some(setting) => setting.duration(&name(PolicyKey::HeartbeatAfter))?,
    };
    let every = match get(PolicyKey::HeartbeatEvery) {
        None => inherited.map_or(DEFAULT_HEARTBEAT_EVERY, |h| h.every),
        Some(setting) => {
            let key = name(PolicyKey::HeartbeatEvery);
            let every = setting.duration(&key)?.ok_or_else(|| {
                setting.error(
                    &key,
                    "cannot be none; unset heartbeat_after to stop heartbeats",
                )
            })?;
            if after.is_none() {
                return Err(setting.error(&key, "needs heartbeat_after"));
            }
            every
        }
    };
    Ok(after.map(|after| Heartbeat { after, every }))
}

/// A `retry` table.
fn retry(setting: &Setting, key: &str) -> Result<RetryPolicy, ConfigError> {
    let fields = setting.table(key)?;
    if let Some((field, value)) = fields.iter().find(|(f, _)| RetryKey::named(f).is_none()) {
        let names: Vec<&str> = RetryKey::ALL.iter().map(|k| k.name()).collect();
        let message = format!("unknown key; expected one of {}", names.join(", "));
        return Err(value.error(&format!("{key}.{field}"), message));
    }
    let at = |field: RetryKey| (fields.get(field.name()), format!("{key}.{}", field.name()));
    let limit = |field: RetryKey, default: Duration| match at(field) {
        (None, _) => Ok(default),
        (Some(s), key) => s
            .duration(&key)?
            .ok_or_else(|| s.error(&key, "cannot be none")),
    };
    let defaults = RetryPolicy::default();
    let max_attempts = match at(RetryKey::MaxAttempts) {
        (None, _) => defaults.max_attempts,
        (Some(s), key) => {
            u32::try_from(s.positive(&key)?).map_err(|_| s.error(&key, "too large"))?
        }
    };
    let deadline = match at(RetryKey::Deadline) {
        (None, _) => defaults.deadline,
        (Some(s), key) => s.duration(&key)?,
    };
    Ok(RetryPolicy {
        max_attempts,
        on: match at(RetryKey::On) {
            (None, _) => defaults.on,
            (Some(s), key) => reasons(s, &key)?,
        },
        backoff: limit(RetryKey::Backoff, defaults.backoff)?,
        max_backoff: limit(RetryKey::MaxBackoff, defaults.max_backoff)?,
        max_retry_after: limit(RetryKey::MaxRetryAfter, defaults.max_retry_after)?,
        deadline,
    })
}

/// `retry.on`: a list of reasons (`429` may be written as a number).
fn reasons(setting: &Setting, key: &str) -> Result<Vec<RetryReason>, ConfigError> {
    if let Raw::Table(_) = setting.raw {
        return Err(setting.error(key, "expected a list such as [\"connect\", 503]"));
    }
    setting
        .items()
        .iter()
        .map(|item| {
            let text = item.text(key)?;
            RetryReason::parse(text.trim()).ok_or_else(|| {
                let names: Vec<String> = RetryReason::ALL.iter().map(|r| r.to_string()).collect();
                item.error(key, format!("'{text}' is not {}", alternatives(&names)))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::error::Origin;
    use std::collections::BTreeMap;

    fn json(value: serde_json::Value) -> BTreeMap<String, Setting> {
        match Setting::from_json(value, &Origin::Default).unwrap().raw {
            Raw::Table(table) => table,
            _ => unreachable!(),
        }
    }

    fn policy(value: serde_json::Value) -> Result<CallPolicy, ConfigError> {
        let fields = json(value);
        read(
            |key| fields.get(key.name()),
            |key| format!("r: {}", key.name()),
            &CallPolicy::default(),
        )
    }

    #[test]
    fn a_route_inherits_what_it_does_not_set() {
        let p =
            policy(serde_json::json!({"idle_timeout": "5s", "heartbeat_after": "50s"})).unwrap();
        assert_eq!(
            p.timeouts.first_byte,
            CallPolicy::default().timeouts.first_byte
        );
        assert_eq!(
            p.timeouts.idle,
            Some(Limit {
                after: Duration::from_secs(5),
                setting: "r: idle_timeout".into()
            })
        );
        assert_eq!(
            p.heartbeat,
            Some(Heartbeat {
                after: Duration::from_secs(50),
                every: DEFAULT_HEARTBEAT_EVERY
            })
        );
        assert_eq!(p.retry, None);
    }

    #[test]
    fn retry_tables_parse_with_defaults() {
        let p = policy(serde_json::json!({"retry": {"max_attempts": 4, "on": ["connect", 500]}}))
            .unwrap();
        let retry = p.retry.unwrap();
        assert_eq!(retry.max_attempts, 4);
        assert_eq!(
            retry.on,
            [RetryReason::Connect, RetryReason::InternalServerError]
        );
        assert_eq!(retry.deadline, RetryPolicy::default().deadline);
    }

    #[test]
    fn mistakes_name_their_field() {
        let cases = [
            (serde_json::json!({"retry": {"tries": 2}}), "r: retry.tries"),
            (serde_json::json!({"retry": {"on": ["418"]}}), "r: retry.on"),
            (
                serde_json::json!({"retry": {"max_attempts": 0}}),
                "r: retry.max_attempts",
            ),
            (
                serde_json::json!({"heartbeat_every": "5s"}),
                "r: heartbeat_every",
            ),
            (
                serde_json::json!({"heartbeat_after": "1s", "heartbeat_every": "none"}),
                "r: heartbeat_every",
            ),
            (
                serde_json::json!({"idle_timeout": "soon"}),
                "r: idle_timeout",
            ),
        ];
        for (value, key) in cases {
            let e = policy(value.clone()).unwrap_err();
            assert_eq!(e.key, key, "{value}: {}", e.message);
        }
    }
}
