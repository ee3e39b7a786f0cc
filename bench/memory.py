#!/usr/bin/env python3
"""Gateway memory with many concurrent slow streams: RSS idle, with the
streams open, and after they close.

Starts `tracegate mock-upstream` and `tracegate serve` (the binary given, the
release build by default), warms the gateway up with a few calls, then opens
STREAMS concurrent streamed chat calls. The mock holds each stream after its
first chunk (`x-mock-hold: 1`), so all of them are open at once whatever the
machine's speed; then it releases them and they stream the rest slowly
(`x-mock-chunk-delay-ms`). RSS (`VmRSS` from /proc) is read idle, when every
stream is open and held, while they stream, and after they closed and the
store flushed; the peak is the kernel's high-water mark (`VmHWM`), so no
sample can miss it. It checks that every byte arrived, that every call was
recorded, and that the peak stays within LIMIT_MIB (issue 14: 64 MiB with
1000 streams). Runs on 127.0.0.1 only.

Usage: bench/memory.py [BINARY]
       (env: STREAMS=1000, CHUNKS=20, DELAY_MS=50, LIMIT_MIB=64)
"""
import asyncio
import json
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

STREAMS = int(os.environ.get("STREAMS", "1000"))
CHUNKS = int(os.environ.get("CHUNKS", "20"))
DELAY_MS = int(os.environ.get("DELAY_MS", "50"))
LIMIT_MIB = float(os.environ.get("LIMIT_MIB", "64"))
BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/tracegate"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def rss_kib(pid):
    return status_kib(pid, "VmRSS")


def peak_kib(pid):
    return status_kib(pid, "VmHWM")


def rss_parts(pid):
    """RSS by what holds it, from /proc/PID/smaps (KiB): the binary's own
    pages, other files, thread stacks (a read-write mapping right above a
    guard page), glibc malloc's heap (SQLite allocates there: `[heap]` and
    the arenas that end in a reserved remainder), and the rest of the
    anonymous memory (mimalloc's arenas: everything Rust allocates)."""
    maps = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                maps.append({"lo": lo, "hi": hi, "perms": head[1],
                             "path": head[5] if len(head) > 5 else "", "rss": 0})
            elif head[0] == "Rss:":
                maps[-1]["rss"] = int(head[1])
    binary = os.path.realpath(BIN)
    parts = {"binary": 0, "files": 0, "stacks": 0, "glibc heap": 0, "mimalloc/anon": 0}
    for i, m in enumerate(maps):
        before = maps[i - 1] if i > 0 else None
        after = maps[i + 1] if i + 1 < len(maps) else None
        guard = lambda n, at: n and n["perms"].startswith("---") and n[at] == m["lo" if at == "hi" else "hi"]
        if m["path"] == binary:
            kind = "binary"
        elif m["path"].startswith("/"):
            kind = "files"
        elif m["path"] in ("[stack]",) or (guard(before, "hi") and before["hi"] - before["lo"] <= 65536):
            kind = "stacks"
        elif m["path"] == "[heap]" or guard(after, "lo"):
            kind = "glibc heap"
        else:
            kind = "mimalloc/anon"
        parts[kind] += m["rss"]
    return parts


def parts_text(parts):
    return ", ".join(f"{k} {v / 1024:.1f}" for k, v in parts.items()) + " MiB"


def open_files(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_listening(port):
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.025)
    raise RuntimeError(f"nothing listens on {port}")


def request(port, path, body=b"", method="POST", headers=()):
    head = [f"{method} {path} HTTP/1.1", f"host: 127.0.0.1:{port}",
            "content-type: application/json", f"content-length: {len(body)}",
            *headers, "", ""]
    return "\r\n".join(head).encode() + body


