//! The attempts of one step: which calls retry an earlier call.
//!
//! An SDK retries a call that failed with a 5xx, a 429 or a timeout, with
//! the same headers and the same body: the store then holds three calls of
//! "step 7" where the harness made one. The UI shows them as one step with
//! three attempts, the last attempt's outcome the step's. "Retry" is
//! decided precisely (see [`Attempt`]): call B retries call A when
//!
//! * they share the **step key**: the same session (a call without one
//!   retries nothing), step id (or both none), operation and model;
//! * A is the call just before B with that key (by start), **did not end
//!   `ok`**, and **had ended when B started** (a retry follows a failure;
//!   two identical calls in flight at once are samples, not retries);
//! * they are the **same request**: the same method, path, model,
//!   messages, tools and parameters, and the same raw body when both kept
//!   one.
//!
//! The first two read light, indexed columns of every call of the sessions
//! involved (a page of calls may hold only the latest attempt: the poller's
//! page of calls committed since its cursor does). Only a pair that passes
//! them — a failure followed by the same step, which is rare — has its two
//! records read whole to compare the requests. The store keeps no hash of
//! a request body, so this is the price of precision; a request-hash
//! column written with the record would make it one column compare.

use crate::protocol::Operation;
use crate::record::TraceRecord;
use crate::store::error::StoreResult;
use crate::store::query::Select;
use crate::store::summary::{Attempt, CallNode};
use crate::store::traces;
use rusqlite::Connection;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};

/// What must be equal for two calls to be attempts of one step.
type StepKey = (String, Option<i64>, Operation, Option<String>);

/// A call of a session, as retries are decided: its step key and outcome.
struct Sibling {
    trace_id: String,
    key: StepKey,
    failed: bool,
    started_at: String,
    ended_at: String,
}

/// Sets which attempt of its step each of `calls` is, from every call of
/// their sessions.
pub(crate) fn mark(conn: &Connection, calls: &mut [CallNode]) -> StoreResult<()> {
    let sessions: BTreeSet<String> = calls
        .iter()
        .filter_map(|c| c.summary.session_id.clone())
        .collect();
    if sessions.is_empty() {
        return Ok(());
    }
    let sessions: Vec<String> = sessions.into_iter().collect();
    let mut chains = Chains {
        conn,
        candidates: candidates(&siblings(conn, &sessions)?),
        decided: HashMap::new(),
        requests: HashMap::new(),
    };
    for call in calls.iter_mut() {
        call.attempt = chains.attempt(&call.summary.trace_id)?;
    }
    Ok(())
}

/// Every call of `sessions`, in start order.
fn siblings(conn: &Connection, sessions: &[String]) -> StoreResult<Vec<Sibling>> {
    Select::new(
        "trace_id, session_id, step_id, operation, model, status != 'ok', started_at, ended_at",
        "traces",
    )
    .when_any("session_id", sessions)
    .order("started_at, trace_id")
    .rows(conn, |row| {
        Ok(Sibling {
            trace_id: row.get(0)?,
            key: (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?),
            failed: row.get(5)?,
            started_at: row.get(6)?,
            ended_at: row.get(7)?,
        })
    })
}

/// For each call that may retry the call before it (same step key, and
/// that call failed and had ended when this one started): that call.
fn candidates(siblings: &[Sibling]) -> HashMap<String, String> {
    let mut last_of_step: HashMap<&StepKey, &Sibling> = HashMap::new();
    let mut candidates = HashMap::new();
    for call in siblings {
        if let Some(earlier) = last_of_step.insert(&call.key, call)
            && earlier.failed
            && earlier.ended_at <= call.started_at
        {
            candidates.insert(call.trace_id.clone(), earlier.trace_id.clone());
        }
    }
    candidates
}

/// The request of a call, as far as "the same request" goes.
#[derive(Debug, PartialEq)]
struct Request {
    method: String,
    path: String,
    model: Option<String>,
    messages: Vec<Value>,
    tools: Vec<Value>,
    params: Map<String, Value>,
    raw: Option<Value>,
}

impl Request {
    fn of(record: TraceRecord) -> Request {
        Request {
            method: record.method,
            path: record.path,
            model: record.model,
            messages: record.messages,
            tools: record.tools,
            params: record.request_params,
            raw: record.raw_request,
        }
    }

