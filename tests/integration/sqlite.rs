//! Live SQLite databases: consistent images, sidecars, labels, checks.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use predicates::prelude::*;

use crate::common::*;

/// A writer that keeps an invariant in every transaction: tables a and b
/// always hold the same number of rows. Runs until `stop` exists.
const WRITER: &str = r#"
import os, sqlite3, sys, time
db, stop, mode = sys.argv[1], sys.argv[2], sys.argv[3]
c = sqlite3.connect(db, isolation_level=None, timeout=30)
c.execute("PRAGMA journal_mode=" + mode)
c.execute("PRAGMA wal_autocheckpoint=100")
c.execute("CREATE TABLE IF NOT EXISTS a(id INTEGER PRIMARY KEY, body TEXT)")
c.execute("CREATE TABLE IF NOT EXISTS b(id INTEGER PRIMARY KEY, body TEXT)")
n = 0
open(stop + ".started", "w").close()
while not os.path.exists(stop):
    c.execute("BEGIN IMMEDIATE")
    body = ("row %d " % n) * 40
    c.execute("INSERT INTO a(body) VALUES (?)", (body,))
    c.execute("INSERT INTO b(body) VALUES (?)", (body,))
    if n % 50 == 49:
        c.execute("DELETE FROM a WHERE id IN (SELECT id FROM a ORDER BY id LIMIT 3)")
        c.execute("DELETE FROM b WHERE id IN (SELECT id FROM b ORDER BY id LIMIT 3)")
    c.execute("COMMIT")
    n += 1
    time.sleep(0.0005)  # a busy app, not a bulk load
print(n)
"#;

/// A Python writer running `script` on `db` (with `args`) until
/// [`Writer::stop`]; started when it has signalled so.
struct Writer {
    child: std::process::Child,
    stop: std::path::PathBuf,
}

impl Writer {
    fn start(env: &Env, script: &str, db: &Path, args: &[&str]) -> Writer {
        let stop = env.path("stop");
        let path = env.path("writer.py");
        fs::write(&path, script).unwrap();
        let child = Command::new("python3")
            .arg(&path)
            .arg(db)
            .arg(&stop)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the writer");
        while !env.path("stop.started").exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Writer { child, stop }
    }

    /// Stop it; the number of transactions it committed.
    fn stop(self) -> u64 {
        fs::write(&self.stop, b"").unwrap();
        String::from_utf8(self.child.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

fn counts(db: &Path) -> (String, i64, i64, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let a: i64 = c
        .query_row("SELECT count(*) FROM a", [], |r| r.get(0))
        .unwrap();
    let b: i64 = c
        .query_row("SELECT count(*) FROM b", [], |r| r.get(0))
        .unwrap();
    let newest: i64 = c
        .query_row("SELECT coalesce(max(id), 0) FROM a", [], |r| r.get(0))
        .unwrap();
    (check, a, b, newest)
}

#[test]
fn snapshots_of_a_database_under_constant_writes_are_consistent() {
    constant_writes("WAL");
}

#[test]
fn snapshots_of_a_rollback_journal_database_under_constant_writes_are_consistent() {
    // Read in place under SQLite's shared lock, without an image.
    constant_writes("DELETE");
}

fn constant_writes(mode: &str) {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("prefs.json"), b"{}");
    let db = src.join("live.db");
    let writer = Writer::start(&env, WRITER, &db, &[mode]);
    let mut ids = Vec::new();
    for _ in 0..8 {
        let out = env
            .snap()
            .args(["create", "--json", "--sqlite-check"])
            .arg(&src)
            .assert()
            .success();
        let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        assert_eq!(v["labels"]["quick_check:live.db"], "ok");
        ids.push(v["id"].as_str().unwrap().to_string());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let written = writer.stop();
    assert!(written > 50, "the writer wrote while snap read ({written})");
    let mut last = 0;
    let mut distinct = std::collections::BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let out = env.path(&format!("out-{i}"));
        env.restore_to(id, &out);
        let names: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with("-wal") || n.ends_with("-shm") || n.ends_with("-journal")),
            "sidecars are not stored: {names:?}"
        );
        let (check, a, b, newest) = counts(&out.join("live.db"));
        assert_eq!(check, "ok", "snapshot {i}");
        assert_eq!(a, b, "snapshot {i}: the invariant holds in the image");
        assert!(newest >= last, "snapshots move forward in time");
        last = newest;
        distinct.insert(newest);
    }
    assert!(distinct.len() > 1, "the captures saw different states");
}

