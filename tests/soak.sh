#!/usr/bin/env bash
# Crash soak: runs the crash-injection tests repeatedly (fresh directories each
# time) until at least TARGET crashes were injected and survived, then prints
# the count. Usage: tests/soak.sh [TARGET]   (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-1000}
total=0
runs=0
while [ "$total" -lt "$target" ]; do
  out=$(cargo test -q --test integration crash -- --nocapture --test-threads 2 2>&1) || {
    echo "$out" | tail -40
    echo "soak: FAILED after $total crashes in $runs runs"
    exit 1
  }
  n=$(echo "$out" | sed -n 's/.*: \([0-9]*\) injected crashes survived.*/\1/p' | paste -sd+ - | bc)
  k=$(echo "$out" | sed -n 's/^kill -9: \([0-9]*\) of.*/\1/p' | paste -sd+ - | bc)
  total=$((total + n + ${k:-0}))
  runs=$((runs + 1))
  echo "soak: run $runs: $((n + ${k:-0})) crashes, $total in total"
done
echo "soak: $total crashes survived in $runs runs"
