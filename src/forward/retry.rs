//! Whether a failed attempt is tried again, and after how long: the
//! decision part of a route's `retry` policy, apart from the sending.
//!
//! Only failures before anything reached the client are ever retried: an
//! attempt is decided on as soon as it fails or its response headers
//! arrive, before a byte of its answer is passed on. The rules, in order:
//!
//! 1. a worker that refused the connection (or did not accept it within
//!    `connect_timeout`) is skipped for the next untried worker of the pool
//!    at once — nothing was sent — with or without a policy, and this move
//!    does not count against `max_attempts`;
//! 2. without a policy, nothing else is retried;
//! 3. the failure must be one the policy lists ([`RetryReason`]), attempts
//!    must be left, and the wait must end before the policy's `deadline`
//!    (counted from the call's arrival);
//! 4. the wait is the upstream's `Retry-After` (seconds or an HTTP date, or
//!    OpenAI's `retry-after-ms`), capped at `max_retry_after`; without one,
//!    exponential backoff with full jitter: a random wait between zero and
//!    `backoff × 2^retry`, at most `max_backoff`.
//!
//! The retry goes to another worker of the pool when there is one the call
//! has not tried (`route::Pool::pick_retry`).

use crate::config::RetryPolicy;
use crate::error::GatewayError;
use crate::record::{ErrorKind, RetryReason};
use http::HeaderMap;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

/// What an attempt came to, as far as retrying cares.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The upstream answered with this status and these headers.
    Answered(u16, &'a HeaderMap),
    /// It got no answer.
    Failed(ErrorKind),
}

impl Outcome<'_> {
    /// The outcome of an attempt.
    pub fn of(answered: &Result<reqwest::Response, GatewayError>) -> Outcome<'_> {
        match answered {
            Ok(response) => Outcome::Answered(response.status().as_u16(), response.headers()),
            Err(error) => Outcome::Failed(error.kind),
        }
    }

    /// The reason this outcome could be retried for, if any.
    pub fn reason(self) -> Option<RetryReason> {
        match self {
            Outcome::Answered(status, _) => RetryReason::of_status(status),
            Outcome::Failed(ErrorKind::UpstreamUnreachable | ErrorKind::UpstreamConnectTimeout) => {
                Some(RetryReason::Connect)
            }
            Outcome::Failed(ErrorKind::UpstreamError) => Some(RetryReason::Reset),
            Outcome::Failed(ErrorKind::UpstreamTimeout) => Some(RetryReason::Timeout),
            Outcome::Failed(_) => None,
        }
    }
}

/// Where a call stands after an attempt.
#[derive(Debug)]
pub struct Situation<'a> {
    /// The route's policy, if it has one.
    pub policy: Option<&'a RetryPolicy>,
    /// The attempt just made.
    pub outcome: Outcome<'a>,
    /// Retries made so far under the policy.
    pub retries: u32,
    /// Whether the pool has a worker the call has not tried.
    pub untried: bool,
    /// Time since the call arrived.
    pub elapsed: Duration,
}

/// Another attempt, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Again {
    /// What is retried.
    pub reason: RetryReason,
    /// How long to wait first.
    pub wait: Duration,
    /// Whether it counts against `max_attempts` (a refused connection moved
    /// to an untried worker does not).
    pub counted: bool,
}

/// Whether (and when) to try again; `None` ends the call with this attempt.
pub fn next(s: &Situation<'_>) -> Option<Again> {
    let reason = s.outcome.reason()?;
    if reason == RetryReason::Connect && s.untried {
        return Some(Again {
            reason,
            wait: Duration::ZERO,
            counted: false,
        });
    }
    let policy = s.policy?;
    if !policy.on.contains(&reason) || s.retries + 1 >= policy.max_attempts {
        return None;
    }
    let asked = match s.outcome {
        Outcome::Answered(_, headers) => retry_after(headers, SystemTime::now()),
        Outcome::Failed(_) => None,
    };
    let wait = match asked {
        Some(asked) => asked.min(policy.max_retry_after),
        None => full_jitter(backoff_ceiling(policy, s.retries)),
    };
    if policy
        .deadline
        .is_some_and(|deadline| s.elapsed + wait >= deadline)
    {
        return None;
    }
    Some(Again {
        reason,
        wait,
        counted: true,
    })
}

