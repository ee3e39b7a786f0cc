"""The official `openai` SDK through the real tracegate binary.

Each test asserts what the SDK saw and what tracegate stored, reading the
store back through rLLM's GatewayClient and the raw HTTP API.
"""

import httpx
import openai
import pytest
from conftest import API_KEY, GATEWAY


def client(session_id=None, step=None, base_url=f"{GATEWAY}/v1", **headers):
    default_headers = {"X-RLLM-Run-Id": "sdk-run", "X-RLLM-Harness": "pytest"}
    if session_id:
        default_headers["X-RLLM-Session-Id"] = session_id
    if step is not None:
        default_headers["X-RLLM-Step-Id"] = str(step)
    default_headers.update(headers)
    return openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, default_headers=default_headers)


def raw_trace(trace_id):
    response = httpx.get(f"{GATEWAY}/traces/{trace_id}")
    response.raise_for_status()
    return response


def test_sync_chat_is_answered_and_recorded(gateway, session_id):
    answer = client(session_id, step=1).chat.completions.create(
        model="mock-model",
        messages=[{"role": "user", "content": "hello from the sdk"}],
        temperature=0.5,
    )
    assert answer.choices[0].message.content == "This is the tracegate mock answering: hello from the sdk"
    assert gateway.flush()
    traces = gateway.get_session_traces(session_id)
    assert len(traces) == 1
    trace = traces[0]
    assert trace.session_id == session_id
    assert trace.model == "mock-model"
    assert trace.messages == [{"role": "user", "content": "hello from the sdk"}]
    assert trace.response_message["content"] == answer.choices[0].message.content
    assert trace.finish_reason == "stop"
    assert trace.token_counts == {
        "prompt": answer.usage.prompt_tokens,
        "completion": answer.usage.completion_tokens,
    }
    assert trace.raw_response["id"] == answer.id
    assert trace.raw_request["temperature"] == 0.5
    full = raw_trace(trace.trace_id).json()
    assert full["run_id"] == "sdk-run"
    assert full["harness"] == "pytest"
    assert full["step_id"] == 1
    assert full["status"] == "ok"


def test_streaming_is_answered_and_recorded(gateway, session_id):
    stream = client(session_id).chat.completions.create(
        model="mock-model",
        messages=[{"role": "user", "content": "stream to me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    text = "".join(pieces)
    assert text == "This is the tracegate mock answering: stream to me"
    assert len(pieces) > 1, "the answer arrived in pieces"
    gateway.flush()
    (trace,) = gateway.get_session_traces(session_id)
    assert trace.response_message["content"] == text
    assert trace.token_counts["completion"] == usage.completion_tokens
    full = raw_trace(trace.trace_id).json()
    assert full["stream"] is True
    assert full["ttft_ms"] is not None and full["ttft_ms"] <= full["latency_ms"]
    assert full["raw_response"]["content_type"] == "text/event-stream"


def test_session_base_url_from_create_session(gateway):
    session_id = gateway.create_session(metadata={"task": "sdk-session-url"})
    base_url = f"{GATEWAY}{gateway.get_session_url(session_id)[len(GATEWAY):]}"
    assert base_url.endswith(f"/sessions/{session_id}/v1")
    sdk = openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
    for step in range(3):
        sdk.chat.completions.create(
            model="mock-model",
            messages=[{"role": "user", "content": f"step {step}"}],
            extra_body={"metadata": {"rllm": {"step_id": step}}},
        )
    gateway.flush()
    info = gateway.get_session_info(session_id)
    assert info["trace_count"] == 3
    assert info["metadata"] == {"task": "sdk-session-url"}
    traces = gateway.get_session_traces(session_id)
    assert [t.messages[-1]["content"] for t in traces] == ["step 0", "step 1", "step 2"]
    assert [raw_trace(t.trace_id).json()["step_id"] for t in traces] == [0, 1, 2]
    assert session_id in [s["session_id"] for s in gateway.list_sessions()]
    assert gateway.delete_session(session_id) == 3
    assert gateway.get_session_traces(session_id) == []


def test_tool_calls_round_trip(gateway, session_id):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    answer = client(session_id).chat.completions.create(
        model="mock-model",
        messages=[{"role": "user", "content": "weather in Paris"}],
        tools=tools,
    )
    call = answer.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    gateway.flush()
    (trace,) = gateway.get_session_traces(session_id)
    assert trace.response_message["tool_calls"][0]["function"]["arguments"] == call.function.arguments
    assert trace.finish_reason == "tool_calls"


def test_upstream_errors_reach_the_sdk_and_are_recorded(gateway, session_id):
    sdk = client(session_id, **{"x-mock-status": "503"})
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "fail"}])
    assert caught.value.status_code == 503
    gateway.flush()
    (trace,) = gateway.get_session_traces(session_id)
    full = raw_trace(trace.trace_id).json()
    assert full["status"] == "error"
    assert full["http_status"] == 503
    assert full["error"]["kind"] == "upstream_http_error"


