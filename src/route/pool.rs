//! A route's worker pool: session-sticky, least-busy, health-checked.
//!
//! For vLLM fleets a pool is session-sticky: a session keeps its worker, so
//! the worker's prefix cache serves the conversation the session keeps
//! resending; the session → worker map is a bounded LRU. New sessions (and
//! calls without one) go to the least busy healthy worker, relative to its
//! weight — busy meaning calls in flight, counted by [`Lease`]s that live as
//! long as each call's response.

use crate::config::WorkerConfig;
use crate::sync::{lock, read};
use hashlink::LruCache;
use reqwest::Url;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// One worker of a pool.
#[derive(Debug)]
pub struct Worker {
    /// Its id.
    pub id: String,
    /// Its base URL (with its API path, e.g. `/v1`).
    pub url: Url,
    /// Its share of new sessions relative to the others.
    pub weight: u32,
    /// The model it serves, if declared.
    pub model_name: Option<String>,
    pub(super) healthy: AtomicBool,
    active: AtomicUsize,
    /// How many calls the balancer has sent here (sticky calls excepted).
    assigned: AtomicU64,
}

impl Worker {
    pub(super) fn new(config: WorkerConfig) -> Worker {
        Worker {
            id: config.id,
            url: config.url,
            weight: config.weight.max(1),
            model_name: config.model_name,
            healthy: AtomicBool::new(true),
            active: AtomicUsize::new(0),
            assigned: AtomicU64::new(0),
        }
    }

    /// Whether the last health check passed (true until one fails).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Calls in flight on this worker.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The URL health checks probe: `/health` at the worker's root.
    pub fn health_url(&self) -> Url {
        let mut url = self.url.clone();
        url.set_path("/health");
        url.set_query(None);
        url
    }
}

/// A call in flight on a worker; dropping it ends the call's share of the
/// worker's load.
#[derive(Debug)]
pub struct Lease {
    worker: Arc<Worker>,
}

impl Lease {
    fn new(worker: Arc<Worker>) -> Lease {
        worker.active.fetch_add(1, Ordering::Relaxed);
        Lease { worker }
    }

    /// The worker.
    pub fn worker(&self) -> &Worker {
        &self.worker
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.worker.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A worker as the admin API shows it (rllm-model-gateway's `WorkerInfo`
/// fields, plus the route).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerInfo {
    /// The worker's id.
    pub worker_id: String,
    /// Its scheme, host and port.
    pub url: String,
    /// Its API path (e.g. `/v1`).
    pub api_path: String,
    /// The model it serves, if declared.
    pub model_name: Option<String>,
    /// Its weight.
    pub weight: u32,
    /// Whether its last health check passed.
    pub healthy: bool,
    /// Calls in flight on it.
    pub active_requests: usize,
    /// The route whose pool it is in.
    pub route: String,
}

/// A route's worker pool.
#[derive(Debug)]
pub struct Pool {
    pub(super) workers: RwLock<Vec<Arc<Worker>>>,
    pub(super) sessions: Mutex<LruCache<String, String>>,
}

impl Pool {
    pub(super) fn new(workers: Vec<WorkerConfig>, affinity_capacity: usize) -> Pool {
        Pool {
            workers: RwLock::new(
                workers
                    .into_iter()
                    .map(|w| Arc::new(Worker::new(w)))
                    .collect(),
            ),
            sessions: Mutex::new(LruCache::new(affinity_capacity.max(1))),
        }
    }

    pub(super) fn workers(&self) -> Vec<Arc<Worker>> {
        read(&self.workers).clone()
    }

    /// A worker for a call: the session's own worker if it is healthy and
    /// not in `exclude`, else the least busy (relative to weight) healthy
    /// worker — or, when every worker is marked down, the least busy of all
    /// (a health check can be wrong; the call may still succeed). `None`
    /// when every worker is excluded.
    pub fn pick(&self, session: Option<&str>, exclude: &[String]) -> Option<Lease> {
        let workers = self.workers();
        let usable = |w: &&Arc<Worker>| !exclude.contains(&w.id);
        if let Some(session) = session {
            let sticky = lock(&self.sessions).get(session).cloned();
            if let Some(worker) = sticky.and_then(|id| workers.iter().find(|w| w.id == id))
                && worker.healthy()
                && usable(&worker)
            {
                return Some(Lease::new(worker.clone()));
            }
        }
        // Least busy relative to weight; among equally busy workers, the one
        // that has had the fewest calls relative to its weight (so idle
        // pools still spread new sessions by weight).
        let least_busy = |healthy_only: bool| {
            workers
                .iter()
                .filter(usable)
                .filter(|w| !healthy_only || w.healthy())
                .min_by_key(|w| {
                    let weight = u64::from(w.weight);
                    let active = w.active() as u64 * 1_000_000 / weight;
                    let assigned =
                        w.assigned.load(Ordering::Relaxed).saturating_mul(1_000_000) / weight;
                    (active, assigned)
                })
                .cloned()
        };
        let worker = least_busy(true).or_else(|| least_busy(false))?;
        worker.assigned.fetch_add(1, Ordering::Relaxed);
        if let Some(session) = session {
            lock(&self.sessions).insert(session.to_string(), worker.id.clone());
        }
        Some(Lease::new(worker))
    }

    /// A worker for a retry: one the call has not `tried` where the pool
    /// has one, else (every worker tried) any, the same way as [`Pool::pick`].
    pub fn pick_retry(&self, session: Option<&str>, tried: &[String]) -> Option<Lease> {
        self.pick(session, tried)
            .or_else(|| self.pick(session, &[]))
    }

    /// The number of workers.
    pub fn len(&self) -> usize {
        read(&self.workers).len()
    }

    /// Whether the pool has no worker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
