#!/usr/bin/env bash
# A repository on a 3-node garage cluster on loopback (replication factor
# 3, quorum 2): one node is killed in the middle of a backup and the
# backup still commits; the restore is exact; the node comes back and
# `check --read-data` passes through it.
#
#   tests/garage_cluster.sh [SNAP_BINARY]     (default target/debug/snap)
#
# Needs `garage` (2.x) on PATH or in the tools folder .ci/run builds it
# into, and python3 (the app-like data set: SQLite databases in WAL and
# rollback-journal modes, JSON, media). Without garage it says it was
# skipped and why, and fails if SNAP_REQUIRE_S3 is set.
set -euo pipefail
cd "$(dirname "$0")/.."
SNAP=$(realpath "${1:-target/debug/snap}")
tools="${XDG_CACHE_HOME:-$HOME/.cache}/snap-tools/bin"
export PATH="$PATH:$tools"
if ! command -v garage >/dev/null 2>&1; then
    echo "garage_cluster: skipped: no garage binary (on PATH or in $tools)"
    [ -z "${SNAP_REQUIRE_S3:-}" ] || exit 1
    exit 0
fi
[ -x "$SNAP" ] || { echo "garage_cluster: $SNAP is not an executable snap"; exit 1; }

W=$(mktemp -d "${TMPDIR:-/tmp}/snap-garage-XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        { kill -9 "$p" && wait "$p"; } 2>/dev/null || true
    done
    [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
fail() {
    echo "garage_cluster: FAILED: $*"
    for f in "$W"/n*.log; do [ ! -f "$f" ] || { echo "--- $f"; tail -n 5 "$f"; }; done
    exit 1
}
step() { echo "garage_cluster: $*"; }

# Ports from the kernel's free ones: RPC, S3 and admin for each node.
ports=($(python3 -c 'import socket
s=[socket.socket() for _ in range(9)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))'))
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
for n in 1 2 3; do
    i=$(( (n - 1) * 3 ))
    mkdir -p "$W/n$n/meta" "$W/n$n/data"
    cat >"$W/n$n.toml" <<EOF
metadata_dir = "$W/n$n/meta"
data_dir = "$W/n$n/data"
db_engine = "sqlite"
replication_factor = 3
consistency_mode = "consistent"
rpc_secret = "$secret"
rpc_bind_addr = "127.0.0.1:${ports[$i]}"
rpc_public_addr = "127.0.0.1:${ports[$i]}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:${ports[$((i + 1))]}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:${ports[$((i + 2))]}"
EOF
done
g() { local n=$1; shift; garage -c "$W/n$n.toml" "$@"; }
start_node() {
    local n=$1
    RUST_LOG=warn garage -c "$W/n$n.toml" server >>"$W/n$n.log" 2>&1 &
    pids[$n]=$!
    for _ in $(seq 1 100); do
        g "$n" status >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    fail "garage node $n did not start"
}
for n in 1 2 3; do start_node $n; done
for n in 2 3; do g 1 node connect "$(g $n node id -q)" >/dev/null; done
for n in 1 2 3; do
    g 1 layout assign -z dc1 -c 1G "$(g $n node id -q | cut -c1-16)" >/dev/null
done
g 1 layout apply --version 1 >/dev/null
g 1 bucket create snap >/dev/null
keys=$(g 1 key create snap-key)
export AWS_ACCESS_KEY_ID=$(echo "$keys" | awk '/Key ID/ {print $NF}')
export AWS_SECRET_ACCESS_KEY=$(echo "$keys" | awk '/Secret key/ {print $NF}')
[ -n "$AWS_ACCESS_KEY_ID" ] && [ -n "$AWS_SECRET_ACCESS_KEY" ] || fail "no key in: $keys"
g 1 bucket allow --read --write --owner snap --key snap-key >/dev/null
export AWS_ENDPOINT_URL=http://127.0.0.1:${ports[1]} AWS_REGION=garage
export SNAP_PASSWORD=garage-cluster-test XDG_CACHE_HOME=$W/cache
REPO=s3://snap/app
step "3 nodes up, layout applied (replication factor 3)"

# The app's data directory: two SQLite databases (WAL and rollback
# journal), preferences, logs, a symlink, and incompressible media.
python3 - "$W/app" <<'EOF'
import json, os, sqlite3, sys
root = sys.argv[1]
os.makedirs(f"{root}/media", exist_ok=True)
os.makedirs(f"{root}/cache/empty", exist_ok=True)
for mode in ("wal", "delete"):
    db = sqlite3.connect(f"{root}/{mode}.db")
    db.execute(f"PRAGMA journal_mode={mode}")
    db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, body TEXT)")
    db.executemany("INSERT INTO items(body) VALUES (?)",
                   ((os.urandom(60).hex(),) for _ in range(60000)))
    db.commit()
    db.close()
json.dump({"theme": "dark", "n": list(range(500))}, open(f"{root}/prefs.json", "w"))
with open(f"{root}/app.log", "w") as f:
    f.writelines(f"line {i}: started ok\n" for i in range(50000))
for i in range(8):
    open(f"{root}/media/m{i}.bin", "wb").write(os.urandom(2 << 20))
os.symlink("prefs.json", f"{root}/current-prefs")
EOF
# Every entry's type, mode, size, mtime (ns) and link target, and every
# file's bytes: what an exact restore must reproduce.
listing() {
    (cd "$1" && find . -printf '%y %m %s %T@ %l %p\n' | sort &&
        find . -type f -print0 | sort -z | xargs -0 sha256sum)
}
exact() { diff <(listing "$W/app") <(listing "$1") >"$W/diff.txt" || fail "restore into $1 differs: $(head -5 "$W/diff.txt")"; }

"$SNAP" -q init "$REPO" >/dev/null || fail "init on garage"
"$SNAP" -q --repo "$REPO" create "$W/app" >/dev/null || fail "first create"
step "first snapshot committed"

# Enough new data that the backup is still uploading when a node dies.
for i in $(seq 0 39); do head -c $((4 << 20)) /dev/urandom >"$W/app/media/new$i.bin"; done
base=$(find "$W/n3/data" -type f | wc -l)
"$SNAP" -q --repo "$REPO" create --json "$W/app" >"$W/create.json" 2>"$W/create.err" &
create=$!
for _ in $(seq 1 600); do
    [ "$(find "$W/n3/data" -type f | wc -l)" -gt "$base" ] && break
    kill -0 $create 2>/dev/null || break
    sleep 0.05
done
kill -0 $create 2>/dev/null || fail "precondition missing: the backup ended before node 3 could be stopped"
kill -9 "${pids[3]}"
wait "${pids[3]}" 2>/dev/null || true
step "node 3 killed while the backup uploads"
wait $create || fail "the backup did not commit with one node down: $(cat "$W/create.err")"
id=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$W/create.json")
step "backup committed with node 3 down: snapshot $id"

"$SNAP" -q --repo "$REPO" restore "$id" --target "$W/out-degraded" >/dev/null || fail "restore with node 3 down"
exact "$W/out-degraded"
step "restore with node 3 down is exact"

start_node 3
# Node 3 is back when it sees all three nodes healthy and its own S3
# endpoint answers for the repository (it reconnects to its peers and
# resyncs the layout first; until then it answers 503).
export AWS_ENDPOINT_URL=http://127.0.0.1:${ports[7]}
ready=
for _ in $(seq 1 150); do
    if g 3 status 2>/dev/null | grep -q "HEALTHY NODES" &&
        ! g 3 status 2>/dev/null | grep -qi "FAILED NODES" &&
        "$SNAP" -q --repo "$REPO" list >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.2
done
[ -n "$ready" ] || fail "node 3 restarted but did not serve the repository within 30 s: $(g 3 status 2>&1 | tail -5)"
# Read through the node that was down: everything it missed comes from
# the other two.
"$SNAP" -q --repo "$REPO" check --read-data >"$W/check.out" 2>&1 || fail "check --read-data after node 3 came back: $(tail -5 "$W/check.out")"
step "node 3 back: check --read-data passes through it"
"$SNAP" -q --repo "$REPO" restore "$id" --target "$W/out-after" >/dev/null || fail "restore through node 3"
exact "$W/out-after"
echo "garage_cluster: ok"
