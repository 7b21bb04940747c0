//! gc, forget, pin and check, against real repositories.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use predicates::prelude::*;

use crate::common::*;

/// Every file of the repository with its content hash.
fn repo_state(repo: &Path) -> BTreeMap<PathBuf, blake3::Hash> {
    walkdir::WalkDir::new(repo)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().to_path_buf(),
                blake3::hash(&fs::read(e.path()).unwrap()),
            )
        })
        .collect()
}

fn pack_files(repo: &Path) -> Vec<PathBuf> {
    data_packs(repo)
}

/// Eight generations of an app directory with churn: each adds, rewrites
/// and deletes files. Returns the ids and a `cp -a` copy of each generation.
fn generations(env: &Env, src: &Path, n: usize) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    make_rich_tree(src);
    for g in 0..n {
        write(
            &src.join(format!("gen/{g}.bin")),
            noise(100 + g as u64, 400_000),
        );
        if g >= 2 {
            fs::remove_file(src.join(format!("gen/{}.bin", g - 2))).unwrap();
        }
        write(&src.join("docs/readme.txt"), format!("generation {g}\n"));
        let conn = rusqlite::Connection::open(src.join("data/app.db")).unwrap();
        conn.execute(
            "UPDATE users SET score = score + 1 WHERE id % 10 = ?1",
            [g as i64],
        )
        .unwrap();
        drop(conn);
        let id = env.create_id(src);
        let copy = env.path(&format!("gen-copy-{g}"));
        cp_a(src, &copy);
        out.push((id, copy));
    }
    out
}

#[test]
fn gc_keep_last_two_after_eight_generations() {
    let env = Env::new();
    let src = env.path("src");
    let gens = generations(&env, &src, 8);
    let before = env.repo_bytes();
    let out = env
        .snap()
        .args(["gc", "--keep-last", "2", "--json"])
        .assert()
        .success();
    let stats: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(stats["snapshots_removed"].as_array().unwrap().len(), 6);
    assert!(stats["reclaimed_bytes"].as_u64().unwrap() > 0);
    let list = env.list();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], gens[6].0.as_str());
    assert_eq!(list[1]["id"], gens[7].0.as_str());

    // The repository is not much larger than the live data of the two
    // snapshots (compressed, deduplicated).
    let after = env.repo_bytes();
    let live = dir_bytes(&gens[7].1) + 400_000;
    assert!(after < before, "{after} < {before}");
    assert!(
        after < live + live / 4,
        "repository {after} bytes for {live} bytes of live data"
    );

    env.snap()
        .args(["check", "--read-data"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("ok"));
    for (id, copy) in &gens[6..] {
        let out = env.path(&format!("restored-{}", &id[..8]));
        env.restore_to(id, &out);
        assert_same_tree(copy, &out);
    }
}

/// A restore in place takes a safety snapshot; `--keep-last 1` then keeps
/// the newest snapshot the user took (what `latest` names) beside it,
/// instead of only the safety snapshot.
#[test]
fn gc_keep_last_counts_safety_snapshots_apart() {
    let env = Env::new();
    let src = env.path("src");
    let gens = generations(&env, &src, 2);
    // Restore the first generation in place: the second is kept as a
    // safety snapshot first.
    env.snap()
        .args(["restore", gens[0].0.as_str()])
        .assert()
        .success();
    assert_same_tree(&gens[0].1, &src);
    assert_eq!(env.list().len(), 3);
    env.snap()
        .args(["gc", "--keep-last", "1"])
        .assert()
        .success();
    let list = env.list();
    let ids: Vec<&str> = list.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(list.len(), 2, "{ids:?}");
    assert!(
        ids.contains(&gens[1].0.as_str()),
        "the newest snapshot taken is kept: {ids:?}"
    );
    assert!(!ids.contains(&gens[0].0.as_str()));
    // `latest` still names a snapshot, and the safety snapshot still
    // undoes the restore.
    let out = env.path("latest");
    env.restore_to("latest", &out);
    assert_same_tree(&gens[1].1, &out);
    let undo = env.path("undo");
    env.restore_to("tag:pre-restore", &undo);
    assert_same_tree(&gens[1].1, &undo);
}

#[test]
fn gc_dry_run_leaves_the_repository_byte_for_byte_unchanged() {
    let env = Env::new();
    let src = env.path("src");
    generations(&env, &src, 4);
    let before = repo_state(&env.repo);
    let out = env
        .snap()
        .args(["gc", "--keep-last", "1", "--dry-run", "--json"])
        .assert()
        .success();
    let stats: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(stats["snapshots_removed"].as_array().unwrap().len(), 3);
    assert!(stats["reclaimed_bytes"].as_u64().unwrap() > 0);
    // Not one byte changed, not one file added (not even SQLite's -wal
    // and -shm: the index is opened immutable under the shared lock).
    assert!(!env.repo.join("index.db-wal").exists());
    assert_eq!(repo_state(&env.repo), before);
    // check reads the same way.
    env.snap().args(["check", "--read-data"]).assert().success();
    assert_eq!(repo_state(&env.repo), before);
    assert_eq!(env.list().len(), 4);
}

