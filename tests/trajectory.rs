//! Trajectories through the real binary on a vLLM-kind route: a multi-turn
//! RL episode, rewards posted before and after its records land, the weight
//! version changed mid-run; the trajectory matches, token for token and
//! logprob for logprob, what the client received, with masks, versions and
//! rewards right, and a turn whose prompt does not extend is split off.
//! The harness's tool executions (`execute_tool` spans sent to the OTLP
//! receiver) appear between the calls they separate, in the API, the
//! JSONL export and the Parquet export; and `--format parquet` writes a
//! Parquet file to a file or a pipe.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use common::process::{Mocked, Running, tracegate};
use common::{Gateway, chat_body};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

/// A `kind = "vllm"` route that keeps vLLM's token fields in the answer.
const VLLM_WITH_TOKENS: [&str; 4] = ["--kind", "vllm", "--strip-vllm-fields", "false"];

/// One agent turn on the session; returns the client's answer.
async fn turn(gw: &Running, sid: &str, step: u32, messages: &[Value]) -> Value {
    let body = json!({"model": "policy", "messages": messages, "max_tokens": 8,
                      "return_token_ids": true, "logprobs": true});
    gw.chat(&body)
        .headers(&[
            ("x-rllm-session-id", sid),
            ("x-rllm-run-id", "rl-run"),
            ("x-rllm-step-id", &step.to_string()),
            ("x-mock-chat-template", "1"),
        ])
        .answer()
        .await
        .json()
}

