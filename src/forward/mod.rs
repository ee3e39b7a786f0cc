//! The proxy: every `/v1/...` and `/sessions/{sid}/v1/...` call, end to end.
//!
//! One handler follows one call through the boxes of DESIGN §1:
//!
//! 1. read the body whole, up to `max_body_bytes` (413 beyond it);
//! 2. `identity`: who made the call (headers > body > path);
//! 3. `route`: the route for the model (404 when none); the body loses its
//!    identity carriers, gets the backend model name and, for a vLLM route,
//!    the token-data parameters ([`vllm`]) — a body that does not change is
//!    forwarded byte for byte;
//! 4. the upstream request's headers: `headers` policy, then the route's
//!    credentials and headers (failing closed when a key is missing);
//! 5. send it with the one pooled client to the session's worker, or the
//!    least busy one, moving on when a worker refuses the connection;
//! 6. stream the answer back through [`tee::TeeBody`], which hands a clone of
//!    each chunk to `capture` (and, for a vLLM route, strips vLLM's extra
//!    fields from what the client gets).
//!
//! Failures before an upstream answer (body too large, upstream unreachable,
//! upstream timeout) are answered with the error shape of the API called
//! (OpenAI's, or Anthropic's on `/v1/messages`) and recorded like any other
//! call. Every response carries `X-RLLM-Trace-Id`.

pub mod tee;
pub mod vllm;

use crate::capture::{
    CallContext, Endpoint, Moment, ResponseCapture, SpanPolicy, record_failure, span,
};
use crate::config::{Config, InboundAuth};
use crate::error::GatewayError;
use crate::headers::{self, TRACE_ID_HEADER};
use crate::identity;
use crate::metrics::Metrics;
use crate::record::CallError;
use crate::route::{self, NoRoute, OutboundError, Router};
use crate::store::StoreWriter;
use crate::trace_context::TraceContext;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
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
    store_embeddings: bool,
    spans: SpanPolicy,
    propagate_traceparent: bool,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    /// Builds the forwarder and its pooled HTTP client.
    pub fn new(
        config: &Config,
        router: Arc<Router>,
        store: StoreWriter,
        metrics: Arc<Metrics>,
    ) -> Result<Forwarder, String> {
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
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Forwarder {
            client,
            router,
            inbound: config.auth.clone(),
            store,
            max_body_bytes: config.max_body_bytes,
            store_embeddings: config.capture.store_embeddings,
            spans: match &config.export {
                None => SpanPolicy::None,
                Some(e) if e.include_content => SpanPolicy::WithContent,
                Some(_) => SpanPolicy::WithoutContent,
            },
            propagate_traceparent: config.propagate_traceparent,
            metrics,
        })
    }
}

/// The axum handler for every proxied path.
pub async fn proxy(State(forwarder): State<Arc<Forwarder>>, request: Request) -> Response {
    forwarder.handle(request).await
}

