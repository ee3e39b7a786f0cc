//! Capture: turning a call's request and response bytes into a TraceRecord.
//!
//! Capture never sits on the hot path. `forward` hands it the call's context
//! ([`CallContext`]) when the request goes upstream and each response chunk
//! as it passes to the client. Capture copies the chunk's bytes into one
//! buffer of its own rather than keeping the chunk: a chunk is a slice of
//! the upstream connection's read buffer, and a kept slice keeps that whole
//! buffer (8 KiB or more) alive and makes the connection allocate another
//! for its next read — with a stream that arrives a few bytes at a time,
//! that was most of the gateway's memory. Only when the response has ended —
//! completely, by upstream failure, or by the client going away — does
//! capture do its work, in a task of its own: split the stream into events,
//! fold them with the endpoint's assembler, build the record, observe its
//! metrics, make its span and hand both to the store.
//!
//! Every call is recorded: [`ResponseCapture`] records on drop if nobody told
//! it how the response ended (the client disconnected and hyper dropped the
//! body), and [`record_failure`] records calls that never got an upstream
//! response (body too large, upstream unreachable, timeout, or the client
//! gone before the upstream answered: a failure of kind `client_closed`).
//! A capture can also be told that the client left while the gateway reads
//! on ([`ResponseCapture::client_left`], for `finish_on_client_close`): the
//! record then has the whole answer and still says `client_closed`.
//!
//! The parts, in the order a record is made:
//!
//! * [`context`]: what forward knows before the answer;
//! * [`assembler`]: one table from endpoint to the protocol module that reads
//!   it — [`openai_chat`], [`openai_completions`], [`openai_responses`],
//!   [`openai_embeddings`], [`anthropic_messages`], each with the same plain
//!   functions producing the same [`Output`], over the one SSE reader
//!   [`sse`] and the shared field readers [`fields`];
//! * [`build`]: the record from the request, the response and the outcome;
//! * [`redact`]: every secret scrubbed; [`span`]: the record as a span,
//!   with a retried call's attempts as its children ([`attempt_spans`]).

pub mod anthropic_messages;
pub mod assembler;
pub mod attempt_spans;
pub mod build;
pub mod context;
pub mod cost;
pub mod fields;
pub mod openai_chat;
pub mod openai_completions;
pub mod openai_embeddings;
pub mod openai_responses;
pub mod redact;
pub mod span;
pub mod sse;

pub use build::{assemble, raw_body};
pub use context::{
    Arrival, CallContext, CaptureSettings, Destination, Moment, RequestBody, SpanPolicy, Who,
};

use crate::error::GatewayError;
use crate::export::self_tracing;
use crate::record::{CallError, Choice, Embeddings, Usage};
use crate::store::{Reservation, StoreWriter};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use tracing::Instrument;

/// The normalised input of a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    /// Input messages, in the OpenAI chat shape.
    pub messages: Vec<Value>,
    /// Tool definitions offered to the model.
    pub tools: Vec<Value>,
    /// For embeddings: what was asked (the answer completes it).
    pub embeddings: Option<Embeddings>,
}

/// How a response ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The whole response reached the client.
    Complete,
    /// The client went away first.
    ClientClosed,
    /// The upstream connection failed mid-response.
    UpstreamFailed(CallError),
}

/// The response side of a call, as collected while it streamed.
#[derive(Debug, Clone)]
pub struct ResponseFacts {
    /// The upstream's HTTP status.
    pub status: u16,
    /// The upstream's response headers.
    pub headers: HeaderMap,
    /// The body, in chunks (capture collects it into one).
    pub chunks: Vec<Bytes>,
    /// When the first chunk arrived.
    pub first_chunk: Option<Moment>,
    /// When the response ended.
    pub ended: Moment,
    /// How it ended.
    pub ending: Ending,
    /// When the client left, if it did and the gateway read on.
    pub client_left: Option<Moment>,
    /// Keep-alive comments sent to the client in the stream.
    pub heartbeats: u64,
}

/// What an assembler read from a response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// The upstream's response id.
    pub response_id: Option<String>,
    /// The model that answered.
    pub response_model: Option<String>,
    /// Every choice, in index order, with its token data.
    pub choices: Vec<Choice>,
    /// Token usage.
    pub usage: Usage,
    /// Prompt token ids (vLLM).
    pub prompt_token_ids: Vec<u32>,
    /// For embeddings: what was embedded.
    pub embeddings: Option<Embeddings>,
    /// An error the upstream reported inside a 2xx response (an error event).
    pub error: Option<CallError>,
    /// Whether the response reached its protocol's proper end (`[DONE]`,
    /// `message_stop`, `response.completed`, a whole JSON body); a stream cut
    /// short is not complete.
    pub complete: bool,
}

/// Collects a response as it streams to the client, and records the call when
/// the response ends. Dropping it before [`ResponseCapture::finish`] records
/// the call as `client_closed`.
pub struct ResponseCapture {
    pending: Option<Pending>,
}

