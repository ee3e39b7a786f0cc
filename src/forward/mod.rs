//! The proxy: every `/v1/...` and `/sessions/{sid}/v1/...` call, end to end.
//!
//! A call goes through four stages, each a function that takes the previous
//! stage's value and returns the next, or the failure that ends the call:
//!
//! 1. [`Forwarder::arrive`]: the call as it arrived — its record id, time,
//!    path (with the session split off) and endpoint (`protocol`);
//! 2. [`Forwarder::read`]: the body, whole, up to `max_body_bytes` (413
//!    beyond it); then who made the call (`identity`: headers > body > path)
//!    and where its span hangs (`trace_context`), decided once;
//! 3. [`Forwarder::route`]: the route for the model (404 when none); the body
//!    loses its identity carriers, gets the backend model name and, for a
//!    vLLM route, the token-data parameters ([`vllm`]) — a body that does not
//!    change is forwarded byte for byte; the upstream request's headers
//!    (`headers` policy, then the route's credentials, failing closed), and
//!    this gateway's `Via` entry ([`hop`]: a request that already carries it
//!    has come round a loop, and is refused with 508);
//! 4. [`Forwarder::send`]: the request, with the one pooled client, to the
//!    session's worker or the least busy one, again as the route's `retry`
//!    policy allows ([`attempts`], [`retry`]), each attempt within its
//!    time limits (connect, first byte, total; [`failure`] names the one that
//!    fired);
//!
//! and then [`Forwarder::respond`] streams the answer back through
//! [`tee::TeeBody`], which hands a copy of each chunk to capture (and, for
//! a vLLM route, strips vLLM's extra fields from what the client gets),
//! watches the idle and total limits and sends a stream's keep-alives.
//!
//! **A client that leaves is recorded, whenever it leaves.** hyper drops
//! the handler's future when the client goes away; the guards of
//! [`waiting`] go with it and record the call as `client_closed` — during
//! the body upload, before the upstream answered, during a retry's backoff
//! — and a body dropped mid-answer records what had arrived (`capture`).
//! What happens upstream is the route's choice:
//!
//! * by default the upstream request is cancelled: dropping it closes its
//!   connection, so a vLLM server stops generating for nobody;
//! * with `finish_on_client_close = true` the call is sent from a task of
//!   its own ([`detached`]), which reads the answer to its end when the
//!   client has left and records it whole (still `client_closed`, with
//!   `client_closed_at`). Shutdown waits for those tasks as for calls in
//!   flight.
//!
//! **Long calls** on a route with `heartbeat_after` get their headers and a
//! space every `heartbeat_every` while a non-streamed answer is awaited
//! ([`heartbeat`]); streams get `: keep-alive` comments after
//! `stream_keepalive` of silence ([`tee`]). Heartbeats are counted in the
//! record, never mixed into its bytes.
//!
//! A stage that fails returns [`Failed`]: the call as far as it is known and
//! the gateway's error. [`Forwarder::fail`], the one place failures end,
//! answers in the error shape of the API called (OpenAI's, or Anthropic's on
//! `/v1/messages`) and records the call like any other. Every response
//! carries `X-RLLM-Trace-Id`.

mod attempts;
pub mod detached;
pub mod failure;
mod heartbeat;
pub mod hop;
pub mod retry;
pub mod sampling;
pub mod tee;
pub mod vllm;
mod waiting;
pub mod weights;

use crate::capture::{
    Arrival, CallContext, CaptureSettings, Destination, Moment, RequestBody, ResponseCapture,
    SpanPolicy, Who, record_failure,
};
use crate::config::{Config, Heartbeat, InboundAuth, RouteConfig};
use crate::error::GatewayError;
use crate::headers::{self, TRACE_ID_HEADER};
use crate::identity;
use crate::metrics::{InFlight, Metrics};
use crate::protocol::{CallPath, Endpoint};
use crate::record::ErrorKind;
use crate::route::{self, Lease, NoRoute, OutboundError, RouteRef, Router};
use crate::server::session_path::OriginalPath;
use crate::store::StoreWriter;
use crate::trace_context::TraceContext;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use detached::Detached;
use heartbeat::{HeartbeatBody, Sending};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tee::TeeBody;

