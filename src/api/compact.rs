//! rLLM's compact trace graph: `GET /sessions/{sid}/traces?format=compact`.
//!
//! An agent resends its whole conversation on every call, so a session's
//! records repeat each other: turn n's messages are turn n-1's messages,
//! its answer and a few new ones, and with vLLM its prompt's token ids are
//! turn n-1's prompt and completion ids and a few new ones. rLLM's trainer
//! reads a session as a forest of **deltas** instead: each call names its
//! parent (`parent_trace_id`) and carries only what it adds
//! (`messages_suffix`, `prompt_ids_suffix`) besides its own answer; the
//! client rebuilds every call's full messages and token ids by walking the
//! parents.
//!
//! The graph is computed here, when it is read, from the full records the
//! store returns, with the rules of rLLM's own `TraceGraph` (its
//! `models.py`). Calls are taken in the order they started. A call's parent
//! is found by walking its messages down a trie of the earlier calls'
//! messages and answers: the deepest point where an earlier call of the
//! same lineage and model completed (its messages plus its answer) is the
//! candidate (the first call to complete there represents it), and it is
//! the parent only if its prompt and completion ids are a prefix of the
//! call's prompt ids; otherwise the call is a root carrying everything.
//! Messages are compared in a canonical form (`canonical`), which is also
//! the form the deltas carry. With `since`/`limit`, the graph of the whole
//! session is sliced: a delta whose parent is not in the selection becomes a
//! root.

use crate::record::TraceRecord;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// The graph as rLLM's client reads it.
#[derive(Debug, Serialize)]
pub struct TraceGraph {
    /// Always `compact`.
    format: &'static str,
    /// Always 1.
    version: u32,
    /// The calls, in the order they started.
    deltas: Vec<Delta>,
}

/// One call, against its parent.
#[derive(Debug, Clone, Serialize)]
pub struct Delta {
    trace_id: String,
    session_id: String,
    parent_trace_id: Option<String>,
    lineage_id: Option<String>,
    model: String,
    messages_suffix: Vec<Value>,
    prompt_ids_suffix: Vec<u32>,
    response_message: Value,
    completion_token_ids: Vec<u32>,
    logprobs: Option<Vec<f64>>,
    routing_matrices: Option<Vec<String>>,
    finish_reason: Option<String>,
    weight_version: Option<i64>,
    latency_ms: f64,
    token_counts: Map<String, Value>,
    timestamp: f64,
    metadata: Map<String, Value>,
}

/// The graph of a session's records (`all`, in the order they started),
/// sliced to the `selected` trace ids.
pub fn graph(all: &[TraceRecord], selected: &[String]) -> TraceGraph {
    let mut trie = Trie::default();
    let mut deltas: HashMap<&str, Delta> = HashMap::new();
    let by_id: HashMap<&str, &TraceRecord> = all.iter().map(|r| (r.trace_id.as_str(), r)).collect();
    for record in all {
        let parent = trie.parent(record).and_then(|id| by_id.get(id).copied());
        let parent = parent.filter(|p| extends_tokens(record, p));
        let delta = delta(record, parent);
        trie.add(&delta, parent.map(|p| p.trace_id.as_str()));
        deltas.insert(record.trace_id.as_str(), delta);
    }
    let mut emitted: HashSet<&str> = HashSet::new();
    let mut out = Vec::new();
    for id in selected {
        let (Some(delta), Some(record)) = (deltas.get(id.as_str()), by_id.get(id.as_str())) else {
            continue;
        };
        let cut = delta
            .parent_trace_id
            .as_deref()
            .is_some_and(|p| !emitted.contains(p));
        out.push(if cut {
            self::delta(record, None)
        } else {
            delta.clone()
        });
        emitted.insert(record.trace_id.as_str());
    }
    TraceGraph {
        format: "compact",
        version: 1,
        deltas: out,
    }
}

/// Whether the parent's prompt and completion ids are a prefix of the
/// call's prompt ids.
fn extends_tokens(record: &TraceRecord, parent: &TraceRecord) -> bool {
    let prefix = parent
        .prompt_token_ids
        .iter()
        .chain(&parent.completion_token_ids);
    let len = parent.prompt_token_ids.len() + parent.completion_token_ids.len();
    record.prompt_token_ids.len() >= len && prefix.eq(record.prompt_token_ids[..len].iter())
}