#[test]
fn pinned_snapshots_survive_every_policy() {
    let env = Env::new();
    let src = env.path("src");
    let gens = generations(&env, &src, 3);
    env.snap()
        .args(["pin", &gens[0].0[..10]])
        .assert()
        .success();
    for policy in [
        vec!["--keep-last", "1"],
        vec!["--keep-daily", "1"],
        vec!["--keep-within", "1s"],
        vec!["--keep-yearly", "1"],
        vec!["--keep-tag", "nothing-has-this"],
    ] {
        env.snap()
            .arg("gc")
            .args(&policy)
            .assert()
            .code(DONE_OR_NOTHING_TO_DO);
        let ids: Vec<String> = env
            .list()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        assert!(
            ids.contains(&gens[0].0),
            "pinned snapshot removed by {policy:?}"
        );
    }
    env.snap()
        .args(["forget", &gens[0].0])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("pinned"));
    // The tag policy kept nothing but the pinned snapshot.
    let ids: Vec<String> = env
        .list()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![gens[0].0.clone()]);
    let out = env.path("out");
    env.restore_to("latest", &out);
    assert_same_tree(&gens[0].1, &out);
    env.snap().args(["unpin", &gens[0].0]).assert().success();
    env.snap().args(["forget", &gens[0].0]).assert().success();
    assert!(env.list().is_empty());
}

#[test]
fn forget_then_gc_reclaims_and_removes_orphans() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.bin"), noise(1, 3_000_000));
    let first = env.create_id(&src);
    fs::remove_file(src.join("a.bin")).unwrap();
    write(&src.join("b.bin"), noise(2, 1_000_000));
    env.create(&src);
    // A pack that no row references, as a crash between rename and commit leaves.
    let orphan_dir = env.repo.join("packs/ab");
    fs::create_dir_all(&orphan_dir).unwrap();
    let orphan = orphan_dir.join(format!("ab{}.pack", "0".repeat(62)));
    fs::write(&orphan, b"left by a crash").unwrap();
    fs::write(env.repo.join("packs/.tmp-pack-123.tmp"), b"half a pack").unwrap();

    env.snap().args(["forget", &first[..8]]).assert().success();
    assert_eq!(env.list().len(), 1);
    let before = env.repo_bytes();
    env.snap().arg("gc").assert().success();
    assert!(!orphan.exists());
    assert!(!env.repo.join("packs/.tmp-pack-123.tmp").exists());
    assert!(
        env.repo_bytes() + 2_500_000 < before,
        "forgotten data reclaimed"
    );
    env.snap().args(["check", "--read-data"]).assert().success();
}

#[test]
fn check_finds_a_flipped_byte_a_truncated_pack_and_a_deleted_pack() {
    for damage in ["flip", "truncate", "delete"] {
        let env = Env::new();
        let src = env.path("src");
        write(&src.join("victim.bin"), noise(5, 200_000));
        env.create(&src);
        let packs = pack_files(&env.repo);
        assert_eq!(packs.len(), 1);
        let pack = &packs[0];
        let pack_id = pack.file_stem().unwrap().to_string_lossy().to_string();
        env.snap().arg("check").assert().success();
        let mut bytes = fs::read(pack).unwrap();
        match damage {
            "flip" => {
                bytes[1000] ^= 0x40;
                fs::write(pack, &bytes).unwrap();
            }
            "truncate" => fs::write(pack, &bytes[..bytes.len() / 2]).unwrap(),
            _ => fs::remove_file(pack).unwrap(),
        }
        let args: &[&str] = if damage == "flip" {
            &["check", "--read-data"]
        } else {
            &["check"]
        };
        env.snap()
            .args(args)
            .assert()
            .code(5)
            .stdout(predicate::str::contains(&pack_id).and(predicate::str::contains("victim.bin")));
    }
}

#[test]
fn restore_of_a_damaged_snapshot_restores_the_rest_and_reports() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a-good.txt"), "fine text ".repeat(1000));
    let id = env.create_id(&src);
    write(&src.join("b-victim.bin"), noise(6, 100_000));
    let id2 = env.create_id(&src);
    // Damage the second pack only (the one holding b-victim.bin).
    let victim_pack = pack_files(&env.repo)
        .into_iter()
        .find(|p| fs::metadata(p).unwrap().len() > 90_000)
        .unwrap();
    let mut bytes = fs::read(&victim_pack).unwrap();
    bytes[500] ^= 1;
    fs::write(&victim_pack, &bytes).unwrap();
    let out = env.path("out");
    env.snap()
        .args(["restore", &id2, "--target"])
        .arg(&out)
        .assert()
        .code(5)
        .stderr(predicate::str::contains("b-victim.bin").and(predicate::str::contains("BLAKE3")));
    assert_eq!(
        fs::read_to_string(out.join("a-good.txt")).unwrap(),
        "fine text ".repeat(1000)
    );
    assert!(!out.join("b-victim.bin").exists(), "no wrong data written");
    // The earlier snapshot does not use the damaged pack: it restores cleanly.
    let out1 = env.path("out1");
    env.restore_to(&id, &out1);
    assert_eq!(
        fs::read_to_string(out1.join("a-good.txt")).unwrap(),
        "fine text ".repeat(1000)
    );
}

