#!/bin/bash
# Usage: benches/ab/restore_ab.sh OLD_SNAP NEW_SNAP DATA_DIR [SCRATCH]   (SCRATCH is emptied)
# Build OLD from another commit (git worktree + cargo build --release), make DATA_DIR with
# python3 benches/ab/gen_app_dir.py DATA_DIR, and quote medians of the alternating runs.
# Side by side: restore into an empty dir (+ sync) and in-place rollback, old vs new binary, alternating.
set -e
OLD=$1; NEW=$2; DATA=$3; W=${4:-$(mktemp -d)}
rm -rf $W; mkdir -p $W
for b in old new; do
  bin=$OLD; [ $b = new ] && bin=$NEW
  SNAP_REPO=$W/repo-$b $bin init >/dev/null
  SNAP_REPO=$W/repo-$b $bin create $DATA --json > $W/$b.json
done
ID_OLD=$(python3 -c "import json;print(json.load(open('$W/old.json'))['id'])")
ID_NEW=$(python3 -c "import json;print(json.load(open('$W/new.json'))['id'])")
t() { local s=$(date +%s.%N); "$@" >/dev/null; sync; echo "$(date +%s.%N) - $s" | bc; }
for run in 1 2 3; do
  for b in old new; do
    bin=$OLD; id=$ID_OLD; [ $b = new ] && { bin=$NEW; id=$ID_NEW; }
    rm -rf $W/t-$b; sync
    echo "restore $b $(t env SNAP_REPO=$W/repo-$b $bin restore $id --target $W/t-$b)"
    # a migration-like change, then in-place rollback
    python3 - $W/t-$b <<'PY'
import sqlite3, sys, os, random
r = sys.argv[1]; random.seed(1)
c = sqlite3.connect(r + "/databases/messages.db"); c.execute("UPDATE m SET body = upper(body) WHERE id % 20 = 0"); c.commit(); c.close()
for i in range(200): open(f"{r}/docs/{i%80}/new{i}.json","w").write("x")
for i in range(0, 30000, 100): os.remove(f"{r}/cache/{i%300}/c{i}")
PY
    echo "rollback $b $(t env SNAP_REPO=$W/repo-$b $bin restore $id --target $W/t-$b --no-safety-snapshot)"
  done
done
