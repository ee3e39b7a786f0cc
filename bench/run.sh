#!/usr/bin/env bash
# The gateway benchmark: tracegate against the practical limit of any proxy
# on this machine, nginx `proxy_pass`, side by side in one run.
#
# Paths, each to the same upstream, all on 127.0.0.1:
#   direct   the upstream itself
#   nginx    nginx proxy_pass over keepalive (upstream { keepalive 64; },
#            HTTP/1.1, Connection ""): a C proxy that records nothing
#   gateway  tracegate (the release build), recording every call to SQLite
# Upstreams: nginx `return 200` with static bodies captured from the mock
# (chat completion JSON, a chat SSE stream, an Anthropic SSE stream; the
# case is chosen by an x-bench-case header), and the release mock itself for
# the vLLM case (a `--kind vllm` gateway: token ids and logprobs injected,
# asked for and recorded; nginx cannot answer that).
# Cases: plain, stream, anthropic, vllm. Load shapes (hey; CASE_SECONDS each):
#   paced      RATE req/s evenly (oha -q RATE if oha is installed, else
#              hey -c 1 -q RATE: one connection, one call every 1/RATE s)
#   bursts     hey -c 10 -q RATE/10: bursts of 10 concurrent calls at once
#   saturation hey -c CONC, no rate limit
# Then the store on its own (benches/store.rs: records/s, no HTTP).
# Prints one table (req/s, P50, P99, the gateway/nginx ratio, the latency
# each proxy adds to direct), the records check (records stored per case ==
# requests the gateway answered), and one summary line for CI logs that
# starts with `bench:`. Exits non-zero only if a record is missing.
#
# hey reports latencies in 0.1 ms steps: added latencies below that are
# noise. 2 cores are shared by load generator, upstream and proxy.
#
# Needs: nginx (Debian: apt-get install nginx-light), hey (apt-get install
# hey), python3; oha optional (cargo install oha --locked).
# Usage: bench/run.sh   env: RATE (500), CONC (64), CASE_SECONDS (3),
#   CHUNKS (16 per stream), STORE_BENCH_N (50000), BENCH_QUICK=1 (1 s per
#   run, about 40 s, for CI; skips the store bench, whose build compiles the
#   dev-dependencies in release: STORE_BENCH=1 keeps it), PROFILE (release, or
#   profiling for `perf record -g -p` on the gateway; GW_WAIT=1 pauses
#   before the load so a profiler can attach).
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-500}
CONC=${CONC:-64}
CHUNKS=${CHUNKS:-16}
if [ "${BENCH_QUICK:-}" = 1 ]; then
  CASE_SECONDS=${CASE_SECONDS:-1}; STORE_BENCH=${STORE_BENCH:-0}
else
  CASE_SECONDS=${CASE_SECONDS:-3}; STORE_BENCH=${STORE_BENCH:-1}
fi
STORE_BENCH_N=${STORE_BENCH_N:-50000}
export STORE_BENCH_N
for tool in nginx hey python3; do
  command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin command -v "$tool" >/dev/null || {
    echo "bench: $tool not found (Debian: apt-get install nginx-light hey)" >&2; exit 2; }
done
NGINX=$(PATH=$PATH:/usr/sbin command -v nginx)
OHA=$(command -v "${OHA:-oha}" || true)

PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" --quiet
BIN=target/$PROFILE/tracegate
WORK=$(mktemp -d)
MOCK=18000; STATIC=18001; NGINX_STATIC=18002; NGINX_MOCK=18003; GW=19090; GW_VLLM=19091
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; echo "bench: nothing listens on $1" >&2; exit 2; }

PLAIN='{"model":"mock-model","messages":[{"role":"system","content":"You are a helpful agent."},{"role":"user","content":"Summarise the failing test and propose a fix."}],"max_tokens":128}'
STREAM='{"model":"mock-model","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are a helpful agent."},{"role":"user","content":"Summarise the failing test and propose a fix."}],"max_tokens":128}'
ANTHROPIC='{"model":"claude-mock","stream":true,"system":"You are a helpful agent.","messages":[{"role":"user","content":"Summarise the failing test and propose a fix."}],"max_tokens":128}'
case_body() { case $1 in plain|vllm) echo "$PLAIN" ;; stream) echo "$STREAM" ;; anthropic) echo "$ANTHROPIC" ;; esac; }
case_path() { case $1 in anthropic) echo /v1/messages ;; *) echo /v1/chat/completions ;; esac; }

"$BIN" mock-upstream --listen 127.0.0.1:$MOCK --chunks "$CHUNKS" >"$WORK/mock.log" 2>&1 & pids+=($!)
wait_port $MOCK
# The static upstream answers what the mock answers, captured once.
for c in plain stream anthropic; do
  curl -sf -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \
    -d "$(case_body $c)" "http://127.0.0.1:$MOCK$(case_path $c)" >"$WORK/$c.body"
