"""The in-process lock hazard: python3 lock_hazard.py LIBSNAP_FFI WORKDIR.

A host process holds a WAL database open with a read transaction and
calls snap_create on its directory in the same process. Afterwards a
second process must still see the host's locks: SQLite's shared lock on
the database file (whose loss lets another process take the database as
unused and delete its WAL) and the reader's mark in the -shm (so a
checkpoint cannot pass the reader). The controls at the end drop each
lock on purpose, the way a careless close() would, to show that both
probes do detect the hazard."""

import json
import os
import sqlite3
import subprocess
import sys

from snap_ctypes import EVENT, Snap, req

lib_path, work = sys.argv[1], sys.argv[2]
app = os.path.join(work, "app")
os.makedirs(app)
db = os.path.join(app, "state.db")

# What the second process checks.
PROBE = r"""
import fcntl, json, os, sqlite3, struct, sys
db = sys.argv[1]
PENDING = 0x40000000
SHARED_FIRST, SHARED_SIZE = PENDING + 2, 510
fd = os.open(db, os.O_RDWR)
want = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, SHARED_FIRST, SHARED_SIZE, 0)
got = fcntl.fcntl(fd, fcntl.F_GETLK, want)
l_type, _, _, _, pid = struct.unpack("hhqqi", got)
c = sqlite3.connect(db, timeout=0.2)
busy, log, done = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
print(json.dumps({"shared_lock_pid": pid if l_type != fcntl.F_UNLCK else None, "checkpoint_busy": busy}))
"""


def probe():
    out = subprocess.run([sys.executable, "-c", PROBE, db], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        sys.exit(1)
    return json.loads(out.stdout)


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


host = sqlite3.connect(db, isolation_level=None)
host.execute("PRAGMA journal_mode=WAL")
host.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
host.execute("BEGIN")
host.executemany("INSERT INTO t(v) VALUES (?)", [("x" * 100,)] * 2000)
host.execute("COMMIT")
reader = sqlite3.connect(db, isolation_level=None)
reader.execute("BEGIN")
check(reader.execute("SELECT count(*) FROM t").fetchone()[0] == 2000, "the reader sees the rows")
# Commits after the reader's snapshot: a checkpoint cannot copy them back
# into the database while the reader needs the older pages.
host.execute("INSERT INTO t(v) VALUES ('after the reader')")

me = os.getpid()
first = probe()
check(first == {"shared_lock_pid": me, "checkpoint_busy": 1}, f"precondition: the host's locks are seen before snap runs: {first}")

snap = Snap(lib_path)
repo = snap.open(os.path.join(work, "repo"), create=True)
code, snapshot = snap.call(snap.lib.snap_create, repo, req({"sources": app}), EVENT(), None)
check(snapshot["complete"], f"snapshot {snapshot}")

after = probe()
check(after == {"shared_lock_pid": me, "checkpoint_busy": 1}, f"the host lost locks to snap_create: {after}")
check(reader.execute("SELECT count(*) FROM t").fetchone()[0] == 2000, "the reader's snapshot is intact")
reader.execute("COMMIT")
check(host.execute("SELECT count(*) FROM t").fetchone()[0] == 2001, "the host's data is intact")

# The snapshot holds the database as of its last commit.
code, _ = snap.call(snap.lib.snap_restore, repo, req({"snapshot": "latest", "target": os.path.join(work, "copy")}), EVENT(), None)
c = sqlite3.connect(os.path.join(work, "copy", "state.db"))
check(c.execute("SELECT count(*) FROM t").fetchone()[0] == 2001, "the snapshot has every committed row")
check(c.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "the snapshot's database is sound")
c.close()

# Controls: each probe detects its lock being dropped in this process.
reader.execute("BEGIN")
reader.execute("SELECT count(*) FROM t").fetchone()
host.execute("INSERT INTO t(v) VALUES ('after the reader, again')")
check(probe()["checkpoint_busy"] == 1, "control precondition: the reader blocks a checkpoint")
os.close(os.open(db + "-shm", os.O_RDONLY))
check(probe()["checkpoint_busy"] == 0, "control: closing an -shm descriptor lets a checkpoint pass the reader")
os.close(os.open(db, os.O_RDONLY))
check(probe()["shared_lock_pid"] is None, "control: closing a database descriptor drops the shared lock")
snap.lib.snap_close(repo)
print("ok")
