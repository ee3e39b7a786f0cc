//! A route's worker pool: session-sticky, least-busy, health-checked.
//!
//! For vLLM fleets a pool is session-sticky: a session keeps its worker, so
//! the worker's prefix cache serves the conversation the session keeps
//! resending. The worker is chosen by [`rendezvous`](super::rendezvous)
//! hashing over the healthy workers, so every gateway replica with the same
//! workers sends a session to the same one with nothing shared and nothing
//! remembered. Calls without a session go to the least busy healthy worker,
//! relative to its weight — busy meaning calls in flight, counted by
//! [`Lease`]s that live as long as each call's response.

use super::rendezvous;
use crate::config::WorkerConfig;
use crate::sync::read;
use reqwest::Url;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

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
    /// How many calls without a session the balancer has sent here.
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
}

impl Pool {
    pub(super) fn new(workers: Vec<WorkerConfig>) -> Pool {
        Pool {
            workers: RwLock::new(
                workers
                    .into_iter()
                    .map(|w| Arc::new(Worker::new(w)))
                    .collect(),
            ),
        }
    }

    pub(super) fn workers(&self) -> Vec<Arc<Worker>> {
        read(&self.workers).clone()
    }

    /// A worker for a call, among those not in `exclude`: for a session, the
    /// healthy worker rendezvous hashing gives it; without one, the least
    /// busy healthy worker. When every such worker is marked down, the same
    /// choice among all of them (a health check can be wrong; the call may
    /// still succeed). `None` when every worker is excluded.
    pub fn pick(&self, session: Option<&str>, exclude: &[String]) -> Option<Lease> {
        let workers: Vec<Arc<Worker>> = self
            .workers()
            .into_iter()
            .filter(|w| !exclude.contains(&w.id))
            .collect();
        let healthy: Vec<Arc<Worker>> = workers.iter().filter(|w| w.healthy()).cloned().collect();
        let choose = |among: &[Arc<Worker>]| match session {
            Some(session) => rendezvous::choose(session, among, |w| &w.id, |w| w.weight).cloned(),
            None => least_busy(among),
        };
        let worker = choose(&healthy).or_else(|| choose(&workers))?;
        if session.is_none() {
            worker.assigned.fetch_add(1, Ordering::Relaxed);
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

/// The least busy of `workers` relative to weight; among equally busy
/// workers, the one that has had the fewest calls relative to its weight (so
/// an idle pool still spreads calls by weight).
fn least_busy(workers: &[Arc<Worker>]) -> Option<Arc<Worker>> {
    workers
        .iter()
        .min_by_key(|w| {
            let weight = u64::from(w.weight);
            let active = w.active() as u64 * 1_000_000 / weight;
            let assigned = w.assigned.load(Ordering::Relaxed).saturating_mul(1_000_000) / weight;
            (active, assigned)
        })
        .cloned()
}
