//! Where a call goes: its route (by model) and the worker that serves it.
//!
//! Routes are tried in order; the first whose model prefix matches the
//! request's `model` (case-insensitively; `*` matches every model) serves it.
//! With no routes configured, the implicit route of the call's protocol
//! serves it (one per protocol, or a single one for every call). A request
//! without a model, or whose model no route matches, goes to the
//! default route — the implicit one when no routes are configured, else the
//! route marked `default` — or is refused with a 404 naming the model.
//!
//! Each route has a pool of workers ([`pool`]; one for a plain `upstream`),
//! session-sticky and least-busy. Health checks (`GET /health` at the
//! worker's root, as vLLM serves it) mark workers down and up; a connect
//! failure before any byte was sent is retried on another worker by
//! `forward`, and so is every retry of a route's `retry` policy where the
//! pool has a worker the call has not tried ([`Pool::pick_retry`]).
//! Workers can be added and removed at run time (`/admin/workers`,
//! compatible with rllm-model-gateway).
//!
//! A route also decides what the upstream request carries ([`outbound`]):
//! its credentials, its static headers, and the caller's extra headers when
//! it allows them.
//!
//! Upstream base URLs may carry a path (`http://host:8000/v1`,
//! `https://example.com/openai/v1`). Clients always call `/v1/...`, so the
//! target URL is the base path followed by the client path, without doubling
//! the `/v1` the base already ends with.

pub mod kind;
mod outbound;
mod pool;
pub mod rendezvous;

pub use kind::PROBE_USER_AGENT;
pub use outbound::{OutboundError, outbound_headers};
pub use pool::{Lease, Pool, Worker, WorkerInfo};

use crate::config::{RouteConfig, UpstreamKind, WorkerConfig};
use crate::protocol::Protocol;
use reqwest::Url;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A configured route with its live pool.
#[derive(Debug)]
pub struct Route {
    /// The route's configuration.
    pub config: RouteConfig,
    /// Its workers.
    pub pool: Pool,
}

impl Route {
    /// Whether health checks probe this route's workers: self-hosted model
    /// servers (vLLM, or a pool of several), not a hosted API, which has no
    /// `/health`.
    pub fn health_checked(&self) -> bool {
        self.config.kind == UpstreamKind::Vllm || self.pool.len() > 1
    }
}

/// A route held by a call for as long as the call lasts, in a task of its
/// own if need be: the shared router and the route's place in it (routes
/// never change once the router is built).
#[derive(Debug, Clone)]
pub struct RouteRef {
    router: Arc<Router>,
    index: usize,
}

impl Deref for RouteRef {
    type Target = Route;

    fn deref(&self) -> &Route {
        &self.router.routes[self.index]
    }
}

/// Why no route serves a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoute(pub String);

/// A worker cannot be added: its id is in use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a worker with id '{0}' exists already")]
pub struct WorkerExists(pub String);

/// The routes and their pools.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
    next_worker_id: AtomicU64,
}

impl Router {
    /// The router of configured routes (at least one; config ensures it).
    pub fn new(routes: Vec<RouteConfig>) -> Router {
        Router {
            routes: routes
                .into_iter()
                .map(|config| Route {
                    pool: Pool::new(config.workers.clone()),
                    config,
                })
                .collect(),
            next_worker_id: AtomicU64::new(0),
        }
    }

    /// Every route, in match order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route that serves a call of `protocol` for `model`: with one
    /// implicit route per protocol (zero configuration), the protocol's;
    /// else the route for the model.
    pub fn route_for_call(
        &self,
        model: Option<&str>,
        protocol: Protocol,
    ) -> Result<&Route, NoRoute> {
        Ok(&self.routes[self.position_for_call(model, protocol)?])
    }

    /// [`Router::route_for_call`], held for a call.
    pub fn route_ref_for_call(
        self: &Arc<Self>,
        model: Option<&str>,
        protocol: Protocol,
    ) -> Result<RouteRef, NoRoute> {
        Ok(RouteRef {
            index: self.position_for_call(model, protocol)?,
            router: self.clone(),
        })
    }

