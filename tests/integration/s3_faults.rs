//! Faults at every request of a create and of a gc on a bucket, through
//! the real S3 client and a proxy that fails chosen requests (5xx,
//! dropped connections, stalls past the timeout): a command either
//! commits or fails cleanly, and every snapshot committed before (or by
//! it) restores exactly afterwards.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use crate::faultproxy::{Fault, FaultProxy, Plan};

/// A bucket repository whose commands go through a fault proxy, with
/// short retry bounds so a failing request gives up within a second.
fn faulty_bucket(test: &str) -> (Env, FaultProxy) {
    // Unencrypted: what is under test is the S3 path, and an unlock per
    // command (argon2id) would only make the many commands slower.
    let mut env = Env::on_s3_with(test, false);
    let srv = crate::s3server::server(test);
    let proxy = FaultProxy::start(srv.endpoint.trim_start_matches("http://"));
    for (k, v) in env.vars.iter_mut() {
        if *k == "AWS_ENDPOINT_URL" {
            *v = proxy.endpoint.clone();
        }
    }
    env.vars.extend([
        ("SNAP_S3_RETRIES", "2".to_string()),
        ("SNAP_S3_RETRY_TIMEOUT", "3".to_string()),
        ("SNAP_S3_TIMEOUT", "1".to_string()),
    ]);
    (env, proxy)
}

/// Small app data: a few files and a WAL database, changed by `round`.
fn app(root: &Path, round: usize) {
    write(&root.join("prefs.json"), format!("{{\"round\": {round}}}"));
    write(&root.join("media/photo.bin"), noise(round as u64, 40_000));
    write(&root.join("notes/a.txt"), "kept the same\n".repeat(100));
    let db = root.join("app.db");
    if !db.exists() {
        sqlite_db(&db, 200);
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
            .unwrap();
    }
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute(
        "UPDATE users SET score = ?1 WHERE id % 5 = 0",
        [round as i64],
    )
    .unwrap();
}

/// What each committed snapshot must restore to: a copy of its source.
struct Expected {
    copies: BTreeMap<String, std::path::PathBuf>,
}

impl Expected {
    fn record(&mut self, env: &Env, id: &str, src: &Path) {
        let copy = env.path(&format!("copies/{id}"));
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        cp_a(src, &copy);
        self.copies.insert(id.to_string(), copy);
    }

