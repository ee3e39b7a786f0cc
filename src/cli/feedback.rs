//! `tracegate feedback list` and `tracegate feedback add`: the scores
//! attached to calls, sessions and runs.
//!
//! `list` reads the database like the other query commands (read-only, safe
//! while a gateway writes). `add` does not write the file: the gateway's one
//! writer owns it, so `add` posts to a running gateway's `POST /feedback`,
//! exactly as a harness would, and prints the stored item.

use super::output::{Align, Format, Table, or_dash, print_listing, short_time};
use super::{DbArg, Failure};
use crate::feedback::{FeedbackValue, TargetKind};
use crate::store::feedback::FeedbackScope;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

/// `tracegate feedback ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum FeedbackCommand {
    /// List the feedback of a call, a session (and its calls) or a run (and
    /// its sessions and calls), oldest first, with a summary per name.
    List(ListArgs),
    /// Attach a value to a call, a session or a run, through a running
    /// gateway's `POST /feedback`.
    Add(AddArgs),
}

/// The one target a command is about.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// A call (its trace id).
    #[arg(long, value_name = "TRACE_ID")]
    trace: Option<String>,
    /// A session.
    #[arg(long, value_name = "SESSION_ID")]
    session: Option<String>,
    /// A run.
    #[arg(long, value_name = "RUN_ID")]
    run: Option<String>,
}

/// Flags of `tracegate feedback list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    db: DbArg,
    #[command(flatten)]
    target: TargetArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Flags of `tracegate feedback add`.
#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// What is measured: reward, pass@1, judge_score, ...
    #[arg(long)]
    name: String,
    /// The value: a number, true/false, or any other text (a label).
    #[arg(long, allow_hyphen_values = true)]
    value: String,
    /// A free-text explanation.
    #[arg(long)]
    comment: Option<String>,
    /// The idempotency id (a UUIDv7 when absent).
    #[arg(long)]
    id: Option<String>,
    /// The gateway's base URL.
    #[arg(
        long,
        env = "TRACEGATE_URL",
        default_value = "http://127.0.0.1:9090",
        value_name = "URL"
    )]
    gateway: String,
    /// The gateway token, when it runs with inbound auth.
    #[arg(long, env = "TRACEGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Runs `tracegate feedback ...`.
pub fn run(command: &FeedbackCommand) -> Result<(), Failure> {
    match command {
        FeedbackCommand::List(args) => list(args),
        FeedbackCommand::Add(args) => add(args),
    }
}

fn list(args: &ListArgs) -> Result<(), Failure> {
    let t = &args.target;
    let scope = match (&t.trace, &t.session, &t.run) {
        (Some(id), _, _) => FeedbackScope::Target(TargetKind::Trace, id.clone()),
        (_, Some(id), _) => FeedbackScope::Session(id.clone()),
        (_, _, Some(id)) => FeedbackScope::Run(id.clone()),
        _ => return Err(Failure::Usage("give --trace, --session or --run".into())),
    };
    let reader = args.db.reader()?;
    let items = reader.feedback(&scope)?;
    print_listing(args.format, &items, |items| {
        let mut table = Table::new(&[
            ("NAME", Align::Left),
            ("VALUE", Align::Right),
            ("TARGET", Align::Left),
            ("CREATED", Align::Left),
            ("COMMENT", Align::Left),
        ]);
        for f in items {
            table.row(vec![
                f.name.clone(),
                value_text(&f.value),
                format!("{} {}", f.target_kind, f.target_id),
                short_time(&f.created_at),
                or_dash(f.comment.as_deref()),
            ]);
        }
        table
    })?;
    Ok(())
}

/// A value as the table shows it.
fn value_text(value: &FeedbackValue) -> String {
    match value {
        FeedbackValue::Boolean(b) => b.to_string(),
        FeedbackValue::Number(n) => n.to_string(),
        FeedbackValue::String(s) => s.clone(),
    }
}

/// `--value` as JSON: a number, a boolean, or else the text itself.
fn parse_value(text: &str) -> Value {
    match text.trim() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        t => t
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map_or_else(|| Value::String(text.to_string()), |n| json!(n)),
    }
}

fn add(args: &AddArgs) -> Result<(), Failure> {
    let t = &args.target;
    let mut body = Map::new();
    for (key, value) in [
        ("trace_id", &t.trace),
        ("session_id", &t.session),
        ("run_id", &t.run),
    ] {
        if let Some(v) = value {
            body.insert(key.into(), json!(v));
        }
    }
    body.insert("name".into(), json!(args.name));
    body.insert("value".into(), parse_value(&args.value));
    if let Some(comment) = &args.comment {
        body.insert("comment".into(), json!(comment));
    }
    if let Some(id) = &args.id {
        body.insert("id".into(), json!(id));
    }
    let url = format!("{}/feedback", args.gateway.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let (status, text) = runtime.block_on(async {
        let mut request = reqwest::Client::new()
            .post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Value::Object(body).to_string());
        if let Some(token) = &args.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach the gateway at {url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, text))
    })?;
    if !status.is_success() {
        return Err(Failure::Runtime(format!("{url} answered {status}: {text}")));
    }
    let mut out = super::output::Output::stdout();
    out.text(&format!("{text}\n"))?;
    out.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_a_number_a_boolean_or_a_label() {
        assert_eq!(parse_value("0.5"), json!(0.5));
        assert_eq!(parse_value("-1"), json!(-1.0));
        assert_eq!(parse_value("true"), json!(true));
        assert_eq!(parse_value("pass"), json!("pass"));
        assert_eq!(parse_value("NaN"), json!("NaN"));
    }
}
