#!/usr/bin/env bash
# The store on both backends, side by side in one run (benches/store.rs):
# records/s and commit latency of SQLite, PostgreSQL with one replica and
# with three. PostgreSQL is a private cluster started here (Debian's
# postgresql package: initdb + pg_ctl on a free 127.0.0.1 port, fsync on,
# as the postgres user under root), or the server STORE_BENCH_POSTGRES
# names (a superuser URL ending in its admin database).
#   STORE_BENCH_N=20000 bench/store_backends.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export STORE_BENCH_N=${STORE_BENCH_N:-20000}
if [ -z "${STORE_BENCH_POSTGRES:-}" ]; then
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    work=$(mktemp -d /tmp/tracegate-bench-pg.XXXXXX)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    echo tg > "$work/pw"
    as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$work"
    as_pg "$bin/initdb" -D "$work/data" -U tg --pwfile="$work/pw" -A scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
    as_pg "$bin/pg_ctl" -D "$work/data" -l "$work/log" -o "-c listen_addresses=127.0.0.1 -p $port -k $work" -w start >/dev/null
    trap 'as_pg "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null; rm -rf "$work"' EXIT
    export STORE_BENCH_POSTGRES="postgresql://tg:tg@127.0.0.1:$port/postgres"
fi
cargo bench --quiet --bench store 2>/dev/null | grep -E '^(store|store_backends):'
