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
//!
//! **Across replicas.** Replicas sharing a PostgreSQL store share their
//! versions too: a version set on one is stored in the database (the
//! `admin_state` table, under [`Scope::key`]) and every replica reads the
//! stored versions every [`FOLLOW_EVERY`] ([`follow`]), so a trainer that
//! tells one replica reaches them all within a second. On SQLite there is
//! one process, and nothing to follow.

use crate::store::StoreReader;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often a replica reads the versions set on the others.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// The prefix of every version's key among the shared settings.
const KEY: &str = "weight_version";

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

impl Scope {
    /// The scope's key among the settings replicas share.
    pub fn key(&self) -> String {
        match self {
            Scope::Gateway => KEY.to_string(),
            Scope::Route(name) => format!("{KEY}:route:{name}"),
            Scope::Run(id) => format!("{KEY}:run:{id}"),
        }
    }

    /// The scope a shared setting's key names.
    pub fn from_key(key: &str) -> Option<Scope> {
        let rest = key.strip_prefix(KEY)?;
        if rest.is_empty() {
            return Some(Scope::Gateway);
        }
        if let Some(name) = rest.strip_prefix(":route:") {
            return Some(Scope::Route(name.to_string()));
        }
        rest.strip_prefix(":run:")
            .map(|id| Scope::Run(id.to_string()))
    }
}

/// Keeps `versions` at what the replicas sharing the store set, reading
/// the stored versions every [`FOLLOW_EVERY`] until the task is dropped.
pub async fn follow(versions: Arc<WeightVersions>, reader: StoreReader) {
    let mut seen: HashMap<String, Value> = HashMap::new();
    let mut ticks = tokio::time::interval(FOLLOW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let stored = match reader.shared_settings(KEY.to_string()).await {
            Ok(stored) => stored,
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot read the weight versions other replicas set: {e}");
                }
                failing = true;
                continue;
            }
        };
        failing = false;
        for (key, value) in stored {
            if seen.get(&key) == Some(&value) {
                continue;
            }
            if let Some(scope) = Scope::from_key(&key) {
                versions.set(scope, value.as_i64());
            }
            seen.insert(key, value);
        }
    }
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

    #[test]
    fn a_scope_reads_back_from_its_key() {
        for scope in [
            Scope::Gateway,
            Scope::Route("judge".into()),
            Scope::Run("r:1".into()),
        ] {
            assert_eq!(Scope::from_key(&scope.key()), Some(scope));
        }
        assert_eq!(Scope::from_key("workers"), None);
    }
}
