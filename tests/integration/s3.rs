//! Repositories in an S3 bucket (s3s-fs on 127.0.0.1), through the binary:
//! the scenarios of a local repository, plus what only a remote one has
//! (a cache that can be lost, several clients on one bucket).
//!
//! Skipped, with the reason printed, when the server binary is missing;
//! `.ci/run` builds it and sets SNAP_REQUIRE_S3, which turns a skip into
//! a failure.

use std::fs;
use std::path::Path;

use crate::common::*;

/// An app's data directory: the rich tree, a database in WAL mode at rest
/// and one with a rollback journal.
fn app_dir(root: &Path) {
    make_rich_tree(root);
    let wal = root.join("data/wal.db");
    sqlite_db(&wal, 3000);
    let c = rusqlite::Connection::open(&wal).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    c.execute_batch("UPDATE users SET score = score + 1 WHERE id % 7 = 0")
        .unwrap();
    drop(c);
}

fn requests(v: &serde_json::Value) -> &serde_json::Value {
    v.get("requests")
        .expect("--json statistics of a remote repository carry request counts")
}

#[test]
fn a_bucket_repository_round_trips_and_losing_the_cache_loses_nothing() {
    let Some(env) = Env::on_s3("a_bucket_repository_round_trips") else {
        return;
    };
    let src = env.path("app");
    app_dir(&src);
    let first = env.create(&src);
    assert!(first["stats"]["new_chunks"].as_u64().unwrap() > 0);
    assert!(requests(&first)["put"].as_u64().unwrap() >= 2);
    // The index lives in this client's cache, not in the bucket.
    let caches: Vec<_> = fs::read_dir(env.cache_dir().join("snap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(caches.len(), 1, "one cache directory per repository");
    assert!(caches[0].join("index.db").is_file());
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&caches[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the cache holds every name: owner only");

    // An unchanged rerun stores no chunk and uploads little more than the
    // snapshot object (files modified within the last moments are read
    // again, so a fresh database may be, but dedups to nothing).
    let again = env.create(&src);
    assert_eq!(again["stats"]["new_chunks"], 0);
    let up = requests(&again)["bytes_up"].as_u64().unwrap();
    assert!(up < 64 * 1024, "an unchanged rerun uploaded {up} bytes");
    assert!(requests(&again)["put"].as_u64().unwrap() <= 3);

    let out = env.path("out");
    env.restore_to(first["id"].as_str().unwrap(), &out);
    assert_same_tree(&src, &out);

    // Lose the cache: the next command rebuilds it from the bucket.
    fs::remove_dir_all(env.cache_dir()).unwrap();
    let listed = env.list();
    assert_eq!(listed.len(), 2);
    let out2 = env.path("out2");
    env.restore_to(again["id"].as_str().unwrap(), &out2);
    assert_same_tree(&src, &out2);
    env.snap().args(["check", "--read-data"]).assert().success();

    // `repair index` rebuilds this machine's cache, and says what it found.
    let rep = env
        .snap()
        .args(["repair", "index", "--json"])
        .assert()
        .success();
    let rep: serde_json::Value = serde_json::from_slice(&rep.get_output().stdout).unwrap();
    assert_eq!(rep["snapshots"], 2);
    assert_eq!(env.list().len(), 2);
}

#[test]
fn in_place_rollback_from_a_bucket_is_exact() {
    let Some(env) = Env::on_s3("in_place_rollback_from_a_bucket_is_exact") else {
        return;
    };
    let src = env.path("app");
    app_dir(&src);
    let before = env.path("before");
    cp_a(&src, &before);
    let id = env.create_id(&src);
    // A migration that went wrong.
    let c = rusqlite::Connection::open(src.join("data/app.db")).unwrap();
    c.execute_batch("ALTER TABLE users ADD COLUMN plan TEXT; DELETE FROM users WHERE id > 100;")
        .unwrap();
    drop(c);
    fs::remove_file(src.join("prefs.json")).unwrap();
    write(&src.join("new.txt"), "added by the migration");
    env.snap().args(["restore", &id]).assert().success();
    assert_same_tree(&before, &src);
    // The safety snapshot of the migrated state is in the bucket too.
    assert_eq!(env.list().len(), 2);
}

#[test]
fn guard_rolls_a_failed_migration_back_from_a_bucket() {
    let Some(env) = Env::on_s3("guard_rolls_a_failed_migration_back_from_a_bucket") else {
        return;
    };
    let src = env.path("app");
    app_dir(&src);
    let before = env.path("before");
    cp_a(&src, &before);
    let script = format!(
        "import sqlite3; c = sqlite3.connect('{}'); c.execute('DROP TABLE users'); c.commit(); open('{}', 'w').write('x'); raise SystemExit(3)",
        src.join("data/app.db").display(),
        src.join("junk").display()
    );
    env.snap()
        .args(["guard", "--source"])
        .arg(&src)
        .args(["--", "python3", "-c", &script])
        .assert()
        .code(7);
    assert_same_tree(&before, &src);
}

#[test]
fn two_clients_share_a_bucket_and_see_each_others_snapshots() {
    let Some(a) = Env::on_s3("two_clients_share_a_bucket") else {
        return;
    };
    // Client b: the same bucket, its own cache and its own data.
    let b = Env {
        dir: tempfile::tempdir().unwrap(),
        repo: a.repo.clone(),
        vars: a.vars.clone(),
    };
    let (src_a, src_b) = (a.path("app"), b.path("app"));
    app_dir(&src_a);
    make_rich_tree(&src_b);
    write(&src_b.join("only-b.txt"), noise(7, 200_000));
    let ida = a.create_id(&src_a);
    let idb = b.create_id(&src_b);
    let ids = |e: &Env| -> Vec<String> {
        let mut v: Vec<String> = e
            .list()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let mut both = vec![ida.clone(), idb.clone()];
    both.sort();
    assert_eq!(ids(&a), both, "a sees b's snapshot");
    assert_eq!(ids(&b), both, "b sees a's snapshot");
    // A tag set by one client reaches the other.
    a.snap()
        .args(["tag", &idb, "--add", "from-a"])
        .assert()
        .success();
    let tagged = b.list();
    let sb = tagged.iter().find(|s| s["id"] == idb.as_str()).unwrap();
    assert_eq!(sb["tags"], serde_json::json!(["from-a"]));
    // Each restores the other's snapshot exactly.
    let out = a.path("b-restored");
    a.restore_to(&idb, &out);
    assert_same_tree(&src_b, &out);
    let out = b.path("a-restored");
    b.restore_to(&ida, &out);
    assert_same_tree(&src_a, &out);
}
