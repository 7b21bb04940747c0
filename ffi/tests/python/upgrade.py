"""The app-upgrade scenario from Python through ctypes, in the app's own
process with its SQLite databases open (WAL and rollback-journal mode):
python3 upgrade.py LIBSNAP_FFI WORKDIR. Exits non-zero on any failure."""

import hashlib
import json
import os
import sqlite3
import stat
import sys
import threading

from snap_ctypes import EVENT, Snap, SnapError, req

lib_path, work = sys.argv[1], sys.argv[2]
snap = Snap(lib_path)
data = os.path.join(work, "data")
repo_path = os.path.join(work, "repo")
SIDECARS = ("-wal", "-shm", "-journal")


def make_app():
    os.makedirs(os.path.join(data, "media"))
    os.makedirs(os.path.join(data, "cache", "thumbs"))
    main = sqlite3.connect(os.path.join(data, "main.db"))
    main.execute("PRAGMA journal_mode=WAL")
    main.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")
    main.executemany("INSERT INTO items(name, qty) VALUES (?, ?)", [(f"item {i}", i) for i in range(5000)])
    main.execute("PRAGMA user_version=1")
    main.commit()
    main.close()
    notes = sqlite3.connect(os.path.join(data, "notes.db"))
    notes.execute("CREATE TABLE notes(body TEXT)")
    notes.executemany("INSERT INTO notes VALUES (?)", [(f"note {i}" * 10,) for i in range(500)])
    notes.execute("PRAGMA user_version=1")
    notes.commit()
    notes.close()
    with open(os.path.join(data, "prefs.json"), "w") as f:
        json.dump({"schema": 1, "theme": "dark"}, f)
    with open(os.path.join(data, "media", "photo.bin"), "wb") as f:
        f.write(os.urandom(3 << 20))
    for i in range(50):
        with open(os.path.join(data, "cache", "thumbs", f"t{i}.png"), "wb") as f:
            f.write(os.urandom(2000))
    os.chmod(os.path.join(data, "prefs.json"), 0o640)


def manifest():
    """Everything a rollback must bring back, sidecars aside."""
    m = {}
    for root, dirs, files in os.walk(data):
        for name in dirs + files:
            if name.endswith(SIDECARS):
                continue
            p = os.path.join(root, name)
            st = os.lstat(p)
            entry = [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid]
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    entry += [st.st_size, st.st_mtime_ns, hashlib.sha256(f.read()).hexdigest()]
            elif stat.S_ISDIR(st.st_mode):
                entry.append(st.st_mtime_ns)
            m[os.path.relpath(p, data)] = entry
    return m


def open_app():
    main = sqlite3.connect(os.path.join(data, "main.db"), isolation_level=None)
    notes = sqlite3.connect(os.path.join(data, "notes.db"), isolation_level=None)
    return main, notes


def migrate(main, notes, fail_half_way):
    main.execute("BEGIN")
    main.execute("ALTER TABLE items ADD COLUMN price REAL")
    main.execute("UPDATE items SET price = qty * 1.5, name = upper(name)")
    main.execute("PRAGMA user_version=2")
    main.execute("COMMIT")
    notes.execute("DELETE FROM notes WHERE rowid % 2 = 0")
    with open(os.path.join(data, "prefs.json"), "w") as f:
        json.dump({"schema": 2, "theme": "dark"}, f)
    os.remove(os.path.join(data, "media", "photo.bin"))
    with open(os.path.join(data, "media", "new.bin"), "wb") as f:
        f.write(b"new")
    if fail_half_way:
        raise RuntimeError("migration step 3 failed")


def user_version(name):
    c = sqlite3.connect(os.path.join(data, name))
    v = c.execute("PRAGMA user_version").fetchone()[0]
    c.close()
    return v


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


make_app()
assert snap.lib.snap_version()
repo = snap.open(repo_path, create=True)

# The app starts: databases open, a read transaction in the WAL one.
main, notes = open_app()
main.execute("BEGIN")
check(main.execute("SELECT count(*) FROM items").fetchone()[0] == 5000, "the app reads its data")
notes.execute("SELECT count(*) FROM notes").fetchone()

