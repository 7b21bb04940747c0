//! `snap copy`: snapshots copied between repositories (plain, encrypted,
//! local, in a bucket) restore exactly, keep tags, labels and pins, keep
//! their ids where the repositories name content alike and get them back
//! on the way home, and a copy killed at any point resumes without
//! sending a chunk twice.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use snap::storage::Storage;

use crate::common::*;

/// An app's data: the rich tree, a database in WAL mode, and 3 MiB that
/// does not compress (several packs of 1 MiB in the destination).
fn app_dir(root: &Path) {
    make_rich_tree(root);
    let db = root.join("state/notes.db");
    sqlite_db(&db, 2000);
    let c = rusqlite::Connection::open(&db).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(c);
    write(&root.join("media/clip.bin"), noise(7, 3 << 20));
    for i in 0..200 {
        write(
            &root.join(format!("prefs/p{i}.json")),
            format!("{{\"key\": {i}, \"pad\": \"{}\"}}", "x".repeat(i)),
        );
    }
}

/// Two snapshots of `app`: the first pinned, the second tagged and
/// labelled, after a change.
fn two_snapshots(env: &Env, app: &Path) -> (String, String) {
    let first = env.create_id(app);
    env.snap().args(["pin", &first]).assert().success();
    write(&app.join("media/new.bin"), noise(8, 1 << 20));
    // A migration rewrites some pages: the second snapshot stores them as
    // deltas of the first's, which a copy reads through their bases.
    let c = rusqlite::Connection::open(app.join("state/notes.db")).unwrap();
    c.execute_batch(
        "UPDATE users SET score = score + 1 WHERE id % 50 = 0; PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .unwrap();
    drop(c);
    let out = env
        .snap()
        .args([
            "create",
            "--json",
            "--tag",
            "before-upgrade",
            "--label",
            "app=2.1",
        ])
        .arg(app)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert!(v["stats"]["new_delta_chunks"].as_u64().unwrap() > 0, "{v}");
    (first, v["id"].as_str().unwrap().to_string())
}

/// `snap copy ARGS --to TO --json` from `from`'s repository.
fn copy(from: &Env, args: &[&str], to: &Path, vars: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = from.snap();
    cmd.arg("copy").args(args).arg("--to").arg(to).arg("--json");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.assert().success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

/// What a snapshot is apart from its id: time, source, tags, labels, pin.
fn marks(list: &[serde_json::Value]) -> BTreeMap<String, serde_json::Value> {
    list.iter()
        .map(|s| {
            let mut tags: Vec<String> = serde_json::from_value(s["tags"].clone()).unwrap();
            tags.sort();
            (
                s["time"].as_str().unwrap().to_string(),
                serde_json::json!([
                    s["source"],
                    tags,
                    s["labels"],
                    s["pinned"],
                    s["stats"]["files"]
                ]),
            )
        })
        .collect()
}

fn ids(list: &[serde_json::Value]) -> Vec<String> {
    list.iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Chunk entries in the data packs of `storage`, and how many distinct
/// chunks they hold: equal when no chunk was stored twice.
fn data_chunk_entries(storage: &dyn Storage) -> (usize, usize) {
    let packs = snap::repo::list_packs(storage).unwrap();
    let (mut entries, mut distinct) = (0, HashSet::new());
    snap::pack::for_each_footer(storage, &packs, |_, footer| {
        let f = footer.unwrap();
        if f.kind == snap::pack::PackKind::Data {
            entries += f.entries.len();
            distinct.extend(f.entries.iter().map(|e| e.id));
        }
        Ok(())
    })
    .unwrap();
    (entries, distinct.len())
}

fn unlocked(storage: Arc<dyn Storage>) -> Arc<dyn Storage> {
    snap::keys::unlocked(storage, || {
        Ok(zeroize::Zeroizing::new(TEST_PASSWORD.to_string()))
    })
    .unwrap()
}

/// Restore every snapshot of `env` and of `other` with the same time, and
/// compare the trees.
fn same_content(a: &Env, b: &Env, scratch: &Path) {
    let (la, lb) = (a.list(), b.list());
    assert_eq!(la.len(), lb.len());
    for (sa, sb) in la.iter().zip(&lb) {
        assert_eq!(sa["time"], sb["time"]);
        let (ta, tb) = (scratch.join("a"), scratch.join("b"));
        a.restore_to(sa["id"].as_str().unwrap(), &ta);
        b.restore_to(sb["id"].as_str().unwrap(), &tb);
        assert_same_tree(&ta, &tb);
        fs::remove_dir_all(&ta).unwrap();
        fs::remove_dir_all(&tb).unwrap();
    }
}

#[test]
fn a_copy_to_a_plain_repository_keeps_ids_and_a_rerun_sends_nothing() {
    let env = Env::new();
    let app = env.path("app");
    app_dir(&app);
    let (first, second) = two_snapshots(&env, &app);
    // The destination has a snapshot of its own holding some of the same
    // small files: groups of the source that it partly holds are regrouped.
    let dest = Env::new();
    let some = env.path("some");
    for i in (0..200).step_by(3) {
        let name = format!("prefs/p{i}.json");
        write(&some.join(&name), fs::read(app.join(&name)).unwrap());
    }
    let own = dest.create_id(&some);
    let out = copy(&env, &[&first], &dest.repo, &[]);
    assert_eq!(out["stats"]["snapshots_copied"], 1);
    assert!(
        out["stats"]["chunks_already_there"].as_u64().unwrap() >= 60,
        "{out}"
    );
    assert_eq!(out["stats"]["ids_kept"], true);
    assert_eq!(out["snapshots"][0]["copy"].as_str().unwrap(), first);
    // The second shares most chunks with the first: only what changed is sent.
    let out = copy(&env, &["latest"], &dest.repo, &[]);
    let sent = out["stats"]["chunks_sent"].as_u64().unwrap();
    let there = out["stats"]["chunks_already_there"].as_u64().unwrap();
    assert!(
        sent > 0 && there > sent,
        "sent {sent}, already there {there}"
    );
    assert_eq!(out["snapshots"][0]["copy"].as_str().unwrap(), second);
    let theirs = |l: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        l.into_iter().filter(|s| s["id"] != own.as_str()).collect()
    };
    assert_eq!(ids(&theirs(dest.list())), ids(&env.list()));
    assert_eq!(marks(&theirs(dest.list())), marks(&env.list()));
    // A rerun after a tag change sends nothing and brings the tag over.
    env.snap()
        .args(["tag", &first, "--add", "golden"])
        .assert()
        .success();
    let out = copy(&env, &["--all"], &dest.repo, &[]);
    assert_eq!(out["stats"]["chunks_sent"], 0);
    assert_eq!(out["stats"]["chunks_read"], 0);
    assert_eq!(out["stats"]["snapshots_already_there"], 2);
    assert_eq!(marks(&theirs(dest.list())), marks(&env.list()));
    dest.snap()
        .args(["check", "--read-data"])
        .assert()
        .success();
    dest.snap().args(["forget", &own]).assert().success();
    same_content(&env, &dest, &env.path("scratch"));
}

#[test]
fn copy_refuses_its_own_repository_and_a_destination_that_is_not_one() {
    let env = Env::new();
    let app = env.path("app");
    fs::create_dir_all(&app).unwrap();
    write(&app.join("a"), "a");
    env.create(&app);
    let same = env
        .snap()
        .args(["copy", "latest", "--to"])
        .arg(env.repo.join("."))
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&same.get_output().stderr).into_owned();
    assert!(
        err.contains("the destination is the repository copied from"),
        "{err}"
    );
    let none = env
        .snap()
        .args(["copy", "latest", "--to"])
        .arg(env.path("nowhere"))
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&none.get_output().stderr).into_owned();
    assert!(
        err.contains("nowhere: not a snap repository") && err.contains("snap init"),
        "{err}"
    );
    assert!(!env.path("nowhere").exists(), "nothing is created");
}