    /// Every listed snapshot restores exactly; every listed one is known.
    fn verify(&self, env: &Env, proxy: &FaultProxy) {
        proxy.set(None);
        for s in env.list() {
            let id = s["id"].as_str().unwrap();
            let copy = self
                .copies
                .get(id)
                .unwrap_or_else(|| panic!("unknown snapshot {id}"));
            let out = env.path(&format!("verify-{}", rand_suffix()));
            env.restore_to(id, &out);
            assert_same_tree(copy, &out);
            std::fs::remove_dir_all(&out).unwrap();
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    env.list()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// A create with `plan`: exit 0 with one more snapshot, or a failure
/// with none; returns the new id. `ids` is the list before, and after.
fn create_with(
    env: &Env,
    proxy: &FaultProxy,
    plan: Option<Plan>,
    src: &Path,
    ids: &mut Vec<String>,
) -> Option<String> {
    proxy.set(plan);
    let out = env
        .snap()
        .args(["create", "--json"])
        .arg(src)
        .output()
        .unwrap();
    proxy.set(None);
    let after = snapshot_ids(env);
    let before = std::mem::replace(ids, after.clone());
    if out.status.success() {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        assert_eq!(after.len(), before.len() + 1, "{plan:?}");
        assert!(after.contains(&id));
        Some(id)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{plan:?}: {err}");
        // The cause is told, not the pack writer's summary of it.
        assert!(
            !err.contains("the pack finisher stopped after an error"),
            "{plan:?}: the cause is lost: {err}"
        );
        assert_eq!(
            after, before,
            "{plan:?}: a failed create committed a snapshot"
        );
        None
    }
}

#[test]
fn a_create_commits_or_fails_cleanly_whatever_request_fails() {
    let (env, proxy) = faulty_bucket("a_create_commits_or_fails_cleanly");
    let src = env.path("app");
    let mut expected = Expected {
        copies: BTreeMap::new(),
    };
    let mut ids = Vec::new();
    app(&src, 0);
    let id = create_with(&env, &proxy, None, &src, &mut ids).unwrap();
    expected.record(&env, &id, &src);
    app(&src, 1);
    let id = create_with(&env, &proxy, None, &src, &mut ids).unwrap();
    expected.record(&env, &id, &src);
    // The requests of a create that stores something new, measured.
    app(&src, 2);
    proxy.set(None);
    let id = create_with(&env, &proxy, None, &src, &mut ids).unwrap();
    let n = proxy.requests();
    expected.record(&env, &id, &src);
    assert!(n >= 5, "a create sent only {n} requests");

    let mut round = 3;
    let (mut retried, mut failed) = (0, 0);
    for fault in [Fault::Status500, Fault::Drop] {
        for at in 1..=n {
            app(&src, round);
            round += 1;
            // One fault: the client retries it.
            let plan = Plan {
                fault,
                at,
                from_then_on: false,
            };
            match create_with(&env, &proxy, Some(plan), &src, &mut ids) {
                Some(id) => {
                    expected.record(&env, &id, &src);
                    retried += 1;
                }
                None => panic!("{plan:?}: one failed request failed the create"),
            }
            // Every request from there on fails: the create gives up
            // before its commit.
            app(&src, round);
            round += 1;
            let plan = Plan {
                fault,
                at,
                from_then_on: true,
            };
            if let Some(id) = create_with(&env, &proxy, Some(plan), &src, &mut ids) {
                // Only when the failures came after its last request.
                expected.record(&env, &id, &src);
            } else {
                failed += 1;
            }
        }
    }
    // A stall past the timeout, at the first, a middle and the last request.
    for at in [1, n / 2, n] {
        app(&src, round);
        round += 1;
        let plan = Plan {
            fault: Fault::Stall,
            at,
            from_then_on: false,
        };
        let id = create_with(&env, &proxy, Some(plan), &src, &mut ids)
            .unwrap_or_else(|| panic!("{plan:?}: a stalled request failed the create"));
        expected.record(&env, &id, &src);
    }
    eprintln!(
        "{n} requests per create; {retried} creates retried a fault, {failed} failed cleanly"
    );
    assert!(
        failed >= n,
        "persistent faults should fail most creates ({failed})"
    );
    expected.verify(&env, &proxy);
    env.snap().args(["check", "--read-data"]).assert().success();
}

#[test]
fn a_gc_commits_or_fails_cleanly_whatever_request_fails() {
    let (env, proxy) = faulty_bucket("a_gc_commits_or_fails_cleanly");
    let src = env.path("app");
    let mut expected = Expected {
        copies: BTreeMap::new(),
    };
    let gc = [
        "gc",
        "--keep-last",
        "2",
        "--grace",
        "0s",
        "--no-other-writers",
    ];
    let mut ids = Vec::new();
    let mut at = 1;
    let mut round = 0;
    let mut longest = 0;
    // Each round: a gc that forgets the oldest snapshots and
    // (past the zero grace) deletes what earlier gcs condemned, failing
    // from request `at` on; until a gc runs through without reaching it.
    loop {
        // A new snapshot while there are few, so that each gc has one to
        // forget and the number of requests stays about the same.
        if ids.len() < 4 {
            app(&src, round);
            round += 1;
            let id = create_with(&env, &proxy, None, &src, &mut ids).unwrap();
            expected.record(&env, &id, &src);
        }
        proxy.set(Some(Plan {
            fault: if at % 2 == 0 {
                Fault::Drop
            } else {
                Fault::Status500
            },
            at,
            from_then_on: true,
        }));
        let out = env.snap().args(gc).output().unwrap();
        let sent = proxy.requests();
        proxy.set(None);
        longest = longest.max(sent);
        let code = out.status.code();
        assert!(
            matches!(code, Some(0 | 1 | 6)),
            "gc failing from request {at}: {code:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Whatever it did, every chunk of every snapshot it kept is there
        // and sound (each is restored at the end).
        env.snap().args(["check", "--read-data"]).assert().success();
        ids = snapshot_ids(&env);
        if out.status.success() && sent < at {
            break;
        }
        at += if at < 10 { 1 } else { 2 };
        assert!(at < 200, "gc never ran through");
    }
    assert!(longest >= 10, "a gc sent only {longest} requests");
    assert_eq!(env.list().len(), 2);
    let code = env.snap().args(gc).output().unwrap().status.code();
    assert!(matches!(code, Some(0 | 6)), "a healthy gc: {code:?}");
    env.snap().args(["check", "--read-data"]).assert().success();
    expected.verify(&env, &proxy);
}
