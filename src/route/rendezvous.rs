//! Rendezvous (highest random weight) hashing: which worker a session goes
//! to, decided by the session id alone.
//!
//! Several gateway replicas behind one balancer must send a session to the
//! same vLLM worker — its prefix cache holds the conversation the session
//! keeps resending — without talking to each other. A per-replica map from
//! session to worker cannot do that (each replica would fill its own), so
//! the choice is a pure function: every worker gets a score from a hash of
//! (worker id, session id), and the session goes to the highest-scoring
//! worker among those that can take the call. Every replica with the same
//! workers computes the same answer; nothing is stored, so a restart loses
//! nothing either.
//!
//! The scores are weighted by the logarithmic method (Schindelhauer and
//! Schomaker, "Weighted distributed hash tables", 2005): with `u` the hash
//! mapped into (0, 1), the score `-weight / ln(u)` makes a worker win a
//! share of sessions proportional to its weight. Removing (or losing to a
//! failed health check) a worker moves only the sessions it had, each to its
//! own second choice; adding one takes from each worker only the sessions
//! the newcomer now wins. When a worker comes back, its sessions return.
//!
//! The hash is XXH3 with a seed derived from the worker id: stable across
//! platforms, processes and versions of this program (unlike the standard
//! library's `DefaultHasher`), and fast enough to run per call and worker.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The score of a worker (`worker_id`, `weight`) for `session`: the worker
/// with the highest score takes the session.
pub fn score(session: &str, worker_id: &str, weight: u32) -> f64 {
    let hash = xxh3_64_with_seed(session.as_bytes(), xxh3_64(worker_id.as_bytes()));
    // The top 53 bits as a uniform value strictly inside (0, 1), so the
    // logarithm is finite and negative.
    let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight.max(1)) / unit.ln()
}

/// The candidate (`id` and `weight` given by the two functions) with the
/// highest score for `session`; `None` when there is no candidate. Ties,
/// vanishingly rare, go to the lower id so that every replica agrees.
pub fn choose<'a, T>(
    session: &str,
    candidates: impl IntoIterator<Item = &'a T>,
    id: impl Fn(&T) -> &str,
    weight: impl Fn(&T) -> u32,
) -> Option<&'a T> {
    candidates
        .into_iter()
        .map(|candidate| (score(session, id(candidate), weight(candidate)), candidate))
        .max_by(|(a, x), (b, y)| a.total_cmp(b).then_with(|| id(y).cmp(id(x))))
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker for the tests: (id, weight).
    type W = (String, u32);

    fn workers(weights: &[u32]) -> Vec<W> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("w{i}"), *w))
            .collect()
    }

    fn pick<'a>(session: &str, pool: &'a [W]) -> &'a str {
        choose(session, pool, |w| &w.0, |w| w.1).unwrap().0.as_str()
    }

    fn sessions() -> impl Iterator<Item = String> {
        (0..6000).map(|i| format!("session-{i}"))
    }

    #[test]
    fn the_choice_depends_only_on_the_session_and_the_workers() {
        let pool = workers(&[1, 1, 1]);
        let mut reversed = pool.clone();
        reversed.reverse();
        for session in sessions().take(200) {
            assert_eq!(pick(&session, &pool), pick(&session, &reversed));
        }
    }

    #[test]
    fn sessions_spread_in_proportion_to_weight() {
        let pool = workers(&[1, 2, 3]);
        let mut counts = [0usize; 3];
        for session in sessions() {
            let id = pick(&session, &pool);
            counts[pool.iter().position(|w| w.0 == id).unwrap()] += 1;
        }
        // Expected 1000, 2000, 3000; the hash is fixed, so this cannot flake.
        for (count, expected) in counts.iter().zip([1000.0, 2000.0, 3000.0]) {
            let off = (*count as f64 - expected).abs() / expected;
            assert!(off < 0.08, "{counts:?}");
        }
    }

    #[test]
    fn removing_a_worker_moves_only_its_own_sessions() {
        let pool = workers(&[1, 1, 1, 1]);
        let without: Vec<W> = pool.iter().filter(|w| w.0 != "w2").cloned().collect();
        let mut moved = 0;
        for session in sessions() {
            let before = pick(&session, &pool);
            let after = pick(&session, &without);
            if before == "w2" {
                moved += 1;
            } else {
                assert_eq!(before, after, "{session} moved though its worker stayed");
            }
        }
        assert!(moved > 1000, "w2 had its share of sessions ({moved})");
    }

    #[test]
    fn an_empty_pool_has_no_choice() {
        assert!(choose("s", &Vec::<W>::new(), |w| &w.0, |w| w.1).is_none());
    }
}