#[test]
fn a_database_is_stored_without_sidecars_and_labelled_with_its_user_version() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let db = src.join("app.db");
    // An open WAL connection with committed data still in the -wal.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t(x); PRAGMA user_version=42;",
    )
    .unwrap();
    for i in 0..200 {
        c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
    }
    assert!(fs::metadata(src.join("app.db-wal")).unwrap().len() > 0);
    // Any reader of a live WAL database updates its read marks in the
    // -shm (shared memory, not data); everything else stays as it is.
    let data = |dir: &Path| {
        let mut l = listing(dir);
        l.remove(Path::new("app.db-shm"));
        l
    };
    let before = data(&src);
    let v = env.create(&src);
    assert_eq!(v["labels"]["user_version:app.db"], "42");
    assert_eq!(data(&src), before, "the source is not touched");
    let id = v["id"].as_str().unwrap();
    let ls = env.snap().args(["ls", id, "--json"]).assert().success();
    let ls: serde_json::Value = serde_json::from_slice(&ls.get_output().stdout).unwrap();
    let names: Vec<&str> = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["app.db"]);
    assert_eq!(ls["entries"][0]["sqlite_image"], true);
    assert_eq!(ls["snapshot"]["labels"]["user_version:app.db"], "42");
    let text = env.snap().args(["list"]).assert().success();
    assert!(String::from_utf8_lossy(&text.get_output().stdout).contains("user_version:app.db=42"));
    drop(c);
    // The image holds the committed WAL content and keeps WAL mode.
    let out = env.path("out");
    env.restore_to(id, &out);
    let r = rusqlite::Connection::open(out.join("app.db")).unwrap();
    let n: i64 = r
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let mode: String = r
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!((n, mode.as_str()), (200, "wal"));
}

/// A writer that opens the database for each transaction and closes it
/// after: between transactions a WAL database is at rest (no `-wal`, no
/// `-shm`), the state snap reads in place without SQLite, and each close
/// checkpoints into the main file. Same invariant as WRITER.
const REOPENING_WRITER: &str = r#"
import os, sqlite3, sys, time
db, stop = sys.argv[1], sys.argv[2]
n = 0
open(stop + ".started", "w").close()
while not os.path.exists(stop):
    c = sqlite3.connect(db, isolation_level=None, timeout=30)
    c.execute("BEGIN IMMEDIATE")
    body = ("row %d " % n) * 40
    for _ in range(20):
        c.execute("INSERT INTO a(body) VALUES (?)", (body,))
        c.execute("INSERT INTO b(body) VALUES (?)", (body,))
    c.execute("UPDATE a SET body = ? WHERE id = ?", (body, 1 + n * 37 % 8000))
    c.execute("UPDATE b SET body = ? WHERE id = ?", (body, 1 + n * 37 % 8000))
    c.execute("COMMIT")
    c.close()
    n += 1
    time.sleep(0.002)
print(n)
"#;

#[test]
fn a_wal_database_at_rest_between_writers_is_stored_consistent() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let db = src.join("app.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE a(id INTEGER PRIMARY KEY, body TEXT);
             CREATE TABLE b(id INTEGER PRIMARY KEY, body TEXT);",
        )
        .unwrap();
        let body = "x".repeat(400);
        for t in ["a", "b"] {
            let sql = format!("INSERT INTO {t}(body) VALUES (?1)");
            let tx = c.unchecked_transaction().unwrap();
            for _ in 0..8000 {
                tx.execute(&sql, [&body]).unwrap();
            }
            tx.commit().unwrap();
        }
    }
    assert!(!src.join("app.db-wal").exists() && !src.join("app.db-shm").exists());
    // At rest and not written: stored byte for byte, nothing created beside it.
    let before = listing(&src);
    let id = env.create_id(&src);
    assert_eq!(listing(&src), before, "the read created or changed files");
    let out = env.path("out-rest");
    env.restore_to(&id, &out);
    assert_eq!(
        fs::read(out.join("app.db")).unwrap(),
        fs::read(&db).unwrap()
    );

    let writer = Writer::start(&env, REOPENING_WRITER, &db, &[]);
    let ids: Vec<String> = (0..10).map(|_| env.create_id(&src)).collect();
    let written = writer.stop();
    assert!(written > 20, "the writer wrote while snap read ({written})");
    let mut distinct = std::collections::BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let out = env.path(&format!("out-{i}"));
        env.restore_to(id, &out);
        let (check, a, b, _) = counts(&out.join("app.db"));
        assert_eq!(check, "ok", "snapshot {i}");
        assert_eq!(a, b, "snapshot {i}: the invariant holds");
        let c = rusqlite::Connection::open(out.join("app.db")).unwrap();
        let same: i64 = c
            .query_row(
                "SELECT count(*) FROM a JOIN b USING (id) WHERE a.body = b.body",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(same, a, "snapshot {i}: every row of a matches b's");
        distinct.insert(a);
    }
    assert!(distinct.len() > 1, "the captures saw different states");
}