/// A call against its parent (or as a root, with `None`).
fn delta(record: &TraceRecord, parent: Option<&TraceRecord>) -> Delta {
    let (messages, prompt_ids) = match parent {
        Some(p) => (
            p.messages.len() + 1,
            p.prompt_token_ids.len() + p.completion_token_ids.len(),
        ),
        None => (0, 0),
    };
    Delta {
        trace_id: record.trace_id.clone(),
        session_id: record.identity.session_id.clone().unwrap_or_default(),
        parent_trace_id: parent.map(|p| p.trace_id.clone()),
        lineage_id: record.lineage_id.clone(),
        model: record.model.clone().unwrap_or_default(),
        messages_suffix: record
            .messages
            .iter()
            .skip(messages)
            .map(canonical)
            .collect(),
        prompt_ids_suffix: record
            .prompt_token_ids
            .iter()
            .skip(prompt_ids)
            .copied()
            .collect(),
        response_message: canonical(&Value::Object(record.response_message.clone())),
        completion_token_ids: record.completion_token_ids.clone(),
        logprobs: record.logprobs.clone(),
        routing_matrices: record.routing_matrices.clone(),
        finish_reason: record.finish_reason.clone(),
        weight_version: record.identity.weight_version,
        latency_ms: record.latency_ms,
        token_counts: record.token_counts.clone(),
        timestamp: record.timestamp,
        metadata: record.metadata.clone(),
    }
}

/// Where an earlier call completed: its node, lineage and model.
type Completion = (usize, Option<String>, String);

/// The trie of the calls' messages and answers (rLLM's message trie).
#[derive(Default)]
struct Trie {
    /// (node, message key) → child node; the root is 0.
    children: HashMap<(usize, String), usize>,
    /// The node each call's answer completes.
    completed: HashMap<String, usize>,
    /// The first call that completed at a node, per lineage and model.
    representatives: HashMap<Completion, String>,
}

impl Trie {
    /// The candidate parent of a call: the deepest completion of its lineage
    /// and model along its messages.
    fn parent(&self, record: &TraceRecord) -> Option<&str> {
        let (lineage, model) = (
            record.lineage_id.clone(),
            record.model.clone().unwrap_or_default(),
        );
        let mut node = 0;
        let mut parent = None;
        for message in &record.messages {
            let Some(&next) = self.children.get(&(node, key(&canonical(message)))) else {
                break;
            };
            node = next;
            if let Some(id) = self
                .representatives
                .get(&(node, lineage.clone(), model.clone()))
            {
                parent = Some(id.as_str());
            }
        }
        parent
    }

    /// Adds a delta's messages and answer below its parent's completion.
    fn add(&mut self, delta: &Delta, parent: Option<&str>) {
        let mut node = parent
            .and_then(|p| self.completed.get(p))
            .copied()
            .unwrap_or(0);
        for message in delta
            .messages_suffix
            .iter()
            .chain([&delta.response_message])
        {
            let fresh = self.children.len() + 1;
            node = *self.children.entry((node, key(message))).or_insert(fresh);
        }
        self.completed.insert(delta.trace_id.clone(), node);
        let completion = (node, delta.lineage_id.clone(), delta.model.clone());
        self.representatives
            .entry(completion)
            .or_insert_with(|| delta.trace_id.clone());
    }
}

/// A canonical message's identity: its compact JSON.
fn key(message: &Value) -> String {
    message.to_string()
}

