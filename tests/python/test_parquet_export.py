"""An RL episode through a vLLM-kind route, exported as Parquet and read back
with pyarrow.

The gateway (started by tests/sdk.rs with `--kind vllm` in front of the
mock, whose chat template makes each turn's prompt extend the last) records
a four-turn episode made with the official `openai` SDK: weight versions 3,
3, 4 set mid-run, a reward posted before the records exist and a pass@1
after they land, a tool execution between the first two turns reported as
an `execute_tool` span by the OpenTelemetry SDK, and a summarised last turn
whose prompt does not extend. `tracegate export --format parquet` must give
back, token for token and logprob for logprob, what the SDK received.
"""

import os
import subprocess

import httpx
import openai
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import API_KEY, GATEWAY
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

BINARY = os.environ["TRACEGATE_BIN"]
DB = os.environ["TRACEGATE_DB"]


def turn(llm, messages, step):
    """One agent turn; what the SDK received, as a dict."""
    answer = llm.chat.completions.create(
        model="policy",
        messages=messages,
        max_tokens=8,
        logprobs=True,
        extra_body={"return_token_ids": True},
        extra_headers={"X-RLLM-Step-Id": str(step), "x-mock-chat-template": "1"},
    )
    return answer.model_dump()


def received(answer):
    """(prompt ids, completion ids, logprobs) as the client got them."""
    choice = answer["choices"][0]
    logprobs = [t["logprob"] for t in choice["logprobs"]["content"]]
    return answer["prompt_token_ids"], choice["token_ids"], logprobs


def set_version(version):
    httpx.post(f"{GATEWAY}/admin/weight_version", json={"weight_version": version}).raise_for_status()


def export(tmp_path, *args):
    out = tmp_path / "export.parquet"
    subprocess.run(
        [BINARY, "export", "--db", DB, "--format", "parquet", "--output", str(out), *args],
        check=True,
        capture_output=True,
    )
    return pq.read_table(out)


@pytest.fixture(scope="module")
def episode():
    """Plays the episode once; returns (session id, answers, trace ids)."""
    sid = "parquet-episode"
    feedback = {"id": "pq-reward", "session_id": sid, "name": "reward", "value": 1.0}
    httpx.post(f"{GATEWAY}/feedback", json=feedback).raise_for_status()
    resource = Resource.create({"service.name": "pytest-harness", "session.id": sid})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{GATEWAY}/v1/traces")))
    tracer = provider.get_tracer("pytest-harness")
    llm = openai.OpenAI(
        base_url=f"{GATEWAY}/v1",
        api_key=API_KEY,
        max_retries=0,
        default_headers={"X-RLLM-Session-Id": sid, "X-RLLM-Run-Id": "pq-run"},
    )
    messages = [
        {"role": "system", "content": "You solve tasks."},
        {"role": "user", "content": "Fix the failing test"},
    ]
    answers = []
    for step, version in [(1, 3), (2, 3), (3, 4)]:
        set_version(version)
        answer = turn(llm, messages, step)
        answers.append(answer)
        messages.append({"role": "assistant", "content": answer["choices"][0]["message"]["content"]})
        if step == 1:
            attributes = {"gen_ai.tool.name": "bash", "gen_ai.tool.call.id": "call-1"}
            with tracer.start_as_current_span("execute_tool bash", attributes=attributes):
                pass
        messages.append({"role": "tool", "tool_call_id": f"call-{step}", "content": f"ran step {step}"})
    summary = [
        {"role": "system", "content": "You solve tasks."},
        {"role": "user", "content": "Summary so far: tests pass except one"},
    ]
    answers.append(turn(llm, summary, 4))
    assert provider.force_flush()
    provider.shutdown()
    httpx.post(f"{GATEWAY}/admin/flush").raise_for_status()
    traces = httpx.get(f"{GATEWAY}/sessions/{sid}/traces").json()
    ids = [t["trace_id"] for t in traces]
    assert len(ids) == 4
    # A call's score, after its record landed.
    pass_at_1 = {"trace_id": ids[2], "name": "pass@1", "value": True}
    httpx.post(f"{GATEWAY}/feedback", json=pass_at_1).raise_for_status()
    return sid, answers, ids