#[test]
fn a_wal_database_nobody_has_open_is_captured_without_creating_files() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // A WAL database closed uncleanly: the -wal (with commits) is left
    // behind but there is no -shm. Opening it in place would create one.
    let db = src.join("crashed.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);")
        .unwrap();
    for i in 0..100 {
        c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
    }
    let wal = fs::read(src.join("crashed.db-wal")).unwrap();
    let main = fs::read(&db).unwrap();
    drop(c); // checkpoints and removes the sidecars; put the crash state back
    fs::write(&db, &main).unwrap();
    fs::write(src.join("crashed.db-wal"), &wal).unwrap();
    let _ = fs::remove_file(src.join("crashed.db-shm"));
    let before = listing(&src);
    let id = env.create_id(&src);
    assert_eq!(
        listing(&src),
        before,
        "no -shm created, nothing recovered in place"
    );
    let out = env.path("out");
    env.restore_to(&id, &out);
    let r = rusqlite::Connection::open(out.join("crashed.db")).unwrap();
    let n: i64 = r
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 100, "the committed WAL content is in the image");
}

#[test]
fn sqlite_check_reports_a_damaged_database() {
    let env = Env::new();
    let src = env.path("src");
    sqlite_db(&src.join("bad.db"), 3000);
    // Zero a page in the middle of the file: an index or table page.
    let mut bytes = fs::read(src.join("bad.db")).unwrap();
    let page = 4096 * (bytes.len() / 4096 / 2);
    bytes[page..page + 4096].fill(0);
    fs::write(src.join("bad.db"), &bytes).unwrap();
    let out = env
        .snap()
        .args(["create", "--json", "--sqlite-check"])
        .arg(&src)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("bad.db").and(predicate::str::contains("quick_check")));
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let verdict = v["labels"]["quick_check:bad.db"].as_str().unwrap();
    assert_ne!(verdict, "ok");
    // The snapshot is still taken: it holds the database as it is.
    let target = env.path("out");
    env.restore_to(v["id"].as_str().unwrap(), &target);
    assert_eq!(fs::read(target.join("bad.db")).unwrap(), bytes);
}

#[test]
fn a_migrated_database_shares_its_unchanged_pages() {
    let env = Env::new();
    let src = env.path("src");
    sqlite_db(&src.join("app.db"), 20_000);
    let first = env.create(&src);
    // Touch a few rows: only their pages are new.
    let c = rusqlite::Connection::open(src.join("app.db")).unwrap();
    c.execute(
        "UPDATE users SET score = -1 WHERE id IN (5, 9000, 19000)",
        [],
    )
    .unwrap();
    drop(c);
    let second = env.create(&src);
    let size = fs::metadata(src.join("app.db")).unwrap().len();
    let new = second["stats"]["new_raw_bytes"].as_u64().unwrap();
    let stored = second["stats"]["new_stored_bytes"].as_u64().unwrap();
    assert!(first["stats"]["new_raw_bytes"].as_u64().unwrap() >= size);
    // The runs of 64 KiB holding the three rows and the header are new...
    assert!(
        new <= 4 * 65536,
        "three rows changed: a few 64 KiB runs new, not {new} bytes of a {size}-byte database"
    );
    // ...and stored as deltas of the parent's runs: bytes, not pages.
    assert!(
        stored <= 2048,
        "three rows changed: {stored} bytes stored for {new} new bytes"
    );
}

#[test]
fn a_hot_journal_is_rolled_back_in_a_copy_never_in_the_source() {
    let env = Env::new();
    let src = env.path("src");
    sqlite_db(&src.join("app.db"), 2000);
    // A writer dies mid-transaction after spilling changed pages into the
    // database file: the -journal left behind is hot, and the main file
    // holds uncommitted pages that only a rollback removes.
    let script = r#"
import os, signal, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA cache_size=2")
c.execute("BEGIN IMMEDIATE")
c.execute("UPDATE users SET name = 'uncommitted ' || id")
c.execute("INSERT INTO users(name, email, score) SELECT name, email, score FROM users")
os.kill(os.getpid(), signal.SIGKILL)
"#;
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(src.join("app.db"))
        .status()
        .unwrap();
    assert!(!status.success());
    assert!(src.join("app.db-journal").exists(), "a hot journal is left");
    // The main file alone (what a file copy stores) is not the committed
    // database: it holds spilled uncommitted pages.
    let alone = env.path("alone.db");
    fs::copy(src.join("app.db"), &alone).unwrap();
    let plain = rusqlite::Connection::open(&alone).and_then(|c| {
        c.query_row(
            "SELECT count(*) FROM users WHERE name LIKE 'uncommitted%'",
            [],
            |r| r.get::<_, i64>(0),
        )
    });
    assert!(
        !matches!(plain, Ok(0)),
        "the test needs spilled pages in the main file: {plain:?}"
    );
    let before = listing(&src);
    let v = env.create(&src);
    assert_eq!(listing(&src), before, "the source is not repaired in place");
    let out = env.path("out");
    env.restore_to(v["id"].as_str().unwrap(), &out);
    assert!(!out.join("app.db-journal").exists());
    let c = rusqlite::Connection::open(out.join("app.db")).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    let dirty: i64 = c
        .query_row(
            "SELECT count(*) FROM users WHERE name LIKE 'uncommitted%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        (check.as_str(), n, dirty),
        ("ok", 2000, 0),
        "the committed state"
    );
}
