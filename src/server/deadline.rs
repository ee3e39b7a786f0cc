//! Connection deadlines: how long a connection may hold one of the
//! gateway's connection slots without a call in flight.
//!
//! Two deadlines, for HTTP/1 and HTTP/2 alike:
//!
//! * `server.header_read_timeout` runs from the connection's opening, and
//!   from the first byte after an idle spell, until a request head is
//!   complete (the call reaches the gateway). A client that trickles its
//!   headers (slowloris), sends half a head and stops, or connects and sends
//!   nothing, is cut when it passes.
//! * `server.idle_timeout` runs from the end of the last answer while
//!   nothing arrives: an idle keep-alive connection is closed when it passes.
//!
//! While a call is in flight neither runs: how long a call may take is the
//! upstream's business (`forward`'s timeouts), and an agent's calls take
//! minutes.
//!
//! Why not hyper's `header_read_timeout`: in hyper 1.12 it only covers
//! HTTP/1 once the protocol is known. hyper-util's automatic HTTP/1-or-2
//! detection first reads up to 24 bytes with no deadline (a client that
//! connects and sends nothing, or sends the HTTP/2 preface slowly, is held
//! forever), HTTP/2 has no header deadline at all, and on HTTP/1 the timer
//! starts as soon as the previous answer is written, so the keep-alive idle
//! time and the head deadline are one number. Here both deadlines are
//! stated once, over what the connection actually does.
//!
//! A connection's [`Activity`] is fed from two sides: the IO wrapper reports
//! the bytes that arrive ([`Activity::bytes_arrived`]), the service each
//! call it starts, as a [`CallGuard`] that ends the call when dropped (with
//! the response body, or with the request when the client leaves first).
//! [`expire`] waits until the deadline of the current phase passes.

use crate::config::ServerOptions;
use crate::sync::lock;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a connection is doing, as far as its deadlines care.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head, since the connection opened or since
    /// the first byte after an idle spell.
    Reading { since: Instant },
    /// No call in flight and nothing arrived since the last answer ended.
    Idle { since: Instant },
    /// Calls in flight (one at a time on HTTP/1; streams on HTTP/2).
    Busy { calls: usize },
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Expired {
    /// No complete request head within `server.header_read_timeout`.
    #[error("no complete request head within server.header_read_timeout")]
    HeaderRead,
    /// No request within `server.idle_timeout` of the last answer.
    #[error("idle for server.idle_timeout")]
    Idle,
}

/// The phase of one connection, shared by its IO, its service and its
/// watchdog.
#[derive(Debug)]
pub struct Activity {
    phase: Mutex<Phase>,
    /// Wakes the watchdog when a deadline starts (a call ends, or bytes
    /// arrive on an idle connection).
    changed: Notify,
}

/// A call in flight on a connection; dropping it ends the call.
#[derive(Debug)]
pub struct CallGuard(Arc<Activity>);

impl Activity {
    /// A connection that has just opened.
    pub fn opened() -> Arc<Activity> {
        Arc::new(Activity {
            phase: Mutex::new(Phase::Reading {
                since: Instant::now(),
            }),
            changed: Notify::new(),
        })
    }

    /// Bytes arrived: on an idle connection, a request head has started.
    pub fn bytes_arrived(&self) {
        let mut phase = lock(&self.phase);
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Reading {
                since: Instant::now(),
            };
            self.changed.notify_one();
        }
    }

    /// A request head is complete and its call starts.
    pub fn call_started(self: &Arc<Self>) -> CallGuard {
        let mut phase = lock(&self.phase);
        *phase = match *phase {
            Phase::Busy { calls } => Phase::Busy { calls: calls + 1 },
            Phase::Reading { .. } | Phase::Idle { .. } => Phase::Busy { calls: 1 },
        };
        CallGuard(self.clone())
    }

    /// Whether a call is in flight (its response not yet written whole).
    pub fn is_busy(&self) -> bool {
        matches!(*lock(&self.phase), Phase::Busy { .. })
    }

    fn call_ended(&self) {
        let mut phase = lock(&self.phase);
        *phase = match *phase {
            Phase::Busy { calls } if calls > 1 => Phase::Busy { calls: calls - 1 },
            _ => {
                self.changed.notify_one();
                Phase::Idle {
                    since: Instant::now(),
                }
            }
        };
    }

    /// The deadline of the current phase, and which one it is; `None`
    /// while a call is in flight.
    fn deadline(&self, options: &ServerOptions) -> Option<(Instant, Expired)> {
        match *lock(&self.phase) {
            Phase::Reading { since } => {
                Some((since + options.header_read_timeout, Expired::HeaderRead))
            }
            Phase::Idle { since } => Some((since + options.idle_timeout, Expired::Idle)),
            Phase::Busy { .. } => None,
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.call_ended();
    }
}

/// Completes when the connection passes one of its deadlines.
pub async fn expire(activity: &Activity, options: &ServerOptions) -> Expired {
    loop {
        let changed = activity.changed.notified();
        match activity.deadline(options) {
            Some((at, expired)) if at <= Instant::now() => return expired,
            Some((at, _)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = changed => {}
                }
            }
            None => changed.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn options() -> ServerOptions {
        ServerOptions {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            ..ServerOptions::default()
        }
    }

    /// The current deadline's kind, checking that it runs its full length
    /// from a moment between `before` and now.
    fn deadline_kind(activity: &Activity, before: Instant) -> Option<Expired> {
        let (at, expired) = activity.deadline(&options())?;
        let length = match expired {
            Expired::HeaderRead => options().header_read_timeout,
            Expired::Idle => options().idle_timeout,
        };
        assert!(at >= before + length && at <= Instant::now() + length);
        Some(expired)
    }

    #[test]
    fn a_new_connection_has_the_header_deadline() {
        let before = Instant::now();
        let activity = Activity::opened();
        assert_eq!(deadline_kind(&activity, before), Some(Expired::HeaderRead));
        activity.bytes_arrived();
        assert_eq!(
            deadline_kind(&activity, before),
            Some(Expired::HeaderRead),
            "more bytes of the same head do not move the deadline"
        );
    }

    #[test]
    fn calls_stop_the_clock_and_idle_starts_when_the_last_ends() {
        let activity = Activity::opened();
        let first = activity.call_started();
        let second = activity.call_started();
        assert!(activity.is_busy());
        drop(first);
        assert_eq!(activity.deadline(&options()), None, "a call is in flight");
        let before = Instant::now();
        drop(second);
        assert!(!activity.is_busy());
        assert_eq!(deadline_kind(&activity, before), Some(Expired::Idle));
        let before = Instant::now();
        activity.bytes_arrived();
        assert_eq!(deadline_kind(&activity, before), Some(Expired::HeaderRead));
    }

    #[tokio::test]
    async fn a_passed_deadline_expires_at_once() {
        let activity = Activity::opened();
        let passed = ServerOptions {
            header_read_timeout: Duration::ZERO,
            ..options()
        };
        assert_eq!(expire(&activity, &passed).await, Expired::HeaderRead);
    }
}
