//! Feedback through the real binary: posted before and after what it
//! scores is recorded, idempotent by id, read back with the trace, session
//! and run JSON and by `tracegate feedback list`, added by `tracegate
//! feedback add`, counted in `/metrics` and exported as
//! `gen_ai.evaluation.result` spans to a real OTLP receiver.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::otlp::{Receiver, Transport};
use common::process::{Mocked, succeed, tracegate};
use common::{Gateway, chat_body, count};
use serde_json::{Value, json};

fn run_to_end(cmd: &mut std::process::Command) -> String {
    String::from_utf8(succeed(cmd).stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_is_stored_once_joined_when_read_counted_and_exported() {
    let fixture = Mocked::start().await;
    let receiver = Receiver::start(Transport::Http).await;
    let dir = fixture.dir.path();
    let gw = fixture
        .serve()
        .args(["--otlp-endpoint", &receiver.endpoint()])
        .args(["--otlp-protocol", receiver.protocol()])
        .spawn();

    // Before the session has a single call: accepted, joined later.
    let early = gw
        .post("/feedback")
        .json(
            &json!({"id": "ep-reward", "session_id": "ep-1", "name": "reward",
                      "value": 0.75, "comment": "solved 3 of 4", "metadata": {"judge": "unit"}}),
        )
        .answer()
        .await;
    assert_eq!(early.status, 200, "{}", early.text());
    assert_eq!(early.json()["created"], true);
    let headers = [("x-rllm-session-id", "ep-1"), ("x-rllm-run-id", "run-1")];
    let trace_id = gw
        .chat(&chat_body("step"))
        .headers(&headers)
        .answer()
        .await
        .trace_id();
    gw.flush().await;

    // After the call is stored: a batch of a boolean and a label.
    let batch = gw
        .post("/feedback/batch")
        .json(&json!([
            {"id": "t-pass", "trace_id": trace_id, "name": "pass@1", "value": true},
            {"trace_id": trace_id, "name": "grade", "value": "A"},
            {"run_id": "run-1", "name": "reward", "value": 0.25},
        ]))
        .answer()
        .await;
    assert_eq!(batch.status, 200, "{}", batch.text());
    assert_eq!(batch.json()["created"], 3);

    // The same id again: nothing new; with another value: 409, nothing stored.
    let again = gw
        .post("/feedback")
        .json(&json!({"id": "t-pass", "trace_id": trace_id, "name": "pass@1", "value": true}))
        .answer()
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["created"], false);
    let conflict = gw
        .post("/feedback/batch")
        .json(&json!([
            {"id": "new-one", "run_id": "run-1", "name": "reward", "value": 1},
            {"id": "t-pass", "trace_id": trace_id, "name": "pass@1", "value": false},
        ]))
        .answer()
        .await;
    assert_eq!(conflict.status, 409, "{}", conflict.text());
    assert_eq!(conflict.json()["error"]["code"], "conflict");
    let bad = gw
        .post("/feedback")
        .json(&json!({"trace_id": trace_id, "session_id": "ep-1", "name": "x", "value": 1}))
        .answer()
        .await;
    assert_eq!(bad.status, 400);
    let db = dir.join("tracegate.db");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM feedback"), 4);

    // Read back with what it names.
    let trace = gw.get_json(&format!("/traces/{trace_id}")).await;
    let names: Vec<&str> = trace["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pass@1", "grade"]);
    assert_eq!(trace["feedback"][0]["value"], true);
    assert_eq!(trace["feedback"][1]["value"], "A");
    let session = gw.get_json("/sessions/ep-1").await;
    let session_feedback = session["feedback"].as_array().unwrap();
    assert_eq!(session_feedback.len(), 3, "{session}");
    assert_eq!(session_feedback[0]["id"], "ep-reward");
    assert_eq!(session_feedback[0]["target_kind"], "session");
    assert_eq!(session_feedback[0]["metadata"], json!({"judge": "unit"}));
    let run = gw.get_json("/runs/run-1").await;
    assert_eq!(run["feedback"].as_array().unwrap().len(), 1);
    let reward = run["feedback_summary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "reward")
        .unwrap()
        .clone();
    assert_eq!(reward["count"], 2);
    assert_eq!(reward["mean"], 0.5);
    assert_eq!(
        (reward["min"].clone(), reward["max"].clone()),
        (json!(0.25), json!(0.75))
    );

    // Counted once per stored item, by name.
    let metrics = gw.get("/metrics").answer().await.text();
    assert!(
        metrics.contains(r#"tracegate_feedback_total{name="reward"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"tracegate_feedback_total{name="pass@1"} 1"#));

    // Exported in the GenAI evaluation shape; a call's score under its span.
    let spans = receiver.wait_for(5).await;
    let evaluations: Vec<_> = spans
        .iter()
        .filter(|s| s.span.name == "gen_ai.evaluation.result")
        .collect();
    assert_eq!(evaluations.len(), 4);
    let call = spans
        .iter()
        .find(|s| s.attr("rllm.trace_id") == json!(trace_id))
        .unwrap();
    let pass = evaluations
        .iter()
        .find(|s| s.attr("gen_ai.evaluation.name") == json!("pass@1"))
        .unwrap();
    assert_eq!(pass.attr("gen_ai.evaluation.score.value"), json!(1.0));
    assert_eq!(pass.attr("gen_ai.evaluation.score.label"), json!("true"));
    assert_eq!(pass.trace_id(), call.trace_id());
    assert_eq!(pass.parent_span_id(), call.span_id());
    let early = evaluations
        .iter()
        .find(|s| s.attr("tracegate.feedback.id") == json!("ep-reward"))
        .unwrap();
    assert_eq!(early.attr("gen_ai.evaluation.score.value"), json!(0.75));
    assert_eq!(
        early.attr("gen_ai.evaluation.explanation"),
        json!("solved 3 of 4")
    );
    assert_eq!(
        early.attr("tracegate.feedback.target_kind"),
        json!("session")
    );

    // The CLI: add through the gateway, list from the file.
    let url = gw.url("");
    let added = run_to_end(tracegate(dir).args([
        "feedback",
        "add",
        "--gateway",
        &url,
        "--session",
        "ep-1",
        "--name",
        "judge_score",
        "--value",
        "-2.5",
    ]));
    let added: Value = serde_json::from_str(&added).unwrap();
    assert_eq!(added["value"], -2.5);
    let listed = run_to_end(tracegate(dir).args([
        "feedback",
        "list",
        "--db",
        &common::db_arg(&dir.join("tracegate.db")),
        "--session",
        "ep-1",
        "--format",
        "json",
    ]));
    let listed: Vec<Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[3]["name"], "judge_score");
    let table = run_to_end(tracegate(dir).args([
        "feedback",
        "list",
        "--db",
        &common::db_arg(&dir.join("tracegate.db")),
        "--trace",
        &trace_id,
    ]));
    assert!(
        table.contains("pass@1") && table.contains("grade"),
        "{table}"
    );
}