struct Pending {
    ctx: CallContext,
    status: u16,
    headers: HeaderMap,
    body: BytesMut,
    first_chunk: Option<Moment>,
    client_left: Option<Moment>,
    heartbeats: u64,
    store: StoreWriter,
}

impl ResponseCapture {
    /// Starts collecting the response of the call `ctx`.
    pub fn new(ctx: CallContext, status: u16, headers: HeaderMap, store: StoreWriter) -> Self {
        Self {
            pending: Some(Pending {
                ctx,
                status,
                headers: owned(&headers),
                body: BytesMut::new(),
                first_chunk: None,
                client_left: None,
                heartbeats: 0,
                store,
            }),
        }
    }

    /// Whether the response has ended (the record is on its way).
    pub fn is_finished(&self) -> bool {
        self.pending.is_none()
    }

    /// Moves the collection into a new capture, leaving this one finished:
    /// for a body that goes on in another task.
    pub fn take(&mut self) -> ResponseCapture {
        ResponseCapture {
            pending: self.pending.take(),
        }
    }

    /// Notes that the client left at `at` while the gateway reads on.
    pub fn client_left(&mut self, at: Moment) {
        if let Some(p) = &mut self.pending {
            p.client_left.get_or_insert(at);
        }
    }

    /// Counts a keep-alive comment sent to the client (not kept as a chunk).
    pub fn heartbeat(&mut self) {
        if let Some(p) = &mut self.pending {
            p.heartbeats += 1;
        }
    }

    /// Keeps a copy of a chunk that is on its way to the client: every
    /// byte, so the record is exact however large the answer.
    pub fn chunk(&mut self, chunk: &[u8]) {
        if let Some(p) = &mut self.pending {
            p.first_chunk.get_or_insert_with(Moment::now);
            p.body.extend_from_slice(chunk);
        }
    }

    /// Ends the response: reserves the record's place in the store (so a
    /// flush from now on waits for it) and assembles it in the background.
    /// Later calls do nothing.
    pub fn finish(&mut self, ending: Ending) {
        let Some(p) = self.pending.take() else { return };
        let reservation = p.store.reserve();
        let facts = ResponseFacts {
            status: p.status,
            headers: p.headers,
            chunks: vec![p.body.freeze()],
            first_chunk: p.first_chunk,
            ended: Moment::now(),
            ending,
            client_left: p.client_left,
            heartbeats: p.heartbeats,
        };
        spawn_record(p.ctx, Some(facts), None, reservation);
    }
}

impl Drop for ResponseCapture {
    fn drop(&mut self) {
        self.finish(Ending::ClientClosed);
    }
}

/// The headers with values of their own. A header value hyper parsed is a
/// slice of the connection's read buffer, like a body chunk, and capture
/// keeps the headers for as long as the answer streams.
fn owned(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .map(|(name, value)| {
            let copy = match HeaderValue::from_bytes(value.as_bytes()) {
                Ok(mut copy) => {
                    copy.set_sensitive(value.is_sensitive());
                    copy
                }
                Err(_) => value.clone(),
            };
            (name.clone(), copy)
        })
        .collect()
}

/// Records a call the gateway failed before any upstream response.
pub fn record_failure(ctx: CallContext, error: &GatewayError, store: &StoreWriter) {
    spawn_record(ctx, None, Some(error.clone()), store.reserve());
}

/// Builds the record (and span) in a task of its own and submits it.
fn spawn_record(
    ctx: CallContext,
    response: Option<ResponseFacts>,
    failure: Option<GatewayError>,
    reservation: Reservation,
) {
    let task = async move {
        let spans = ctx.settings.spans;
        let trace = ctx.who.trace.clone();
        let provider = span::provider(ctx.destination.kind, ctx.arrival.endpoint.protocol());
        let started = ctx.arrival.started.wall;
        let metrics = ctx.in_flight.metrics().clone();
        let record = assemble(ctx, response, failure.as_ref());
        metrics.observe_call(&record, provider);
        crate::call_log::log_call(&record);
        let span = (spans != SpanPolicy::None).then(|| {
            let inputs = span::SpanInputs {
                trace: &trace,
                provider,
                started,
                ended: started + std::time::Duration::from_secs_f64(record.latency_ms / 1000.0),
                include_content: spans == SpanPolicy::WithContent,
            };
            let mut span = span::of(&record, &inputs);
            span.children = attempt_spans::spans(&record, &trace);
            span
        });
        let handing_over =
            tracing::trace_span!(target: self_tracing::TARGET, "tracegate.record_submit");
        self_tracing::attach(&handing_over, &trace);
        reservation
            .submit(record, span)
            .instrument(handing_over)
            .await;
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(task);
        }
        Err(_) => tracing::error!("no runtime to record a call on; record lost"),
    }
}