def test_a_trajectory_row_is_one_aligned_sample_of_what_the_client_received(episode, tmp_path):
    sid, answers, ids = episode
    table = export(tmp_path)
    assert table.schema.field("tokens").type == pa.list_(pa.int64())
    assert table.schema.field("loss_mask").type == pa.list_(pa.uint8())
    assert table.schema.field("logprobs").type == pa.list_(pa.float64())
    rows = table.to_pylist()
    assert [(r["session_id"], r["segment"], r["segment_count"]) for r in rows] == [(sid, 0, 2), (sid, 1, 2)]
    first, split = rows
    assert first["run_id"] == "pq-run"
    assert first["start"] == "first"
    assert first["trace_ids"] == ids[:3]
    assert first["step_ids"] == [1, 2, 3]
    assert first["weight_versions"] == [3, 3, 4]
    assert first["finish_reasons"] == [a["choices"][0]["finish_reason"] for a in answers[:3]]
    tokens, mask, logprobs = [], [], []
    for answer in answers[:3]:
        prompt, completion, lp = received(answer)
        assert prompt[: len(tokens)] == tokens, "the mock's prompts extend"
        new = prompt[len(tokens) :]
        tokens += new + completion
        mask += [0] * len(new) + [1] * len(completion)
        logprobs += [0.0] * len(new) + lp
    assert first["tokens"] == tokens
    assert first["loss_mask"] == mask
    assert first["logprobs"] == logprobs, "logprob for logprob, exactly"
    assert first["has_logprobs"] is True
    assert len(first["tokens"]) == len(first["loss_mask"]) == len(first["logprobs"])

    # The summarised turn: a segment of its own, not a misalignment.
    prompt, completion, lp = received(answers[3])
    assert split["start"] == "prompt_does_not_extend"
    assert split["trace_ids"] == [ids[3]]
    assert split["weight_versions"] == [4]
    assert split["diverged_at"] < len(prompt)
    assert split["tokens"] == prompt + completion
    assert split["loss_mask"] == [0] * len(prompt) + [1] * len(completion)
    assert split["logprobs"] == [0.0] * len(prompt) + lp


def test_rewards_and_tool_steps_travel_with_the_sample(episode, tmp_path):
    sid, _, ids = episode
    first, split = export(tmp_path).to_pylist()
    feedback = {(f["target_kind"], f["target_id"], f["name"]): f for f in first["feedback"]}
    reward = feedback[("session", sid, "reward")]
    assert reward["value"] == 1.0 and reward["label"] is None
    passed = feedback[("trace", ids[2], "pass@1")]
    assert passed["value"] == 1.0 and passed["label"] == "true"
    assert [f["name"] for f in split["feedback"]] == ["reward"], "the session's reward, no call's"

    kinds = [(s["kind"], s["trace_id"] or s["name"]) for s in first["steps"]]
    assert kinds == [("call", ids[0]), ("tool", "execute_tool bash"), ("call", ids[1]), ("call", ids[2])]
    tool = first["steps"][1]
    assert tool["tool_name"] == "bash"
    assert tool["tool_call_id"] == "call-1"
    assert tool["status"] == "unset"
    assert tool["duration_ms"] >= 0
    assert [s["trace_id"] for s in split["steps"]] == [ids[3]]


def test_the_calls_shape_is_a_row_per_call(episode, tmp_path):
    sid, answers, ids = episode
    rows = export(tmp_path, "--shape", "calls").to_pylist()
    assert [r["trace_id"] for r in rows] == ids
    for row, answer in zip(rows, answers):
        prompt, completion, logprobs = received(answer)
        assert row["session_id"] == sid
        assert row["prompt_token_ids"] == prompt
        assert row["completion_token_ids"] == completion
        assert row["logprobs"] == logprobs
        assert row["status"] == "ok"
    assert [r["weight_version"] for r in rows] == [3, 3, 4, 4]
    assert [f["name"] for f in rows[2]["feedback"]] == ["pass@1"]
    # Filters apply as to the other forms.
    assert export(tmp_path, "--shape", "calls", "--weight-version", "3").num_rows == 2
    assert export(tmp_path, "--where", "reward>1").num_rows == 0
