//! `snap restore ID` with no target: the source becomes exactly the snapshot.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;

/// A migration that damages the directory in every way the issue lists.
fn damage(src: &std::path::Path) {
    // SQLite schema change and row updates.
    let conn = rusqlite::Connection::open(src.join("data/app.db")).unwrap();
    conn.execute_batch("ALTER TABLE users ADD COLUMN plan TEXT; UPDATE users SET score = score + 1 WHERE id % 7 = 0;")
        .unwrap();
    drop(conn);
    write(
        &src.join("data/app.db-wal"),
        b"stale wal that must not survive",
    );
    // Files added, deleted, rewritten.
    write(&src.join("new-file.txt"), b"added by the migration");
    write(&src.join("newdir/nested/file"), b"added too");
    fs::remove_file(src.join("prefs.json")).unwrap();
    fs::write(src.join("docs/readme.txt"), b"rewritten by the migration\n").unwrap();
    // Modes and symlinks changed, an empty directory removed.
    fs::set_permissions(src.join("modes/m0600"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::remove_file(src.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("somewhere-else", src.join("link-rel")).unwrap();
    fs::remove_dir(src.join("empty-dir")).unwrap();
    // A file replaced by a directory, a directory by a file.
    fs::remove_file(src.join("empty-file")).unwrap();
    fs::create_dir(src.join("empty-file")).unwrap();
    fs::remove_dir_all(src.join("deep/a/b")).unwrap();
    write(&src.join("deep/a/b"), b"now a file");
    // A hard link broken apart.
    fs::remove_file(src.join("docs/two")).unwrap();
    write(&src.join("docs/two"), b"shared by two names");
}

#[test]
fn a_damaging_migration_is_undone_exactly_and_the_undo_can_be_undone() {
    let env = Env::new();
    let src = env.path("src");
    make_rich_tree(&src);
    let id = env.create_id(&src);
    let reference = env.path("reference");
    cp_a(&src, &reference);
    let untouched = ["media/photo.jpg", "docs/big.log", "modes/m0444", "hard/one"];
    let inodes: Vec<u64> = untouched.iter().map(|p| inode(&src.join(p))).collect();

    damage(&src);
    let damaged = env.path("damaged");
    cp_a(&src, &damaged);

    let out = env
        .snap()
        .args(["restore", &id, "--json"])
        .assert()
        .success();
    let res: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_same_tree(&reference, &src);
    for (p, ino) in untouched.iter().zip(inodes) {
        assert_eq!(
            inode(&src.join(p)),
            ino,
            "{p} was rewritten although it matched"
        );
    }
    assert!(!src.join("data/app.db-wal").exists());

    // The safety snapshot is the newest and undoes the undo.
    let safety = res["safety_snapshot"]
        .as_str()
        .expect("safety snapshot id")
        .to_string();
    let list = env.list();
    assert_eq!(list.last().unwrap()["id"], safety.as_str());
    assert_eq!(
        list.last().unwrap()["tags"],
        serde_json::json!(["pre-restore"])
    );
    env.snap()
        .args(["restore", &safety[..12], "--no-safety-snapshot"])
        .assert()
        .success();
    // Everything comes back except the stale -wal: a database's sidecars
    // are never stored (its image already holds what they committed).
    let data_mtime = filetime::FileTime::from_last_modification_time(
        &fs::metadata(damaged.join("data")).unwrap(),
    );
    fs::remove_file(damaged.join("data/app.db-wal")).unwrap();
    filetime::set_file_mtime(damaged.join("data"), data_mtime).unwrap();
    assert_same_tree(&damaged, &src);
    assert_eq!(env.list().len(), 2, "--no-safety-snapshot took none");

    // And back once more.
    env.snap().args(["restore", &id]).assert().success();
    assert_same_tree(&reference, &src);
}

#[test]
fn dry_run_changes_nothing_and_describes_the_plan() {
    let env = Env::new();
    let src = env.path("src");
    make_rich_tree(&src);
    let id = env.create_id(&src);
    damage(&src);
    let before = listing(&src);
    let inodes_before: Vec<u64> = walkdir::WalkDir::new(&src)
        .sort_by_file_name()
        .into_iter()
        .map(|e| inode(e.unwrap().path()))
        .collect();
    let repo_before = env.repo_bytes();

    let out = env
        .snap()
        .args(["restore", &id, "--dry-run", "--json"])
        .assert()
        .success();
    let plan: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let text = env
        .snap()
        .args(["restore", &id, "--dry-run"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&text.get_output().stdout).to_string();

    assert_eq!(listing(&src), before);
    let inodes_after: Vec<u64> = walkdir::WalkDir::new(&src)
        .sort_by_file_name()
        .into_iter()
        .map(|e| inode(e.unwrap().path()))
        .collect();
    assert_eq!(inodes_before, inodes_after);
    assert_eq!(
        env.repo_bytes(),
        repo_before,
        "dry run took no safety snapshot"
    );
    assert_eq!(env.list().len(), 1);

    let summary = &plan["summary"];
    assert!(summary["write_files"].as_u64().unwrap() >= 3, "{summary}");
    assert!(
        summary["delete_entries"].as_u64().unwrap() >= 5,
        "{summary}"
    );
    assert!(summary["fix_metadata"].as_u64().unwrap() >= 1, "{summary}");
    assert!(
        summary["unchanged_files"].as_u64().unwrap() >= 10,
        "{summary}"
    );
    let steps = plan["steps"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s["action"] == "delete"
                && s["path"].as_str().unwrap().ends_with("new-file.txt"))
    );
    assert!(
        steps
            .iter()
            .any(|s| s["action"] == "write" && s["path"].as_str().unwrap().ends_with("readme.txt"))
    );
    assert!(
        text.contains("delete") && text.contains("new-file.txt") && text.contains("plan for"),
        "{text}"
    );
}

#[test]
fn verify_catches_content_changes_that_keep_size_and_mtime() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f.txt"), b"original content");
    set_mtime(&src.join("f.txt"), 1_600_000_000, 5);
    let id = env.create_id(&src);
    fs::write(src.join("f.txt"), b"tampered content").unwrap();
    set_mtime(&src.join("f.txt"), 1_600_000_000, 5);
    // Size and mtime match: without --verify there is nothing to do.
    env.snap()
        .args(["restore", &id, "--no-safety-snapshot"])
        .assert()
        .code(6);
    assert_eq!(
        fs::read(src.join("f.txt")).unwrap(),
        b"tampered content",
        "size+mtime match: left alone"
    );
    env.snap()
        .args(["restore", &id, "--verify", "--no-safety-snapshot"])
        .assert()
        .success();
    assert_eq!(fs::read(src.join("f.txt")).unwrap(), b"original content");
}

#[test]
fn restore_of_a_subpath_touches_only_that_subtree() {
    let env = Env::new();
    let src = env.path("src");
    make_rich_tree(&src);
    let id = env.create_id(&src);
    damage(&src);
    env.snap()
        .args(["restore", &id, "--path", "docs", "--no-safety-snapshot"])
        .assert()
        .success();
    assert_eq!(fs::read(src.join("docs/readme.txt")).unwrap(), b"hello\n");
    assert!(
        src.join("new-file.txt").exists(),
        "outside the subtree: untouched"
    );
    // A single file.
    env.snap()
        .args([
            "restore",
            &id,
            "--path",
            "prefs.json",
            "--no-safety-snapshot",
        ])
        .assert()
        .success();
    assert!(src.join("prefs.json").exists());
    assert!(src.join("new-file.txt").exists());
    // Into another target, the subtree lands at the same relative place.
    let out = env.path("out");
    fs::create_dir(&out).unwrap();
    env.snap()
        .args(["restore", &id, "--path", "deep", "--target"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(fs::read(out.join("deep/a/b/c/d/leaf")).unwrap(), b"leaf");
    assert!(!out.join("docs").exists());
}

#[test]
fn a_non_empty_target_is_made_exactly_the_snapshot() {
    let env = Env::new();
    let src = env.path("src");
    make_rich_tree(&src);
    let id = env.create_id(&src);
    let out = env.path("out");
    write(&out.join("stray/file"), b"not in the snapshot");
    write(&out.join("prefs.json"), b"different");
    env.restore_to(&id, &out);
    assert_same_tree(&src, &out);
}

#[test]
fn leftover_temporary_files_are_removed_by_the_next_restore() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    let id = env.create_id(&src);
    write(&src.join(".snap-tmp-abc123"), b"half written");
    env.snap()
        .args(["restore", &id, "--no-safety-snapshot"])
        .assert()
        .success();
    assert!(!src.join(".snap-tmp-abc123").exists());
}
