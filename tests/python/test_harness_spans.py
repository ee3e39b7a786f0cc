"""A harness's own OpenTelemetry spans, sent to the real tracegate binary.

The harness side is the real OpenTelemetry Python SDK with its OTLP/HTTP
exporter (`POST /v1/traces` on the gateway's listener), or its OTLP/gRPC
exporter (gzip-compressed, to the receiver on `otlp.grpc_listen`): each
step of an episode is an `invoke_agent` span, each tool call an
`execute_tool` span, and the LLM calls go through the gateway with the
`traceparent` of the span they are made in. The stored tree (the API) must
link them: every call under the span it was made in, every span listing
its calls, the tool spans under their step — and be the same tree whichever
exporter sent the spans.
"""

import os

import grpc
import httpx
import openai
import pytest
from conftest import API_KEY, GATEWAY
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind


# Where the gateway's OTLP/gRPC receiver listens (tests/sdk.rs turns it on).
OTLP_GRPC = os.environ["TRACEGATE_OTLP_GRPC"]


def exporter_for(transport):
    if transport == "grpc":
        return GrpcSpanExporter(endpoint=OTLP_GRPC, insecure=True, compression=grpc.Compression.Gzip)
    return OTLPSpanExporter(endpoint=f"{GATEWAY}/v1/traces")


def harness(session_id, transport):
    resource = Resource.create(
        {"service.name": "pytest-harness", "session.id": session_id, "rllm.run_id": "otel-run"}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter_for(transport)))
    return provider


def ask(llm, content):
    headers = {}
    inject(headers)  # the traceparent of the current span
    return llm.chat.completions.create(
        model="mock-model",
        messages=[{"role": "user", "content": content}],
        extra_headers=headers,
    )


def episode(session_id, transport):
    """Runs one episode; returns the stored tree and, by span name, the
    contents of the calls made in each span."""
    provider = harness(session_id, transport)
    tracer = provider.get_tracer("pytest-harness")
    llm = openai.OpenAI(base_url=f"{GATEWAY}/sessions/{session_id}/v1", api_key=API_KEY, max_retries=0)
    expected = {}  # span name -> the contents of the calls made in it
    with tracer.start_as_current_span("invoke_agent episode", kind=SpanKind.INTERNAL):
        for step in range(2):
            name = f"invoke_agent step-{step}"
            with tracer.start_as_current_span(name, attributes={"rllm.step_id": step}):
                ask(llm, f"plan step {step}")
                expected[name] = [f"plan step {step}"]
                tool = f"execute_tool bash-{step}"
                with tracer.start_as_current_span(tool, attributes={"gen_ai.tool.name": "bash"}):
                    ask(llm, f"read the output of step {step}")
                    expected[tool] = [f"read the output of step {step}"]
    assert provider.force_flush()
    provider.shutdown()
    httpx.post(f"{GATEWAY}/admin/flush").raise_for_status()
    return httpx.get(f"{GATEWAY}/sessions/{session_id}/spans").json(), expected


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_an_episode_of_steps_and_tools_is_one_tree(session_id, transport):
    tree, expected = episode(session_id, transport)
    spans = {s["name"]: s for s in tree["spans"]}
    assert set(spans) == {"invoke_agent episode", *expected}, tree
    root = spans["invoke_agent episode"]
    assert root["parent_span_id"] is None
    assert {s["trace_id"] for s in tree["spans"]} == {root["trace_id"]}, "one trace"
    for step in range(2):
        step_span = spans[f"invoke_agent step-{step}"]
        tool_span = spans[f"execute_tool bash-{step}"]
        assert step_span["parent_span_id"] == root["span_id"]
        assert tool_span["parent_span_id"] == step_span["span_id"]
        assert step_span["identity"]["step_id"] == step
        assert tool_span["identity"]["session_id"] == session_id
        assert tool_span["identity"]["run_id"] == "otel-run"
        assert tool_span["resource"]["service.name"] == "pytest-harness"
    calls = {c["trace_id"]: c for c in tree["calls"]}
    assert len(calls) == 4
    for name, contents in expected.items():
        span = spans[name]
        assert len(span["calls"]) == len(contents), span
        for trace_id in span["calls"]:
            call = calls[trace_id]
            assert call["harness_span_id"] == span["span_id"]
            assert call["otel_trace_id"] == span["trace_id"]
            record = httpx.get(f"{GATEWAY}/traces/{trace_id}").json()
            assert record["messages"][0]["content"] in contents
            assert record["harness_span"]["name"] == name


def shape(tree):
    """The tree without its ids: each span by name, with its parent's name,
    kind, status, identity and the first message of each call under it."""
    spans = {s["span_id"]: s for s in tree["spans"]}
    shaped = {}
    for span in tree["spans"]:
        parent = spans.get(span["parent_span_id"])
        identity = {k: v for k, v in span["identity"].items() if k != "session_id"}
        calls = sorted(
            httpx.get(f"{GATEWAY}/traces/{t}").json()["messages"][0]["content"] for t in span["calls"]
        )
        shaped[span["name"]] = (parent and parent["name"], span["kind"], span["status_code"], identity, calls)
    return shaped


def test_the_grpc_exporter_stores_the_tree_the_http_one_does(session_id):
    over_http, _ = episode(session_id + "-http", "http")
    over_grpc, _ = episode(session_id + "-grpc", "grpc")
    assert shape(over_grpc) == shape(over_http)
    assert len(over_grpc["calls"]) == len(over_http["calls"]) == 4