# A snapshot with events.
events = []
on_event = snap.on_event(events.append)
code, snapshot = snap.call(snap.lib.snap_create, repo, req({"sources": data, "tags": ["launch"]}), on_event, None)
check(snapshot["complete"] and snapshot["tags"] == ["launch"], f"create result {snapshot}")
kinds = {e["event"] for e in events}
check({"phase", "progress"} <= kinds, f"events seen: {kinds}")
last = [e for e in events if e["event"] == "progress"][-1]
check(last["bytes"] >= 3 << 20, f"the last progress event counts the bytes read: {last}")

# Errors: a bad id is 1 with a message naming it; bad JSON names the field.
try:
    snap.call(snap.lib.snap_restore, repo, req({"snapshot": "0123deadbeef"}), EVENT(), None)
    check(False, "restoring a missing snapshot succeeded")
except SnapError as e:
    check(e.code == 1 and "0123deadbeef" in e.message, f"bad id: {e.code} {e.message}")
try:
    snap.call(snap.lib.snap_create, repo, req({"source": data}), EVENT(), None)
    check(False, "a misspelt field was accepted")
except SnapError as e:
    check(e.code == 1 and "source" in e.message, f"misspelt field: {e.message}")

# Cancel from another thread while a create runs.
started, release = threading.Event(), threading.Event()


def blocking(_event):
    if not started.is_set():
        started.set()
        release.wait(30)


blocking_cb = snap.on_event(blocking)
result = {}
t = threading.Thread(
    target=lambda: result.update(code=snap.lib.snap_create(repo, req({"sources": data}), blocking_cb, None, None))
)
_, before = snap.call(snap.lib.snap_list, repo)
t.start()
check(started.wait(30), "the create in the thread reported nothing")
snap.lib.snap_cancel(repo)
release.set()
t.join(60)
check(result.get("code") == 130, f"a cancelled create returned {result}")
_, after = snap.call(snap.lib.snap_list, repo)
check(before == after, "a cancelled create committed a snapshot")

# Upgrade 1: the migration fails; the data goes back exactly.
main.execute("COMMIT")
before = manifest()
code, begun = snap.call(snap.lib.snap_migration_begin, repo, req({"sources": data, "labels": {"app": "1.0"}}))
check(begun["pinned"] and "pre-migration" in begun["tags"], f"begin result {begun}")
try:
    migrate(main, notes, fail_half_way=True)
except RuntimeError:
    pass
# As the header says: close the databases, then roll back.
main.close()
notes.close()
code, end = snap.call(snap.lib.snap_migration_end, repo, begun["snapshot"].encode(), 0, ok=(7,))
check(end["outcome"] == "rolled_back", f"end result {end}")
# On anything but 0, snap_last_error says why (snap.h).
why = snap.last_error()
check(why is not None and "rolled back" in why, f"snap_last_error after 7: {why}")
now = manifest()
diff = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
check(not diff, f"not exactly as before the migration: {diff}")
check(user_version("main.db") == 1 and user_version("notes.db") == 1, "schema versions rolled back")

# Upgrade 2: the migration succeeds and stays.
main, notes = open_app()
code, begun = snap.call(snap.lib.snap_migration_begin, repo, req({"sources": data}))
migrate(main, notes, fail_half_way=False)
code, end = snap.call(snap.lib.snap_migration_end, repo, begun["snapshot"].encode(), 1)
check(end["outcome"] == "migrated", f"end result {end}")
check(user_version("main.db") == 2, "the successful migration stays")
check(os.path.exists(os.path.join(data, "media", "new.bin")), "new files stay")
main.close()
notes.close()

# The pre-migration state is still a snapshot that can be restored elsewhere.
target = os.path.join(work, "copy")
code, restored = snap.call(snap.lib.snap_restore, repo, req({"snapshot": begun["snapshot"], "target": target}), EVENT(), None)
c = sqlite3.connect(os.path.join(target, "main.db"))
check(c.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "the restored database is sound")
check(c.execute("PRAGMA user_version").fetchone()[0] == 1, "the restored copy is the pre-migration state")
c.close()

code, listed = snap.call(snap.lib.snap_list, repo)
check(not any(s["pinned"] for s in listed), "no session is left pinned")
code, gc = snap.call(snap.lib.snap_gc, repo, req({"keep_last": 2}))
check(gc["snapshots_kept"] >= 2, f"gc result {gc}")
snap.lib.snap_close(repo)
print("ok")
