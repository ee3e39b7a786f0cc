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
//!    session's worker or the least busy one, moving on when a worker
//!    refuses the connection;
//!
//! and then [`Forwarder::respond`] streams the answer back through
//! [`tee::TeeBody`], which hands a clone of each chunk to `capture` (and, for
//! a vLLM route, strips vLLM's extra fields from what the client gets).
//!
//! A stage that fails returns [`Failed`]: the call as far as it is known and
//! the gateway's error. [`Forwarder::fail`], the one place failures end,
//! answers in the error shape of the API called (OpenAI's, or Anthropic's on
//! `/v1/messages`) and records the call like any other. Every response
//! carries `X-RLLM-Trace-Id`.

pub mod failure;
pub mod hop;
pub mod sampling;
pub mod tee;
pub mod vllm;
pub mod weights;

use crate::capture::{
    Arrival, CallContext, CaptureSettings, Destination, Moment, RequestBody, ResponseCapture,
    SpanPolicy, Who, record_failure,
};
use crate::config::{Config, InboundAuth, RouteConfig};
use crate::error::GatewayError;
use crate::headers::{self, TRACE_ID_HEADER};
use crate::identity;
use crate::metrics::{InFlight, Metrics};
use crate::protocol::{CallPath, Endpoint};
use crate::record::ErrorKind;
use crate::route::{self, Lease, NoRoute, OutboundError, Route, Router};
use crate::server::session_path::OriginalPath;
use crate::store::StoreWriter;
use crate::trace_context::TraceContext;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Everything the proxy handler needs: the pooled client, the routes, the
/// inbound auth (whose token must not travel upstream), the store, the
/// metrics, and the limits.
pub struct Forwarder {
    client: reqwest::Client,
    router: Arc<Router>,
    inbound: InboundAuth,
    store: StoreWriter,
    max_body_bytes: usize,
    settings: CaptureSettings,
    propagate_traceparent: bool,
    metrics: Arc<Metrics>,
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
    /// Builds the forwarder and its pooled HTTP client.
    pub fn new(
        config: &Config,
        router: Arc<Router>,
        store: StoreWriter,
        metrics: Arc<Metrics>,
    ) -> Result<Forwarder, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            // A gateway passes redirects to its client; it does not follow them.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(std::time::Duration::from_secs(90));
        if let Some(t) = config.read_timeout {
            builder = builder.read_timeout(t);
        }
        if let Some(t) = config.request_timeout {
            builder = builder.timeout(t);
        }
        Ok(Forwarder {
            client: builder.build()?,
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
            },
            propagate_traceparent: config.propagate_traceparent,
            metrics,
            hop: hop::Hop::new(),
            weights: Arc::default(),
            sampling: Arc::default(),
        })
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

/// Stage 3: the route is chosen and the upstream request is ready.
struct Routed<'r> {
    ctx: CallContext,
    route: &'r Route,
    parts: Parts,
    api_path: String,
    body: Bytes,
    headers: HeaderMap,
    client_wants_logprobs: bool,
}

/// Stage 4: the upstream answered with its status and headers.
struct Sent<'r> {
    ctx: CallContext,
    route: &'r Route,
    lease: Lease,
    upstream: reqwest::Response,
    client_wants_logprobs: bool,
}

/// A stage that could not go on: the call as far as it is known, and why.
struct Failed {
    ctx: CallContext,
    error: GatewayError,
}