done
mkdir -p "$WORK/nginx"
python3 - "$WORK" $STATIC $NGINX_STATIC $NGINX_MOCK $MOCK >"$WORK/nginx/nginx.conf" <<'PY'
import sys
work, static, nginx_static, nginx_mock, mock = sys.argv[1:]
def quoted(name):
    text = open(f"{work}/{name}.body").read()
    assert "$" not in text, "nginx would read $ as a variable"
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
proxy = 'proxy_http_version 1.1; proxy_set_header Connection "";'
print(f"""worker_processes auto;
pid {work}/nginx/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {work}/nginx/body; proxy_temp_path {work}/nginx/proxy;
  fastcgi_temp_path {work}/nginx/fastcgi; uwsgi_temp_path {work}/nginx/uwsgi; scgi_temp_path {work}/nginx/scgi;
  upstream static {{ server 127.0.0.1:{static}; keepalive 64; }}
  upstream mock {{ server 127.0.0.1:{mock}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{static};
    location / {{
      if ($http_x_bench_case = stream) {{ rewrite ^ /_stream last; }}
      if ($http_x_bench_case = anthropic) {{ rewrite ^ /_anthropic last; }}
      default_type application/json; return 200 {quoted("plain")};
    }}
    location = /_stream {{ internal; default_type text/event-stream; return 200 {quoted("stream")}; }}
    location = /_anthropic {{ internal; default_type text/event-stream; return 200 {quoted("anthropic")}; }}
  }}
  server {{ listen 127.0.0.1:{nginx_static}; location / {{ proxy_pass http://static; {proxy} }} }}
  server {{ listen 127.0.0.1:{nginx_mock}; location / {{ proxy_pass http://mock; {proxy} }} }}
}}""")
PY
"$NGINX" -e stderr -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 & pids+=($!)
RUST_LOG=warn "$BIN" serve --listen 127.0.0.1:$GW --db "$WORK/gw.db" \
    --upstream http://127.0.0.1:$STATIC/v1 >"$WORK/gateway.log" 2>&1 & pids+=($!)
echo "gateway: pid $! ($BIN)"
RUST_LOG=warn "$BIN" serve --listen 127.0.0.1:$GW_VLLM --db "$WORK/vllm.db" --kind vllm \
    --upstream http://127.0.0.1:$MOCK/v1 >"$WORK/gateway-vllm.log" 2>&1 & pids+=($!)
for port in $STATIC $NGINX_STATIC $NGINX_MOCK $GW $GW_VLLM; do wait_port $port; done
[ "${GW_WAIT:-}" = 1 ] && read -rp "attach a profiler, then press enter "

# One load run: prints "rps p50_ms p99_ms answered" to $WORK/<name>.
load() { # name shape url case
  local name=$1 shape=$2 url=$3 c=$4 out=$WORK/$1.out
  local headers=(-H 'x-rllm-run-id: bench' -H 'x-rllm-session-id: bench-session'
                 -H 'anthropic-version: 2023-06-01' -H "x-bench-case: $c")
  if [ "$shape" = paced ] && [ -n "$OHA" ]; then
    "$OHA" --no-tui --output-format json -z "${CASE_SECONDS}s" -q "$RATE" -c 16 -m POST \
      -T application/json "${headers[@]}" -d "$(case_body "$c")" "$url" >"$out"
    python3 - "$out" >"$WORK/$name" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); s, p = d["summary"], d["latencyPercentiles"]
answered = sum(d.get("statusCodeDistribution", {}).values()) + sum(d.get("errorDistribution", {}).values())
print(s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, answered)
PY
    return
  fi
  local args
  case $shape in
    paced) args=(-c 1 -q "$RATE") ;;
    bursts) args=(-c 10 -q $((RATE / 10))) ;;
    saturation) args=(-c "$CONC") ;;
  esac
  hey -z "${CASE_SECONDS}s" "${args[@]}" -m POST -T application/json "${headers[@]}" \
    -d "$(case_body "$c")" "$url" >"$out"
  python3 - "$out" >"$WORK/$name" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
pct = {int(k): float(v) * 1000 for k, v in re.findall(r"(\d+)%+ in ([\d.]+) secs", t)}
answered = sum(int(n) for n in re.findall(r"\[\w+\]\s+(\d+) ", t))
print(rps, pct[50], pct[99], answered)
PY
}

