"""A harness's own OpenTelemetry spans, sent to the real tracegate binary.

The harness side is the real OpenTelemetry Python SDK with its OTLP/HTTP
exporter: each step of an episode is an `invoke_agent` span, each tool call
an `execute_tool` span, and the LLM calls go through the gateway with the
`traceparent` of the span they are made in. The stored tree (the API) must
link them: every call under the span it was made in, every span listing
its calls, the tool spans under their step.
"""

import httpx
import openai
from conftest import API_KEY, GATEWAY
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind


def harness(session_id):
    resource = Resource.create(
        {"service.name": "pytest-harness", "session.id": session_id, "rllm.run_id": "otel-run"}
    )
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=f"{GATEWAY}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def ask(llm, content):
    headers = {}
    inject(headers)  # the traceparent of the current span
    return llm.chat.completions.create(
        model="mock-model",
        messages=[{"role": "user", "content": content}],
        extra_headers=headers,
    )


def test_an_episode_of_steps_and_tools_is_one_tree(session_id):
    provider = harness(session_id)
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

    tree = httpx.get(f"{GATEWAY}/sessions/{session_id}/spans").json()
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
