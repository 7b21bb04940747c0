//! Repositories in an S3 bucket (s3s-fs on 127.0.0.1), through the binary:
//! the scenarios of a local repository, plus what only a remote one has
//! (a cache that can be lost, several clients on one bucket).
//!
//! The server binary is built on first use when it is missing (see
//! `s3server`); a test never passes without running.

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
fn an_encrypted_bucket_repository_round_trips_and_losing_the_cache_loses_nothing() {
    round_trip_and_cache_loss(Env::on_s3("an_encrypted_bucket_repository_round_trips"));
}

#[test]
fn a_plain_bucket_repository_round_trips_and_losing_the_cache_loses_nothing() {
    round_trip_and_cache_loss(Env::on_s3_with(
        "a_plain_bucket_repository_round_trips",
        false,
    ));
}

fn round_trip_and_cache_loss(env: Env) {
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
    // It keeps a copy of every tree (reading one from a tree pack here
    // would be a request), though format 5 groups them in tree packs.
    let cached_trees = || -> i64 {
        let index = fs::read_dir(env.cache_dir().join("snap"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("index.db");
        rusqlite::Connection::open(index)
            .unwrap()
            .query_row("SELECT count(*) FROM trees", [], |r| r.get(0))
            .unwrap()
    };
    let trees = cached_trees();
    assert!(trees > 1, "the cache's index copies the trees ({trees})");
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
    assert!(
        cached_trees() >= trees,
        "a rebuilt cache copies the trees again"
    );
}

#[test]
fn in_place_rollback_from_a_bucket_is_exact() {
    let env = Env::on_s3("in_place_rollback_from_a_bucket_is_exact");
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
    let env = Env::on_s3("guard_rolls_a_failed_migration_back_from_a_bucket");
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
    let a = Env::on_s3("two_clients_share_a_bucket");
    // Client b: the same bucket, its own cache and its own data.
    let b = a.another_client();
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

/// `gc --json` with these arguments, parsed.
fn gc_json(env: &Env, args: &[&str]) -> serde_json::Value {
    let out = env
        .snap()
        .args(["gc", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0) | Some(6)),
        "gc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn gc_on_a_bucket_deletes_only_after_the_grace_period() {
    let env = Env::on_s3("gc_on_a_bucket_deletes_only_after_the_grace_period");
    let src = env.path("app");
    write(&src.join("big.bin"), noise(1, 3_000_000));
    let old = env.create_id(&src);
    write(&src.join("big.bin"), noise(2, 2_000_000));
    let new = env.create_id(&src);
    let srv = crate::s3server::server("gc");
    let url = env.repo.to_str().unwrap();
    let packs = || {
        srv.object_keys(url)
            .into_iter()
            .filter(|k| k.starts_with("packs/"))
            .count() as u64
    };
    let before = packs();
    let first = gc_json(&env, &["--keep-last", "1"]);
    assert_eq!(first["snapshots_removed"], serde_json::json!([old]));
    assert!(first["packs_condemned"].as_u64().unwrap() >= 1);
    assert_eq!(first["packs_deleted"], 0, "nothing is deleted at once");
    assert_eq!(packs(), before, "every pack object is still in the bucket");
    let keys = srv.object_keys(url);
    assert!(keys.iter().any(|k| k.starts_with("condemned/")));
    assert!(
        !keys.iter().any(|k| k.contains(&old)),
        "the forgotten snapshot's object is gone"
    );
    // Within the grace period (the default, 24 h) nothing is deleted either.
    let again = gc_json(&env, &[]);
    assert_eq!(again["packs_deleted"], 0);
    // After it, the condemned packs go, and what stays restores exactly.
    let last = gc_json(&env, &["--grace", "0s", "--no-other-writers"]);
    assert_eq!(last["packs_deleted"], first["packs_condemned"]);
    assert_eq!(packs(), before - last["packs_deleted"].as_u64().unwrap());
    assert!(
        !srv.object_keys(url)
            .iter()
            .any(|k| k.starts_with("condemned/")),
        "a finished record is deleted"
    );
    assert!(last["reclaimed_bytes"].as_u64().unwrap() > 2_000_000);
    env.snap().args(["check", "--read-data"]).assert().success();
    let out = env.path("out");
    env.restore_to(&new, &out);
    assert_same_tree(&src, &out);
    // A client whose cache is new agrees.
    fs::remove_dir_all(env.cache_dir()).unwrap();
    env.snap().args(["check", "--read-data"]).assert().success();
    assert_eq!(env.list().len(), 1);
}

/// A create on client b that started (and synced) before client a's gc
/// condemned the packs it dedups against: the next gc after the grace
/// period finds b's snapshot using them and keeps them.
#[test]
fn a_pack_condemned_while_another_client_uses_it_is_rescued() {
    let a = Env::on_s3("a_pack_condemned_while_another_client_uses_it_is_rescued");
    let b = a.another_client();
    let src = a.path("shared");
    write(&src.join("data.bin"), noise(3, 1_500_000));
    write(&src.join("notes.txt"), "the same files on both clients");
    let s1 = a.create_id(&src);
    // b starts a create of the same files and stops right after its sync.
    let flag = b.path("paused");
    let child = b
        .snap_process()
        .args(["create", "--json"])
        .arg(&src)
        .env("SNAP_PAUSE_AT", "create started")
        .env("SNAP_PAUSE_FILE", &flag)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_pause(&flag, "create");
    // Meanwhile a forgets its snapshot and condemns its packs.
    a.snap().args(["forget", &s1]).assert().success();
    let gc1 = gc_json(&a, &["--grace", "0s", "--no-other-writers"]);
    assert!(gc1["packs_condemned"].as_u64().unwrap() >= 1);
    fs::remove_file(&flag).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s2: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        s2["stats"]["new_chunks"], 0,
        "b deduplicated against the packs it knew"
    );
    let s2 = s2["id"].as_str().unwrap().to_string();
    // The grace period is over: a's next gc sees b's snapshot and rescues.
    let gc2 = gc_json(&a, &["--grace", "0s", "--no-other-writers"]);
    assert!(gc2["packs_rescued"].as_u64().unwrap() >= 1, "{gc2}");
    for env in [&a, &b] {
        env.snap().args(["check", "--read-data"]).assert().success();
        let to = env.path("restored");
        env.restore_to(&s2, &to);
        assert_same_tree(&src, &to);
    }
    // A create that starts after the condemnation does not lean on it.
    let gc3 = gc_json(&a, &["--grace", "0s", "--no-other-writers"]);
    assert_eq!(gc3["packs_deleted"], 0, "rescued packs stay: {gc3}");
}

/// Two clients create snapshots in a loop while a third runs gc in a
/// loop (forgetting all but the newest of each source, deleting what its
/// earlier runs condemned once the grace period is over); afterwards every
/// snapshot still listed restores exactly, and the newest of each client
/// is there.
#[test]
fn creates_from_two_clients_while_a_gc_runs_all_restore_exactly() {
    let a = Env::on_s3_with("creates_from_two_clients_while_a_gc_runs", false);
    let (b, c) = (a.another_client(), a.another_client());
    let copies = a.path("copies");
    let rounds = 6;
    let run_client = |env: &Env, name: &str| {
        let src = env.path(name);
        let mut made = Vec::new();
        for round in 0..rounds {
            // Shared media (dedup across clients, so a gc's condemned
            // packs can be what the other client's create leans on),
            // plus changes of each client's own.
            write(&src.join("media/shared.bin"), noise(round / 2, 300_000));
            write(
                &src.join("own.txt"),
                format!("{name} round {round}\n").repeat(200),
            );
            write(
                &src.join(format!("log/{round}.txt")),
                noise(100 + round, 20_000),
            );
            let id = env.create_id(&src);
            let copy = copies.join(&id);
            fs::create_dir_all(&copies).unwrap();
            cp_a(&src, &copy);
            made.push(id);
        }
        made
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let (made_a, made_b, gcs) = std::thread::scope(|t| {
        let ha = t.spawn(|| run_client(&a, "app-a"));
        let hb = t.spawn(|| run_client(&b, "app-b"));
        let hc = t.spawn(|| {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                // A grace period longer than any create here.
                let out = c
                    .snap()
                    .args([
                        "gc",
                        "--keep-last",
                        "1",
                        "--grace",
                        "8s",
                        "--no-other-writers",
                    ])
                    .output()
                    .unwrap();
                assert!(
                    matches!(out.status.code(), Some(0 | 6)),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                n += 1;
            }
            n
        });
        let (ma, mb) = (ha.join().unwrap(), hb.join().unwrap());
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (ma, mb, hc.join().unwrap())
    });
    assert!(gcs >= 2, "only {gcs} gc runs overlapped the creates");
    // After the grace period, gc deletes what it condemned and rescues
    // what was used meanwhile.
    std::thread::sleep(std::time::Duration::from_secs(9));
    let last = c
        .snap()
        .args([
            "gc",
            "--keep-last",
            "1",
            "--grace",
            "8s",
            "--no-other-writers",
        ])
        .output()
        .unwrap();
    assert!(matches!(last.status.code(), Some(0 | 6)), "the last gc");
    let listed: Vec<String> = a
        .list()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert!(listed.contains(made_a.last().unwrap()) && listed.contains(made_b.last().unwrap()));
    for (i, id) in listed.iter().enumerate() {
        let out = a.path(&format!("out-{i}"));
        a.restore_to(id, &out);
        assert_same_tree(&copies.join(id), &out);
    }
    for env in [&a, &b, &c] {
        env.snap().args(["check", "--read-data"]).assert().success();
    }
}
