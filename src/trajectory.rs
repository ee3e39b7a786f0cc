//! Trajectories: a session's calls as the training data an RL trainer reads
//! (`GET /sessions/{sid}/trajectory`, `GET /runs/{id}/trajectory`,
//! `tracegate export --format trajectory`; `schema/trajectory.md`).
//!
//! An agent resends its conversation on every turn, so with token data
//! (vLLM's `prompt_token_ids`, completion ids and logprobs) turn n's prompt
//! is turn n-1's prompt and completion plus the new prompt tokens (a tool's
//! output, the next user message). The episode is then one token sequence:
//! each turn adds its new prompt tokens (loss mask 0: the model did not
//! write them) and its completion (mask 1, with the logprobs the model gave
//! them). Where a turn's prompt does *not* extend what came before — the
//! context was summarised, re-tokenized differently, a sub-agent branched
//! off — the sequence is split into a new segment, and the split says why:
//! a trainer must never learn from tokens aligned to the wrong logprobs.
//!
//! The calls are taken in step order: the order they started, by `step_id`
//! when every call has one, and never before the call they name as parent
//! (`parent_span_id`). Calls without token data, or that failed, are listed
//! but in no segment. The harness's tool executions (its `execute_tool`
//! spans) are merged in between the calls they separate ([`steps`]).

pub mod steps;

use crate::feedback::Feedback;
use crate::record::{HarnessSpan, Status, TraceRecord};
use serde::Serialize;
use std::collections::HashMap;
use steps::Step;

crate::wire_enum! {
    /// Why a segment starts.
    pub enum SegmentStart {
        /// The episode's first call with token data.
        First = "first",
        /// The call's prompt does not begin with the previous segment's
        /// tokens (a summarised or re-tokenized context, a branch).
        PromptDoesNotExtend = "prompt_does_not_extend",
    }
}

crate::wire_enum! {
    /// Why a call is in no segment.
    pub enum Skipped {
        /// The upstream returned no token ids (not a vLLM-kind route, or
        /// `return_token_ids` was off).
        NoTokenData = "no_token_data",
        /// The call did not end `ok`.
        Failed = "failed",
    }
}

/// One session as training data.
#[derive(Debug, Clone, Serialize)]
pub struct Trajectory {
    /// The session.
    pub session_id: String,
    /// Its run, when its calls name one.
    pub run_id: Option<String>,
    /// The feedback naming the session itself (a call's is on the call).
    pub feedback: Vec<Feedback>,
    /// Every call, in step order.
    pub calls: Vec<TrajectoryCall>,
    /// The episode's token sequences: one, unless a turn did not extend.
    pub segments: Vec<Segment>,
    /// The calls and the tool executions between them, in order.
    pub steps: Vec<Step>,
}

/// One call of a trajectory.
#[derive(Debug, Clone, Serialize)]
pub struct TrajectoryCall {
    /// The record's id.
    pub trace_id: String,
    /// Its step id, when the harness gave one.
    pub step_id: Option<i64>,
    /// The model asked for.
    pub model: Option<String>,
    /// The policy version that produced it.
    pub weight_version: Option<i64>,
    /// How it ended.
    pub status: Status,
    /// The first choice's finish reason.
    pub finish_reason: Option<String>,
    /// The prompt's token ids.
    pub prompt_token_ids: Vec<u32>,
    /// The completion's token ids.
    pub completion_token_ids: Vec<u32>,
    /// The completion's per-token logprobs (`null` when not returned).
    pub logprobs: Option<Vec<f64>>,
    /// The feedback naming this call.
    pub feedback: Vec<Feedback>,
    /// The index of the segment holding it; `null` when it is in none.
    pub segment: Option<usize>,
    /// Why it is in no segment.
    pub skipped: Option<Skipped>,
}