#[test]
fn a_damaged_tree_is_found_and_named_and_its_restore_fails_cleanly() {
    // The index's copy of a tree (as a bucket's repository keeps them) is
    // what is damaged (tree packs: the damage matrix, place TreePack).
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("docs/a.txt"), b"alpha");
    write(&src.join("b.txt"), b"beta");
    let id = env.create_id(&src);
    env.with_tree_copies();
    // Flip a byte in the stored tree of docs/.
    let conn = rusqlite::Connection::open(env.repo.join("index.db")).unwrap();
    let (hash, mut data): (Vec<u8>, Vec<u8>) = conn
        .query_row(
            "SELECT hash, data FROM trees ORDER BY length(data) LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let last = data.len() - 1;
    data[last] ^= 0x01;
    conn.execute(
        "UPDATE trees SET data = ?1 WHERE hash = ?2",
        rusqlite::params![data, hash],
    )
    .unwrap();
    drop(conn);
    env.snap()
        .arg("check")
        .assert()
        .code(5)
        .stdout(predicate::str::contains("tree").and(predicate::str::contains(&id)));
    let out = env.path("out");
    env.snap()
        .args(["restore", &id, "--target"])
        .arg(&out)
        .assert()
        .code(5)
        .stderr(predicate::str::contains("BLAKE3"));
}

#[test]
fn a_damaged_index_file_is_reported_as_damage() {
    let env = Env::new();
    let src = env.path("src");
    for i in 0..200 {
        write(&src.join(format!("d{}/f{i}", i % 20)), format!("file {i}"));
    }
    env.create(&src);
    let path = env.repo.join("index.db");
    assert!(
        !env.repo.join("index.db-wal").exists()
            || fs::metadata(env.repo.join("index.db-wal")).unwrap().len() == 0
    );
    let mut bytes = fs::read(&path).unwrap();
    for b in &mut bytes[4096..16384] {
        *b = 0;
    }
    fs::write(&path, &bytes).unwrap();
    let out = env.snap().arg("check").assert().code(5);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.get_output().stdout),
        String::from_utf8_lossy(&out.get_output().stderr)
    );
    assert!(text.contains("index.db"), "{text}");
}

/// Format 4: small files' chunks share group frames. A gc that repacks a
/// pack whose groups are partly dead copies each group with a live member
/// whole, lists only the live members, and every one still reads back.
#[test]
fn gc_repacks_partly_live_groups() {
    let env = Env::new();
    let src = env.path("src");
    for i in 0..400u32 {
        let text = format!(
            "file {i}: {}\n",
            "settings and words ".repeat(20 + i as usize % 50)
        );
        write(&src.join(format!("small/{i:03}.txt")), text);
    }
    // Dead once forgotten: more than a third of the pack, so it is repacked.
    write(&src.join("big.bin"), noise(5, 2_000_000));
    let first = env.create_id(&src);
    // Grouped chunks in data packs (format 5 groups trees too).
    let grouped = |repo: &Path| -> i64 {
        rusqlite::Connection::open(repo.join("index.db"))
            .unwrap()
            .query_row(
                "SELECT count(*) FROM chunks c JOIN packs p ON c.pack = p.id
                 WHERE p.kind = 0 AND c.codec = 3",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert!(grouped(&env.repo) >= 300, "small files are grouped");
    fs::remove_file(src.join("big.bin")).unwrap();
    for i in (0..400u32).filter(|i| i % 2 == 1) {
        fs::remove_file(src.join(format!("small/{i:03}.txt"))).unwrap();
    }
    let second = env.create_id(&src);
    let copy = env.path("copy");
    cp_a(&src, &copy);
    let before = pack_files(&env.repo);
    env.snap().args(["forget", &first[..8]]).assert().success();
    env.snap().arg("gc").assert().success();
    let after = pack_files(&env.repo);
    assert!(
        before.iter().all(|p| !after.contains(p)),
        "the pack of the first snapshot was repacked"
    );
    let live = grouped(&env.repo);
    assert!(
        (150..=200).contains(&live),
        "{live} grouped rows: the live members, listed"
    );
    env.snap().args(["check", "--read-data"]).assert().success();
    let out = env.path("out");
    env.restore_to(&second, &out);
    assert_same_tree(&copy, &out);
}
