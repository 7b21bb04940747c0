"""An app killed during a migration, through the C ABI alone: the next
begin is refused with a message that names ABI calls, not CLI commands;
snap_migration_unfinished finds the session; snap_migration_end with 0
rolls back what the dead session left, exactly; a second dead session is
kept with 1. Arguments: libsnap_ffi.so, a scratch directory."""

import json
import os
import sqlite3
import subprocess
import sys

from snap_ctypes import Snap, SnapError, req

lib_path, work = sys.argv[1], sys.argv[2]
snap = Snap(lib_path)
data = os.path.join(work, "data")
repo_path = os.path.join(work, "repo")
os.makedirs(data)


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)


def user_version():
    c = sqlite3.connect(os.path.join(data, "app.db"))
    v = c.execute("PRAGMA user_version").fetchone()[0]
    c.close()
    return v


c = sqlite3.connect(os.path.join(data, "app.db"))
c.executescript("CREATE TABLE t(x); INSERT INTO t VALUES (1); PRAGMA user_version = 1;")
c.close()

# A child process (the app) begins a session, migrates half way and dies.
DIE = r'''
import ctypes, json, os, sqlite3, sys
sys.path.insert(0, sys.argv[4])
from snap_ctypes import Snap, req
snap = Snap(sys.argv[1])
repo = snap.open(sys.argv[2], create=True)
snap.call(snap.lib.snap_migration_begin, repo, req({"sources": sys.argv[3]}))
c = sqlite3.connect(os.path.join(sys.argv[3], "app.db"))
c.executescript("ALTER TABLE t ADD COLUMN y; PRAGMA user_version = 2;")
c.close()
open(os.path.join(sys.argv[3], "half.txt"), "w").write("half way")
os._exit(9)
'''
here = os.path.dirname(os.path.abspath(__file__))
for round_ in (1, 2):
    r = subprocess.run([sys.executable, "-c", DIE, lib_path, repo_path, data, here])
    check(r.returncode == 9, f"the app died as planned: {r.returncode}")
    check(user_version() == 2, "the dead session left the migrated state")

    repo = snap.open(repo_path)
    try:
        snap.call(snap.lib.snap_migration_begin, repo, req({"sources": data}))
        check(False, "a begin while a dead session is unfinished")
    except SnapError as e:
        check("did not finish" in e.message, f"refusal: {e.message}")
        check("snap_migration_unfinished" in e.message, f"names the ABI call: {e.message}")
        check("snap restore" not in e.message and "snap unpin" not in e.message,
              f"names CLI commands: {e.message}")
    code, found = snap.call(snap.lib.snap_migration_unfinished, repo, req({"sources": data}))
    check(code == 0 and found["snapshot"], f"the unfinished session: {found}")
    check(found["pinned"] and "pre-migration" in found["tags"], f"{found}")
    if round_ == 1:
        code, end = snap.call(snap.lib.snap_migration_end, repo, found["snapshot"].encode(), 0, ok=(7,))
        check(end["outcome"] == "rolled_back", f"{end}")
        check(user_version() == 1 and not os.path.exists(os.path.join(data, "half.txt")),
              "rolled back exactly")
    else:
        code, end = snap.call(snap.lib.snap_migration_end, repo, found["snapshot"].encode(), 1)
        check(end["outcome"] == "migrated", f"{end}")
        check(user_version() == 2, "kept what the dead session left")
    code, none = snap.call(snap.lib.snap_migration_unfinished, repo, req({"sources": data}), ok=(6,))
    check(none["snapshot"] is None, f"none left: {none}")
    snap.lib.snap_close(repo)
    if round_ == 1:
        # Back to the state a second run starts from.
        check(user_version() == 1, "state for round 2")

print("ok")