impl Forwarder {
    async fn handle(&self, request: Request) -> Response {
        let started = Moment::now();
        let trace_id = uuid::Uuid::now_v7().to_string();
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let (path_session, api_path) = split_session_path(&path);
        let endpoint = Endpoint::from_api_path(&api_path);
        let mut ctx = CallContext {
            trace: TraceContext::for_call(&parts.headers, &Default::default(), &trace_id),
            trace_id,
            provider: endpoint.protocol(),
            spans: self.spans,
            started,
            method: parts.method.to_string(),
            path: path.clone(),
            endpoint,
            identity: Default::default(),
            identity_errors: Vec::new(),
            upstream: String::new(),
            route: None,
            model_rewrite: None,
            request_headers: headers::for_storage(&parts.headers),
            request_content_type: parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            request_json: None,
            request_body: Bytes::new(),
            store_embeddings: self.store_embeddings,
            secrets: self.known_secrets(),
            in_flight: self.metrics.in_flight(),
        };

        // 1. The body, whole, within the limit.
        let body = match self.read_body(&parts.headers, body).await {
            Ok(body) => body,
            Err(error) => {
                (ctx.identity, ctx.identity_errors) =
                    identity::extract(&parts.headers, None, path_session.as_deref());
                ctx.trace = TraceContext::for_call(&parts.headers, &ctx.identity, &ctx.trace_id);
                if let Ok(route) = self.router.route_for(None) {
                    ctx.route = route.config.name.clone();
                    ctx.provider = span::provider(route.config.kind, endpoint.protocol());
                }
                return self.fail(ctx, error);
            }
        };

        // 2. Identity.
        let mut json = parse_object(&body);
        let (identity, identity_errors) =
            identity::extract(&parts.headers, json.as_ref(), path_session.as_deref());
        for error in &identity_errors {
            tracing::warn!(trace_id = %ctx.trace_id, "identity: {error}");
        }
        ctx.trace = TraceContext::for_call(&parts.headers, &identity, &ctx.trace_id);
        ctx.identity = identity;
        ctx.identity_errors = identity_errors;

        // 3. Route, by model. The body loses its identity carriers and, as
        // the route says, gets the backend's model name and the vLLM
        // token-data parameters. A body that does not change is forwarded
        // byte for byte.
        let model = json
            .as_ref()
            .and_then(|b| b.get("model"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let route = match self.router.route_for(model.as_deref()) {
            Ok(route) => route,
            Err(NoRoute(message)) => {
                let error = GatewayError::new(StatusCode::NOT_FOUND, "model_not_found", message);
                return self.fail(ctx, error);
            }
        };
        let config = &route.config;
        ctx.route = config.name.clone();
        ctx.provider = span::provider(config.kind, endpoint.protocol());
        let client_wants_logprobs = vllm::client_wants_logprobs(json.as_ref());
        let changed = json.as_mut().is_some_and(|object| {
            let stripped = identity::strip_body(object);
            let renamed = match (&config.backend_model, &model) {
                (Some(backend), Some(requested)) if backend != requested => {
                    object.insert("model".into(), Value::String(backend.clone()));
                    ctx.model_rewrite = Some((requested.clone(), backend.clone()));
                    true
                }
                _ => false,
            };
            let injected = vllm::inject(object, ctx.endpoint, config);
            stripped | renamed | injected
        });
        let forward_body = match &json {
            Some(object) if changed => match serde_json::to_vec(object) {
                Ok(bytes) => Bytes::from(bytes),
                Err(e) => {
                    let error = GatewayError::internal(format!("cannot re-encode the body: {e}"));
                    return self.fail(ctx, error);
                }
            },
            _ => body.clone(),
        };
        match json {
            Some(object) => ctx.request_json = Some(object),
            None => ctx.request_body = body,
        }

        // 4. What the upstream request carries.
        let mut outbound = match route::outbound_headers(config, &parts.headers, &self.inbound) {
            Ok(outbound) => outbound,
            Err(OutboundError::MissingSecret) => {
                let error = GatewayError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_credentials_unavailable",
                    "the gateway has no credentials for this route's upstream; the request was not sent",
                );
                return self.fail(ctx, error);
            }
            Err(OutboundError::BadProviderData(message)) => {
                let error =
                    GatewayError::new(StatusCode::BAD_REQUEST, "invalid_provider_data", message);
                return self.fail(ctx, error);
            }
        };
        let traceparent = ctx.trace.traceparent();
        let (parent, state) = if self.propagate_traceparent {
            (Some(traceparent.as_str()), ctx.trace.trace_state.as_deref())
        } else {
            (None, None)
        };
        headers::set_trace_context(&mut outbound, parent, state);

        // 5. Send, to the session's worker or the least busy one; a worker
        // that refuses the connection (nothing was sent) is skipped for the
        // next.
        let mut tried: Vec<String> = Vec::new();
        let (lease, upstream) = loop {
            let Some(lease) = route.pool.pick(ctx.identity.session_id.as_deref(), &tried) else {
                let error = GatewayError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    "no worker of this route accepted the connection",
                );
                return self.fail(ctx, error);
            };
            let base = &lease.worker().url;
            ctx.upstream = base.to_string();
            let sent = self
                .client
                .request(
                    parts.method.clone(),
                    route::target_url(base, &api_path, parts.uri.query()),
                )
                .headers(outbound.clone())
                .body(forward_body.clone())
                .send()
                .await;
            match sent {
                Ok(response) => break (lease, response),
                Err(e) if e.is_connect() && tried.len() + 1 < route.pool.len() => {
                    tracing::warn!(worker = %lease.worker().id, "connect failed, trying another worker: {}", describe(&e));
                    tried.push(lease.worker().id.clone());
                }
                Err(e) => return self.fail(ctx, request_failure(&e)),
            }
        };

        // 6. Stream the answer back, teeing it to capture.
        let status = upstream.status();
        let length = upstream.content_length();
        let upstream_headers = upstream.headers().clone();
        let mut client_headers = headers::client_response_headers(&upstream_headers);
        identify(&mut client_headers, &ctx);
        let stripper = (config.strip_vllm_fields
            && status.is_success()
            && matches!(
                ctx.endpoint,
                Endpoint::ChatCompletions | Endpoint::Completions
            ))
        .then(|| {
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
            trace_id = %ctx.trace_id,
            method = %parts.method,
            path = %ctx.path,
            route = config.label(),
            status = status.as_u16(),
            "proxied"
        );
        let capture =
            ResponseCapture::new(ctx, status.as_u16(), upstream_headers, self.store.clone());
        let body = tee::TeeBody::new(
            Box::pin(upstream.bytes_stream()),
            capture,
            length,
            stripper,
            lease,
        );
        let mut response = Response::new(Body::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = client_headers;
        response
    }

    /// Reads the request body whole, refusing more than `max_body_bytes`.
    async fn read_body(
        &self,
        headers: &http::HeaderMap,
        body: Body,
    ) -> Result<Bytes, GatewayError> {
        let too_large = || {
            GatewayError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
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

    /// Answers a call the gateway failed, and records it.
    fn fail(&self, ctx: CallContext, error: GatewayError) -> Response {
        tracing::debug!(trace_id = %ctx.trace_id, path = %ctx.path, "{error}");
        let protocol = ctx.endpoint.protocol();
        let mut response = error.clone().into_response_for(protocol);
        identify(response.headers_mut(), &ctx);
        record_failure(ctx, &error, &self.store);
        response
    }
}

/// Tells the client which record and span its call became:
/// `X-RLLM-Trace-Id` and the gateway span's `traceparent` (with the caller's
/// `tracestate`), so a harness can hang its next step under this call.
fn identify(headers: &mut http::HeaderMap, ctx: &CallContext) {
    if let Ok(value) = HeaderValue::from_str(&ctx.trace_id) {
        headers.insert(TRACE_ID_HEADER, value);
    }
    let traceparent = ctx.trace.traceparent();
    headers::set_trace_context(
        headers,
        Some(&traceparent),
        ctx.trace.trace_state.as_deref(),
    );
}

/// Splits `/sessions/{sid}/v1/...` into the session and the `/v1/...` path;
/// any other path has no session and is its own API path.
pub fn split_session_path(path: &str) -> (Option<String>, String) {
    let Some(rest) = path.strip_prefix("/sessions/") else {
        return (None, path.to_string());
    };
    let (sid, api) = rest.split_once('/').unwrap_or((rest, ""));
    let sid = percent_encoding::percent_decode_str(sid)
        .decode_utf8_lossy()
        .into_owned();
    (Some(sid), format!("/{api}"))
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

/// A reqwest error's full cause chain, without the URL (which could carry
/// credentials in its query).
fn describe(error: &reqwest::Error) -> String {
    let mut message = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    let top = error.to_string();
    message.push_str(top.split(" for url").next().unwrap_or(&top));
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}

/// The gateway error for a request that got no upstream response.
fn request_failure(error: &reqwest::Error) -> GatewayError {
    if error.is_timeout() {
        GatewayError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("the upstream did not answer in time: {}", describe(error)),
        )
    } else if error.is_connect() {
        GatewayError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            format!("cannot connect to the upstream: {}", describe(error)),
        )
    } else {
        GatewayError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("the upstream request failed: {}", describe(error)),
        )
    }
}

/// The record error for an upstream body that failed mid-stream.
fn body_failure(error: &reqwest::Error) -> CallError {
    let kind = if error.is_timeout() {
        "upstream_timeout"
    } else {
        "upstream_stream_error"
    };
    CallError {
        kind: kind.into(),
        message: format!("the upstream response broke off: {}", describe(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_paths_split() {
        assert_eq!(
            split_session_path("/sessions/ep%2017/v1/chat/completions"),
            (Some("ep 17".into()), "/v1/chat/completions".into())
        );
        assert_eq!(
            split_session_path("/v1/models"),
            (None, "/v1/models".into())
        );
    }

    #[test]
    fn only_json_objects_are_parsed() {
        assert!(parse_object(b" {\"a\": 1}").is_some());
        assert!(parse_object(b"[1, 2]").is_none());
        assert!(parse_object(b"{not json").is_none());
        assert!(parse_object(b"").is_none());
    }
}