/// What the client received: (prompt ids, completion ids, logprobs).
fn received(answer: &Value) -> (Vec<u64>, Vec<u64>, Vec<f64>) {
    let ids = |v: &Value| -> Vec<u64> {
        let list = v
            .as_array()
            .unwrap_or_else(|| panic!("no token ids in {answer:#}"));
        list.iter().map(|t| t.as_u64().unwrap()).collect()
    };
    let choice = &answer["choices"][0];
    assert!(choice["logprobs"]["content"].is_array(), "{answer:#}");
    let logprobs = choice["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["logprob"].as_f64().unwrap())
        .collect();
    (
        ids(&answer["prompt_token_ids"]),
        ids(&choice["token_ids"]),
        logprobs,
    )
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_is_one_masked_sequence_until_a_turn_does_not_extend() {
    let m = Mocked::start().await;
    let gw = m.serve().args(VLLM_WITH_TOKENS).spawn();
    let sid = "episode-1";
    // The reward for the episode arrives before any of its records.
    let reward = json!({"id": "ep1-reward", "session_id": sid, "name": "reward", "value": 1.0});
    assert_eq!(
        gw.post("/feedback").json(&reward).answer().await.status,
        200
    );

    let mut messages = vec![
        json!({"role": "system", "content": "You solve tasks."}),
        json!({"role": "user", "content": "Fix the failing test"}),
    ];
    let mut answers = Vec::new();
    for (step, version) in [(1, 3), (2, 3), (3, 4)] {
        let set = gw
            .post("/admin/weight_version")
            .json(&json!({"weight_version": version}));
        assert_eq!(set.answer().await.status, 200);
        let answer = turn(&gw, sid, step, &messages).await;
        messages.push(answer["choices"][0]["message"].clone());
        messages.push(
            json!({"role": "tool", "tool_call_id": "c", "content": format!("ran step {step}")}),
        );
        answers.push(answer);
    }
    // A summarised context: the prompt no longer extends the episode.
    let summary = vec![
        json!({"role": "system", "content": "You solve tasks."}),
        json!({"role": "user", "content": "Summary so far: tests pass except one"}),
    ];
    answers.push(turn(&gw, sid, 4, &summary).await);
    gw.flush().await;
    let records = gw.get_json(&format!("/sessions/{sid}/traces")).await;
    let ids: Vec<String> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["trace_id"].as_str().unwrap().to_string())
        .collect();
    // A call's score arrives after its record.
    let pass = json!({"trace_id": ids[2], "name": "pass@1", "value": true});
    assert_eq!(gw.post("/feedback").json(&pass).answer().await.status, 200);

    let t = gw.get_json(&format!("/sessions/{sid}/trajectory")).await;
    assert_eq!(t["run_id"], "rl-run", "{t:#}");
    assert_eq!(t["feedback"][0]["id"], "ep1-reward");
    let calls = t["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 4);
    let versions: Vec<&Value> = calls.iter().map(|c| &c["weight_version"]).collect();
    assert_eq!(versions, [&json!(3), &json!(3), &json!(4), &json!(4)]);
    assert_eq!(calls[2]["feedback"][0]["name"], "pass@1");
    for (call, answer) in calls.iter().zip(&answers) {
        let (prompt, completion, logprobs) = received(answer);
        assert_eq!(call["prompt_token_ids"], json!(prompt));
        assert_eq!(call["completion_token_ids"], json!(completion));
        assert_eq!(numbers(&call["logprobs"]), logprobs);
        assert_eq!(call["finish_reason"], answer["choices"][0]["finish_reason"]);
    }

    // Turns 1-3: one sequence; turn 4: a segment of its own, saying why.
    let segments = t["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2, "{t:#}");
    assert_eq!(segments[0]["start"], "first");
    assert_eq!(segments[0]["trace_ids"], json!(ids[..3]));
    assert_eq!(segments[1]["start"], "prompt_does_not_extend");
    assert_eq!(segments[1]["trace_ids"], json!([ids[3]]));
    assert_eq!(calls[3]["segment"], 1);
    let expected = expected_segment(&answers[..3]);
    let s = &segments[0];
    assert_eq!(s["tokens"], json!(expected.0));
    assert_eq!(s["loss_mask"], json!(expected.1));
    assert_eq!(numbers(&s["logprobs"]), expected.2);
    assert_eq!(s["has_logprobs"], true);
    let (prompt, completion, _) = received(&answers[3]);
    let mask: Vec<u8> = segments[1]["loss_mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| u8::try_from(m.as_u64().unwrap()).unwrap())
        .collect();
    assert_eq!(mask.len(), prompt.len() + completion.len());
    assert_eq!(mask.iter().filter(|m| **m == 1).count(), completion.len());

    // The run's trajectory, and the export: one session per line, the same.
    let run = gw.get_json("/runs/rl-run/trajectory").await;
    assert_eq!(run["sessions"][0]["segments"], t["segments"]);
    let lines = export(m.dir.path(), &["--format", "trajectory"]);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0], t);

    // Filters: by feedback, by policy version, by status.
    assert_eq!(
        export(
            m.dir.path(),
            &["--format", "trajectory", "--where", "reward>0"]
        )
        .len(),
        1
    );
    assert!(
        export(
            m.dir.path(),
            &["--format", "trajectory", "--where", "reward>1"]
        )
        .is_empty()
    );
    let v4 = export(
        m.dir.path(),
        &["--format", "trajectory", "--weight-version", "4"],
    );
    assert_eq!(v4[0]["calls"].as_array().unwrap().len(), 2);
    let passed = export(m.dir.path(), &["--where", "pass@1=true"]);
    assert_eq!(passed.len(), 1);
    assert_eq!(passed[0]["trace_id"], json!(ids[2]));
    assert!(export(m.dir.path(), &["--status", "error"]).is_empty());

    // The chat form: each call's messages, then its answer.
    let chats = export(m.dir.path(), &["--format", "chat", "--run", "rl-run"]);
    assert_eq!(chats.len(), 4);
    let first = chats[0]["messages"].as_array().unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(first[2], answers[0]["choices"][0]["message"]);
    assert_eq!(chats[0]["tools"], json!([]));
    assert_eq!(chats[3]["messages"].as_array().unwrap()[1], summary[1]);
}

/// `tracegate export ... --out -`, one JSON value per line.
fn export(dir: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let out = tracegate(dir)
        .args([
            "export",
            "--db",
            &common::db_arg(&dir.join("tracegate.db")),
            "--out",
            "-",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The sequence turns that extend each other make, from what the client
/// received: each turn's new prompt tokens (mask 0, logprob 0) then its
/// completion (mask 1, its logprobs).
fn expected_segment(answers: &[Value]) -> (Vec<u64>, Vec<u8>, Vec<f64>) {
    let (mut tokens, mut mask, mut logprobs) = (Vec::new(), Vec::new(), Vec::new());
    for answer in answers {
        let (prompt, completion, lp) = received(answer);
        assert!(prompt.starts_with(&tokens), "the mock's prompts extend");
        let new = prompt.len() - tokens.len();
        tokens.extend_from_slice(&prompt[tokens.len()..]);
        mask.extend(std::iter::repeat_n(0u8, new));
        logprobs.extend(std::iter::repeat_n(0.0, new));
        tokens.extend_from_slice(&completion);
        mask.extend(std::iter::repeat_n(1u8, completion.len()));
        logprobs.extend(lp);
    }
    (tokens, mask, logprobs)
}

/// Now, in nanoseconds since the epoch (the gateway's clock is this one).
fn now_nanos() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_nanos()).unwrap()
}

/// An OTLP/JSON span of session `sid`, `ms` milliseconds long from now.
fn span(sid: &str, span_id: &str, name: &str, ms: u64, attributes: Value) -> Value {
    let start = now_nanos();
    let attributes: Vec<Value> = attributes
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "session.id", "value": {"stringValue": sid}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5bf92f3577b34da6a3ce929d0e0e4736", "spanId": span_id, "name": name,
            "kind": 1, "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + ms * 1_000_000).to_string(),
            "attributes": attributes,
            "status": {"code": 2, "message": "exit status 1"}
        }]}]
    }]})
}

