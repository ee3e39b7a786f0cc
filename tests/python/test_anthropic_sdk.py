"""The official `anthropic` SDK through the real tracegate binary.

The SDK adds `/v1/messages` itself, so its base URL is the gateway's root (or
`/sessions/{sid}` for a session). Each test asserts what the SDK saw and what
tracegate stored.
"""

import anthropic
import httpx
import pytest
from conftest import API_KEY, GATEWAY


def claude(session_id=None, base_url=GATEWAY, **headers):
    default_headers = {"X-RLLM-Run-Id": "sdk-run", "X-RLLM-Harness": "pytest-anthropic"}
    if session_id:
        default_headers["X-RLLM-Session-Id"] = session_id
    default_headers.update(headers)
    return anthropic.Anthropic(base_url=base_url, api_key=API_KEY, max_retries=0, default_headers=default_headers)


def full(trace_id):
    response = httpx.get(f"{GATEWAY}/traces/{trace_id}")
    response.raise_for_status()
    return response.json()


def test_messages_are_answered_and_recorded(gateway, session_id):
    message = claude(session_id).messages.create(
        model="claude-mock", max_tokens=200, system="Be kind.",
        messages=[{"role": "user", "content": "hello claude"}],
    )
    assert message.content[0].text == "This is the tracegate mock answering: hello claude"
    assert message.stop_reason == "end_turn"
    gateway.flush()
    (trace,) = gateway.get_session_traces(session_id)
    record = full(trace.trace_id)
    assert record["protocol"] == "anthropic"
    assert record["messages"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hello claude"}]
    assert record["response_message"]["content"] == message.content[0].text
    assert record["finish_reason"] == "end_turn"
    assert record["usage"]["input_tokens"] == message.usage.input_tokens
    assert record["usage"]["output_tokens"] == message.usage.output_tokens
    assert API_KEY not in httpx.get(f"{GATEWAY}/traces/{trace.trace_id}").text


def test_streaming_is_answered_and_recorded(gateway, session_id):
    with claude(session_id).messages.stream(
        model="claude-mock", max_tokens=200, messages=[{"role": "user", "content": "stream, claude"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "This is the tracegate mock answering: stream, claude"
    gateway.flush()
    (trace,) = gateway.get_session_traces(session_id)
    record = full(trace.trace_id)
    assert record["stream"] is True
    assert record["response_message"]["content"] == text
    assert record["usage"]["output_tokens"] == final.usage.output_tokens
    assert record["raw_response"]["content_type"].startswith("text/event-stream")


def test_streamed_tool_use_is_merged(gateway, session_id):
    tools = [{"name": "search_docs", "description": "Search", "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]
    with claude(session_id, **{"x-mock-chunks": "6"}).messages.stream(
        model="claude-mock", max_tokens=200, tools=tools,
        messages=[{"role": "user", "content": "find the release notes"}],
    ) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use" and block.input == {"query": "find the release notes"}
    gateway.flush()
    (trace,) = gateway.get_session_traces(session_id)
    record = full(trace.trace_id)
    assert record["tools"] == tools
    assert record["response_message"]["content_blocks"][0]["input"] == block.input
    assert record["tool_calls"][0]["id"] == block.id
    assert record["finish_reason"] == "tool_use"


def test_thinking_blocks_are_kept(gateway, session_id):
    with claude(session_id).messages.stream(
        model="claude-mock", max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "think first"}],
    ) as stream:
        final = stream.get_final_message()
    thinking = final.content[0]
    assert thinking.type == "thinking" and thinking.signature
    gateway.flush()
    (trace,) = gateway.get_session_traces(session_id)
    record = full(trace.trace_id)
    assert record["response_message"]["reasoning_content"] == thinking.thinking
    assert record["response_message"]["content_blocks"][0]["signature"] == thinking.signature


def test_session_base_url(gateway):
    session_id = gateway.create_session()
    sdk = anthropic.Anthropic(base_url=f"{GATEWAY}/sessions/{session_id}", api_key=API_KEY, max_retries=0)
    sdk.messages.create(model="claude-mock", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    gateway.flush()
    assert len(gateway.get_session_traces(session_id)) == 1


def test_upstream_errors_reach_the_sdk(gateway, session_id):
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude(session_id, **{"x-mock-status": "529"}).messages.create(
            model="claude-mock", max_tokens=50, messages=[{"role": "user", "content": "hi"}],
        )
    assert caught.value.status_code == 529
    gateway.flush()
    (trace,) = gateway.get_session_traces(session_id)
    assert full(trace.trace_id)["error"]["kind"] == "upstream_http_error"
