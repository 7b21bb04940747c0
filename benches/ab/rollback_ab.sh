#!/bin/bash
# Usage: benches/ab/rollback_ab.sh OLD_SNAP NEW_SNAP DATA_DIR [RUNS] [SCRATCH]   (SCRATCH is emptied)
# The guard case: each binary snapshots its own copy of DATA_DIR in place, a
# migration-like change follows, and an in-place rollback undoes it (most
# entries untouched since the snapshot). Alternating old/new; quote medians.
set -e
OLD=$1; NEW=$2; DATA=$3; RUNS=${4:-5}; W=${5:-$(mktemp -d)}
rm -rf "$W"; mkdir -p "$W"
t() { local s=$(date +%s.%N); "$@" >/dev/null; sync; echo "$(date +%s.%N) - $s" | bc; }
for b in old new; do
  bin=$OLD; [ $b = new ] && bin=$NEW
  cp -a "$DATA" "$W/src-$b"
  SNAP_REPO=$W/repo-$b $bin init >/dev/null
  SNAP_REPO=$W/repo-$b $bin create "$W/src-$b" --json > "$W/$b.json"
done
for run in $(seq "$RUNS"); do
  for b in old new; do
    bin=$OLD; [ $b = new ] && bin=$NEW
    id=$(python3 -c "import json;print(json.load(open('$W/$b.json'))['id'])")
    python3 - "$W/src-$b" <<'PY'
import sqlite3, sys, os
r = sys.argv[1]
c = sqlite3.connect(r + "/databases/messages.db"); c.execute("UPDATE m SET body = upper(body) WHERE id % 20 = 0"); c.commit(); c.close()
for i in range(200): open(f"{r}/docs/{i%80}/new{i}.json","w").write("x")
for i in range(0, 30000, 100):
    p = f"{r}/cache/{i%300}/c{i}"
    if os.path.exists(p): os.remove(p)
PY
    echo "rollback $b $(t env SNAP_REPO=$W/repo-$b $bin restore $id --no-safety-snapshot)"
  done
done