/// Everything the proxy handler needs: the pooled client, the routes, the
/// inbound auth (whose token must not travel upstream), the store, the
/// metrics, the limits, and the calls it finishes for clients that left.
pub struct Forwarder {
    client: reqwest::Client,
    router: Arc<Router>,
    inbound: InboundAuth,
    store: StoreWriter,
    max_body_bytes: usize,
    settings: CaptureSettings,
    propagate_traceparent: bool,
    metrics: Arc<Metrics>,
    connect_timeout: Duration,
    detached: Detached,
    hop: hop::Hop,
    /// The policy versions calls are stamped with (set by the admin API).
    pub weights: Arc<weights::WeightVersions>,
    /// The sessions' sampling parameters (set by the sessions API).
    pub sampling: Arc<sampling::SessionSampling>,
}

/// Why the forwarder could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

impl Forwarder {
    /// Builds the forwarder and its pooled HTTP client. The client has only
    /// the connect timeout: the first-byte, idle and total limits are each
    /// route's, kept by the forwarder so that each says which one fired.
    /// `instance` is this replica's id (`Via`, `/health`, the store's rows).
    pub fn new(
        config: &Config,
        router: Arc<Router>,
        store: StoreWriter,
        metrics: Arc<Metrics>,
        instance: &str,
    ) -> Result<Forwarder, ClientError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            // A gateway passes redirects to its client; it does not follow them.
            .redirect(reqwest::redirect::Policy::none())
            // Idle connections hold their buffers: keep only a few, and
            // not forever (`pool_max_idle`, `pool_idle_timeout`).
            .pool_max_idle_per_host(config.pool_max_idle)
            .pool_idle_timeout(config.pool_idle_timeout)
            .build()?;
        Ok(Forwarder {
            client,
            router,
            inbound: config.auth.clone(),
            store,
            max_body_bytes: config.max_body_bytes,
            settings: CaptureSettings {
                spans: match &config.export {
                    None => SpanPolicy::None,
                    Some(e) if e.include_content => SpanPolicy::WithContent,
                    Some(_) => SpanPolicy::WithoutContent,
                },
                store_embeddings: config.capture.store_embeddings,
                prices: Arc::new(config.prices.clone()),
            },
            propagate_traceparent: config.propagate_traceparent,
            metrics,
            connect_timeout: config.connect_timeout,
            detached: Detached::default(),
            hop: hop::Hop::named(instance),
            weights: Arc::default(),
            sampling: Arc::default(),
        })
    }

    /// The calls being finished for clients that left, for the server to
    /// drain on shutdown.
    pub fn detached(&self) -> &Detached {
        &self.detached
    }

    /// This gateway's instance id (see [`hop::Hop::instance_id`]).
    pub fn instance_id(&self) -> &str {
        self.hop.instance_id()
    }
}

/// The axum handler for every proxied path.
pub async fn proxy(State(forwarder): State<Arc<Forwarder>>, request: Request) -> Response {
    forwarder.handle(request).await
}

/// Stage 1: the call as it arrived.
struct Arrived {
    arrival: Arrival,
    parts: Parts,
    path: CallPath,
    in_flight: InFlight,
}

/// Stage 2: the body is read; who made the call is known.
struct Inbound {
    arrived: Arrived,
    who: Who,
    body: Bytes,
    json: Option<Map<String, Value>>,
}