    /// Where the route for a call of `protocol` for `model` is.
    fn position_for_call(&self, model: Option<&str>, protocol: Protocol) -> Result<usize, NoRoute> {
        let implicit = (self.routes.iter())
            .position(|r| r.config.model_prefix.is_none() && r.config.protocol == protocol);
        match implicit {
            Some(index) => Ok(index),
            None => self.position_for(model),
        }
    }

    /// The route that serves `model`.
    pub fn route_for(&self, model: Option<&str>) -> Result<&Route, NoRoute> {
        Ok(&self.routes[self.position_for(model)?])
    }

    /// The route that serves `model`, held for a call.
    pub fn route_ref(self: &Arc<Self>, model: Option<&str>) -> Result<RouteRef, NoRoute> {
        Ok(RouteRef {
            index: self.position_for(model)?,
            router: self.clone(),
        })
    }

    /// Where the route that serves `model` is in the match order.
    fn position_for(&self, model: Option<&str>) -> Result<usize, NoRoute> {
        if let Some(model) = model.map(str::to_ascii_lowercase) {
            let matched = self
                .routes
                .iter()
                .position(|r| match r.config.model_prefix.as_deref() {
                    Some("*") | None => true,
                    Some(prefix) => model.starts_with(prefix),
                });
            if let Some(index) = matched {
                return Ok(index);
            }
        }
        self.routes
            .iter()
            .position(|r| r.config.is_default)
            .ok_or_else(|| {
                NoRoute(match model {
                    Some(m) => format!("no route serves the model '{m}'"),
                    None => "the request names no model and no route is the default".to_string(),
                })
            })
    }

    /// Every secret value the routes send upstream (keys and env-sourced
    /// headers), read now. Capture scrubs all of them from every record:
    /// route A's key pasted into a call to route B is still a secret.
    pub fn secrets(&self) -> Vec<String> {
        self.routes
            .iter()
            .flat_map(|r| r.config.secret_vars())
            .filter_map(|var| outbound::env_secret(var).ok())
            .collect()
    }

    /// The route named `name`.
    pub fn route_named(&self, name: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.config.name.as_deref() == Some(name))
    }

    /// Every worker of every route, for the admin API.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.routes
            .iter()
            .flat_map(|route| {
                route.pool.workers().into_iter().map(move |w| {
                    let mut root = w.url.clone();
                    root.set_path("");
                    WorkerInfo {
                        worker_id: w.id.clone(),
                        url: root.as_str().trim_end_matches('/').to_string(),
                        api_path: w.url.path().to_string(),
                        model_name: w.model_name.clone(),
                        weight: w.weight,
                        healthy: w.healthy(),
                        active_requests: w.active(),
                        route: route.config.label().to_string(),
                    }
                })
            })
            .collect()
    }

    /// Adds a worker to `route`; its id is the one given or a new one.
    /// Refuses an id already in use anywhere.
    pub fn add_worker(
        &self,
        route: &Route,
        mut worker: WorkerConfig,
    ) -> Result<String, WorkerExists> {
        if worker.id.is_empty() {
            worker.id = format!("w{}", self.next_worker_id.fetch_add(1, Ordering::Relaxed));
        }
        if self.workers().iter().any(|w| w.worker_id == worker.id) {
            return Err(WorkerExists(worker.id));
        }
        let id = worker.id.clone();
        let mut workers = crate::sync::write(&route.pool.workers);
        workers.push(Arc::new(Worker::new(worker)));
        Ok(id)
    }

    /// Removes a worker; false when no worker has that id. Calls in flight
    /// on it finish; its sessions move on their next call.
    pub fn remove_worker(&self, id: &str) -> bool {
        self.routes.iter().any(|route| {
            let mut workers = crate::sync::write(&route.pool.workers);
            let before = workers.len();
            workers.retain(|w| w.id != id);
            workers.len() != before
        })
    }

    /// Probes every health-checked worker once and marks it up or down.
    pub async fn check_health(&self, client: &reqwest::Client, timeout: Duration) {
        let probes = self
            .routes
            .iter()
            .filter(|r| r.health_checked())
            .flat_map(|r| r.pool.workers())
            .map(|worker| {
                let client = client.clone();
                async move {
                    let up = client
                        .get(worker.health_url())
                        .timeout(timeout)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if worker.healthy.swap(up, Ordering::Relaxed) != up {
                        tracing::warn!(worker = %worker.id, url = %worker.url, up, "worker health changed");
                    }
                }
            });
        futures_util::future::join_all(probes).await;
    }
}