/// A session of two calls with a tool execution between them (and an
/// agent span around it all); returns the calls' record ids.
async fn call_tool_call(gw: &Running, sid: &str) -> Vec<String> {
    let agent = span(
        sid,
        "00f067aa0ba902b7",
        "invoke_agent solver",
        60_000,
        json!({}),
    );
    let mut ids = Vec::new();
    for (i, content) in ["plan", "read the output"].into_iter().enumerate() {
        let answer = gw
            .chat(&chat_body(content))
            .headers(&[("x-rllm-session-id", sid)])
            .answer()
            .await;
        assert_eq!(answer.status, 200);
        ids.push(
            answer.headers["x-rllm-trace-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        if i == 0 {
            let tool = span(
                sid,
                "b7ad6b7169203331",
                "execute_tool bash",
                3,
                json!({"gen_ai.tool.name": "bash", "gen_ai.tool.call.id": "call-1",
                       "gen_ai.tool.call.arguments": "{\"cmd\": \"pytest\"}",
                       "process.pid": "4242"}),
            );
            for body in [&agent, &tool] {
                let posted = gw.post("/v1/traces").json(body).answer().await;
                assert_eq!(posted.status, 200, "{}", posted.text());
            }
        }
    }
    gw.flush().await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_span_sits_between_the_calls_it_separates() {
    let m = Mocked::start().await;
    let gw = m.serve().spawn();
    let ids = call_tool_call(&gw, "tools-1").await;
    let t = gw.get_json("/sessions/tools-1/trajectory").await;
    let steps: Vec<(&str, &str)> = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let what = s["trace_id"].as_str().or(s["name"].as_str()).unwrap();
            (s["kind"].as_str().unwrap(), what)
        })
        .collect();
    // The agent span encloses the calls: it is no step.
    assert_eq!(
        steps,
        [
            ("call", ids[0].as_str()),
            ("tool", "execute_tool bash"),
            ("call", ids[1].as_str())
        ],
        "{t:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_step_has_its_duration_status_and_chosen_attributes() {
    let m = Mocked::start().await;
    let gw = m.serve().spawn();
    call_tool_call(&gw, "tools-2").await;
    let t = gw.get_json("/sessions/tools-2/trajectory").await;
    let tool = &t["steps"][1];
    assert_eq!(tool["name"], "execute_tool bash", "{t:#}");
    assert_eq!(tool["tool_name"], "bash");
    assert_eq!(tool["tool_call_id"], "call-1");
    assert_eq!(tool["duration_ms"], 3.0);
    assert_eq!(tool["status"], "error");
    assert_eq!(tool["status_message"], "exit status 1");
    assert_eq!(tool["span_id"], "b7ad6b7169203331");
    // Chosen attributes only: the arguments, not the process id.
    assert_eq!(
        tool["attributes"],
        json!({"gen_ai.tool.call.arguments": "{\"cmd\": \"pytest\"}"})
    );
}

/// The only record batch of a Parquet file's bytes.
fn parquet_batch(bytes: Vec<u8>) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .unwrap()
        .build()
        .unwrap();
    let mut batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.len(), 1);
    batches.remove(0)
}

