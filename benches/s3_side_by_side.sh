#!/usr/bin/env bash
# Side by side: snap and restic against one s3s-fs on loopback (port 9600):
# first backup, unchanged rerun and restore of $BENCH_DIR/app, with wall
# time and peak RSS (GNU time) and snap's request counts.
#   SNAP_BIN=target/release/snap BENCH_DIR=/tmp/snap-s3-bench bash benches/s3_side_by_side.sh
# Needs s3s-fs and restic on PATH, and the data set in $BENCH_DIR/app
# (docs/benchmarks.md, "S3", says what it was).
set -euo pipefail
S=${SNAP_BIN:?}
D=${BENCH_DIR:-/tmp/snap-s3-bench}/s3data; rm -rf $D ${BENCH_DIR:-/tmp/snap-s3-bench}/xc ${BENCH_DIR:-/tmp/snap-s3-bench}/out*; mkdir -p $D/snapb $D/resticb
pkill -f "s3s-fs --host 127.0.0.1 --port 9600" || true
setsid s3s-fs --host 127.0.0.1 --port 9600 --access-key AK --secret-key SKSKSKSK $D >/dev/null 2>&1 &
sleep 1
export AWS_ENDPOINT_URL=http://127.0.0.1:9600 AWS_ACCESS_KEY_ID=AK AWS_SECRET_ACCESS_KEY=SKSKSKSK XDG_CACHE_HOME=${BENCH_DIR:-/tmp/snap-s3-bench}/xc
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=${BENCH_DIR:-/tmp/snap-s3-bench}/rc
rm -rf ${BENCH_DIR:-/tmp/snap-s3-bench}/rc
R=s3:http://127.0.0.1:9600/resticb
t() { local label=$1; shift; sync; /usr/bin/time -f "$label %e s %M KB" "$@" >${BENCH_DIR:-/tmp/snap-s3-bench}/last.out 2>${BENCH_DIR:-/tmp/snap-s3-bench}/last.err || { cat ${BENCH_DIR:-/tmp/snap-s3-bench}/last.err; exit 1; }; grep -E "^$label " ${BENCH_DIR:-/tmp/snap-s3-bench}/last.err; }
$S init s3://snapb/r >/dev/null
restic -r $R init >/dev/null
t snap-first $S --repo s3://snapb/r create --json ${BENCH_DIR:-/tmp/snap-s3-bench}/app
python3 -c "import json;d=json.load(open('${BENCH_DIR:-/tmp/snap-s3-bench}/last.out'));print('  requests',d['requests'])"
t restic-first restic -r $R backup -q ${BENCH_DIR:-/tmp/snap-s3-bench}/app
t snap-rerun $S --repo s3://snapb/r create --json ${BENCH_DIR:-/tmp/snap-s3-bench}/app
python3 -c "import json;d=json.load(open('${BENCH_DIR:-/tmp/snap-s3-bench}/last.out'));print('  requests',d['requests'])"
t restic-rerun restic -r $R backup -q ${BENCH_DIR:-/tmp/snap-s3-bench}/app
t snap-restore $S --repo s3://snapb/r restore latest --target ${BENCH_DIR:-/tmp/snap-s3-bench}/out-snap --json
python3 -c "import json;d=json.load(open('${BENCH_DIR:-/tmp/snap-s3-bench}/last.out'));print('  requests',d['requests'])"
t restic-restore restic -r $R restore latest --target ${BENCH_DIR:-/tmp/snap-s3-bench}/out-restic
diff -r ${BENCH_DIR:-/tmp/snap-s3-bench}/app ${BENCH_DIR:-/tmp/snap-s3-bench}/out-snap >/dev/null && echo "snap restore identical"
du -sb $D/snapb $D/resticb