/// The ceiling of the wait before retry number `retries + 1`.
fn backoff_ceiling(policy: &RetryPolicy, retries: u32) -> Duration {
    let factor = 2u32.saturating_pow(retries.min(30));
    policy
        .backoff
        .saturating_mul(factor)
        .min(policy.max_backoff)
}

/// A uniformly random duration between zero and `ceiling` (full jitter), so
/// that callers throttled together do not come back together.
fn full_jitter(ceiling: Duration) -> Duration {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
    hasher.write_u128(now.map_or(0, |d| d.as_nanos()));
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    ceiling.mul_f64(unit)
}

/// How long the upstream asks the caller to wait: `retry-after-ms`
/// (OpenAI's), else `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|t| t.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = text("retry-after")?;
    match value.parse::<f64>() {
        Ok(seconds) => Duration::try_from_secs_f64(seconds).ok(),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            Some(at.duration_since(now).unwrap_or(Duration::ZERO))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn situation<'a>(policy: Option<&'a RetryPolicy>, outcome: Outcome<'a>) -> Situation<'a> {
        Situation {
            policy,
            outcome,
            retries: 0,
            untried: false,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")]), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after-ms", "150"), ("retry-after", "9")]),
                now
            ),
            Some(Duration::from_millis(150))
        );
        let date = headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:47 GMT")]);
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(10)));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
    }

    #[test]
    fn a_listed_status_is_retried_with_its_retry_after_capped() {
        let policy = RetryPolicy {
            max_retry_after: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let h = headers(&[("retry-after", "30")]);
        let again = next(&situation(Some(&policy), Outcome::Answered(503, &h))).unwrap();
        assert_eq!(again.wait, Duration::from_secs(1));
        assert!(again.counted);
        let none = HeaderMap::new();
        assert!(
            next(&situation(Some(&policy), Outcome::Answered(500, &none))).is_none(),
            "500 is opt-in"
        );
        assert!(next(&situation(Some(&policy), Outcome::Answered(200, &none))).is_none());
        assert!(next(&situation(None, Outcome::Answered(503, &none))).is_none());
    }

    #[test]
    fn attempts_and_the_deadline_bound_retries() {
        let policy = RetryPolicy::default();
        let mut s = situation(Some(&policy), Outcome::Failed(ErrorKind::UpstreamTimeout));
        s.retries = policy.max_attempts - 1;
        assert!(next(&s).is_none(), "no attempt left");
        s.retries = 0;
        s.elapsed = policy.deadline.unwrap();
        assert!(next(&s).is_none(), "past the deadline");
        let mut refused = situation(None, Outcome::Failed(ErrorKind::UpstreamUnreachable));
        refused.untried = true;
        let again = next(&refused).unwrap();
        assert_eq!((again.wait, again.counted), (Duration::ZERO, false));
        let spent = Outcome::Failed(ErrorKind::UpstreamTotalTimeout);
        assert!(next(&situation(Some(&policy), spent)).is_none());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_full_jitter() {
        let policy = RetryPolicy {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..RetryPolicy::default()
        };
        assert_eq!(backoff_ceiling(&policy, 0), Duration::from_millis(100));
        assert_eq!(backoff_ceiling(&policy, 1), Duration::from_millis(200));
        assert_eq!(backoff_ceiling(&policy, 5), Duration::from_millis(350));
        for _ in 0..100 {
            assert!(full_jitter(Duration::from_millis(100)) <= Duration::from_millis(100));
        }
    }
}
