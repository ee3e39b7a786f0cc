//! The store's condition, as the writer thread last saw it: committing, or
//! degraded (and why), and the backlog of records it holds meanwhile.
//!
//! The writer thread publishes a [`Condition`] after each round; the
//! handles read it without waiting for the thread (a mutex around a small
//! value), so `GET /health` and `/metrics` answer at once even while the
//! thread waits out a lock. [`StoreStatus`] is what they show, and what a
//! flush that timed out reports ([`StoreError::Unavailable`]).
//!
//! The same cell carries the two signals the handles send the thread
//! outside its channel: that the gateway is closing (the thread then takes
//! every record it is handed, however full its memory, so that a shutdown
//! can never wait on a full channel), and a wake-up for that.
//!
//! [`StoreError::Unavailable`]: crate::store::StoreError::Unavailable

use crate::store::error::StoreFault;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;
use tokio::sync::Notify;

crate::wire_enum! {
    /// Whether the store commits.
    pub enum StoreState {
        /// Records are committed as they come (a backlog left by a fault may
        /// still be draining).
        Ok = "ok",
        /// The last commit failed; records are kept until it succeeds.
        Degraded = "degraded",
    }
}

/// The store as `GET /health` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreStatus {
    /// `ok`, or `degraded` while the store cannot commit.
    pub state: StoreState,
    /// Why it cannot commit (while degraded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<StoreFault>,
    /// The last failed commit's error (while degraded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Since when it cannot commit, RFC 3339 (while degraded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Records waiting in the writer's channel.
    pub queue_depth: usize,
    /// Records the writer holds until they can be committed.
    pub backlog: BacklogStatus,
}

/// The records the writer holds because they could not be committed yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BacklogStatus {
    /// Every record waiting: in the spill file and in memory.
    pub records: u64,
    /// Those in the spill file (they survive a restart).
    pub spilled: u64,
    /// Those in memory, because the spill file could not be written (a
    /// kill -9 would lose them).
    pub in_memory: u64,
    /// The bytes those in memory take.
    pub memory_bytes: u64,
    /// How long the oldest has waited, in seconds.
    pub oldest_seconds: Option<f64>,
    /// Memory is at `store.backlog_memory` and the spill file cannot be
    /// written: the writer takes no more records, capture tasks wait.
    pub backpressure: bool,
    /// The spill file.
    pub spill_file: PathBuf,
}

impl StoreStatus {
    /// Whether the store cannot commit now.
    pub fn is_degraded(&self) -> bool {
        self.state == StoreState::Degraded
    }

    /// One sentence for an error message.
    pub fn explain(&self) -> String {
        let b = &self.backlog;
        let oldest = b
            .oldest_seconds
            .map_or(String::new(), |s| format!(", the oldest for {s:.1} s"));
        let waiting = format!(
            "{} records waiting ({} in the spill file, {} in memory){oldest}",
            b.records, b.spilled, b.in_memory
        );
        match (self.reason, &self.last_error) {
            (Some(reason), Some(error)) => {
                format!("the store cannot commit ({reason}): {waiting}; last error: {error}")
            }
            _ => format!("the store is committing its backlog: {waiting}"),
        }
    }
}

/// Why the store cannot commit, since when, and the last error.
#[derive(Debug, Clone)]
pub(crate) struct Degradation {
    pub fault: StoreFault,
    pub since: SystemTime,
    pub last_error: String,
}

/// What the writer thread publishes after each round.
#[derive(Debug, Clone, Default)]
pub(crate) struct Published {
    pub degraded: Option<Degradation>,
    pub backlog: BacklogStatus,
    /// When the oldest waiting record was handed over.
    pub oldest: Option<SystemTime>,
}

/// The cell shared by the writer thread and its handles.
#[derive(Debug, Default)]
pub(crate) struct Condition {
    published: Mutex<Published>,
    closing: AtomicBool,
    /// Wakes the writer thread when `closing` is set.
    pub wake: Notify,
}

impl Condition {
    /// A store that has not failed yet, spilling to `spill_file`.
    pub fn new(spill_file: PathBuf) -> Condition {
        let published = Published {
            backlog: BacklogStatus {
                spill_file,
                ..BacklogStatus::default()
            },
            ..Published::default()
        };
        Condition {
            published: Mutex::new(published),
            ..Condition::default()
        }
    }

    /// Replaces what the handles see.
    pub fn publish(&self, published: Published) {
        *crate::sync::lock(&self.published) = published;
    }

    /// The status, with the channel's depth and the oldest record's age read
    /// now.
    pub fn status(&self, queue_depth: usize) -> StoreStatus {
        let p = crate::sync::lock(&self.published).clone();
        let mut backlog = p.backlog;
        backlog.oldest_seconds = p.oldest.map(|t| {
            SystemTime::now()
                .duration_since(t)
                .unwrap_or_default()
                .as_secs_f64()
        });
        let degraded = p.degraded;
        StoreStatus {
            state: match degraded {
                Some(_) => StoreState::Degraded,
                None => StoreState::Ok,
            },
            reason: degraded.as_ref().map(|d| d.fault),
            last_error: degraded.as_ref().map(|d| d.last_error.clone()),
            since: degraded.map(|d| crate::record::rfc3339(d.since)),
            queue_depth,
            backlog,
        }
    }

    /// Tells the writer thread the gateway is closing.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Whether the gateway is closing.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
}