/// `tracegate export --db tracegate.db ARGS`: its standard output.
fn export_bytes(dir: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let out = tracegate(dir)
        .args(["export", "--db", &common::db_arg(&dir.join("tracegate.db"))])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exports_carry_the_tool_steps() {
    let m = Mocked::start().await;
    let gw = m.serve().args(VLLM_WITH_TOKENS).spawn();
    let ids = call_tool_call(&gw, "tools-3").await;
    let t = gw.get_json("/sessions/tools-3/trajectory").await;
    let lines = export(m.dir.path(), &["--format", "trajectory"]);
    assert_eq!(lines[0]["steps"], t["steps"]);

    // Parquet: the two calls do not extend (two one-message prompts), so
    // two segments; each row's `steps` are those from its first call to
    // the next row's: the tool travels with the call it follows.
    let batch = parquet_batch(export_bytes(
        m.dir.path(),
        &["--format", "parquet", "--out", "-"],
    ));
    assert_eq!(batch.num_rows(), 2);
    let steps = batch.column_by_name("steps").unwrap().as_list::<i32>();
    let text = |row: usize, name: &str, i: usize| {
        let row = steps.value(row);
        let column = row
            .as_struct()
            .column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .clone();
        column.is_valid(i).then(|| column.value(i).to_string())
    };
    assert_eq!(steps.value_length(0), 2);
    assert_eq!(steps.value_length(1), 1);
    assert_eq!(text(0, "kind", 0).as_deref(), Some("call"));
    assert_eq!(text(0, "trace_id", 0).as_deref(), Some(ids[0].as_str()));
    assert_eq!(text(0, "kind", 1).as_deref(), Some("tool"));
    assert_eq!(text(0, "tool_name", 1).as_deref(), Some("bash"));
    assert_eq!(text(0, "tool_call_id", 1).as_deref(), Some("call-1"));
    assert_eq!(text(0, "status", 1).as_deref(), Some("error"));
    assert_eq!(text(1, "trace_id", 0).as_deref(), Some(ids[1].as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_goes_to_a_pipe_or_a_file_and_honours_the_limit() {
    let m = Mocked::start().await;
    let gw = m.serve().spawn();
    for i in 0..3 {
        let answer = gw.chat(&chat_body(&format!("call {i}"))).answer().await;
        assert_eq!(answer.status, 200);
    }
    gw.flush().await;
    let piped = export_bytes(m.dir.path(), &["--format", "parquet", "--shape", "calls"]);
    assert!(piped.starts_with(b"PAR1") && piped.ends_with(b"PAR1"));
    assert_eq!(parquet_batch(piped).num_rows(), 3);

    let file = m.dir.path().join("calls.parquet");
    let args = [
        "--format", "parquet", "--shape", "calls", "--limit", "2", "--output",
    ];
    let said = export_bytes(
        m.dir.path(),
        &[&args[..], &[file.to_str().unwrap()]].concat(),
    );
    let said = String::from_utf8(said).unwrap();
    assert!(said.starts_with("exported 2 calls to "), "{said}");
    assert_eq!(parquet_batch(std::fs::read(&file).unwrap()).num_rows(), 2);
}

#[test]
fn a_shape_is_only_for_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let out = tracegate(dir.path())
        .args([
            "export", "--format", "jsonl", "--shape", "calls", "--out", "-",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--shape is for --format parquet"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_by_session_is_each_sessions_last_conversation_with_its_answer() {
    let m = Mocked::start().await;
    let gw = m.serve().spawn();
    let mut last_answers = Vec::new();
    for sid in ["chat-a", "chat-b"] {
        let mut messages = vec![json!({"role": "user", "content": format!("task {sid}")})];
        for step in 0..3 {
            let answer = turn(&gw, sid, step, &messages).await;
            messages.push(answer["choices"][0]["message"].clone());
            messages.push(json!({"role": "user", "content": format!("next {step}")}));
        }
        messages.truncate(messages.len() - 1);
        last_answers.push(messages);
    }
    gw.flush().await;

    let chats = export(m.dir.path(), &["--format", "chat", "--shape", "sessions"]);
    assert_eq!(chats.len(), 2);
    for (chat, conversation) in chats.iter().zip(&last_answers) {
        assert_eq!(chat["messages"], json!(conversation));
        assert_eq!(chat["tools"], json!([]));
    }
    let one = export(
        m.dir.path(),
        &[
            "--format",
            "chat",
            "--shape",
            "sessions",
            "--session",
            "chat-b",
        ],
    );
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["messages"], json!(last_answers[1]));
}

#[test]
fn chat_takes_calls_or_sessions_and_parquet_trajectory_or_calls() {
    let dir = tempfile::tempdir().unwrap();
    for (format, shape, said) in [
        (
            "chat",
            "trajectory",
            "--format chat takes --shape calls or sessions",
        ),
        (
            "parquet",
            "sessions",
            "--format parquet takes --shape trajectory or calls",
        ),
    ] {
        let out = tracegate(dir.path())
            .args(["export", "--format", format, "--shape", shape, "--out", "-"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(said), "{err}");
    }
}
