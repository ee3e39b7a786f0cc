#!/usr/bin/env bash
# The parsers' property tests (tests/fuzz) at bench scale: CASES cases per
# property (default 1 000 000; `cargo test` runs proptest's 256), in a
# release build. Prints each property's count and the total.
#
# The calls through the real gateway (`gateway_calls`) run an eighth of
# CASES; a million cases of the other properties take hours on two cores,
# so start with CASES=100000 to see the rate. Measured (Dec 2 2026, 2 cores):
# CASES=70000 ran 19 properties, 1 268 750 cases in all, in 35 minutes, the
# 8 750 real gateway calls taking most of it.
# Usage: bench/fuzz.sh [FILTER]   (env: CASES)
set -euo pipefail
cd "$(dirname "$0")/.."

CASES=${CASES:-1000000}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
PROPTEST_CASES=$CASES cargo test --release --quiet --test fuzz -- --nocapture "$@" | tee "$out"
# Not anchored to the line's start: --quiet's progress dots share the line.
grep -o 'fuzz [a-z_]*: [0-9]* cases passed' "$out" |
    awk '{ total += $3; n++ } END { printf "%d properties, %d cases in all\n", n, total }'