/// Local plain → local encrypted, killed at every fault point of the copy
/// (as abruptly as kill -9), then rerun: the rerun completes, no chunk is
/// in two data packs of the destination, and the result is what a copy
/// that was never killed gives.
#[test]
fn a_copy_killed_at_any_point_resumes_without_sending_a_chunk_twice() {
    let env = Env::new();
    let app = env.path("app");
    app_dir(&app);
    two_snapshots(&env, &app);
    let pw = [("SNAP_TO_PASSWORD", TEST_PASSWORD)];
    let pristine = env.path("pristine");
    env.snap()
        .args(["init", "--encrypt", "--pack-size", "1"])
        .arg(&pristine)
        .env("SNAP_PASSWORD", TEST_PASSWORD)
        .assert()
        .success();
    // A clean copy, counting the fault points it passes.
    let clean = env.path("clean");
    cp_a(&pristine, &clean);
    let report = env
        .snap()
        .args(["copy", "--all", "--to"])
        .arg(&clean)
        .env("SNAP_FAULT_REPORT", "1")
        .envs(pw)
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let err = String::from_utf8_lossy(&report.stderr);
    let points: u64 = err
        .lines()
        .find(|l| l.contains("fault points passed"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("fault report");
    assert!(points > 10, "{points} fault points");
    eprintln!("copy passes {points} fault points");
    let clean_env = Env {
        dir: tempfile::tempdir().unwrap(),
        repo: clean.clone(),
        vars: vec![("SNAP_PASSWORD", TEST_PASSWORD.into())],
    };
    let want = ids(&clean_env.list());
    let dest_storage = |p: &Path| unlocked(Arc::new(snap::storage::LocalStorage::new(p)));
    let (entries, distinct) = data_chunk_entries(&*dest_storage(&clean));
    assert_eq!(entries, distinct);
    let mut crashed = 0;
    for n in 1..=points {
        let dest = env.path(&format!("dest{n}"));
        cp_a(&pristine, &dest);
        let out = env
            .snap()
            .args(["copy", "--all", "--to"])
            .arg(&dest)
            .env("SNAP_FAULT_AFTER", n.to_string())
            .envs(pw)
            .output()
            .unwrap();
        if out.status.success() {
            continue;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("injected crash"), "point {n}: {err}");
        crashed += 1;
        let rerun = copy(&env, &["--all"], &dest, &pw);
        let dest_env = Env {
            dir: tempfile::tempdir().unwrap(),
            repo: dest.clone(),
            vars: vec![("SNAP_PASSWORD", TEST_PASSWORD.into())],
        };
        assert_eq!(ids(&dest_env.list()), want, "point {n}: {rerun}");
        let (entries, distinct) = data_chunk_entries(&*dest_storage(&dest));
        assert_eq!(entries, distinct, "point {n}: a chunk was sent twice");
        assert_eq!(distinct, data_chunk_entries(&*dest_storage(&clean)).1);
        if n == points / 2 {
            dest_env
                .snap()
                .args(["check", "--read-data"])
                .assert()
                .success();
            same_content(&env, &dest_env, &env.path("scratch"));
        }
        fs::remove_dir_all(&dest).unwrap();
    }
    assert!(
        crashed * 2 > points,
        "only {crashed} of {points} points crashed"
    );
}

/// The scenario: local → bucket (encrypted) with a copy killed
/// midway and resumed → a fresh local repository: every snapshot comes
/// back with its original id, tags, labels, pin and bytes.
#[test]
fn a_copy_round_trips_through_an_encrypted_bucket_after_a_kill() {
    let env = Env::new();
    let app = env.path("app");
    app_dir(&app);
    two_snapshots(&env, &app);
    let bucket = Env::on_s3("a_copy_round_trips_through_an_encrypted_bucket");
    let pw = [("SNAP_TO_PASSWORD", TEST_PASSWORD)];
    let mut killed = env.snap_process();
    let killed = killed
        .args(["copy", "--all", "--to"])
        .arg(&bucket.repo)
        .envs(bucket.vars.iter().map(|(k, v)| (*k, v.as_str())))
        .envs(pw)
        .env("SNAP_FAULT_AFTER", "3")
        .output()
        .unwrap();
    assert!(!killed.status.success());
    assert!(String::from_utf8_lossy(&killed.stderr).contains("injected crash"));
    let mut resumed = env.snap();
    resumed
        .args(["copy", "--all", "--json", "--to"])
        .arg(&bucket.repo)
        .envs(bucket.vars.iter().map(|(k, v)| (*k, v.as_str())))
        .envs(pw);
    let out = resumed.assert().success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["stats"]["ids_kept"], false);
    assert_eq!(v["stats"]["snapshots_copied"], 2);
    assert!(v["requests"]["put"].as_u64().unwrap() > 0);
    let srv = crate::s3server::server("a_copy_round_trips_through_an_encrypted_bucket");
    let url = snap::storage::S3Url::parse(bucket.repo.to_str().unwrap())
        .unwrap()
        .unwrap();
    let remote: Arc<dyn Storage> =
        Arc::new(snap::storage::S3Storage::new(&url, &srv.options()).unwrap());
    let (entries, distinct) = data_chunk_entries(&*unlocked(remote));
    assert_eq!(entries, distinct, "the resumed copy sent a chunk twice");
    assert_eq!(marks(&bucket.list()), marks(&env.list()));
    // Home again, into a plain repository: the original ids.
    let home = Env::new();
    let mut back = bucket.snap();
    back.args(["copy", "--all", "--json", "--to"])
        .arg(&home.repo);
    back.assert().success();
    assert_eq!(ids(&home.list()), ids(&env.list()));
    assert_eq!(marks(&home.list()), marks(&env.list()));
    home.snap()
        .args(["check", "--read-data"])
        .assert()
        .success();
    same_content(&env, &home, &env.path("scratch"));
}

/// A damaged chunk in the source stops the copy with the pack named, and
/// the destination gets no snapshot that would need it.
#[test]
fn a_copy_never_spreads_damage() {
    let env = Env::new();
    let app = env.path("app");
    fs::create_dir_all(&app).unwrap();
    write(&app.join("big.bin"), noise(3, 2 << 20));
    env.create(&app);
    let pack = data_packs(&env.repo).into_iter().next().unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    bytes[1 << 20] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();
    let dest = Env::new();
    let out = env
        .snap()
        .args(["copy", "--all", "--to"])
        .arg(&dest.repo)
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name[..8]), "the pack is named: {err}");
    assert!(dest.list().is_empty());
}
