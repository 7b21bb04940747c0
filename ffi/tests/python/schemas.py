"""Every result and event of the snapshot calls against ffi/schemas: a
create (with events), a list, a migration begun, found unfinished, and
ended by a rollback; and the checker itself refuses wrong shapes.
Arguments: libsnap_ffi.so, a scratch directory."""

import json
import os
import sqlite3
import sys

from schema_check import errors
from snap_ctypes import Snap, req

lib_path, work = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
schemas = {}
for name in ("snapshot", "event", "migration_end", "restore", "gc"):
    with open(os.path.join(here, "..", "..", "schemas", f"{name}.schema.json")) as f:
        schemas[name] = json.load(f)


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)


def valid(value, name):
    problems = errors(value, schemas[name])
    check(not problems, f"{name}: {problems}")


# The checker finds what is wrong.
check(errors({"event": "phase", "name": "x"}, schemas["event"]), "a phase without total_bytes")
check(errors({"event": "nope"}, schemas["event"]), "an unknown event")
check(errors({"outcome": "fine"}, schemas["migration_end"]), "a bad outcome")

snap = Snap(lib_path)
data = os.path.join(work, "data")
os.makedirs(data)
c = sqlite3.connect(os.path.join(data, "app.db"))
c.executescript("CREATE TABLE t(x); INSERT INTO t VALUES (1); PRAGMA user_version = 1;")
c.close()
with open(os.path.join(data, "prefs.json"), "w") as f:
    f.write('{"a": 1}')
repo = snap.open(os.path.join(work, "repo"), create=True)

events = []
cb = snap.on_event(events.append)
code, created = snap.call(snap.lib.snap_create, repo, req({"sources": data}), cb, None)
valid(created, "snapshot")
check(created["snapshot"] == created["id"], f"{created}")
check(events, "create sent events")
for e in events:
    valid(e, "event")

target = os.path.join(work, "t")
what = req({"snapshot": created["snapshot"], "target": target, "dry_run": True})
_, plan = snap.call(snap.lib.snap_restore, repo, what, cb, None)
valid(plan, "restore")
check(plan["steps"] and "written_files" not in plan, f"a plan: {plan}")
what = req({"snapshot": created["snapshot"], "target": target})
_, done = snap.call(snap.lib.snap_restore, repo, what, cb, None)
valid(done, "restore")
check(done["written_files"] > 0, f"what was done: {done}")
for e in events:
    valid(e, "event")

_, listed = snap.call(snap.lib.snap_list, repo)
for s in listed:
    valid(s, "snapshot")

_, begun = snap.call(snap.lib.snap_migration_begin, repo, req({"sources": data}))
valid(begun, "snapshot")
_, found = snap.call(snap.lib.snap_migration_unfinished, repo, req({"sources": data}))
valid(found, "snapshot")
check(found["snapshot"] == begun["snapshot"], "the unfinished session is the one begun")
with open(os.path.join(data, "prefs.json"), "w") as f:
    f.write('{"a": 2}')
_, end = snap.call(snap.lib.snap_migration_end, repo, begun["snapshot"].encode(), 0, ok=(7,))
valid(end, "migration_end")
_, kept_begun = snap.call(snap.lib.snap_migration_begin, repo, req({"sources": data}))
_, kept = snap.call(snap.lib.snap_migration_end, repo, kept_begun["snapshot"].encode(), 1)
valid(kept, "migration_end")
check(kept["restore"] is None and kept["outcome"] == "migrated", f"{kept}")
_, g = snap.call(snap.lib.snap_gc, repo, req({"dry_run": True}))
valid(g, "gc")
check(g["dry_run"] is True, f"{g}")
_, g = snap.call(snap.lib.snap_gc, repo, req({"keep_last": 1}))
valid(g, "gc")
check(g["snapshots_removed"], f"gc removed the older snapshots: {g}")
snap.lib.snap_close(repo)
print("ok")