/// What goes upstream, the same at every attempt.
struct Outgoing {
    method: Method,
    api_path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

/// Stage 3: the route is chosen and the upstream request is ready.
struct Routed {
    ctx: CallContext,
    route: RouteRef,
    outgoing: Outgoing,
    client_wants_logprobs: bool,
    /// Counts the call's heartbeats, when it may get them.
    beats: Option<Arc<AtomicU64>>,
}

/// Stage 4: the upstream answered with its status and headers.
struct Sent {
    ctx: CallContext,
    route: RouteRef,
    lease: Lease,
    upstream: reqwest::Response,
    client_wants_logprobs: bool,
}

/// A stage that could not go on: the call as far as it is known, and why.
struct Failed {
    ctx: CallContext,
    error: GatewayError,
}

impl Failed {
    fn new(ctx: CallContext, error: GatewayError) -> Box<Failed> {
        Box::new(Failed { ctx, error })
    }
}

/// How stage 4 ended: `None` when the task sending it is gone (shutdown
/// cancelled it; its guard recorded the call).
type Outcome = Option<Result<Sent, Box<Failed>>>;

impl Forwarder {
    async fn handle(self: &Arc<Self>, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let arrived = self.arrive(parts);
        let inbound = match self.read(arrived, body).await {
            Ok(inbound) => inbound,
            Err(failed) => return self.fail(failed),
        };
        let routed = match self.route(inbound) {
            Ok(routed) => routed,
            Err(failed) => return self.fail(failed),
        };
        self.answer(routed).await
    }

    /// Stage 1: names the call and reads what its head says.
    fn arrive(&self, parts: Parts) -> Arrived {
        let path = CallPath::parse(parts.uri.path());
        // The path as the client called it (a session id's slashes are
        // escaped for routing).
        let called = match parts.extensions.get::<OriginalPath>() {
            Some(OriginalPath(original)) => original.clone(),
            None => parts.uri.path().to_string(),
        };
        let arrival = Arrival {
            trace_id: uuid::Uuid::now_v7().to_string(),
            started: Moment::now(),
            method: parts.method.to_string(),
            path: called,
            endpoint: Endpoint::of(&parts.method, &path.api_path),
            request_headers: headers::for_storage(&parts.headers),
            content_type: parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        };
        Arrived {
            arrival,
            parts,
            path,
            in_flight: self.metrics.in_flight(),
        }
    }

    /// Stage 2: reads the body and decides who made the call. A body that
    /// cannot be read still leaves the identity its headers and path carry;
    /// a client that leaves during the upload is recorded ([`waiting::Unread`]).
    async fn read(&self, arrived: Arrived, body: Body) -> Result<Inbound, Box<Failed>> {
        let unread = waiting::Unread::new(self, &arrived);
        let read = self.read_body(&arrived.parts.headers, body).await;
        unread.disarm();
        let body = match read {
            Ok(body) => body,
            Err(error) => {
                let who = who(&arrived, None);
                let ctx = self.context_before_body(arrived.arrival, arrived.in_flight, who);
                return Err(Failed::new(ctx, error));
            }
        };
        let json = parse_object(&body);
        let who = who(&arrived, json.as_ref());
        Ok(Inbound {
            arrived,
            who,
            body,
            json,
        })
    }

    /// The context of a call whose body was not read: its default route, if
    /// it has one, and no request.
    fn context_before_body(&self, arrival: Arrival, in_flight: InFlight, who: Who) -> CallContext {
        let destination = self
            .router
            .route_for_call(None, arrival.endpoint.protocol())
            .map(|route| destination(&route.config))
            .unwrap_or_default();
        self.context(arrival, in_flight, who, RequestBody::None, destination)
    }

