#!/bin/bash
# Usage: benches/ab/create_ab.sh OLD_SNAP NEW_SNAP DATA_DIR [RUNS] [SCRATCH]   (SCRATCH is emptied)
# Side by side, alternating: a first backup into a fresh repository (+ sync),
# then an unchanged rerun, old vs new binary. Quote the medians.
set -e
OLD=$1; NEW=$2; DATA=$3; RUNS=${4:-5}; W=${5:-$(mktemp -d)}
t() { local s=$(date +%s.%N); "$@" >/dev/null; sync; echo "$(date +%s.%N) - $s" | bc; }
cat "$DATA"/databases/* >/dev/null 2>&1 || true   # warm the cache once
for run in $(seq "$RUNS"); do
  for b in old new; do
    bin=$OLD; [ $b = new ] && bin=$NEW
    rm -rf "$W"; mkdir -p "$W"; sync
    SNAP_REPO=$W/repo $bin init >/dev/null
    echo "first $b $(t env SNAP_REPO=$W/repo $bin create "$DATA")"
    echo "rerun $b $(t env SNAP_REPO=$W/repo $bin create "$DATA")"
  done
done