/// The URL to call upstream for the client path `api_path` (which starts with
/// `/v1`) and its query string.
pub fn target_url(base: &Url, api_path: &str, query: Option<&str>) -> Url {
    let base_path = base.path().trim_end_matches('/');
    let rest = if base_path.ends_with("/v1") {
        api_path.strip_prefix("/v1").unwrap_or(api_path)
    } else {
        api_path
    };
    let mut url = base.clone();
    url.set_path(&format!("{base_path}{rest}"));
    url.set_query(query);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn route(name: &str, prefix: &str, workers: &[&str]) -> RouteConfig {
        RouteConfig {
            name: Some(name.into()),
            model_prefix: Some(prefix.into()),
            is_default: false,
            workers: workers
                .iter()
                .enumerate()
                .map(|(i, u)| WorkerConfig {
                    id: format!("{name}-{i}"),
                    url: url(u),
                    weight: 1,
                    model_name: None,
                })
                .collect(),
            ..RouteConfig::to(url("http://unused"))
        }
    }

    #[test]
    fn base_with_v1_is_not_doubled() {
        let t = target_url(&url("http://h:8000/v1"), "/v1/chat/completions", None);
        assert_eq!(t.as_str(), "http://h:8000/v1/chat/completions");
    }

    #[test]
    fn bare_base_gets_the_client_path() {
        let t = target_url(&url("http://h:8000"), "/v1/models", None);
        assert_eq!(t.as_str(), "http://h:8000/v1/models");
    }

    #[test]
    fn base_path_prefix_is_kept() {
        let t = target_url(
            &url("https://e.com/openai/v1"),
            "/v1/embeddings",
            Some("a=1&b=2"),
        );
        assert_eq!(t.as_str(), "https://e.com/openai/v1/embeddings?a=1&b=2");
    }

    #[test]
    fn the_first_matching_prefix_wins_case_insensitively() {
        let r = Router::new(vec![
            route("mini", "gpt-4o-mini", &["http://a"]),
            route("gpt", "gpt-", &["http://b"]),
            route("rest", "*", &["http://c"]),
        ]);
        let name = |m: &str| r.route_for(Some(m)).unwrap().config.label().to_string();
        assert_eq!(name("GPT-4o-mini-2024"), "mini");
        assert_eq!(name("gpt-4o"), "gpt");
        assert_eq!(name("claude-3"), "rest");
    }

    #[test]
    fn no_match_without_default_names_the_model() {
        let r = Router::new(vec![route("gpt", "gpt-", &["http://b"])]);
        assert_eq!(
            r.route_for(Some("llama")).unwrap_err().0,
            "no route serves the model 'llama'"
        );
        assert!(r.route_for(None).is_err());
        let mut fallback = route("fallback", "x-", &["http://d"]);
        fallback.is_default = true;
        let r = Router::new(vec![route("gpt", "gpt-", &["http://b"]), fallback]);
        assert_eq!(
            r.route_for(Some("llama")).unwrap().config.label(),
            "fallback"
        );
        assert_eq!(r.route_for(None).unwrap().config.label(), "fallback");
    }

    #[test]
    fn sessions_stick_to_their_worker() {
        let r = Router::new(vec![route("p", "*", &["http://a", "http://b", "http://c"])]);
        let pool = &r.routes()[0].pool;
        let first = pool.pick(Some("s-42"), &[]).unwrap().worker().id.clone();
        let _busy = pool.pick(Some("other"), &[]);
        for _ in 0..5 {
            assert_eq!(pool.pick(Some("s-42"), &[]).unwrap().worker().id, first);
        }
    }

    #[test]
    fn two_routers_with_the_same_workers_place_sessions_alike() {
        let workers = ["http://a", "http://b", "http://c"];
        let one = Router::new(vec![route("p", "*", &workers)]);
        let other = Router::new(vec![route("p", "*", &workers)]);
        // Load on one replica does not change where it sends a session.
        let _busy: Vec<_> = (0..5)
            .filter_map(|_| one.routes()[0].pool.pick(None, &[]))
            .collect();
        for i in 0..50 {
            let session = format!("s{i}");
            let on = |r: &Router| {
                r.routes()[0]
                    .pool
                    .pick(Some(&session), &[])
                    .unwrap()
                    .worker()
                    .id
                    .clone()
            };
            assert_eq!(on(&one), on(&other), "{session}");
        }
    }

    #[test]
    fn calls_without_a_session_go_to_the_least_busy_worker() {
        let r = Router::new(vec![route("p", "*", &["http://a", "http://b"])]);
        let pool = &r.routes()[0].pool;
        let a = pool.pick(None, &[]).unwrap();
        let b = pool.pick(None, &[]).unwrap();
        assert_ne!(
            a.worker().id,
            b.worker().id,
            "the second call avoids the busy worker"
        );
        drop(b);
        let c = pool.pick(None, &[]).unwrap();
        assert_ne!(c.worker().id, a.worker().id);
    }

    #[test]
    fn an_idle_pool_spreads_calls_without_a_session_by_weight() {
        let mut config = route("p", "*", &["http://a", "http://b"]);
        config.workers[1].weight = 2;
        let r = Router::new(vec![config]);
        let pool = &r.routes()[0].pool;
        let picks: Vec<String> = (0..6)
            .map(|_| pool.pick(None, &[]).unwrap().worker().id.clone())
            .collect();
        assert_eq!(
            picks.iter().filter(|id| *id == "p-1").count(),
            4,
            "{picks:?}"
        );
    }

    #[test]
    fn excluded_and_unhealthy_workers_are_avoided() {
        let r = Router::new(vec![route("p", "*", &["http://a", "http://b"])]);
        let pool = &r.routes()[0].pool;
        let first = pool.pick(Some("s"), &[]).unwrap().worker().id.clone();
        let moved = pool
            .pick(Some("s"), std::slice::from_ref(&first))
            .unwrap()
            .worker()
            .id
            .clone();
        assert_ne!(moved, first, "a failed worker is skipped");
        for w in pool.workers() {
            w.healthy.store(w.id != first, Ordering::Relaxed);
        }
        assert_eq!(
            pool.pick(Some("s"), &[]).unwrap().worker().id,
            moved,
            "down workers lose their sessions"
        );
        for w in pool.workers() {
            w.healthy.store(true, Ordering::Relaxed);
        }
        assert_eq!(
            pool.pick(Some("s"), &[]).unwrap().worker().id,
            first,
            "and get them back when they recover"
        );
        assert!(pool.pick(None, &["p-0".into(), "p-1".into()]).is_none());
    }

    #[test]
    fn workers_are_added_and_removed_at_run_time() {
        let r = Router::new(vec![route("p", "*", &["http://a:8000/v1"])]);
        let id = r
            .add_worker(
                &r.routes()[0],
                WorkerConfig {
                    id: String::new(),
                    url: url("http://b:9000/v1"),
                    weight: 2,
                    model_name: None,
                },
            )
            .unwrap();
        let info = r.workers();
        assert_eq!(info.len(), 2);
        assert_eq!(
            (info[1].url.as_str(), info[1].api_path.as_str()),
            ("http://b:9000", "/v1")
        );
        assert!(r.remove_worker(&id));
        assert!(!r.remove_worker(&id));
        assert_eq!(r.workers().len(), 1);
    }
}
