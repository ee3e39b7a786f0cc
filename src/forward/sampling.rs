//! Per-session sampling parameters, as rLLM's gateway applies them.
//!
//! A trainer creates each rollout's session with the sampling parameters it
//! wants (`POST /sessions` with `sampling_params`: a training temperature,
//! a validation one) and hands the agent the session's URL. Every JSON call
//! the agent then makes under `/sessions/{sid}/v1/...` has those parameters
//! merged into its body, **overriding** the agent's own keys (the trainer,
//! not the agent framework, decides how the policy samples); keys the
//! session does not name pass through untouched.
//!
//! The store keeps them with the session (so a restart keeps them) and
//! forgets them when the session is deleted; this is the in-memory copy the
//! proxy reads on every call.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::RwLock;

/// The sampling parameters of every session that has some.
#[derive(Debug, Default)]
pub struct SessionSampling {
    sessions: RwLock<HashMap<String, Map<String, Value>>>,
}

impl SessionSampling {
    /// Sets a session's parameters (replacing what it had).
    pub fn set(&self, session_id: String, params: Map<String, Value>) {
        crate::sync::write(&self.sessions).insert(session_id, params);
    }

    /// Forgets a session's parameters.
    pub fn forget(&self, session_id: &str) {
        crate::sync::write(&self.sessions).remove(session_id);
    }

    /// Merges a session's parameters into a request body, overriding its
    /// keys. Returns true when the body changed.
    pub fn apply(&self, session_id: &str, body: &mut Map<String, Value>) -> bool {
        let sessions = crate::sync::read(&self.sessions);
        let Some(params) = sessions.get(session_id) else {
            return false;
        };
        let mut changed = false;
        for (key, value) in params {
            if body.get(key) != Some(value) {
                body.insert(key.clone(), value.clone());
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_session_overrides_the_callers_keys() {
        let sampling = SessionSampling::default();
        let params = json!({"temperature": 0.3, "top_p": 0.9});
        sampling.set("s".into(), params.as_object().unwrap().clone());
        let mut body = json!({"temperature": 1.0, "max_tokens": 5});
        assert!(sampling.apply("s", body.as_object_mut().unwrap()));
        assert_eq!(
            body,
            json!({"temperature": 0.3, "max_tokens": 5, "top_p": 0.9})
        );
        assert!(!sampling.apply("s", body.as_object_mut().unwrap()));
        sampling.forget("s");
        assert!(!sampling.apply("s", &mut Map::new()));
    }
}