    /// Stage 3: picks the route by model, rewrites the body for it, and
    /// builds the upstream request's headers.
    fn route(&self, inbound: Inbound) -> Result<Routed, Box<Failed>> {
        let Inbound {
            arrived:
                Arrived {
                    arrival,
                    parts,
                    path,
                    in_flight,
                },
            mut who,
            body,
            mut json,
        } = inbound;
        let model = model_of(json.as_ref());
        let protocol = arrival.endpoint.protocol();
        let route = match self.router.route_ref_for_call(model.as_deref(), protocol) {
            Ok(route) => route,
            Err(NoRoute(message)) => {
                self.stamp_version(&mut who, None);
                let request = request_body(json, body);
                let ctx = self.context(arrival, in_flight, who, request, Destination::default());
                let error = GatewayError::new(ErrorKind::ModelNotFound, message);
                return Err(Failed::new(ctx, error));
            }
        };
        self.stamp_version(&mut who, route.config.name.as_deref());
        let client_wants_logprobs = vllm::client_wants_logprobs(json.as_ref());
        let session = sampling_session(&path, &parts.method);
        let call = (arrival.endpoint, model.as_deref());
        let (forward_body, renamed) = match json.as_mut() {
            Some(object) => self.rewrite_for(object, session, &route.config, call),
            None => (None, None),
        };
        let mut destination = destination(&route.config);
        destination.model_rewrite = renamed;
        let headers = self.outbound_headers(&route.config, &parts.headers, &who);
        let request = request_body(json, body.clone());
        let ctx = self.context(arrival, in_flight, who, request, destination);
        let (body, mut headers) = match ready(forward_body, body, headers) {
            Ok(ready) => ready,
            Err(error) => return Err(Failed::new(ctx, error)),
        };
        if let Err(error) = self.hop.pass(&parts, &mut headers) {
            return Err(Failed::new(ctx, error));
        }
        Ok(Routed {
            ctx,
            route,
            outgoing: Outgoing {
                query: parts.uri.query().map(str::to_string),
                method: parts.method,
                api_path: path.api_path,
                headers,
                body,
            },
            client_wants_logprobs,
            beats: None,
        })
    }

    /// The body `object` of a call (its endpoint and requested model)
    /// rewritten for `route` ([`rewrite`]), with the sampling parameters of
    /// `session` — given for a session path's POSTs, applied as rLLM applies
    /// them, after the vLLM parameters.
    fn rewrite_for(
        &self,
        object: &mut Map<String, Value>,
        session: Option<&str>,
        route: &RouteConfig,
        (endpoint, model): (Endpoint, Option<&str>),
    ) -> Rewrite {
        let sampled = session.is_some_and(|sid| self.sampling.apply(sid, object));
        let (bytes, renamed) = rewrite(object, route, endpoint, model);
        let bytes = bytes.or_else(|| sampled.then(|| serde_json::to_vec(object).map(Bytes::from)));
        (bytes, renamed)
    }

    /// Stage 4 and the answer: sends the call ([`Forwarder::send`]) — from
    /// a task of its own on a route that finishes calls whose client left —
    /// and answers with what came back, after heartbeats when the route has
    /// them and a non-streamed call's upstream is slow.
    async fn answer(self: &Arc<Self>, mut routed: Routed) -> Response {
        let policy = &routed.route.config.policy;
        let finish = policy.finish_on_client_close;
        let heartbeat = policy
            .heartbeat
            .filter(|_| !is_streamed(&routed.ctx.request));
        let early = heartbeat.map(|heartbeat| Early::of(heartbeat, &routed.ctx));
        routed.beats = early.as_ref().map(|e| e.beats.clone());
        let mut sending: Sending = if finish {
            self.send_detached(routed)
        } else {
            let this = self.clone();
            Box::pin(async move { Some(this.send(routed).await) })
        };
        let Some(early) = early else {
            return self.deliver(sending.await);
        };
        match tokio::time::timeout_at(early.at, &mut sending).await {
            Ok(outcome) => self.deliver(outcome),
            Err(_) => {
                let every = early.heartbeat.every;
                let body = HeartbeatBody::new(self.clone(), sending, every, early.beats, finish);
                let mut response = Response::new(Body::new(body));
                *response.headers_mut() = early.headers;
                response
            }
        }
    }

