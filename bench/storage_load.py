#!/usr/bin/env python3
"""Load driver for bench/storage.sh: agent sessions or one-message calls
through a tracegate gateway in front of its mock upstream.

Standard library only (an asyncio HTTP/1.1 client with keep-alive), so it
runs anywhere python3 does. Everything it sends is deterministic (seeded),
so two gateways get exactly the same traffic.

  sessions  N sessions x T turns of a coding agent: a ~300-word system
            prompt and a task; each turn sends the whole conversation
            (with two tool definitions), gets the assistant's answer
            (x-mock-content: 40-120 words; the mock's tool call on the first
            turn) and adds it and a 150-400-word tool result. Every other
            turn is streamed. All sessions run at once (each one's turns in
            order).
  single    M one-message calls (a system prompt and a numbered question),
            CONC at a time, under one run and session as bench/run.sh sends.

Prints one JSON line: calls, seconds (from the first call until
POST /admin/flush returned: every record committed), calls_per_s, and for
`sessions` the unique payload read back from the API: per session its final
conversation (messages + answer, compact JSON), its final prompt's token ids
(4 bytes each) and every completion's token ids and logprobs (4 + 8 bytes
each).
"""

import argparse
import asyncio
import json
import random
import time
from urllib.parse import urlsplit

WORDS = (
    "the of and to in is for that with on as it be by this are from or at an "
    "test fails file error line function return value module import class self "
    "assert expected got none true false build cargo python error warning patch "
    "diff change fix bug issue config path read write open close parse token "
    "request response stream chunk session model agent tool call result output "
    "input data list map key index count size time run step check case when then "
    "because should could would will can may not but if else while loop break "
    "string number float integer array object field type struct enum trait impl "
    "thread lock queue batch commit store row column table query filter sort"
).split()


def text(rng, words):
    return " ".join(rng.choice(WORDS) for _ in range(words))


TOOLS = [
    {"type": "function", "function": {
        "name": "run_shell", "description": "Run a shell command in the repository and return its output.",
        "parameters": {"type": "object", "properties": {"command": {"type": "string", "description": "The command"}},
                       "required": ["command"]}}},
    {"type": "function", "function": {
        "name": "edit_file", "description": "Replace a range of lines of a file.",
        "parameters": {"type": "object", "properties": {
            "path": {"type": "string"}, "start": {"type": "integer"}, "end": {"type": "integer"},
            "text": {"type": "string"}}, "required": ["path", "start", "end", "text"]}}},
]


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method, path, headers=None, body=None):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"host: {self.host}:{self.port}",
                 "content-type: application/json", f"content-length: {len(payload)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        fields = {}
        for line in header_lines:
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
        if fields.get("transfer-encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                data += chunk[:-2]
        else:
            data = await self.reader.readexactly(int(fields.get("content-length", "0")))
        return status, fields, bytes(data)


def answer_of(stream, data):
    """The assistant message as the client rebuilds it."""
    if not stream:
        return json.loads(data)["choices"][0]["message"]
    content, calls = "", {}
    for line in data.decode().split("\n"):
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        for choice in json.loads(line[6:]).get("choices", []):
            delta = choice.get("delta", {})
            content += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call.get("index", 0), {"id": None, "type": "function",
                                                               "function": {"name": "", "arguments": ""}})
                slot["id"] = call.get("id") or slot["id"]
                fn = call.get("function", {})
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
    if calls:
        return {"role": "assistant", "content": None, "tool_calls": [calls[i] for i in sorted(calls)]}
    return {"role": "assistant", "content": content}


async def session(gateway, run, index, turns, seed):
    rng = random.Random(seed * 1000 + index)
    sid = f"{run}-session-{index}"
    messages = [{"role": "system", "content": "You are a coding agent. " + text(rng, 300)},
                {"role": "user", "content": "Fix the failing test: " + text(rng, 40)}]
    conn = Connection(*gateway)
    for turn in range(turns):
        stream = turn % 2 == 1
        body = {"model": "qwen3-mock", "messages": messages, "tools": TOOLS,
                "max_tokens": 512, "temperature": 0.7}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        headers = {"x-rllm-session-id": sid, "x-rllm-run-id": run,
                   "x-mock-content": text(rng, rng.randint(40, 120))}
        status, _, data = await conn.request("POST", "/v1/chat/completions", headers, body)
        assert status == 200, (status, data[:200])
        reply = answer_of(stream, data)
        calls = reply.get("tool_calls") or [{"id": f"call_{index}_{turn}"}]
        messages = messages + [reply, {"role": "tool", "tool_call_id": calls[0]["id"],
                                       "content": text(rng, rng.randint(150, 400))}]
    return sid


async def single(gateway, calls, conc, run):
    queue = asyncio.Queue()
    for i in range(calls):
        queue.put_nowait(i)

    async def worker():
        conn = Connection(*gateway)
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = {"model": "mock-model", "max_tokens": 128, "messages": [
                {"role": "system", "content": "You are a helpful agent."},
                {"role": "user", "content": f"Summarise the failing test #{i} and propose a fix."}]}
            headers = {"x-rllm-run-id": run, "x-rllm-session-id": "bench-session"}
            status, _, data = await conn.request("POST", "/v1/chat/completions", headers, body)
            assert status == 200, (status, data[:200])

    await asyncio.gather(*(worker() for _ in range(conc)))


async def unique_payload(gateway, sids):
    conn = Connection(*gateway)
    total = 0
    for sid in sids:
        status, _, data = await conn.request("GET", f"/sessions/{sid}/traces")
        assert status == 200, (status, data[:200])
        records = sorted(json.loads(data), key=lambda r: r["started_at"])
        final = records[-1]
        conversation = json.dumps(final["messages"] + [final["response_message"]], separators=(",", ":"))
        total += len(conversation.encode()) + 4 * len(final["prompt_token_ids"])
        total += sum(4 * len(r["completion_token_ids"]) + 8 * len(r["logprobs"] or []) for r in records)
    return total


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["sessions", "single"])
    p.add_argument("--gateway", default="http://127.0.0.1:19190")
    p.add_argument("--sessions", type=int, default=16)
    p.add_argument("--turns", type=int, default=40)
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--conc", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--run", default="bench")
    a = p.parse_args()
    url = urlsplit(a.gateway)
    gateway = (url.hostname, url.port)
    started = time.monotonic()
    if a.mode == "sessions":
        sids = await asyncio.gather(*(session(gateway, a.run, i, a.turns, a.seed) for i in range(a.sessions)))
        calls = a.sessions * a.turns
    else:
        await single(gateway, a.calls, a.conc, a.run)
        calls = a.calls
    await Connection(*gateway).request("POST", "/admin/flush")
    seconds = time.monotonic() - started
    out = {"mode": a.mode, "calls": calls, "seconds": round(seconds, 3), "calls_per_s": round(calls / seconds, 1)}
    if a.mode == "sessions":
        out["sessions"] = a.sessions
        out["unique_bytes"] = await unique_payload(gateway, sids)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