CASES=(plain stream anthropic vllm)
SHAPES=(paced bursts saturation)
for c in "${CASES[@]}"; do
  p=$(case_path "$c")
  if [ "$c" = vllm ]; then up=$MOCK; ng=$NGINX_MOCK; gw=$GW_VLLM; else up=$STATIC; ng=$NGINX_STATIC; gw=$GW; fi
  for s in "${SHAPES[@]}"; do
    load "$c-$s-direct" "$s" "http://127.0.0.1:$up$p" "$c"
    load "$c-$s-nginx" "$s" "http://127.0.0.1:$ng$p" "$c"
    load "$c-$s-gateway" "$s" "http://127.0.0.1:$gw$p" "$c"
  done
done
for port in $GW $GW_VLLM; do curl -sf -X POST "http://127.0.0.1:$port/admin/flush" >/dev/null; done

if [ "$STORE_BENCH" = 1 ]; then
  echo "--- store on its own (cargo bench --bench store, $STORE_BENCH_N records)"
  cargo bench --quiet --bench store 2>/dev/null | grep '^store:' >"$WORK/store" || echo "store: failed" >"$WORK/store"
else
  echo "store: skipped (quick mode; STORE_BENCH=1 runs it)" >"$WORK/store"
fi

python3 - "$WORK" "$RATE" "$CONC" "$CASE_SECONDS" "$CHUNKS" "${OHA:+oha}" <<'PY'
import re, sqlite3, sys
work, rate, conc, seconds, chunks, oha = sys.argv[1:]
cases, shapes = ["plain", "stream", "anthropic", "vllm"], ["paced", "bursts", "saturation"]
def run(name):
    rps, p50, p99, answered = open(f"{work}/{name}").read().split()
    return float(rps), float(p50), float(p99), int(answered)
paced = f"oha -q {rate}" if oha else f"hey -c 1 -q {rate}"
print(f"tracegate vs nginx proxy_pass · {seconds} s per run · paced: {paced} · bursts: hey -c 10 -q {int(rate)//10} · "
      f"saturation: hey -c {conc} · {chunks} chunks per stream · latencies in ms (hey: 0.1 ms steps)")
print(f"{'case':<11}{'load':<11}{'path':<8}{'req/s':>8}{'P50':>7}{'P99':>7}{'vs nginx':>9}{'+P50':>7}{'+P99':>7}")
answered = {c: 0 for c in cases}
for c in cases:
    for s in shapes:
        d, n, g = (run(f"{c}-{s}-{p}") for p in ("direct", "nginx", "gateway"))
        answered[c] += g[3]
        for path, r in (("direct", d), ("nginx", n), ("gateway", g)):
            ratio = f"{r[0] / n[0]:.2f}"
            added = ("", "") if path == "direct" else (f"{r[1] - d[1]:+.2f}", f"{r[2] - d[2]:+.2f}")
            print(f"{c:<11}{s:<11}{path:<8}{r[0]:>8.0f}{r[1]:>7.2f}{r[2]:>7.2f}{ratio:>9}{added[0]:>7}{added[1]:>7}")
store = open(f"{work}/store").read().strip()
print(store)
def stored(db, where):
    return sqlite3.connect(f"{work}/{db}").execute(f"select count(*) from traces where {where}").fetchone()[0]
records = {
    "plain": stored("gw.db", "path = '/v1/chat/completions' and stream = 0"),
    "stream": stored("gw.db", "path = '/v1/chat/completions' and stream = 1"),
    "anthropic": stored("gw.db", "path = '/v1/messages'"),
    "vllm": stored("vllm.db", "1"),
}
ok = all(records[c] == answered[c] for c in cases)
statuses = {db: dict(sqlite3.connect(f"{work}/{db}").execute("select status, count(*) from traces group by status").fetchall())
            for db in ("gw.db", "vllm.db")}
print("records check (stored / answered by the gateway): "
      + ", ".join(f"{c} {records[c]}/{answered[c]}" for c in cases) + (" · ok" if ok else " · MISSING RECORDS") + f" · by status: {statuses}")
def figures(c):
    d, n, g = (run(f"{c}-saturation-{p}") for p in ("direct", "nginx", "gateway"))
    bd, bn, bg = (run(f"{c}-bursts-{p}") for p in ("direct", "nginx", "gateway"))
    return g[0] / n[0], bg[1] - bd[1], bg[2] - bd[2], bn[1] - bd[1], bn[2] - bd[2]
p, s = figures("plain"), figures("stream")
m = re.search(r"([\d.]+) records/s", store)
print(f"bench: tracegate/nginx-proxy saturation {p[0]:.2f} (stream {s[0]:.2f}), "
      f"added at {rate} req/s in bursts p50 {p[1]:.2f} ms p99 {p[2]:.2f} ms (nginx {p[3]:.2f}/{p[4]:.2f}), "
      f"store {m.group(1) + ' records/s' if m else 'skipped'}, records {'ok' if ok else 'MISSING'}")
sys.exit(0 if ok else 1)
PY
