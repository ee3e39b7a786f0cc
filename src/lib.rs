//! tracegate: a trace-recording observability gateway for LLM traffic.
//!
//! Agent harnesses and eval runners point their OpenAI or Anthropic SDK at
//! tracegate. It forwards each call to the model server, streams the answer
//! back untouched, and records the call as a [`record::TraceRecord`] in a
//! local SQLite store.
//!
//! The modules follow one request (`docs/architecture.md` draws the path),
//! and can be read in this order:
//!
//! * [`server`] binds, routes, and shuts down without losing a record;
//!   [`auth`] checks the gateway's own token first;
//! * [`forward`] takes the call through its stages — arrive, read, route,
//!   send — and streams the answer back, teeing it; on the way,
//!   [`protocol`] names the endpoint, [`identity`] reads who made the call
//!   (`X-RLLM-*` headers, body, path), [`trace_context`] where its span
//!   hangs, [`route`] picks the upstream and [`headers`] says which headers
//!   cross;
//! * [`capture`] turns request and response bytes into a record;
//! * [`record`] is that record (and its span); [`store`] keeps both;
//! * [`export`] sends the spans to an OTLP collector;
//! * [`otlp`] receives the harness's own spans (OTLP/HTTP), stored and
//!   forwarded with the calls';
//! * [`api`] serves the records back over HTTP, with the [`feedback`]
//!   (rewards, scores) harnesses attach to them, and sessions as
//!   [`trajectory`]s: token sequences with loss masks, for trainers,
//!   which [`columnar`] writes as Parquet.
//!
//! Around them: [`config`] (one validated configuration), [`error`] (the
//! errors the gateway answers with), [`metrics`] (what `/metrics` reports,
//! observed once per finished record), [`call_log`] (the log line of each
//! finished record), [`vocabulary`] and [`sync`] (two
//! rules the whole crate follows: wire-named enums, poisoned locks),
//! [`time_bound`] (`since` and `until` as the API and the CLI read them),
//! [`cli`] (the `tracegate` command), [`mock_upstream`] (a deterministic
//! model server) and [`demo`].

pub mod api;
pub mod auth;
pub mod call_log;
pub mod capture;
pub mod cli;
pub mod columnar;
pub mod config;
pub mod demo;
pub mod error;
pub mod export;
pub mod feedback;
pub mod forward;
pub mod headers;
pub mod identity;
pub mod metrics;
pub mod mock_upstream;
pub mod otlp;
pub mod protocol;
pub mod record;
pub mod route;
pub mod server;
pub mod store;
pub mod sync;
pub mod time_bound;
pub mod trace_context;
pub mod trajectory;
pub mod vocabulary;
