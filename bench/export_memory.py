#!/usr/bin/env python3
"""Export in constant memory: peak RSS and rate of `tracegate export` at two
store sizes.

For each size in SIZES (default 10 000 and 100 000 calls) it fills a fresh
store with RL episodes (`benches/export_data.rs`: sessions of 16 turns whose
prompts extend, token ids and logprobs, a reward per session; written
through the store's writer as the gateway writes, without HTTP), then runs
`tracegate export` on it as `--format jsonl`, `--format trajectory` and
`--format parquet` (trajectory rows), and `--format parquet --shape calls`,
each to a file, and reports wall time, calls per second, the output's size
and the process's peak RSS (`ru_maxrss` of that child alone, from wait4). If
the export streams, the peak at 100 000 calls is the peak at 10 000.

One export at a time: it keeps one core busy (the fill, two, for a few
seconds). Files go to a temporary directory, removed at the end.

Usage: bench/export_memory.py [BINARY]    (default target/release/tracegate)
       env: SIZES=10000,100000  PROFILE=release|debug (how the fill is built)
            FORMATS=jsonl,trajectory,parquet,"parquet calls" (which exports)
            STORE=path:N (export an existing store of N calls; no fill)
"""
import os
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/tracegate"
SIZES = [int(s) for s in os.environ.get("SIZES", "10000,100000").split(",")]
PROFILE = os.environ.get("PROFILE", "release")
FORMATS = [
    ("jsonl", ["--format", "jsonl"]),
    ("trajectory", ["--format", "trajectory"]),
    ("parquet", ["--format", "parquet"]),
    ("parquet calls", ["--format", "parquet", "--shape", "calls"]),
]
if "FORMATS" in os.environ:
    chosen = os.environ["FORMATS"].split(",")
    FORMATS = [(name, args) for name, args in FORMATS if name in chosen]
STORE = os.environ.get("STORE")


def fill(db, n):
    cargo = ["cargo", "bench" if PROFILE == "release" else "test", "--quiet", "--bench", "export_data"]
    env = dict(os.environ, EXPORT_BENCH_DB=db, EXPORT_BENCH_N=str(n))
    out = subprocess.run(cargo, env=env, check=True, capture_output=True, text=True).stdout
    print(f"  {out.strip().splitlines()[-1]}", flush=True)


def export(db, out, args):
    """(seconds, peak RSS in MiB) of one export to `out`."""
    started = time.monotonic()
    child = subprocess.Popen(
        [BIN, "export", "--db", db, "--out", out, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"export {args} failed: {child.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stores = [(STORE.split(":")[0], int(STORE.split(":")[1]))] if STORE else [(None, n) for n in SIZES]
        for db, n in stores:
            if db is None:
                db = os.path.join(tmp, f"store-{n}.db")
                print(f"filling {n} calls ...", flush=True)
                fill(db, n)
            store_mib = sum(
                os.path.getsize(db + suffix) for suffix in ("", "-wal") if os.path.exists(db + suffix)
            ) / 2**20
            for name, args in FORMATS:
                out = os.path.join(tmp, "out")
                seconds, peak = export(db, out, args)
                size = os.path.getsize(out) / 2**20
                rows.append((n, store_mib, name, seconds, n / seconds, size, peak))
                print(f"  {name}: {seconds:.2f} s, peak {peak:.1f} MiB", flush=True)
                os.remove(out)
            if not STORE:
                os.remove(db)
    print()
    print("| calls | store MiB | format | seconds | calls/s | output MiB | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for n, store, name, seconds, rate, size, peak in rows:
        print(f"| {n} | {store:.0f} | {name} | {seconds:.2f} | {rate:.0f} | {size:.1f} | {peak:.1f} |")


if __name__ == "__main__":
    main()