/// A chat message in one stable form, as rLLM's `canonicalize_message` has
/// it: keys sorted; `reasoning` and `reasoning_content` holding the same
/// value become one `reasoning_content` (and an equal
/// `provider_specific_fields.reasoning` goes); null `reasoning`,
/// `reasoning_content` and `refusal` (also inside
/// `provider_specific_fields`) and a null or emptied
/// `provider_specific_fields` are dropped. Everything else stays.
pub fn canonical(message: &Value) -> Value {
    let Value::Object(original) = message else {
        return sorted(message);
    };
    let mut m = original.clone();
    let is_null = |v: Option<&Value>| v.is_none_or(Value::is_null);
    if is_null(m.get("provider_specific_fields")) {
        m.shift_remove("provider_specific_fields");
    }
    let reasoning: Vec<Value> = ["reasoning", "reasoning_content"]
        .iter()
        .filter_map(|k| m.get(*k).filter(|v| !v.is_null()).cloned())
        .collect();
    match reasoning.first() {
        Some(first) if reasoning.iter().all(|r| r == first) => {
            m.shift_remove("reasoning");
            m.insert("reasoning_content".into(), first.clone());
            if let Some(Value::Object(p)) = m.get_mut("provider_specific_fields")
                && p.get("reasoning") == Some(first)
            {
                p.shift_remove("reasoning");
            }
        }
        Some(_) => {}
        None => {
            m.shift_remove("reasoning");
            m.shift_remove("reasoning_content");
            if let Some(Value::Object(p)) = m.get_mut("provider_specific_fields")
                && is_null(p.get("reasoning"))
            {
                p.shift_remove("reasoning");
            }
        }
    }
    if is_null(m.get("refusal")) {
        m.shift_remove("refusal");
    }
    if let Some(Value::Object(p)) = m.get_mut("provider_specific_fields") {
        if is_null(p.get("refusal")) {
            p.shift_remove("refusal");
        }
        if p.is_empty() {
            m.shift_remove("provider_specific_fields");
        }
    }
    sorted(&Value::Object(m))
}

/// A JSON value with every object's keys sorted.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(
        id: &str,
        messages: Value,
        answer: &str,
        prompt: &[u32],
        completion: &[u32],
    ) -> TraceRecord {
        let mut r = TraceRecord {
            trace_id: id.into(),
            model: Some("m".into()),
            messages: messages.as_array().unwrap().clone(),
            response_message: json!({"role": "assistant", "content": answer})
                .as_object()
                .unwrap()
                .clone(),
            prompt_token_ids: prompt.to_vec(),
            completion_token_ids: completion.to_vec(),
            ..TraceRecord::default()
        };
        r.identity.session_id = Some("s".into());
        r
    }

    #[test]
    fn a_call_extending_an_earlier_one_is_its_child() {
        let user = json!({"role": "user", "content": "hi"});
        let a = call("a", json!([user]), "yo", &[1], &[2]);
        let again = json!({"role": "user", "content": "again"});
        let answer = json!({"role": "assistant", "content": "yo", "refusal": null});
        let b = call("b", json!([user, answer, again]), "ok", &[1, 2, 3], &[4]);
        // Same messages, re-tokenized: a root.
        let c = call("c", json!([user, answer, again]), "ok", &[1, 9, 3], &[4]);
        let all = [a, b, c];
        let ids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let g = graph(&all, &ids);
        let parents: Vec<Option<&str>> = g
            .deltas
            .iter()
            .map(|d| d.parent_trace_id.as_deref())
            .collect();
        assert_eq!(parents, [None, Some("a"), None]);
        assert_eq!(g.deltas[1].messages_suffix, [again]);
        assert_eq!(g.deltas[1].prompt_ids_suffix, [3]);
        assert_eq!(g.deltas[2].messages_suffix.len(), 3);
        // Sliced without its parent, a child is a root.
        let g = graph(&all, &["b".to_string()]);
        assert_eq!(g.deltas[0].parent_trace_id, None);
        assert_eq!(g.deltas[0].prompt_ids_suffix, [1, 2, 3]);
    }

    #[test]
    fn canonical_messages_merge_reasoning_aliases_and_drop_null_defaults() {
        let wire = json!({"role": "assistant", "content": "x", "reasoning": "r",
            "provider_specific_fields": {"reasoning": "r", "refusal": null}, "refusal": null});
        let resent = json!({"content": "x", "reasoning_content": "r", "role": "assistant"});
        assert_eq!(canonical(&wire), canonical(&resent));
        assert_eq!(
            key(&canonical(&wire)),
            r#"{"content":"x","reasoning_content":"r","role":"assistant"}"#
        );
        let differ = json!({"reasoning": "a", "reasoning_content": "b"});
        assert_eq!(canonical(&differ), differ);
    }
}
