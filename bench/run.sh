#!/usr/bin/env bash
# Gateway overhead benchmark: the mock upstream directly vs through tracegate.
#
# Runs on 127.0.0.1 only, bounded in requests and time:
#   - non-streaming and streaming chat completions, streaming Anthropic
#     messages,
#   - at a fixed rate (RATE req/s, default 500) and at saturation (CONC
#     concurrent connections, default 64),
#   - direct to the mock, then through the gateway (release builds of both).
# Prints RPS, P50 and P99 for each, the gateway/direct ratios, and the number
# of records in the store afterwards, which must equal the requests sent.
#
# Needs `oha` (cargo install oha --locked) and python3.
# Usage: bench/run.sh            (env: RATE, FIXED_N, SAT_N, CONC, CHUNKS,
#                                 PROFILE: release, or profiling for line
#                                 tables to `perf record -g -p` the gateway)
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-500}
FIXED_N=${FIXED_N:-5000}   # requests per fixed-rate run (10 s at 500 req/s)
SAT_N=${SAT_N:-20000}      # requests per saturation run
CONC=${CONC:-64}
CHUNKS=${CHUNKS:-16}       # content chunks per streamed answer
OHA=${OHA:-oha}
command -v "$OHA" >/dev/null || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }

PROFILE=${PROFILE:-release}   # release: the binary that ships
cargo build --profile "$PROFILE" --quiet
BIN=target/$PROFILE/tracegate
WORK=$(mktemp -d)
MOCK_PORT=${MOCK_PORT:-18000}
GW_PORT=${GW_PORT:-19090}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN" mock-upstream --listen 127.0.0.1:$MOCK_PORT --chunks "$CHUNKS" >"$WORK/mock.log" 2>&1 & pids+=($!)
RUST_LOG=warn "$BIN" serve --listen 127.0.0.1:$GW_PORT --db "$WORK/bench.db" \
    --upstream http://127.0.0.1:$MOCK_PORT/v1 >"$WORK/gateway.log" 2>&1 & pids+=($!)
echo "gateway: pid $! ($BIN)"
for port in $MOCK_PORT $GW_PORT; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

PLAIN='{"model":"mock-model","messages":[{"role":"system","content":"You are a helpful agent."},{"role":"user","content":"Summarise the failing test and propose a fix."}],"max_tokens":128}'
STREAM='{"model":"mock-model","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are a helpful agent."},{"role":"user","content":"Summarise the failing test and propose a fix."}],"max_tokens":128}'
ANTHROPIC='{"model":"claude-mock","stream":true,"system":"You are a helpful agent.","messages":[{"role":"user","content":"Summarise the failing test and propose a fix."}],"max_tokens":128}'

sent_through_gateway=0
run() { # name url body extra-oha-args...
  local name=$1 url=$2 body=$3; shift 3
  "$OHA" --no-tui --output-format json "$@" -m POST -H 'content-type: application/json' \
      -H 'x-rllm-run-id: bench' -H 'x-rllm-session-id: bench-session' \
      -H 'anthropic-version: 2023-06-01' -d "$body" "$url" > "$WORK/$name.json"
}

declare -a rows
for kind in plain stream anthropic; do
  case $kind in
    plain) body=$PLAIN; path=/v1/chat/completions ;;
    stream) body=$STREAM; path=/v1/chat/completions ;;
    anthropic) body=$ANTHROPIC; path=/v1/messages ;;
  esac
  for load in fixed saturation; do
    if [ $load = fixed ]; then args=(-n "$FIXED_N" -q "$RATE" -c "$CONC"); n=$FIXED_N
    else args=(-n "$SAT_N" -c "$CONC"); n=$SAT_N; fi
    run "$kind-$load-direct" "http://127.0.0.1:$MOCK_PORT$path" "$body" "${args[@]}"
    run "$kind-$load-gateway" "http://127.0.0.1:$GW_PORT$path" "$body" "${args[@]}"
    sent_through_gateway=$((sent_through_gateway + n))
    rows+=("$kind $load")
  done
done

curl -s -X POST "http://127.0.0.1:$GW_PORT/admin/flush" >/dev/null 2>&1 || \
  python3 -c "import urllib.request; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:$GW_PORT/admin/flush', method='POST'))"

python3 - "$WORK" "$sent_through_gateway" "$RATE" "$CONC" "$CHUNKS" "${rows[@]}" <<'PY'
import json, sqlite3, sys
work, sent, rate, conc, chunks, rows = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
def load(name):
    d = json.load(open(f"{work}/{name}.json"))
    s, p = d["summary"], d["latencyPercentiles"]
    ok = sum(v for k, v in d.get("statusCodeDistribution", {}).items() if k.startswith("2"))
    return s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, ok
print(f"tracegate overhead benchmark · fixed rate {rate} req/s · saturation {conc} connections · {chunks} chunks per stream")
print(f"{'case':<22}{'direct rps':>11}{'gw rps':>9}{'rps ratio':>10}{'direct p50':>12}{'gw p50':>9}{'Δp50 ms':>9}{'direct p99':>12}{'gw p99':>9}{'Δp99 ms':>9}")
for row in rows:
    kind, load_ = row.split()
    d = load(f"{kind}-{load_}-direct"); g = load(f"{kind}-{load_}-gateway")
    print(f"{kind + ' ' + load_:<22}{d[0]:>11.0f}{g[0]:>9.0f}{g[0]/d[0]:>10.2f}{d[1]:>12.2f}{g[1]:>9.2f}{g[1]-d[1]:>9.2f}{d[2]:>12.2f}{g[2]:>9.2f}{g[2]-d[2]:>9.2f}")
    if d[3] != g[3]:
        print(f"  note: {kind} {load_}: {d[3]} ok direct vs {g[3]} ok through the gateway")
conn = sqlite3.connect(f"{work}/bench.db")
stored = conn.execute("select count(*) from traces").fetchone()[0]
statuses = dict(conn.execute("select status, count(*) from traces group by status").fetchall())
print(f"requests sent through the gateway: {sent} · records stored: {stored} · by status: {statuses}")
sys.exit(0 if stored == sent else 1)
PY