def test_vllm_token_data_is_recorded(gateway, session_id):
    answer = client(session_id).chat.completions.create(
        model="mock-model",
        messages=[{"role": "user", "content": "tokens please"}],
        logprobs=True,
        top_logprobs=2,
        extra_body={"return_token_ids": True},
    )
    gateway.flush()
    (trace,) = gateway.get_session_traces(session_id)
    extra = answer.model_extra or {}
    assert trace.prompt_token_ids == extra["prompt_token_ids"]
    assert trace.completion_token_ids == answer.choices[0].model_extra["token_ids"]
    assert trace.logprobs == [t.logprob for t in answer.choices[0].logprobs.content]


def test_the_api_key_is_never_stored(gateway, session_id):
    client(session_id).chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "hi"}])
    gateway.flush()
    (trace,) = gateway.get_session_traces(session_id)
    text = raw_trace(trace.trace_id).text
    assert API_KEY not in text
    assert '"authorization":"[REDACTED]"' in text.replace(" ", "")


def test_n2_choices_are_all_recorded(gateway, session_id):
    answer = client(session_id).chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "two please"}], n=2
    )
    assert len(answer.choices) == 2
    gateway.flush()
    (trace,) = gateway.get_session_traces(session_id)
    full = raw_trace(trace.trace_id).json()
    assert [c["message"]["content"] for c in full["choices"]] == [c.message.content for c in answer.choices]
    assert full["finish_reasons"] == ["stop", "stop"]


def test_streaming_tool_calls_with_usage_are_merged(gateway, session_id):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    stream = client(session_id, **{"x-mock-chunks": "9"}).chat.completions.create(
        model="mock-model",
        messages=[{"role": "user", "content": "find the docs"}],
        tools=tools,
        stream=True,
        stream_options={"include_usage": True},
    )
    fragments, usage = [], None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                fragments.append(call.function.arguments or "")
        usage = chunk.usage or usage
    assert len([f for f in fragments if f]) > 3, "the arguments arrived in pieces"
    gateway.flush()
    (trace,) = gateway.get_session_traces(session_id)
    full = raw_trace(trace.trace_id).json()
    assert full["tool_calls"][0]["function"]["arguments"] == "".join(fragments)
    assert full["tool_calls"][0]["function"]["name"] == "lookup"
    assert full["usage"]["output_tokens"] == usage.completion_tokens


def test_responses_api_is_answered_and_recorded(gateway, session_id):
    sdk = client(session_id)
    whole = sdk.responses.create(model="mock-model", input="hello responses", instructions="Be brief.")
    assert whole.output_text == "This is the tracegate mock answering: hello responses"
    events = list(sdk.responses.create(model="mock-model", input="stream responses", stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-1].type == "response.completed"
    gateway.flush()
    first, second = gateway.get_session_traces(session_id)
    assert first.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello responses"}]
    assert first.response_message["content"] == whole.output_text
    assert second.response_message["content"] == deltas
    full = raw_trace(second.trace_id).json()
    assert full["stream"] is True and full["status"] == "ok"
    assert full["usage"]["output_tokens"] == events[-1].response.usage.output_tokens


def test_responses_api_function_calls(gateway, session_id):
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    stream = client(session_id).responses.create(model="mock-model", input="weather in Oslo", tools=tools, stream=True)
    final = [e for e in stream if e.type == "response.completed"][0].response
    call = final.output[0]
    assert call.type == "function_call"
    gateway.flush()
    (trace,) = gateway.get_session_traces(session_id)
    full = raw_trace(trace.trace_id).json()
    assert full["tool_calls"][0]["function"]["arguments"] == call.arguments
    assert full["finish_reason"] == "tool_calls"


def test_completions_and_embeddings_are_recorded(gateway, session_id):
    sdk = client(session_id)
    completion = sdk.completions.create(model="mock-model", prompt="Once upon a time", logprobs=2)
    embedding = sdk.embeddings.create(model="mock-embed", input=["alpha", "beta"], dimensions=4)
    assert len(embedding.data) == 2 and len(embedding.data[0].embedding) == 4
    gateway.flush()
    comp, emb = gateway.get_session_traces(session_id)
    assert comp.response_message["content"] == completion.choices[0].text
    assert comp.logprobs == completion.choices[0].logprobs.token_logprobs
    full = raw_trace(emb.trace_id).json()
    assert full["operation"] == "embeddings"
    # The SDK asks for base64 vectors (and decodes them itself).
    assert full["embeddings"] == {"input_count": 2, "dimensions": 4, "encoding_format": "base64"}
    assert all(d["embedding"] is None for d in full["raw_response"]["data"]), "vectors are not stored"
