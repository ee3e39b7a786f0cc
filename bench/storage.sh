#!/usr/bin/env bash
# Storage benchmark: what a store costs on disk, before and after the
# session-linear layout (schema 3), side by side, from one run.
#
# Runs on 127.0.0.1 only, bounded in requests:
#   - agent sessions (bench/storage_load.py sessions): SESSIONS x TURNS
#     turns of a coding agent through a `kind = "vllm"` gateway (prompt and
#     completion token ids and logprobs recorded), every other turn
#     streamed; with the default settings, and (after only) raw bodies off;
#   - one-message calls (bench/storage_load.py single): CALLS calls, CONC at
#     a time, each with its own question, like bench/run.sh's traffic.
# For each it prints the database's bytes (after the gateway's final
# checkpoint), the unique payload (per session: its final conversation, its
# final prompt's token ids, every completion's token ids and logprobs), their
# ratio, bytes per session or per call, and calls/s at saturation (from the
# first call until POST /admin/flush returned: every record committed).
#
# "Before" is main (or BEFORE_REV, or the binary BEFORE_BIN): its tree is
# archived into a temporary directory and built in this checkout's target/,
# so the two builds share their dependencies; both binaries are copied out
# before they run.
#
# Measured figures: schema/storage.md, "Measured".
#
# Usage: bench/storage.sh      (env: SESSIONS, TURNS, CALLS, CONC, BEFORE_REV, BEFORE_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS=${SESSIONS:-16}
TURNS=${TURNS:-40}
CALLS=${CALLS:-20000}
CONC=${CONC:-64}
MOCK_PORT=${MOCK_PORT:-18100}
GW_PORT=${GW_PORT:-19190}
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

if [ -z "${BEFORE_BIN:-}" ]; then
  mkdir -p "$WORK/before-src"
  git archive "${BEFORE_REV:-main}" | tar -x -C "$WORK/before-src"
  CARGO_TARGET_DIR="$PWD/target" cargo build --release --quiet --manifest-path "$WORK/before-src/Cargo.toml"
  cp target/release/tracegate "$WORK/tracegate-before"
  BEFORE_BIN=$WORK/tracegate-before
fi
# Built last, so target/release/tracegate is this checkout's again.
cargo build --release --quiet
AFTER=$WORK/tracegate-after
cp target/release/tracegate "$AFTER"
if cmp -s "$AFTER" "$BEFORE_BIN"; then echo "before and after are the same binary" >&2; exit 1; fi

"$AFTER" mock-upstream --listen 127.0.0.1:$MOCK_PORT >"$WORK/mock.log" 2>&1 & pids+=($!)
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; }
wait_port $MOCK_PORT

# run NAME BINARY MODE [gateway flags...]: one gateway, one load, then the
# gateway stops (its final checkpoint empties the WAL) and the file is measured.
run() {
  local name=$1 bin=$2 mode=$3; shift 3
  local db="$WORK/$name.db"
  RUST_LOG=warn "$bin" serve --listen 127.0.0.1:$GW_PORT --db "$db" \
      --upstream http://127.0.0.1:$MOCK_PORT/v1 "$@" >"$WORK/$name.log" 2>&1 &
  local gw=$!
  wait_port $GW_PORT
  python3 bench/storage_load.py "$mode" --gateway http://127.0.0.1:$GW_PORT --run "$name" \
      --sessions "$SESSIONS" --turns "$TURNS" --calls "$CALLS" --conc "$CONC" > "$WORK/$name.json"
  kill -INT $gw; wait $gw || true
  python3 - "$db" >> "$WORK/$name.json" <<'PY'
import json, os, sqlite3, sys
db = sys.argv[1]
size = os.path.getsize(db) + sum(os.path.getsize(db + s) for s in ("-wal",) if os.path.exists(db + s))
conn = sqlite3.connect(db)
print(json.dumps({"db_bytes": size, "records": conn.execute("select count(*) from traces").fetchone()[0]}))
PY
}

run sessions-before "$BEFORE_BIN" sessions --kind vllm
run sessions-after "$AFTER" sessions --kind vllm
run sessions-after-raw-off "$AFTER" sessions --kind vllm --raw-bodies never
run single-before "$BEFORE_BIN" single
run single-after "$AFTER" single
run single-after-raw-off "$AFTER" single --raw-bodies never

python3 - "$WORK" "$SESSIONS" "$TURNS" "$CALLS" "$CONC" <<'PY'
import json, sys
work, sessions, turns, calls, conc = sys.argv[1], *map(int, sys.argv[2:])
def load(name):
    out = {}
    for line in open(f"{work}/{name}.json"):
        out.update(json.loads(line))
    return out
mb = lambda b: f"{b / 1e6:.1f} MB"
print(f"tracegate storage benchmark · {sessions} sessions x {turns} turns (vLLM token data, every other turn streamed) · {calls} one-message calls, {conc} at a time")
print(f"{'case':<34}{'records':>9}{'DB':>10}{'unique':>10}{'DB/unique':>11}{'per session':>13}{'calls/s':>9}")
unique = None
for name, label in [("sessions-before", "sessions, before"), ("sessions-after", "sessions, after"),
                    ("sessions-after-raw-off", "sessions, after, raw_bodies=never")]:
    r = load(name)
    unique = r["unique_bytes"]
    print(f"{label:<34}{r['records']:>9}{mb(r['db_bytes']):>10}{mb(unique):>10}{r['db_bytes'] / unique:>10.2f}x"
          f"{r['db_bytes'] / r['sessions'] / 1e3:>10.0f} KB{r['calls_per_s']:>9.0f}")
print(f"{'case':<34}{'records':>9}{'DB':>10}{'per call':>10}{'':>11}{'':>13}{'calls/s':>9}")
for name, label in [("single-before", "one-message calls, before"), ("single-after", "one-message calls, after"),
                    ("single-after-raw-off", "one-message calls, after, raw_bodies=never")]:
    r = load(name)
    print(f"{label:<34}{r['records']:>9}{mb(r['db_bytes']):>10}{r['db_bytes'] / r['records']:>8.0f} B{'':>11}{'':>13}{r['calls_per_s']:>9.0f}")
PY
