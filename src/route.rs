//! Where a call goes: picking the upstream and building its URL.
//!
//! The configured upstreams form one pool. A call that belongs to a session
//! goes to the same upstream as the session's earlier calls (a model server's
//! prefix cache then serves the shared conversation prefix); other calls take
//! the upstreams in turn.
//!
//! Upstream base URLs may carry a path (`http://host:8000/v1`,
//! `https://example.com/openai/v1`). Clients always call `/v1/...`, so the
//! target URL is the base path followed by the client path, without doubling
//! the `/v1` the base already ends with.

use crate::config::RouteConfig;
use crate::identity::Identity;
use reqwest::Url;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Picks the route and upstream of each call.
#[derive(Debug)]
pub struct Router {
    route: RouteConfig,
    next: AtomicUsize,
}

impl Router {
    /// A router over one route, whose upstream list config ensures is not
    /// empty.
    pub fn new(route: RouteConfig) -> Self {
        Self {
            route,
            next: AtomicUsize::new(0),
        }
    }

    /// The route and upstream base URL for a call with this identity.
    pub fn pick(&self, identity: &Identity) -> (&RouteConfig, &Url) {
        let upstreams = &self.route.upstreams;
        let n = upstreams.len();
        let index = match &identity.session_id {
            Some(session) if n > 1 => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                session.hash(&mut hasher);
                (hasher.finish() % n as u64) as usize
            }
            _ => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        (&self.route, &upstreams[index])
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

    fn router(urls: &[&str]) -> Router {
        Router::new(RouteConfig {
            upstreams: urls.iter().map(|u| url(u)).collect(),
            kind: crate::config::UpstreamKind::Generic,
            inject_logprobs: false,
            inject_return_token_ids: false,
            strip_vllm_fields: false,
        })
    }

    #[test]
    fn sessions_stick_to_one_upstream() {
        let r = router(&["http://a", "http://b", "http://c"]);
        let id = Identity {
            session_id: Some("s-42".into()),
            ..Identity::default()
        };
        let first = r.pick(&id).1.clone();
        for _ in 0..10 {
            assert_eq!(r.pick(&id).1, &first);
        }
    }

    #[test]
    fn calls_without_session_take_turns() {
        let r = router(&["http://a", "http://b"]);
        let id = Identity::default();
        let picks: Vec<_> = (0..4)
            .map(|_| r.pick(&id).1.host_str().unwrap().to_string())
            .collect();
        assert_eq!(picks, ["a", "b", "a", "b"]);
    }
}