    /// Stage 4: sends the request as the route's policy allows
    /// ([`Forwarder::attempts`]) and keeps every attempt. If the client
    /// leaves meanwhile, dropping this future cancels the upstream request
    /// and records the call ([`waiting::Waiting`]).
    async fn send(self: Arc<Self>, routed: Routed) -> Result<Sent, Box<Failed>> {
        let Routed {
            mut ctx,
            route,
            outgoing,
            client_wants_logprobs,
            beats,
        } = routed;
        let mut waiting = waiting::Waiting::new(&ctx, &self.store, beats.as_deref());
        let answered = self.attempts(&route, &ctx, &outgoing, &mut waiting).await;
        ctx.attempts = waiting.disarm();
        ctx.heartbeats = beats.map_or(0, |b| b.load(Ordering::Relaxed));
        if let Some(last) = ctx.attempts.last() {
            ctx.destination.upstream = last.upstream.clone();
        }
        match answered {
            Ok((lease, upstream)) => Ok(Sent {
                ctx,
                route,
                lease,
                upstream,
                client_wants_logprobs,
            }),
            Err(error) => Err(Failed::new(ctx, error)),
        }
    }

    /// Sends the call from a task of its own (`finish_on_client_close`):
    /// if the client leaves, the task carries on and finishes the call.
    fn send_detached(self: &Arc<Self>, routed: Routed) -> Sending {
        let (mut tx, rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        self.detached.spawn(async move {
            let send = this.clone().send(routed);
            tokio::pin!(send);
            let outcome = tokio::select! {
                outcome = &mut send => outcome,
                () = tx.closed() => {
                    let left = Moment::now();
                    return this.finish_unheard(Some(send.await), left).await;
                }
            };
            if let Err(outcome) = tx.send(outcome) {
                this.finish_unheard(Some(outcome), Moment::now()).await;
            }
        });
        Box::pin(async move { rx.await.ok() })
    }

    /// Finishes a call whose client left at `left`, in the task carrying
    /// it: the answer is read to its end and recorded whole; a failure is
    /// recorded as the client's leaving, saying how the call then failed.
    async fn finish_unheard(self: Arc<Self>, outcome: Outcome, left: Moment) {
        match outcome {
            Some(Ok(sent)) => {
                let (_, _, mut body) = self.tee(sent, false);
                body.client_left(left);
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
            }
            Some(Err(failed)) => {
                let Failed { ctx, error } = *failed;
                let message = format!(
                    "the client disconnected; the gateway carried on (finish_on_client_close) \
                     and the call failed: {}",
                    error.message
                );
                let error = GatewayError::new(ErrorKind::ClientClosed, message);
                record_failure(ctx, &error, &self.store);
            }
            None => {}
        }
    }

    /// Answers with what stage 4 came to.
    fn deliver(&self, outcome: Outcome) -> Response {
        match outcome {
            Some(Ok(sent)) => self.respond(sent),
            Some(Err(failed)) => self.fail(failed),
            None => GatewayError::internal("the gateway stopped before the call was answered")
                .into_response_for(crate::protocol::Protocol::Openai),
        }
    }

    /// Streams the upstream's answer back, teeing it to capture.
    fn respond(&self, sent: Sent) -> Response {
        let (status, headers, body) = self.tee(sent, true);
        let mut response = Response::new(Body::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }

    /// The answer as the client gets it: its status, its headers, and the
    /// body that tees it to capture (`for_client`: with the stream's
    /// keep-alives and the route's finish-on-close; else for nobody).
    fn tee(&self, sent: Sent, for_client: bool) -> (StatusCode, HeaderMap, TeeBody) {
        let Sent {
            ctx,
            route,
            lease,
            upstream,
            client_wants_logprobs,
        } = sent;
        let status = upstream.status();
        let length = upstream.content_length();
        let upstream_headers = upstream.headers().clone();
        let mut client_headers = headers::client_response_headers(&upstream_headers);
        identify(&mut client_headers, &ctx);
        let is_sse = upstream_headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let strips = route.config.strip_vllm_fields
            && status.is_success()
            && ctx.arrival.endpoint.has_token_data();
        let stripper = strips.then(|| vllm::Stripper::new(is_sse, !client_wants_logprobs));
        if stripper.is_some() {
            // The body may shrink: its length is no longer known up front.
            client_headers.remove(header::CONTENT_LENGTH);
        }
        tracing::debug!(
            trace_id = %ctx.arrival.trace_id,
            path = %ctx.arrival.path,
            route = route.config.label(),
            status = status.as_u16(),
            "proxied"
        );
        let policy = &route.config.policy;
        let watch = tee::Watch {
            idle: policy.timeouts.idle.clone(),
            total: attempts::total_deadline(policy, ctx.arrival.started.mono),
            keepalive: policy.stream_keepalive.filter(|_| is_sse && for_client),
            finish: (policy.finish_on_client_close && for_client).then(|| self.detached.clone()),
        };
        let capture =
            ResponseCapture::new(ctx, status.as_u16(), upstream_headers, self.store.clone());
        let stream = Box::pin(upstream.bytes_stream());
        let body = TeeBody::new(stream, capture, length, stripper, lease, watch);
        (status, client_headers, body)
    }

    /// Answers a call the gateway failed, and records it: the one place a
    /// failed stage ends.
    fn fail(&self, failed: Box<Failed>) -> Response {
        let (error, protocol, headers) = self.record_failed(failed);
        let mut response = error.into_response_for(protocol);
        response.headers_mut().extend(headers);
        response
    }

    /// The error JSON of a call the gateway failed after its heartbeat had
    /// sent the headers, and its record.
    fn fail_late(&self, failed: Box<Failed>) -> Bytes {
        let (error, protocol, _) = self.record_failed(failed);
        Bytes::from(error.body_for(protocol).to_string())
    }

    /// Records a failed call; returns its error, the API it answers in, and
    /// the headers that identify it.
    fn record_failed(
        &self,
        failed: Box<Failed>,
    ) -> (GatewayError, crate::protocol::Protocol, HeaderMap) {
        let Failed { ctx, error } = *failed;
        tracing::debug!(trace_id = %ctx.arrival.trace_id, path = %ctx.arrival.path, "{error}");
        let protocol = ctx.arrival.endpoint.protocol();
        let mut headers = HeaderMap::new();
        identify(&mut headers, &ctx);
        record_failure(ctx, &error, &self.store);
        (error, protocol, headers)
    }

    /// Fixes the call's policy version at dispatch: the harness's own, else
    /// the one current now for its run and route.
    fn stamp_version(&self, who: &mut Who, route: Option<&str>) {
        let identity = &mut who.identity;
        if identity.weight_version.is_none() {
            identity.weight_version = self.weights.current(route, identity.run_id.as_deref());
        }
    }

    /// The call's context from what the stages learnt.
    fn context(
        &self,
        arrival: Arrival,
        in_flight: InFlight,
        who: Who,
        request: RequestBody,
        destination: Destination,
    ) -> CallContext {
        CallContext {
            arrival,
            who,
            request,
            destination,
            settings: self.settings.clone(),
            secrets: self.known_secrets(),
            in_flight,
            attempts: Vec::new(),
            heartbeats: 0,
        }
    }

    /// The upstream request's headers for a call made by `who`: the header
    /// policy and the route's credentials, then the trace context (the
    /// gateway's span is the parent, unless propagation is off), and the
    /// session affinity header when the route sends it.
    fn outbound_headers(
        &self,
        route: &RouteConfig,
        incoming: &HeaderMap,
        who: &Who,
    ) -> Result<HeaderMap, OutboundError> {
        let mut outbound = route::outbound_headers(route, incoming, &self.inbound)?;
        if let Some(session) = &who.identity.session_id
            && route.session_affinity_headers
        {
            headers::set_session_affinity(&mut outbound, session);
        }
        let trace = &who.trace;
        let traceparent = trace.traceparent();
        let (parent, state) = if self.propagate_traceparent {
            (Some(traceparent.as_str()), trace.trace_state.as_deref())
        } else {
            (None, None)
        };
        headers::set_trace_context(&mut outbound, parent, state);
        Ok(outbound)
    }

    /// Reads the request body whole, refusing more than `max_body_bytes`. A
    /// client that breaks off its upload is `client_closed`.
    async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, GatewayError> {
        let too_large = || {
            GatewayError::new(
                ErrorKind::RequestTooLarge,
                format!(
                    "the request body is larger than the gateway's limit of {} bytes (max_body_bytes)",
                    self.max_body_bytes
                ),
            )
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(too_large());
        }
        axum::body::to_bytes(body, self.max_body_bytes)
            .await
            .map_err(|e| match body_error(&e) {
                BodyFailure::TooLarge => too_large(),
                BodyFailure::ClientLeft => GatewayError::new(
                    ErrorKind::ClientClosed,
                    format!("the client disconnected while sending its request body: {e}"),
                ),
                BodyFailure::Other => {
                    GatewayError::bad_request(format!("cannot read the request body: {e}"))
                }
            })
    }

    /// Every secret the gateway holds — its inbound tokens and every
    /// route's keys — for capture to scrub from the record.
    fn known_secrets(&self) -> Vec<String> {
        let mut secrets = self.inbound.tokens.clone();
        secrets.extend(self.router.secrets());
        secrets
    }
}

/// What a heartbeat needs before the call is sent: when it starts, the
/// headers it sends, and the count of its beats.
struct Early {
    heartbeat: Heartbeat,
    at: tokio::time::Instant,
    headers: HeaderMap,
    beats: Arc<AtomicU64>,
}

impl Early {
    fn of(heartbeat: Heartbeat, ctx: &CallContext) -> Early {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        identify(&mut headers, ctx);
        Early {
            heartbeat,
            at: tokio::time::Instant::from_std(ctx.arrival.started.mono + heartbeat.after),
            headers,
            beats: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// The session whose sampling parameters a call takes: a session path's,
/// for a POST.
fn sampling_session<'a>(path: &'a CallPath, method: &http::Method) -> Option<&'a str> {
    path.session
        .as_deref()
        .filter(|_| method == http::Method::POST)
}

/// The model the body asks for.
fn model_of(json: Option<&Map<String, Value>>) -> Option<String> {
    let model = json?.get("model")?.as_str()?;
    Some(model.to_string())
}

/// Whether the client asked for a streamed answer.
fn is_streamed(request: &RequestBody) -> bool {
    match request {
        RequestBody::Json(body) => body.get("stream").and_then(Value::as_bool) == Some(true),
        _ => false,
    }
}

/// Who made the call (identity from headers, body and path, field by
/// field) and where its span hangs.
fn who(arrived: &Arrived, json: Option<&Map<String, Value>>) -> Who {
    let headers = &arrived.parts.headers;
    let session = arrived.path.session.as_deref();
    let (identity, errors) = identity::extract(headers, json, session);
    for error in &errors {
        tracing::warn!(trace_id = %arrived.arrival.trace_id, "identity: {error}");
    }
    let trace = TraceContext::for_call(headers, &identity, &arrived.arrival.trace_id);
    Who {
        identity,
        errors,
        trace,
    }
}

/// Where a call on `route` goes, before a worker is chosen.
fn destination(route: &RouteConfig) -> Destination {
    Destination {
        route: Some(route.label().to_string()),
        kind: route.kind,
        raw_bodies: route.raw_bodies,
        ..Destination::default()
    }
}

/// The request body as the record keeps it: the JSON object as forwarded,
/// or the bytes.
fn request_body(json: Option<Map<String, Value>>, body: Bytes) -> RequestBody {
    match json {
        Some(object) => RequestBody::Json(object),
        None => RequestBody::Raw(body),
    }
}

/// The bytes of a rewritten body (when it changed) and the model rename.
type Rewrite = (
    Option<Result<Bytes, serde_json::Error>>,
    Option<(String, String)>,
);

/// Rewrites a JSON body for its route: identity carriers out, the backend's
/// model name in, the vLLM token-data parameters in. Returns the new bytes
/// when the body changed (else it is forwarded byte for byte) and, when the
/// model was renamed, `(requested, sent)`.
fn rewrite(
    object: &mut Map<String, Value>,
    route: &RouteConfig,
    endpoint: Endpoint,
    model: Option<&str>,
) -> Rewrite {
    let stripped = identity::strip_body(object);
    let renamed = match (&route.backend_model, model) {
        (Some(backend), Some(requested)) if backend != requested => {
            object.insert("model".into(), Value::String(backend.clone()));
            Some((requested.to_string(), backend.clone()))
        }
        _ => None,
    };
    let injected = vllm::inject(object, endpoint, route);
    let changed = stripped | renamed.is_some() | injected;
    let bytes = changed.then(|| serde_json::to_vec(object).map(Bytes::from));
    (bytes, renamed)
}

/// The body and headers to send, or why they cannot be.
fn ready(
    rewritten: Option<Result<Bytes, serde_json::Error>>,
    original: Bytes,
    headers: Result<HeaderMap, OutboundError>,
) -> Result<(Bytes, HeaderMap), GatewayError> {
    let body = match rewritten {
        None => original,
        Some(Ok(bytes)) => bytes,
        Some(Err(e)) => {
            return Err(GatewayError::internal(format!(
                "cannot re-encode the body: {e}"
            )));
        }
    };
    Ok((body, headers.map_err(outbound_failure)?))
}

/// The gateway error for upstream headers that cannot be built.
fn outbound_failure(error: OutboundError) -> GatewayError {
    match error {
        OutboundError::MissingSecret => GatewayError::new(
            ErrorKind::UpstreamCredentialsUnavailable,
            "the gateway has no credentials for this route's upstream; the request was not sent",
        ),
        OutboundError::BadProviderData(message) => {
            GatewayError::new(ErrorKind::InvalidProviderData, message)
        }
    }
}

/// Tells the client which record and span its call became:
/// `X-RLLM-Trace-Id` and the gateway span's `traceparent` (with the caller's
/// `tracestate`), so a harness can hang its next step under this call.
fn identify(headers: &mut HeaderMap, ctx: &CallContext) {
    if let Ok(value) = HeaderValue::from_str(&ctx.arrival.trace_id) {
        headers.insert(TRACE_ID_HEADER, value);
    }
    let trace = &ctx.who.trace;
    let traceparent = trace.traceparent();
    headers::set_trace_context(headers, Some(&traceparent), trace.trace_state.as_deref());
}

/// The body as a JSON object, when it is one. Anything else (another JSON
/// value, invalid JSON, not JSON at all) is forwarded untouched.
fn parse_object(body: &[u8]) -> Option<Map<String, Value>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// Why a request body could not be read.
enum BodyFailure {
    /// Past `max_body_bytes`.
    TooLarge,
    /// The client broke off (connection closed or reset mid-body).
    ClientLeft,
    /// Anything else (bad framing).
    Other,
}

fn body_error(error: &axum::Error) -> BodyFailure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return BodyFailure::TooLarge;
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
        {
            return BodyFailure::ClientLeft;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            )
        {
            return BodyFailure::ClientLeft;
        }
        source = e.source();
    }
    BodyFailure::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_objects_are_parsed() {
        assert!(parse_object(b" {\"a\": 1}").is_some());
        assert!(parse_object(b"[1, 2]").is_none());
        assert!(parse_object(b"{not json").is_none());
        assert!(parse_object(b"").is_none());
    }
}
