//! `POST /feedback` and `POST /feedback/batch`: scores a harness attaches to
//! a call, a session or a run (see `crate::feedback`). They are read back
//! with what they name: the trace, session and run JSON.
//!
//! An item is accepted whether or not its target is stored yet, and posting
//! an id again is safe: the same content answers the stored item
//! (`created: false`), other content a 409 (`conflict`), and a batch with a
//! conflict stores nothing. Each new item is counted in
//! `tracegate_feedback_total` and, when span export is on, written to the
//! export outbox as a `gen_ai.evaluation.result` span — a child of the
//! scored call's span when that call is stored.

use super::Json;
use crate::error::GatewayError;
use crate::feedback::{Feedback, FeedbackInput, TargetKind};
use crate::record::{ErrorKind, Span};
use crate::server::AppState;
use crate::store::feedback::Posted;
use axum::body::Bytes;
use axum::extract::State;
use serde::Serialize;
use std::time::SystemTime;

/// The most items one batch may hold.
pub const MAX_BATCH: usize = 10_000;

/// One item as the API answers it: as stored, and whether this post
/// stored it.
#[derive(Debug, Serialize)]
pub struct PostedItem {
    /// The item.
    #[serde(flatten)]
    feedback: Feedback,
    /// Whether this post stored it (`false`: it was stored already).
    created: bool,
}

/// The answer of `POST /feedback/batch`.
#[derive(Debug, Serialize)]
pub struct PostedBatch {
    /// How many items this post stored.
    created: usize,
    /// Every item, in the order given.
    feedback: Vec<PostedItem>,
}

/// `POST /feedback` with one item.
pub async fn post(
    State(state): State<AppState>,
    Json(input): Json<FeedbackInput>,
) -> Result<Json<PostedItem>, GatewayError> {
    let mut posted = store(&state, vec![input]).await?;
    posted
        .pop()
        .map(Json)
        .ok_or_else(|| GatewayError::internal("the store answered no item"))
}

/// `POST /feedback/batch` with a JSON array of items.
pub async fn batch(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<PostedBatch>, GatewayError> {
    let inputs: Vec<FeedbackInput> = serde_json::from_slice(&body).map_err(|e| {
        GatewayError::bad_request(format!(
            "the body must be a JSON array of feedback items: {e}"
        ))
    })?;
    if inputs.len() > MAX_BATCH {
        return Err(GatewayError::bad_request(format!(
            "a batch holds at most {MAX_BATCH} items, not {}",
            inputs.len()
        )));
    }
    let feedback = store(&state, inputs).await?;
    Ok(Json(PostedBatch {
        created: feedback.iter().filter(|i| i.created).count(),
        feedback,
    }))
}

/// Validates, stores and counts `inputs`; a 400 naming the first unusable
/// item, a 409 naming the ids stored with other content.
async fn store(
    state: &AppState,
    inputs: Vec<FeedbackInput>,
) -> Result<Vec<PostedItem>, GatewayError> {
    let now = SystemTime::now();
    let items = inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| {
            input
                .into_feedback(now)
                .map_err(|e| GatewayError::bad_request(format!("item {i}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spans = spans(state, &items, now).await?;
    match state.writer.post_feedback(items, spans).await? {
        Posted::Conflict(ids) => Err(GatewayError::new(
            ErrorKind::Conflict,
            format!(
                "feedback {} is stored already with other content",
                ids.join(", ")
            ),
        )),
        Posted::Stored(stored) => Ok(stored
            .into_iter()
            .map(|(feedback, created)| {
                if created {
                    state.metrics.feedback_posted(&feedback.name);
                }
                PostedItem { feedback, created }
            })
            .collect()),
    }
}

/// Each item's evaluation span when spans are exported (none otherwise).
async fn spans(
    state: &AppState,
    items: &[Feedback],
    now: SystemTime,
) -> Result<Vec<Option<Span>>, GatewayError> {
    let mut spans = Vec::with_capacity(items.len());
    for item in items {
        if state.export.is_none() {
            spans.push(None);
            continue;
        }
        let parent = match item.target_kind {
            TargetKind::Trace => state
                .reader
                .trace(item.target_id.clone())
                .await?
                .map(|call| (call.otel_trace_id, call.span_id)),
            TargetKind::Session | TargetKind::Run => None,
        };
        spans.push(Some(item.evaluation_span(parent, now)));
    }
    Ok(spans)
}