impl Forwarder {
    async fn handle(&self, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let arrived = self.arrive(parts);
        let inbound = match self.read(arrived, body).await {
            Ok(inbound) => inbound,
            Err(failed) => return self.fail(failed),
        };
        let mut routed = match self.route(inbound) {
            Ok(routed) => routed,
            Err(failed) => return self.fail(failed),
        };
        if let Err(error) = self.hop.pass(&routed.parts, &mut routed.headers) {
            return self.fail(Box::new(Failed {
                ctx: routed.ctx,
                error,
            }));
        }
        match self.send(routed).await {
            Ok(sent) => self.respond(sent),
            Err(failed) => self.fail(failed),
        }
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
    /// cannot be read still leaves the identity its headers and path carry.
    async fn read(&self, arrived: Arrived, body: Body) -> Result<Inbound, Box<Failed>> {
        let body = match self.read_body(&arrived.parts.headers, body).await {
            Ok(body) => body,
            Err(error) => {
                let who = who(&arrived, None);
                let destination = self
                    .router
                    .route_for(None)
                    .map(|route| destination(&route.config))
                    .unwrap_or_default();
                let ctx = self.context(
                    arrived.arrival,
                    arrived.in_flight,
                    who,
                    RequestBody::None,
                    destination,
                );
                return Err(Box::new(Failed { ctx, error }));
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

    /// Stage 3: picks the route by model, rewrites the body for it, and
    /// builds the upstream request's headers.
    fn route(&self, inbound: Inbound) -> Result<Routed<'_>, Box<Failed>> {
        let Inbound {
            arrived,
            mut who,
            body,
            mut json,
        } = inbound;
        let Arrived {
            arrival,
            parts,
            path,
            in_flight,
        } = arrived;
        let model = json
            .as_ref()
            .and_then(|b| b.get("model"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let route = match self.router.route_for(model.as_deref()) {
            Ok(route) => route,
            Err(NoRoute(message)) => {
                self.stamp_version(&mut who, None);
                let request = request_body(json, body);
                let ctx = self.context(arrival, in_flight, who, request, Destination::default());
                let error = GatewayError::new(ErrorKind::ModelNotFound, message);
                return Err(Box::new(Failed { ctx, error }));
            }
        };
        self.stamp_version(&mut who, route.config.name.as_deref());
        let mut destination = destination(&route.config);
        let client_wants_logprobs = vllm::client_wants_logprobs(json.as_ref());
        let (forward_body, renamed) = match json.as_mut() {
            Some(object) => {
                // The session's sampling parameters, for a session path's
                // POSTs (as rLLM applies them), after the vLLM parameters.
                let sampled = path
                    .session
                    .as_deref()
                    .filter(|_| parts.method == http::Method::POST)
                    .is_some_and(|sid| self.sampling.apply(sid, object));
                let (bytes, renamed) =
                    rewrite(object, &route.config, arrival.endpoint, model.as_deref());
                let bytes =
                    bytes.or_else(|| sampled.then(|| serde_json::to_vec(object).map(Bytes::from)));
                (bytes, renamed)
            }
            None => (None, None),
        };
        destination.model_rewrite = renamed;
        let mut headers = self.outbound_headers(&route.config, &parts.headers, &who.trace);
        if let (Ok(headers), Some(session)) = (&mut headers, &who.identity.session_id)
            && route.config.session_affinity_headers
        {
            headers::set_session_affinity(headers, session);
        }
        let request = request_body(json, body.clone());
        let ctx = self.context(arrival, in_flight, who, request, destination);
        let (body, headers) = match ready(forward_body, body, headers) {
            Ok(ready) => ready,
            Err(error) => return Err(Box::new(Failed { ctx, error })),
        };
        Ok(Routed {
            ctx,
            route,
            parts,
            api_path: path.api_path,
            body,
            headers,
            client_wants_logprobs,
        })
    }

    /// Stage 4: sends the request to the session's worker or the least busy
    /// one; a worker that refuses the connection (nothing was sent) is
    /// skipped for the next.
    async fn send<'r>(&self, routed: Routed<'r>) -> Result<Sent<'r>, Box<Failed>> {
        let Routed {
            mut ctx,
            route,
            parts,
            api_path,
            body,
            headers,
            client_wants_logprobs,
        } = routed;
        let session = ctx.who.identity.session_id.clone();
        let mut tried: Vec<String> = Vec::new();
        loop {
            let Some(lease) = route.pool.pick(session.as_deref(), &tried) else {
                let error = GatewayError::new(
                    ErrorKind::UpstreamUnreachable,
                    "no worker of this route accepted the connection",
                );
                return Err(Box::new(Failed { ctx, error }));
            };
            let base = &lease.worker().url;
            ctx.destination.upstream = base.to_string();
            let url = route::target_url(base, &api_path, parts.uri.query());
            let sent = self
                .client
                .request(parts.method.clone(), url)
                .headers(headers.clone())
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(upstream) => {
                    return Ok(Sent {
                        ctx,
                        route,
                        lease,
                        upstream,
                        client_wants_logprobs,
                    });
                }
                Err(e) if e.is_connect() && tried.len() + 1 < route.pool.len() => {
                    let message = failure::describe(&e);
                    let worker = &lease.worker().id;
                    tracing::warn!(%worker, "connect failed, trying another worker: {message}");
                    tried.push(worker.clone());
                }
                Err(e) => {
                    let error = failure::before_answer(&e);
                    return Err(Box::new(Failed { ctx, error }));
                }
            }
        }
    }

    /// Streams the upstream's answer back, teeing it to capture.
    fn respond(&self, sent: Sent<'_>) -> Response {
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
        let strips = route.config.strip_vllm_fields
            && status.is_success()
            && ctx.arrival.endpoint.has_token_data();
        let stripper = strips.then(|| {
            let stream = upstream_headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("text/event-stream"));
            vllm::Stripper::new(stream, !client_wants_logprobs)
        });
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
        let capture =
            ResponseCapture::new(ctx, status.as_u16(), upstream_headers, self.store.clone());
        let stream = Box::pin(upstream.bytes_stream());
        let body = tee::TeeBody::new(stream, capture, length, stripper, lease);
        let mut response = Response::new(Body::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = client_headers;
        response
    }

    /// Answers a call the gateway failed, and records it: the one place a
    /// failed stage ends.
    fn fail(&self, failed: Box<Failed>) -> Response {
        let Failed { ctx, error } = *failed;
        tracing::debug!(trace_id = %ctx.arrival.trace_id, path = %ctx.arrival.path, "{error}");
        let protocol = ctx.arrival.endpoint.protocol();
        let mut response = error.clone().into_response_for(protocol);
        identify(response.headers_mut(), &ctx);
        record_failure(ctx, &error, &self.store);
        response
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
            settings: self.settings,
            secrets: self.known_secrets(),
            in_flight,
        }
    }

    /// The upstream request's headers: the header policy and the route's
    /// credentials, then the trace context (the gateway's span is the
    /// parent, unless propagation is off).
    fn outbound_headers(
        &self,
        route: &RouteConfig,
        incoming: &HeaderMap,
        trace: &TraceContext,
    ) -> Result<HeaderMap, OutboundError> {
        let mut outbound = route::outbound_headers(route, incoming, &self.inbound)?;
        let traceparent = trace.traceparent();
        let (parent, state) = if self.propagate_traceparent {
            (Some(traceparent.as_str()), trace.trace_state.as_deref())
        } else {
            (None, None)
        };
        headers::set_trace_context(&mut outbound, parent, state);
        Ok(outbound)
    }

    /// Reads the request body whole, refusing more than `max_body_bytes`.
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
            .map_err(|e| {
                if is_length_limit(&e) {
                    too_large()
                } else {
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
        route: route.name.clone(),
        kind: route.kind,
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

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
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