/// One aligned token sequence: `tokens`, `loss_mask` and `logprobs` have the
/// same length.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Segment {
    /// Why it starts here.
    pub start: Option<SegmentStart>,
    /// The call whose prompt did not extend, and the first position where
    /// its prompt and the previous segment's tokens differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diverged_at: Option<usize>,
    /// The calls it holds, in order.
    pub trace_ids: Vec<String>,
    /// Every token: prompts and completions, each only once.
    pub tokens: Vec<u32>,
    /// 1 for a token the model generated, 0 for prompt and tool tokens.
    pub loss_mask: Vec<u8>,
    /// The logprob of each generated token; 0.0 for prompt tokens (and for a
    /// generated token whose logprob was not returned: see `has_logprobs`).
    pub logprobs: Vec<f64>,
    /// Whether every generated token has its logprob.
    pub has_logprobs: bool,
}

/// The trajectory of session `session_id` from its records (in the order
/// they started), the feedback naming the session, and the harness spans
/// of the session (its tool spans become steps).
pub fn build(
    session_id: &str,
    records: Vec<TraceRecord>,
    feedback: Vec<Feedback>,
    spans: Vec<HarnessSpan>,
) -> Trajectory {
    let run_id = records.iter().find_map(|r| r.identity.run_id.clone());
    let records = step_order(records);
    let steps = steps::interleave(session_id, &records, spans);
    let mut calls: Vec<TrajectoryCall> = records.into_iter().map(call).collect();
    let mut segments: Vec<Segment> = Vec::new();
    for call in &mut calls {
        if call.skipped.is_some() {
            continue;
        }
        let extends = segments
            .last()
            .map(|s| call.prompt_token_ids.starts_with(&s.tokens));
        let fresh = match extends {
            Some(true) => None,
            Some(false) => Some(SegmentStart::PromptDoesNotExtend),
            None => Some(SegmentStart::First),
        };
        if let Some(start) = fresh {
            let diverged_at = segments
                .last()
                .map(|s| diverges(&s.tokens, &call.prompt_token_ids));
            segments.push(Segment {
                start: Some(start),
                diverged_at,
                has_logprobs: true,
                ..Segment::default()
            });
        }
        let index = segments.len() - 1;
        if let Some(segment) = segments.last_mut() {
            append(segment, call);
        }
        call.segment = Some(index);
    }
    Trajectory {
        session_id: session_id.to_string(),
        run_id,
        feedback,
        calls,
        segments,
        steps,
    }
}

/// The first position where `a` and `b` differ.
fn diverges(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Adds a call's new prompt tokens (mask 0) and its completion (mask 1).
fn append(segment: &mut Segment, call: &TrajectoryCall) {
    let new_prompt = &call.prompt_token_ids[segment.tokens.len()..];
    segment.tokens.extend_from_slice(new_prompt);
    segment
        .loss_mask
        .extend(std::iter::repeat_n(0, new_prompt.len()));
    segment
        .logprobs
        .extend(std::iter::repeat_n(0.0, new_prompt.len()));
    let generated = &call.completion_token_ids;
    segment.tokens.extend_from_slice(generated);
    segment
        .loss_mask
        .extend(std::iter::repeat_n(1, generated.len()));
    match &call.logprobs {
        Some(lp) if lp.len() == generated.len() => segment.logprobs.extend_from_slice(lp),
        _ => {
            segment.has_logprobs &= generated.is_empty();
            segment
                .logprobs
                .extend(std::iter::repeat_n(0.0, generated.len()));
        }
    }
    segment.trace_ids.push(call.trace_id.clone());
}

fn call(r: TraceRecord) -> TrajectoryCall {
    let skipped = if r.status != Status::Ok {
        Some(Skipped::Failed)
    } else if r.prompt_token_ids.is_empty() && r.completion_token_ids.is_empty() {
        Some(Skipped::NoTokenData)
    } else {
        None
    };
    TrajectoryCall {
        trace_id: r.trace_id,
        step_id: r.identity.step_id,
        model: r.model,
        weight_version: r.identity.weight_version,
        status: r.status,
        finish_reason: r.finish_reason,
        prompt_token_ids: r.prompt_token_ids,
        completion_token_ids: r.completion_token_ids,
        logprobs: r.logprobs,
        feedback: r.feedback,
        segment: None,
        skipped,
    }
}

/// The records in step order: started order, by `step_id` when every call
/// has one, and each after the call whose span it names as its parent.
fn step_order(mut records: Vec<TraceRecord>) -> Vec<TraceRecord> {
    if records.iter().all(|r| r.identity.step_id.is_some()) {
        records.sort_by_key(|r| r.identity.step_id);
    }
    let by_span: HashMap<String, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.span_id.clone(), i))
        .collect();
    let parent = |r: &TraceRecord| {
        r.identity
            .parent_span_id
            .as_ref()
            .and_then(|p| by_span.get(p).copied())
    };
    let parents: Vec<Option<usize>> = records.iter().map(parent).collect();
    // Depth-first: a call is placed once its parent is.
    let mut placed = vec![false; records.len()];
    let mut order = Vec::with_capacity(records.len());
    for i in 0..records.len() {
        place(i, &parents, &mut placed, &mut order, records.len());
    }
    let mut slots: Vec<Option<TraceRecord>> = records.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// Places call `i` after its ancestors (a cycle is cut after `budget` hops).
