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

use crate::identity::Identity;
use reqwest::Url;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The pool of upstreams calls are sent to.
#[derive(Debug)]
pub struct Router {
    upstreams: Vec<Url>,
    next: AtomicUsize,
}

impl Router {
    /// A router over `upstreams`, which must not be empty (config ensures it).
    pub fn new(upstreams: Vec<Url>) -> Self {
        Self {
            upstreams,
            next: AtomicUsize::new(0),
        }
    }

    /// The upstream base URL for a call with this identity.
    pub fn pick(&self, identity: &Identity) -> &Url {
        let n = self.upstreams.len();
        let index = match &identity.session_id {
            Some(session) if n > 1 => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                session.hash(&mut hasher);
                (hasher.finish() % n as u64) as usize
            }
            _ => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        &self.upstreams[index]
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

    #[test]
    fn sessions_stick_to_one_upstream() {
        let r = Router::new(vec![url("http://a"), url("http://b"), url("http://c")]);
        let id = Identity {
            session_id: Some("s-42".into()),
            ..Identity::default()
        };
        let first = r.pick(&id).clone();
        for _ in 0..10 {
            assert_eq!(r.pick(&id), &first);
        }
    }

    #[test]
    fn calls_without_session_take_turns() {
        let r = Router::new(vec![url("http://a"), url("http://b")]);
        let id = Identity::default();
        let picks: Vec<_> = (0..4)
            .map(|_| r.pick(&id).host_str().unwrap().to_string())
            .collect();
        assert_eq!(picks, ["a", "b", "a", "b"]);
    }
}
