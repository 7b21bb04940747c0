#!/usr/bin/env bash
# Side by side on one s3s-fs on loopback (port 9600): snap encrypted (the
# default for a bucket), snap --no-encrypt, and restic (always encrypted):
# first backup, unchanged rerun and restore of $BENCH_DIR/app, with wall
# time and peak RSS (GNU time) and snap's request counts; RUNS rounds
# (default 3), then the medians.
#   SNAP_BIN=target/release/snap BENCH_DIR=/tmp/snap-s3-bench bash benches/s3_side_by_side.sh
# Needs s3s-fs, restic, sqlite3 and python3 on PATH. Without $BENCH_DIR/app
# it builds the data set docs/benchmarks.md ("S3") describes: the crates in
# cargo's registry source cache, two SQLite databases of 300,000 rows (WAL
# and rollback journal) and 20 incompressible 2 MB media files.
set -euo pipefail
S=${SNAP_BIN:?set SNAP_BIN to a release snap}
B=${BENCH_DIR:-/tmp/snap-s3-bench}
RUNS=${RUNS:-3}
mkdir -p "$B"

. "$(dirname "$0")/app_set.sh"
make_app_set "$B/app"

D=$B/s3data
# ext4 scans past recently deleted inodes when it creates files (a
# restore right after deleting the last one's output pays for it), so
# every restore gets its own directory and old ones go first, a while
# before the first restore.
if compgen -G "$B/out-*" >/dev/null; then
    rm -rf "$B"/out-* && sync && sleep 70
fi
pkill -f "s3s-fs --host 127.0.0.1 --port 9600" || true
rm -rf "$D" && mkdir -p "$D"
setsid s3s-fs --host 127.0.0.1 --port 9600 --access-key AK --secret-key SKSKSKSK "$D" >/dev/null 2>&1 &
trap 'pkill -f "s3s-fs --host 127.0.0.1 --port 9600" || true' EXIT
sleep 1
export AWS_ENDPOINT_URL=http://127.0.0.1:9600 AWS_ACCESS_KEY_ID=AK AWS_SECRET_ACCESS_KEY=SKSKSKSK
export RESTIC_PASSWORD=bench SNAP_PASSWORD=bench

LOG=$B/results.txt
: >"$LOG"
# t LABEL CMD...: run once, append "LABEL seconds peak_kb [requests]" to the log.
t() {
    local label=$1
    shift
    sync
    /usr/bin/time -f "%e %M" -o "$B/time.out" "$@" >"$B/last.out" 2>"$B/last.err" || {
        cat "$B/last.err"
        exit 1
    }
    local req
    req=$(python3 -c "import json,sys
try: print(json.load(open('$B/last.out')).get('requests', ''))
except Exception: print('')" 2>/dev/null)
    echo "$label $(cat "$B/time.out") $req" | tee -a "$LOG"
}

for run in $(seq 1 "$RUNS"); do
    mkdir -p "$D/r$run-enc" "$D/r$run-plain" "$D/r$run-restic"
    rm -rf "$B/xc" "$B/rc"
    export XDG_CACHE_HOME=$B/xc RESTIC_CACHE_DIR=$B/rc
    $S init "s3://r$run-enc/r" >/dev/null
    $S init --no-encrypt "s3://r$run-plain/r" >/dev/null
    restic -r "s3:http://127.0.0.1:9600/r$run-restic" init >/dev/null
    for v in enc plain; do
        t "snap-$v-first" $S --repo "s3://r$run-$v/r" create --json "$B/app"
        t "snap-$v-rerun" $S --repo "s3://r$run-$v/r" create --json "$B/app"
        t "snap-$v-restore" $S --repo "s3://r$run-$v/r" restore latest --target "$B/out-$run-$v" --json
        diff -r "$B/app" "$B/out-$run-$v" >/dev/null || { echo "snap $v restore differs"; exit 1; }
    done
    R=s3:http://127.0.0.1:9600/r$run-restic
    t restic-first restic -r "$R" backup -q "$B/app"
    t restic-rerun restic -r "$R" backup -q "$B/app"
    t restic-restore restic -r "$R" restore latest --target "$B/out-$run-restic"
done
du -sb "$D"/r1-* | tee -a "$LOG"

python3 - "$LOG" <<'EOF'
import statistics, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 3 and f[0].count("-") >= 1 and not f[0].startswith("/"):
        try:
            runs[f[0]].append((float(f[1]), int(f[2])))
        except ValueError:
            pass
print("\nmedians (s, peak MB):")
for k, v in runs.items():
    print(f"  {k:22} {statistics.median(x[0] for x in v):7.2f} s {statistics.median(x[1] for x in v) / 1024:7.0f} MB   runs {[x[0] for x in v]}")
EOF