fn place(
    i: usize,
    parents: &[Option<usize>],
    placed: &mut [bool],
    order: &mut Vec<usize>,
    budget: usize,
) {
    if placed[i] {
        return;
    }
    placed[i] = true;
    if let Some(p) = parents[i].filter(|_| budget > 0) {
        place(p, parents, placed, order, budget - 1);
    }
    order.push(i);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(id: &str, prompt: &[u32], completion: &[u32]) -> TraceRecord {
        TraceRecord {
            trace_id: id.into(),
            span_id: format!("span-{id}"),
            prompt_token_ids: prompt.to_vec(),
            completion_token_ids: completion.to_vec(),
            logprobs: Some(completion.iter().map(|t| -f64::from(*t)).collect()),
            ..TraceRecord::default()
        }
    }

    #[test]
    fn turns_that_extend_make_one_masked_sequence() {
        let t = build(
            "s",
            vec![turn("a", &[1, 2], &[3]), turn("b", &[1, 2, 3, 4], &[5, 6])],
            vec![],
            vec![],
        );
        assert_eq!(t.segments.len(), 1);
        let s = &t.segments[0];
        assert_eq!(s.tokens, [1, 2, 3, 4, 5, 6]);
        assert_eq!(s.loss_mask, [0, 0, 1, 0, 1, 1]);
        assert_eq!(s.logprobs, [0.0, 0.0, -3.0, 0.0, -5.0, -6.0]);
        assert!(s.has_logprobs);
    }

    #[test]
    fn a_prompt_that_does_not_extend_starts_a_segment() {
        let t = build(
            "s",
            vec![turn("a", &[1, 2], &[3]), turn("b", &[1, 9], &[5])],
            vec![],
            vec![],
        );
        assert_eq!(t.segments.len(), 2);
        assert_eq!(t.segments[1].start, Some(SegmentStart::PromptDoesNotExtend));
        assert_eq!(t.segments[1].diverged_at, Some(1));
        assert_eq!(t.segments[1].tokens, [1, 9, 5]);
        assert_eq!(t.calls[1].segment, Some(1));
    }

    #[test]
    fn a_child_follows_its_parent_and_calls_without_tokens_are_skipped() {
        let mut child = turn("child", &[1, 2, 3], &[4]);
        child.identity.parent_span_id = Some("span-parent".into());
        let parent = turn("parent", &[1, 2], &[3]);
        let empty = turn("empty", &[], &[]);
        let t = build("s", vec![child, empty, parent], vec![], vec![]);
        let ids: Vec<&str> = t.calls.iter().map(|c| c.trace_id.as_str()).collect();
        assert_eq!(ids, ["parent", "child", "empty"]);
        assert_eq!(t.calls[2].skipped, Some(Skipped::NoTokenData));
        assert_eq!(t.segments.len(), 1);
    }
}