    /// The same request: every part equal, and the raw bodies too when
    /// both were kept.
    fn same_as(&self, other: &Request) -> bool {
        let raw_differs = matches!((&self.raw, &other.raw), (Some(a), Some(b)) if a != b);
        !raw_differs
            && (&self.method, &self.path, &self.model) == (&other.method, &other.path, &other.model)
            && (&self.messages, &self.tools, &self.params)
                == (&other.messages, &other.tools, &other.params)
    }
}

/// Retry links, decided once each and followed back to a step's first
/// attempt.
struct Chains<'a> {
    conn: &'a Connection,
    /// Call → the call it may retry.
    candidates: HashMap<String, String>,
    /// Call → the call it retries (none: it retries nothing).
    decided: HashMap<String, Option<String>>,
    /// The requests read so far, by trace id (none: the call is gone).
    requests: HashMap<String, Option<Request>>,
}

impl Chains<'_> {
    /// Which attempt `trace_id` is: one more than the call it retries.
    fn attempt(&mut self, trace_id: &str) -> StoreResult<Attempt> {
        let mut attempt = Attempt::FIRST;
        let mut current = trace_id.to_string();
        // Each link goes to a call that started earlier: the walk ends.
        while let Some(earlier) = self.retry_of(&current)? {
            attempt.attempt += 1;
            attempt.retry_of = Some(earlier.clone());
            current = earlier;
        }
        Ok(attempt)
    }

    /// The call `trace_id` retries, if any.
    fn retry_of(&mut self, trace_id: &str) -> StoreResult<Option<String>> {
        if let Some(known) = self.decided.get(trace_id) {
            return Ok(known.clone());
        }
        let retried = match self.candidates.get(trace_id).cloned() {
            Some(earlier) if self.same_request(&earlier, trace_id)? => Some(earlier),
            _ => None,
        };
        self.decided.insert(trace_id.to_string(), retried.clone());
        Ok(retried)
    }

    /// Whether calls `a` and `b` made the same request.
    fn same_request(&mut self, a: &str, b: &str) -> StoreResult<bool> {
        self.load(a)?;
        self.load(b)?;
        Ok(match (&self.requests[a], &self.requests[b]) {
            (Some(a), Some(b)) => a.same_as(b),
            _ => false,
        })
    }

    /// Reads the request of `trace_id`, once.
    fn load(&mut self, trace_id: &str) -> StoreResult<()> {
        if !self.requests.contains_key(trace_id) {
            let request = traces::trace(self.conn, trace_id)?.map(Request::of);
            self.requests.insert(trace_id.to_string(), request);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sibling(id: &str, step: i64, failed: bool, start: &str, end: &str) -> Sibling {
        Sibling {
            trace_id: id.into(),
            key: ("s".into(), Some(step), Operation::Chat, Some("m".into())),
            failed,
            started_at: start.into(),
            ended_at: end.into(),
        }
    }

    #[test]
    fn only_a_call_after_a_finished_failure_of_its_step_may_retry_it() {
        let calls = [
            sibling("a", 1, true, "01", "02"),
            sibling("b", 1, true, "03", "04"),
            sibling("c", 1, false, "05", "06"),
            // After an ok call: a new sample, not a retry.
            sibling("d", 1, false, "07", "08"),
            // Another step between does not break a chain.
            sibling("e", 2, true, "09", "10"),
            sibling("f", 3, false, "11", "12"),
            sibling("g", 2, false, "13", "14"),
            // In flight while the failure was: not a retry.
            sibling("h", 4, true, "15", "18"),
            sibling("i", 4, false, "16", "17"),
        ];
        let found = candidates(&calls);
        let expected: HashMap<String, String> = [("b", "a"), ("c", "b"), ("g", "e")]
            .map(|(b, a)| (b.to_string(), a.to_string()))
            .into();
        assert_eq!(found, expected);
    }

    #[test]
    fn the_same_request_ignores_a_raw_body_only_one_kept() {
        let request = |raw: Option<Value>, content: &str| Request {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            model: Some("m".into()),
            messages: vec![serde_json::json!({"role": "user", "content": content})],
            tools: Vec::new(),
            params: Map::new(),
            raw,
        };
        let body = Some(serde_json::json!({"model": "m"}));
        assert!(request(body.clone(), "hi").same_as(&request(None, "hi")));
        assert!(request(body.clone(), "hi").same_as(&request(body.clone(), "hi")));
        assert!(!request(body.clone(), "hi").same_as(&request(body, "ho")));
        let other = Some(serde_json::json!({"model": "n"}));
        assert!(!request(Some(serde_json::json!({})), "hi").same_as(&request(other, "hi")));
    }
}
