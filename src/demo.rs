//! `tracegate demo`: the whole product in one command, with no API key.
//!
//! It starts the mock model server and a gateway in-process on free ports,
//! plays a small agent episode through the gateway the way a harness would —
//! one run, two sessions, three steps each (a plain call, a call that makes a
//! tool call, a streamed call), every call stamped with `X-RLLM-*` identity
//! and each step naming the previous one as its parent — then prints the
//! run → session → step tree from the store, and where the database is.
//! With `--otlp-endpoint` the episode's spans go to a collector too: one
//! trace for the run, each step a child of the previous one.

use crate::config::{Config, ConfigError, ServeArgs};
use crate::mock_upstream::{self, MockOptions};
use crate::record::TraceRecord;
use crate::server::{Server, StartError};
use crate::store::{Reader, SessionFilter, TraceFilter};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;

/// Options of `tracegate demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// SQLite database file to record into.
    #[arg(long, default_value = crate::config::DEFAULT_DB, value_name = "PATH")]
    pub db: PathBuf,
    /// Also export the episode's spans to this OTLP collector (the
    /// OTEL_EXPORTER_OTLP_* variables work too).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: grpc or http/protobuf.
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,
}

/// Why the demo could not play.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The mock model server did not start.
    #[error("cannot start the mock upstream: {0}")]
    MockUpstream(std::io::Error),
    /// The gateway's configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The gateway did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The gateway's task panicked or was cancelled.
    #[error("the gateway task failed: {0}")]
    GatewayTask(#[from] tokio::task::JoinError),
    /// The records could not be flushed to the store.
    #[error("flush failed: {0}")]
    Flush(reqwest::Error),
    /// A step's call did not get an answer.
    #[error("step {step} of {session} failed: {source}")]
    Send {
        /// The step (1 to 3).
        step: u32,
        /// The session it belongs to.
        session: String,
        /// Why the call failed.
        source: reqwest::Error,
    },
    /// A step's answer could not be read.
    #[error("step {step} of {session}: {source}")]
    Read {
        /// The step (1 to 3).
        step: u32,
        /// The session it belongs to.
        session: String,
        /// Why the body could not be read.
        source: reqwest::Error,
    },
    /// A step was answered with an error status.
    #[error("step {step} of {session} answered {status}: {body}")]
    Refused {
        /// The step (1 to 3).
        step: u32,
        /// The session it belongs to.
        session: String,
        /// The status answered.
        status: http::StatusCode,
        /// The answer's body.
        body: String,
    },
    /// The store could not be read back.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The run is not in the store.
    #[error("run {0} was not recorded")]
    NotRecorded(String),
}

/// Runs the demo; returns the report to print.
pub async fn run(args: &DemoArgs) -> Result<String, DemoError> {
    let db = args.db.as_path();
    let mock_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(DemoError::MockUpstream)?;
    let mock = mock_upstream::start(
        mock_listener,
        MockOptions {
            chunks: 6,
            chunk_delay_ms: 5,
            ..MockOptions::default()
        },
    )
    .map_err(DemoError::MockUpstream)?;

    let config = Config::load(&ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        db: Some(db.display().to_string()),
        upstream: vec![mock.base_url()],
        otlp_endpoint: args.otlp_endpoint.clone(),
        otlp_protocol: args.otlp_protocol.clone(),
        ..ServeArgs::default()
    })?;
    let server = Server::bind(&config).await?;
    let gateway = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let run_id = format!(
        "demo-run-{}",
        &uuid::Uuid::now_v7().simple().to_string()[..12]
    );
    let played = play_episode(&gateway, &run_id).await;
    let flushed = reqwest::Client::new()
        .post(format!("{gateway}/admin/flush"))
        .send()
        .await
        .map_err(DemoError::Flush);

    let _ = stop.send(());
    serving.await??;
    mock.stop();
    played?;
    flushed?;

    print_tree(db, &run_id)
}

/// The tasks the episode's sessions work on, one session each.
const TASKS: [&str; 2] = [
    "Find why the nightly build is red",
    "Summarise the open pull requests",
];

/// Plays one run of two sessions, three steps each.
async fn play_episode(gateway: &str, run_id: &str) -> Result<(), DemoError> {
    let client = reqwest::Client::new();
    for (s, task) in TASKS.iter().enumerate() {
        let session = Session {
            client: &client,
            gateway,
            run_id,
            id: format!("{run_id}-session-{}", s + 1),
        };
        session.play(task).await?;
    }
    Ok(())
}

/// One session of the episode: a plain call, a call offered a tool, and a
/// streamed call, each naming the previous one as its parent.
struct Session<'a> {
    client: &'a reqwest::Client,
    gateway: &'a str,
    run_id: &'a str,
    id: String,
}

