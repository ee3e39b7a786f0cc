//! Trajectories through the real binary on a vLLM-kind route: a multi-turn
//! RL episode, rewards posted before and after its records land, the weight
//! version changed mid-run; the trajectory matches, token for token and
//! logprob for logprob, what the client received, with masks, versions and
//! rewards right, and a turn whose prompt does not extend is split off.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::{Running, Serve, tracegate};
use common::{Gateway, start_mock};
use serde_json::{Value, json};

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
    let mock = start_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Serve::new(dir.path())
        .upstream(&mock.base_url())
        .args(["--kind", "vllm", "--strip-vllm-fields", "false"])
        .spawn();
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
    let lines = export(dir.path(), &["--format", "trajectory"]);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0], t);

    // Filters: by feedback, by policy version, by status.
    assert_eq!(
        export(
            dir.path(),
            &["--format", "trajectory", "--where", "reward>0"]
        )
        .len(),
        1
    );
    assert!(
        export(
            dir.path(),
            &["--format", "trajectory", "--where", "reward>1"]
        )
        .is_empty()
    );
    let v4 = export(
        dir.path(),
        &["--format", "trajectory", "--weight-version", "4"],
    );
    assert_eq!(v4[0]["calls"].as_array().unwrap().len(), 2);
    let passed = export(dir.path(), &["--where", "pass@1=true"]);
    assert_eq!(passed.len(), 1);
    assert_eq!(passed[0]["trace_id"], json!(ids[2]));
    assert!(export(dir.path(), &["--status", "error"]).is_empty());

    // The chat form: each call's messages, then its answer.
    let chats = export(dir.path(), &["--format", "chat", "--run", "rl-run"]);
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
        .args(["export", "--db", "tracegate.db", "--out", "-"])
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