async def call(port, data):
    """Sends one request, reads the whole answer (the gateway closes
    nothing: the request says `connection: close`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def held_stream(port, body, opened):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(port, "/v1/chat/completions", body, headers=(
        "connection: close", "x-mock-hold: 1", f"x-mock-chunks: {CHUNKS}",
        f"x-mock-chunk-delay-ms: {DELAY_MS}")))
    await writer.drain()
    answer = b""
    while b"data: " not in answer:  # the first event: this stream is open
        more = await reader.read(65536)
        if not more:
            raise RuntimeError(f"stream ended early: {answer[:200]!r}")
        answer += more
    opened.release()
    answer += await reader.read()
    writer.close()
    return answer


async def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * STREAMS + 256)), hard))
    work = tempfile.mkdtemp()
    mock_port, gw_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEGATE_")}
    env.pop("OPENAI_BASE_URL", None)
    env["RUST_LOG"] = "warn"
    mock = subprocess.Popen([BIN, "mock-upstream", "--listen", f"127.0.0.1:{mock_port}"],
                            env=env, stdout=subprocess.DEVNULL)
    gw = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{gw_port}",
                           "--db", f"{work}/memory.db",
                           "--upstream", f"http://127.0.0.1:{mock_port}/v1"], env=env,
                          stdout=subprocess.DEVNULL)
    try:
        wait_listening(mock_port)
        wait_listening(gw_port)
        body = json.dumps({"model": "mock-model", "stream": True, "messages": [
            {"role": "user", "content": "a slow stream " * 8}]}).encode()
        # Warm up: the first calls allocate what every later call reuses.
        for _ in range(20):
            await call(gw_port, request(gw_port, "/v1/chat/completions", body,
                                        headers=("connection: close",)))
        await call(gw_port, request(gw_port, "/admin/flush", headers=("connection: close",)))
        idle = rss_kib(gw.pid)
        idle_parts = rss_parts(gw.pid)

        opened = asyncio.Semaphore(0)
        streams = [asyncio.create_task(held_stream(gw_port, body, opened)) for _ in range(STREAMS)]
        for _ in range(STREAMS):
            await opened.acquire()
        held = rss_kib(gw.pid)
        held_files = open_files(gw.pid)
        held_parts = rss_parts(gw.pid)
        await call(mock_port, request(mock_port, "/mock/release", headers=("connection: close",)))
        streaming = held
        pending = set(streams)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.05)
            streaming = max(streaming, rss_kib(gw.pid))
        answers = [s.result() for s in streams]
        complete = sum(1 for a in answers if b"data: [DONE]" in a and a.endswith(b"\r\n0\r\n\r\n"))
        await call(gw_port, request(gw_port, "/admin/flush", headers=("connection: close",)))
        after = rss_kib(gw.pid)
        after_parts = rss_parts(gw.pid)
        peak = peak_kib(gw.pid)
        after_files = open_files(gw.pid)
        records = sqlite3.connect(f"{work}/memory.db").execute(
            "select count(*) from traces").fetchone()[0]
    finally:
        for p in (gw, mock):
            p.terminate()
            p.wait()
    mib = lambda kib: f"{kib / 1024:.1f} MiB"
    print("command: " + " ".join(
        [f"STREAMS={STREAMS} CHUNKS={CHUNKS} DELAY_MS={DELAY_MS}", *sys.argv]))
    print(f"binary: {BIN}")
    print(f"streams: {STREAMS} ({CHUNKS} chunks, {DELAY_MS} ms apart), complete: {complete}")
    print(f"records: {records} (expected {STREAMS + 20})")
    print(f"RSS idle: {mib(idle)} ({parts_text(idle_parts)})")
    print(f"RSS with {STREAMS} streams open: {mib(held)} "
          f"({(held - idle) / STREAMS:.1f} KiB per stream; {held_files} open files; "
          f"{parts_text(held_parts)})")
    print(f"RSS highest sampled while streaming: {mib(streaming)}")
    print(f"peak RSS (VmHWM): {mib(peak)} ({(peak - idle) / STREAMS:.1f} KiB per stream over idle; "
          f"limit {LIMIT_MIB:g} MiB)")
    print(f"RSS after they closed: {mib(after)} (+{mib(after - idle)} over idle; "
          f"{after_files} open files; {parts_text(after_parts)})")
    print(f"summary: {STREAMS} streams: RSS idle {mib(idle)}, open {mib(held)}, "
          f"peak {mib(peak)} (goal {LIMIT_MIB:g} MiB), after {mib(after)}; "
          f"{(held - idle) / STREAMS:.1f} KiB per open stream; "
          f"records {records}/{STREAMS + 20}, streams complete {complete}/{STREAMS}")
    if complete != STREAMS or records != STREAMS + 20:
        sys.exit("FAILED: a stream was cut or a call was not recorded")
    if peak / 1024 > LIMIT_MIB:
        sys.exit(f"FAILED: peak RSS {mib(peak)} is over {LIMIT_MIB:g} MiB")


asyncio.run(main())
