"""An encrypted repository through the C ABI, from Python (ctypes), with
the app's WAL database open: snap_open with a password and a cache
directory creates it, snapshots go in sealed, a wrong password is refused
with exit code 10 in the message, the right one restores exactly:
python3 encrypted.py LIBSNAP_FFI WORKDIR. Exits non-zero on any failure."""

import os
import sqlite3
import sys

from snap_ctypes import EVENT, Snap, SnapError, req

lib_path, work = sys.argv[1], sys.argv[2]
snap = Snap(lib_path)
data = os.path.join(work, "data")
repo_path = os.path.join(work, "repo")
cache = os.path.join(work, "cache")
MARKER = b"MARKER-ffi-4417-never-in-the-clear"


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)


os.makedirs(data)
db = sqlite3.connect(os.path.join(data, "app.db"))
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE notes(body BLOB)")
db.execute("INSERT INTO notes VALUES (?)", (MARKER + os.urandom(3000),))
db.commit()
with open(os.path.join(data, "prefs.bin"), "wb") as f:
    f.write(os.urandom(5000) + MARKER + os.urandom(5000))

repo = snap.open(repo_path, create=True, password="app secret", cache_dir=cache)
code, snapshot = snap.call(snap.lib.snap_create, repo, req({"sources": data}), EVENT(), None)
check(code == 0, f"create: {code}")
snap.lib.snap_close(repo)

for root, _, files in os.walk(repo_path):
    for name in files:
        with open(os.path.join(root, name), "rb") as f:
            check(MARKER not in f.read(), f"the marker is in the clear in {name}")
check(not os.path.exists(os.path.join(repo_path, "index.db")), "a plain index beside the objects")

try:
    snap.open(repo_path, password="not it", cache_dir=cache)
    check(False, "a wrong password opened the repository")
except SnapError as e:
    check("wrong password" in e.message, f"wrong password message: {e.message}")
try:
    snap.open(repo_path, password="app secret")
    check(False, "an encrypted repository opened without a cache_dir")
except SnapError as e:
    check("cache_dir" in e.message, f"no cache_dir: {e.message}")
# Without any options: the repository is encrypted and needs its password,
# said in the ABI's own terms (never a CLI command, never "damaged").
for options in ({}, None):
    r = snap.lib.snap_open(repo_path.encode(), None if options is None else b"{}")
    check(not r, "an encrypted repository opened without its password")
    msg = snap.last_error()
    check("encrypted" in msg and "password" in msg, f"no password: {msg}")
    check("damaged" not in msg and "snap " not in msg, f"no password, in CLI terms: {msg}")

repo = snap.open(repo_path, password="app secret", cache_dir=cache)
_, listed = snap.call(snap.lib.snap_list, repo)
check(len(listed) == 1, f"one snapshot listed: {listed}")
target = os.path.join(work, "restored")
snap.call(snap.lib.snap_restore, repo, req({"snapshot": snapshot["id"], "target": target}), EVENT(), None)
snap.lib.snap_close(repo)
c = sqlite3.connect(os.path.join(target, "app.db"))
check(c.execute("SELECT body FROM notes").fetchone()[0].startswith(MARKER), "the restored database")
with open(os.path.join(target, "prefs.bin"), "rb") as f, open(os.path.join(data, "prefs.bin"), "rb") as g:
    check(f.read() == g.read(), "the restored file")
db.close()
print("ok")
