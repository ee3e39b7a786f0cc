//! `kind = "auto"`: what an upstream is, asked once at start.
//!
//! Token data (logprobs, token ids) is what RL training needs from every
//! call, and vLLM gives it when asked — but OpenAI, Anthropic and many
//! OpenAI-compatible servers refuse parameters they do not know. So a route
//! whose kind is not written (`auto`, the default) asks its upstream
//! `GET /v1/models` once, before the gateway serves: vLLM answers
//! `owned_by: "vllm"`, and the route then behaves exactly as `kind = "vllm"`;
//! any other answer, an error or no answer within [`PROBE_TIMEOUT`] makes it
//! `generic`, which injects nothing. Routes that speak the Anthropic
//! protocol and hosted OpenAI/Anthropic APIs are never probed (config
//! settles them as `generic`), nor are written kinds.
//!
//! The probe goes to each worker of the pool in turn until one answers,
//! with the route's credentials and static headers (what a call would
//! carry, minus the caller's), and a `User-Agent` saying what it is. Every
//! route's decision is logged, one line each, and shown by
//! `GET /admin/routes`. Workers added at run time join a route whose kind
//! is already decided: they are not probed.

use super::outbound::outbound_headers;
use super::target_url;
use crate::config::{InboundAuth, KindReason, RouteConfig, UpstreamKind};
use http::HeaderMap;
use http::header::{HeaderValue, USER_AGENT};
use serde_json::Value;
use std::time::Duration;

/// How long a probe may take: start waits for it.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The `User-Agent` of a probe, so an upstream (or its log) can tell it
/// from a call.
pub const PROBE_USER_AGENT: &str = concat!("tracegate/", env!("CARGO_PKG_VERSION"), " kind-probe");

/// The owner vLLM names in its model list.
const VLLM_OWNER: &str = "vllm";

/// Decides every `auto` route's kind (probing its upstream) and logs each
/// route's kind and why, one line per route.
pub async fn decide(routes: Vec<RouteConfig>) -> Vec<RouteConfig> {
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .connect_timeout(PROBE_TIMEOUT)
        .build();
    // Probed side by side: start waits at most one probe's timeout per
    // worker, however many routes there are.
    let decided = routes.into_iter().map(|mut route| {
        let client = &client;
        async move {
            if route.kind == UpstreamKind::Auto {
                let reason = match client {
                    Ok(client) => probe(client, &route).await,
                    Err(e) => KindReason::ProbeFailed(e.to_string()),
                };
                route.set_kind(kind_of(&reason), reason);
            }
            log(&route);
            route
        }
    });
    futures_util::future::join_all(decided).await
}

/// `vllm` when the probe found vLLM, else `generic`.
fn kind_of(reason: &KindReason) -> UpstreamKind {
    match reason {
        KindReason::Probed { owned_by } if owned_by == VLLM_OWNER => UpstreamKind::Vllm,
        _ => UpstreamKind::Generic,
    }
}

/// `route gpu → http://vllm:8000/v1: kind vllm (auto: GET /v1/models says owned_by "vllm")`.
/// A failed probe is a warning: the route gets no token data.
fn log(route: &RouteConfig) {
    let upstreams: Vec<&str> = route.workers.iter().map(|w| w.url.as_str()).collect();
    let line = format!(
        "route {} → {}: kind {} ({})",
        route.label(),
        upstreams.join(", "),
        route.kind.as_str(),
        route.kind_reason
    );
    match route.kind_reason {
        KindReason::ProbeFailed(_) => tracing::warn!("{line}"),
        _ => tracing::info!("{line}"),
    }
}

/// Asks the route's workers, in order, for their model list; the first
/// answer decides.
async fn probe(client: &reqwest::Client, route: &RouteConfig) -> KindReason {
    let headers = match probe_headers(route) {
        Ok(headers) => headers,
        Err(reason) => return reason,
    };
    let mut failure = KindReason::ProbeFailed("the route has no workers".into());
    for worker in &route.workers {
        let url = target_url(&worker.url, "/v1/models", None);
        match models_owner(client.get(url).headers(headers.clone())).await {
            Ok(owned_by) => return KindReason::Probed { owned_by },
            Err(why) => failure = why,
        }
    }
    failure
}

/// What a call to this route carries that is not the caller's: its
/// credentials and static headers.
fn probe_headers(route: &RouteConfig) -> Result<HeaderMap, KindReason> {
    let mut headers = outbound_headers(route, &HeaderMap::new(), &InboundAuth::default())
        .map_err(|_| KindReason::ProbeFailed("a credential's variable is unset".into()))?;
    headers.insert(USER_AGENT, HeaderValue::from_static(PROBE_USER_AGENT));
    Ok(headers)
}

/// The `owned_by` of the first model in the answer (empty when absent), or
/// why the probe failed.
async fn models_owner(request: reqwest::RequestBuilder) -> Result<String, KindReason> {
    let failed = KindReason::ProbeFailed;
    let response = request.send().await.map_err(|e| failed(without_url(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(format!("GET /v1/models answered {status}")));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| failed(without_url(&e)))?;
    let list: Value =
        serde_json::from_slice(&body).map_err(|_| failed("not a model list".to_string()))?;
    let owner = list
        .pointer("/data/0/owned_by")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(owner.to_string())
}

/// A request error without its URL (the log line names the upstream).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    kind.to_string()
}