impl Session<'_> {
    /// Plays the three steps, keeping the conversation going like an agent
    /// would.
    async fn play(&self, task: &str) -> Result<(), DemoError> {
        let mut messages = vec![json!({"role": "user", "content": task})];
        let mut parent: Option<String> = None;
        for step in 1..=3 {
            let (trace_id, text) = self
                .call(step, step_body(step, &messages), parent.as_deref())
                .await?;
            parent = trace_id;
            if step == 2 {
                let answer: Value = serde_json::from_str(&text).unwrap_or_default();
                let message = answer["choices"][0]["message"].clone();
                let call_id = message["tool_calls"][0]["id"]
                    .as_str()
                    .unwrap_or("call")
                    .to_string();
                messages.push(message);
                messages.push(
                    json!({"role": "tool", "tool_call_id": call_id, "content": "3 results found"}),
                );
            } else {
                messages.push(json!({"role": "assistant", "content": "Noted."}));
                messages.push(json!({"role": "user", "content": "Go on."}));
            }
        }
        Ok(())
    }

    /// Makes step `step`'s call, stamped with the episode's identity;
    /// returns its trace id and its answer's text.
    async fn call(
        &self,
        step: u32,
        body: Value,
        parent: Option<&str>,
    ) -> Result<(Option<String>, String), DemoError> {
        let mut request = self
            .client
            .post(format!("{}/v1/chat/completions", self.gateway))
            .header("X-RLLM-Run-Id", self.run_id)
            .header("X-RLLM-Session-Id", &self.id)
            .header("X-RLLM-Harness", "tracegate-demo")
            .header("X-RLLM-Step-Id", step.to_string())
            .header("X-RLLM-Project", "demo")
            .header("X-RLLM-Experiment", "walkthrough")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(parent) = parent {
            request = request.header("X-RLLM-Parent-Span-Id", parent);
        }
        let session = || self.id.clone();
        let response = request.send().await.map_err(|source| DemoError::Send {
            step,
            session: session(),
            source,
        })?;
        let trace_id = response
            .headers()
            .get(crate::headers::TRACE_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let status = response.status();
        let text = response.text().await.map_err(|source| DemoError::Read {
            step,
            session: session(),
            source,
        })?;
        if !status.is_success() {
            return Err(DemoError::Refused {
                step,
                session: session(),
                status,
                body: text,
            });
        }
        Ok((trace_id, text))
    }
}

/// The request of step `step`: the conversation so far; step 2 offers a
/// tool, step 3 streams with usage.
fn step_body(step: u32, messages: &[Value]) -> Value {
    let mut body = json!({"model": "mock-model", "messages": messages});
    match step {
        2 => {
            body["tools"] = json!([{
                "type": "function",
                "function": {
                    "name": "search_docs",
                    "description": "Search the project documentation",
                    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
                },
            }]);
        }
        3 => {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        _ => {}
    }
    body
}

/// The run → session → step tree of `run_id`, from the store.
fn print_tree(db: &Path, run_id: &str) -> Result<String, DemoError> {
    use std::fmt::Write;
    let mut out = String::new();
    let store = Reader::open(&crate::store::Database::Sqlite(db.to_path_buf()))?;
    let run = store
        .run(run_id)?
        .ok_or_else(|| DemoError::NotRecorded(run_id.to_string()))?;
    let _ = writeln!(
        out,
        "run {} · {} sessions · {} calls · {} errors · {} tokens",
        run.run_id, run.session_count, run.trace_count, run.error_count, run.tokens
    );
    let sessions = store.sessions(&SessionFilter {
        run_id: Some(run_id.to_string()),
        ..SessionFilter::default()
    })?;
    for (i, session) in sessions.iter().enumerate() {
        let last_session = i + 1 == sessions.len();
        let _ = writeln!(
            out,
            "{} session {} · {} calls",
            if last_session {
                "└──"
            } else {
                "├──"
            },
            session.session_id,
            session.trace_count
        );
        let traces = store.traces(&TraceFilter {
            session_ids: vec![session.session_id.clone()],
            ..TraceFilter::default()
        })?;
        for (j, trace) in traces.iter().enumerate() {
            let branch = if j + 1 == traces.len() {
                "└──"
            } else {
                "├──"
            };
            let stem = if last_session { "    " } else { "│   " };
            let _ = writeln!(out, "{stem}{branch} {}", describe_step(trace));
        }
    }
    let path = std::fs::canonicalize(db).unwrap_or_else(|_| db.to_path_buf());
    let _ = writeln!(out);
    let _ = writeln!(out, "Database: {}", path.display());
    let _ = writeln!(
        out,
        "Try: sqlite3 {} \"SELECT session_id, step_id, status, latency_ms FROM traces WHERE run_id = '{run_id}' ORDER BY started_at\"",
        db.display()
    );
    Ok(out)
}

/// A store read failed.
/// One line for one step: step, operation, model, status, timing, answer.
fn describe_step(t: &TraceRecord) -> String {
    let step = t
        .identity
        .step_id
        .map_or("-".to_string(), |s| s.to_string());
    let answer = match t
        .response_message
        .get("tool_calls")
        .and_then(Value::as_array)
    {
        Some(calls) if !calls.is_empty() => {
            let f = &calls[0]["function"];
            format!(
                "tool call {}({})",
                f["name"].as_str().unwrap_or("?"),
                f["arguments"].as_str().unwrap_or("")
            )
        }
        _ => {
            let text = t
                .response_message
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("");
            let short: String = text.chars().take(48).collect();
            format!(
                "\"{short}{}\"",
                if text.chars().count() > 48 { "…" } else { "" }
            )
        }
    };
    let ttft = t
        .ttft_ms
        .filter(|_| t.stream)
        .map(|ms| format!(" ttft {ms:.1} ms"))
        .unwrap_or_default();
    format!(
        "step {step} {} {}{} · {} {} · {:.1} ms{ttft} · tokens in {} out {} · {answer}",
        t.operation,
        t.model.as_deref().unwrap_or("?"),
        if t.stream { " (stream)" } else { "" },
        t.status.as_str(),
        t.http_status.map_or("-".into(), |s| s.to_string()),
        t.latency_ms,
        t.usage.input_tokens.unwrap_or(0),
        t.usage.output_tokens.unwrap_or(0),
    )
}
