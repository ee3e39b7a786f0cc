//! Policy (weights) versions: which version of the model a call ran on.
//!
//! An RL trainer syncs new weights into its inference servers and then tells
//! the gateway the version it just loaded (`POST /admin/weight_version`,
//! rLLM's API). Every call dispatched from then on is stamped with it, so
//! the trainer can drop rollouts made by stale weights. The version is fixed
//! when the call is dispatched, not when it ends: a long generation that
//! started before the sync belongs to the old weights.
//!
//! A version is set for the whole gateway, or scoped to one route (a
//! gateway serving a policy and a judge) or one run (two trainers sharing a
//! gateway). A call takes the most specific one: its run's, else its
//! route's, else the gateway's. A harness may instead stamp the call itself
//! (`X-RLLM-Weight-Version`, an identity field), which wins over all of
//! them; and an upstream that reports `weight_version` in its answer fills
//! a call that none of these named (capture does that).

use std::collections::HashMap;
use std::sync::RwLock;

/// What a version applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every call.
    Gateway,
    /// The calls a route serves (by its name).
    Route(String),
    /// The calls of a run.
    Run(String),
}

/// The versions current now, per scope.
#[derive(Debug, Default)]
pub struct WeightVersions {
    versions: RwLock<HashMap<Scope, i64>>,
}

impl WeightVersions {
    /// Sets (or, with `None`, clears) the version of a scope.
    pub fn set(&self, scope: Scope, version: Option<i64>) {
        let mut versions = crate::sync::write(&self.versions);
        match version {
            Some(v) => versions.insert(scope, v),
            None => versions.remove(&scope),
        };
    }

    /// The version a call of this route and run gets now: the run's, else
    /// the route's, else the gateway's.
    pub fn current(&self, route: Option<&str>, run: Option<&str>) -> Option<i64> {
        let versions = crate::sync::read(&self.versions);
        let run = run.and_then(|r| versions.get(&Scope::Run(r.to_string())));
        let route = route.and_then(|r| versions.get(&Scope::Route(r.to_string())));
        run.or(route).or(versions.get(&Scope::Gateway)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_scope_wins() {
        let versions = WeightVersions::default();
        assert_eq!(versions.current(Some("policy"), Some("r1")), None);
        versions.set(Scope::Gateway, Some(3));
        versions.set(Scope::Route("judge".into()), Some(9));
        versions.set(Scope::Run("r1".into()), Some(5));
        assert_eq!(versions.current(Some("policy"), None), Some(3));
        assert_eq!(versions.current(Some("judge"), None), Some(9));
        assert_eq!(versions.current(Some("judge"), Some("r1")), Some(5));
        versions.set(Scope::Run("r1".into()), None);
        assert_eq!(versions.current(Some("policy"), Some("r1")), Some(3));
    }
}
