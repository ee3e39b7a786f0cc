//! tracegate: a trace-recording observability gateway for LLM traffic.
//!
//! Agent harnesses and eval runners point their OpenAI or Anthropic SDK at
//! tracegate. It forwards each call to the model server, streams the answer
//! back untouched, and records the call as a [`record::TraceRecord`] in a
//! local SQLite store.
//!
//! The modules follow one request (DESIGN §1), and can be read in this order:
//!
//! * [`server`] binds, routes, and shuts down without losing a record;
//!   [`auth`] checks the gateway's own token first;
//! * [`identity`] reads who made the call (`X-RLLM-*` headers, body, path),
//!   [`trace_context`] where its span hangs (`traceparent`, run, parent);
//! * [`route`] picks the upstream; [`headers`] says which headers cross;
//! * [`forward`] sends the call and streams the answer back, teeing it;
//! * [`capture`] turns request and response bytes into a record;
//! * [`record`] is that record (and its span); [`store`] keeps both;
//! * [`export`] sends the spans to an OTLP collector;
//! * [`api`] serves the records back over HTTP.
//!
//! Around them: [`config`] (one validated configuration), [`error`] (the
//! errors the gateway answers with), [`metrics`] (what `/metrics` reports,
//! observed by forward, capture, store and export), [`cli`] (the `tracegate` command),
//! [`mock_upstream`] (a deterministic model server) and [`demo`].

pub mod api;
pub mod auth;
pub mod capture;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod export;
pub mod forward;
pub mod headers;
pub mod identity;
pub mod metrics;
pub mod mock_upstream;
pub mod protocol;
pub mod record;
pub mod route;
pub mod server;
pub mod store;
pub mod sync;
pub mod trace_context;
pub mod vocabulary;
