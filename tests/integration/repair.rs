//! `snap repair index`: losing or damaging `index.db` loses nothing. The
//! index is rebuilt from the packs, tree packs, snapshot objects and change
//! records; every snapshot comes back with its id, tags, labels and pin,
//! restores byte for byte, and `check --read-data` passes.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

struct History {
    env: Env,
    /// Each kept snapshot's id and a `cp -a` copy of what it holds.
    kept: Vec<(String, PathBuf)>,
    list: serde_json::Value,
}

/// Four snapshots of a changing app directory: one tagged and labelled,
/// one pinned, one re-tagged later, one forgotten.
fn history() -> History {
    let env = Env::new();
    let src = env.path("src");
    make_rich_tree(&src);
    let mut kept = Vec::new();
    for g in 0..4 {
        write(
            &src.join(format!("gen{g}.txt")),
            format!("generation {g}\n").repeat(100),
        );
        if g == 2 {
            fs::remove_file(src.join("prefs.json")).unwrap();
        }
        let out = env
            .snap()
            .args([
                "create",
                "--json",
                "--tag",
                &format!("g{g}"),
                "--label",
                &format!("gen={g}"),
            ])
            .arg(&src)
            .assert()
            .success();
        let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        let copy = env.path(&format!("copy{g}"));
        cp_a(&src, &copy);
        kept.push((id, copy));
    }
    env.snap().args(["pin", &kept[1].0]).assert().success();
    env.snap().args(["forget", &kept[3].0]).assert().success();
    kept.pop();
    let list = env.snap().args(["list", "--json"]).assert().success();
    let list = serde_json::from_slice(&list.get_output().stdout).unwrap();
    History { env, kept, list }
}

fn remove_index(repo: &Path) {
    for f in ["index.db", "index.db-wal", "index.db-shm"] {
        let _ = fs::remove_file(repo.join(f));
    }
}

fn list(env: &Env) -> serde_json::Value {
    let out = env.snap().args(["list", "--json"]).assert().success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

/// Every kept snapshot restores into a new directory exactly as it was.
fn assert_kept_restore_exactly(h: &History) {
    for (id, copy) in &h.kept {
        let target = h.env.path(&format!("restored-{}", &id[..8]));
        h.env.restore_to(id, &target);
        assert_same_tree(copy, &target);
        fs::remove_dir_all(&target).unwrap();
    }
}

fn assert_everything_back(h: &History) {
    assert_eq!(list(&h.env), h.list, "ids, tags, labels, pins and order");
    assert_kept_restore_exactly(h);
    h.env
        .snap()
        .args(["check", "--read-data"])
        .assert()
        .success();
}

#[test]
fn a_deleted_index_is_rebuilt_with_every_snapshot() {
    let h = history();
    remove_index(&h.env.repo);
    let out = h.env.snap().arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("snap repair index"));
    let out = h
        .env
        .snap()
        .args(["repair", "index", "--json"])
        .assert()
        .success();
    let st: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(st["snapshots"], 3);
    assert_eq!(st["forgotten_snapshots"], 1);
    assert_everything_back(&h);
    // The rebuilt index carries on: a new snapshot, a gc.
    let src = h.env.path("src");
    write(&src.join("after.txt"), b"after the repair");
    h.env.create(&src);
    h.env.snap().arg("gc").assert().code(DONE_OR_NOTHING_TO_DO);
    h.env
        .snap()
        .args(["check", "--read-data"])
        .assert()
        .success();
}

#[test]
fn a_damaged_index_is_rebuilt_from_the_files() {
    for damage in ["truncate", "zero pages", "bit rot"] {
        let h = history();
        let db = h.env.repo.join("index.db");
        // Fold the WAL in first, so the damage hits the real file.
        {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        }
        match damage {
            "truncate" => {
                let len = fs::metadata(&db).unwrap().len();
                fs::OpenOptions::new()
                    .write(true)
                    .open(&db)
                    .unwrap()
                    .set_len(len / 3)
                    .unwrap();
            }
            "zero pages" => {
                let mut b = fs::read(&db).unwrap();
                let n = b.len();
                b[4096..n.min(4096 * 6)].fill(0);
                fs::write(&db, b).unwrap();
            }
            _ => {
                // Values SQLite cannot see are wrong: tags, a pin, a root.
                let c = rusqlite::Connection::open(&db).unwrap();
                c.execute_batch(
                    "UPDATE snapshots SET tags = '[\"wrong\"]', pinned = 1 - pinned;
                     DELETE FROM trees;",
                )
                .unwrap();
            }
        }
        h.env.snap().args(["repair", "index"]).assert().success();
        assert_everything_back(&h);
    }
}

#[test]
fn with_a_pack_gone_only_the_snapshots_it_touches_are_named() {
    let h = history();
    // The data pack that only the last kept snapshot added.
    let before: Vec<PathBuf> = data_packs(&h.env.repo);
    let src = h.env.path("src");
    write(&src.join("victim.bin"), noise(3, 400_000));
    let victim = h.env.create_id(&src);
    let added: Vec<PathBuf> = data_packs(&h.env.repo)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(added.len(), 1);
    fs::remove_file(&added[0]).unwrap();
    remove_index(&h.env.repo);
    let out = h.env.snap().args(["repair", "index"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&victim[..8]), "{err}");
    for (id, _) in &h.kept {
        assert!(!err.contains(&id[..8]), "{id} named: {err}");
    }
    assert_kept_restore_exactly(&h);
}

#[test]
fn a_crash_at_any_point_of_repair_then_a_rerun_gives_the_same_index() {
    let h = history();
    remove_index(&h.env.repo);
    let probe = tempfile::tempdir().unwrap();
    cp_a(&h.env.repo, &probe.path().join("repo"));
    let out = h
        .env
        .snap()
        .env("SNAP_REPO", probe.path().join("repo"))
        .env("SNAP_FAULT_REPORT", "1")
        .args(["repair", "index"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let points: u64 = err
        .lines()
        .find(|l| l.contains("fault points passed"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("fault report");
    assert!(points >= 3, "{points}");
    for n in 1..=points {
        let out = h
            .env
            .snap()
            .env("SNAP_FAULT_AFTER", n.to_string())
            .args(["repair", "index"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("injected crash"),
            "point {n}"
        );
        h.env.snap().args(["repair", "index"]).assert().success();
        assert_eq!(list(&h.env), h.list, "after a crash at point {n}");
    }
    assert_everything_back(&h);
}
