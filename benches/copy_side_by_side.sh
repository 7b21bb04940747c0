#!/usr/bin/env bash
# `snap copy` against `restic copy`, side by side, RUNS rounds (default 3),
# then the medians. Each tool first backs up $BENCH_DIR/app into a local
# repository (not timed), then copies all of it:
#   - to a local repository: snap plain -> plain (ids kept, nothing to
#     rename), snap plain -> encrypted (every chunk renamed), restic
#     (always encrypted, to a second repository with its own key);
#   - to a bucket on one s3s-fs on loopback (port 9601): snap plain ->
#     encrypted bucket, restic -> bucket;
#   - and the limit: `cp -a` of snap's source repository (reading it and
#     writing the bytes once), with `sync`.
# Every timed step ends with `sync` inside its time. Wall time and peak RSS
# (GNU time).
#   SNAP_BIN=target/release/snap BENCH_DIR=/tmp/snap-copy-bench bash benches/copy_side_by_side.sh
# Needs s3s-fs, restic, sqlite3 and python3 on PATH. Without $BENCH_DIR/app
# it builds the data set of benches/s3_side_by_side.sh (the crates of
# cargo's registry source cache, two SQLite databases of 300,000 rows, 20
# incompressible 2 MB media files).
set -euo pipefail
S=${SNAP_BIN:?set SNAP_BIN to a release snap}
B=${BENCH_DIR:-/tmp/snap-copy-bench}
RUNS=${RUNS:-3}
mkdir -p "$B"

. "$(dirname "$0")/app_set.sh"
make_app_set "$B/app"

D=$B/s3data
pkill -f "s3s-fs --host 127.0.0.1 --port 9601" || true
rm -rf "$D" && mkdir -p "$D"
setsid s3s-fs --host 127.0.0.1 --port 9601 --access-key AK --secret-key SKSKSKSK "$D" >/dev/null 2>&1 &
trap 'pkill -f "s3s-fs --host 127.0.0.1 --port 9601" || true' EXIT
for _ in $(seq 1 100); do
    (echo >/dev/tcp/127.0.0.1/9601) 2>/dev/null && break
    sleep 0.1
done
export AWS_ENDPOINT_URL=http://127.0.0.1:9601 AWS_ACCESS_KEY_ID=AK AWS_SECRET_ACCESS_KEY=SKSKSKSK
export RESTIC_PASSWORD=bench RESTIC_FROM_PASSWORD=bench SNAP_PASSWORD=bench SNAP_TO_PASSWORD=bench

LOG=$B/results.txt
: >"$LOG"
# t LABEL CMD...: run once with a sync inside the time, append "LABEL seconds peak_kb".
t() {
    local label=$1
    shift
    sync
    local start end
    start=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$B/time.out" "$@" >"$B/last.out" 2>"$B/last.err" || {
        cat "$B/last.err"
        exit 1
    }
    sync
    end=$(date +%s.%N)
    echo "$label $(python3 -c "print(f'{$end - $start:.2f}')") $(cat "$B/time.out")" | tee -a "$LOG"
}

for run in $(seq 1 "$RUNS"); do
    R=$B/r$run
    rm -rf "$R" && mkdir -p "$R"
    export XDG_CACHE_HOME=$R/xc RESTIC_CACHE_DIR=$R/rc
    mkdir -p "$D/c$run-snap" "$D/c$run-restic"
    $S init --no-encrypt "$R/snap-src" >/dev/null
    $S --repo "$R/snap-src" create -q "$B/app" >/dev/null
    restic -q -r "$R/restic-src" init >/dev/null
    restic -q -r "$R/restic-src" backup "$B/app" >/dev/null
    $S init --no-encrypt "$R/snap-plain" >/dev/null
    $S init --encrypt "$R/snap-enc" >/dev/null
    $S init "s3://c$run-snap/r" >/dev/null
    restic -q -r "$R/restic-dst" init >/dev/null
    restic -q -r "s3:http://127.0.0.1:9601/c$run-restic" init >/dev/null

    t cp-a cp -a "$R/snap-src" "$R/cp-limit"
    t snap-local-plain $S --repo "$R/snap-src" copy --all --to "$R/snap-plain" -q
    t snap-local-enc $S --repo "$R/snap-src" copy --all --to "$R/snap-enc" -q
    t restic-local restic -q -r "$R/restic-dst" copy --from-repo "$R/restic-src"
    t snap-s3-enc $S --repo "$R/snap-src" copy --all --to "s3://c$run-snap/r" -q
    t restic-s3 restic -q -r "s3:http://127.0.0.1:9601/c$run-restic" copy --from-repo "$R/restic-src"
    t snap-rerun-enc $S --repo "$R/snap-src" copy --all --to "$R/snap-enc" -q
    t restic-rerun-local restic -q -r "$R/restic-dst" copy --from-repo "$R/restic-src"
    $S --repo "$R/snap-enc" check --read-data >/dev/null
    rm -rf "$R"
done

echo "medians of $RUNS runs (seconds, peak KB):"
python3 - "$LOG" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, secs, kb = line.split()
    rows.setdefault(label, []).append((float(secs), int(kb)))
for label, v in rows.items():
    print(f"{label:20} {statistics.median(s for s, _ in v):7.2f} s {statistics.median(k for _, k in v) / 1024:7.0f} MB")
EOF
