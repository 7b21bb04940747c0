//! Restore cannot be turned against the files around its target: symlinks
//! inside the target, a directory swapped for a symlink while the restore
//! runs, a repository inside a directory the snapshot lacks, a safety
//! snapshot that could not read everything, hostile index rows and tree
//! graphs, a planted lock symlink. Each case is a finding that once wrote,
//! deleted or panicked; each asserts that nothing outside changed.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use snap::tree::{Entry, Kind, Payload, Tree};

use crate::common::*;

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A directory outside every target, with a file and a subdirectory whose
/// names a restore would touch if it followed a symlink.
fn victim(env: &Env) -> PathBuf {
    let v = env.path("victim");
    write(&v.join("s"), b"precious s");
    write(&v.join("x/keep"), b"precious keep");
    write(&v.join("extra"), b"precious extra");
    write(&v.join("a"), b"precious a");
    write(&v.join("m"), b"precious m");
    fs::set_permissions(v.join("m"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(&v, fs::Permissions::from_mode(0o751)).unwrap();
    v
}

fn assert_victim_untouched(v: &Path) {
    assert_eq!(fs::read(v.join("s")).unwrap(), b"precious s");
    assert_eq!(fs::read(v.join("x/keep")).unwrap(), b"precious keep");
    assert_eq!(fs::read(v.join("extra")).unwrap(), b"precious extra");
    assert_eq!(fs::read(v.join("a")).unwrap(), b"precious a");
    assert_eq!(mode(&v.join("m")), 0o640, "chmod went through a symlink");
    assert_eq!(mode(v), 0o751, "the outside directory's mode changed");
    let names: Vec<_> = fs::read_dir(v)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 5, "something was created outside: {names:?}");
}

#[test]
fn restore_path_never_follows_a_symlink_in_the_target() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("d/s"), b"from the snapshot");
    fs::create_dir_all(src.join("d/x")).unwrap();
    let id = env.create_id(&src);
    let v = victim(&env);
    let target = env.path("target");
    fs::create_dir_all(&target).unwrap();
    symlink(&v, target.join("d")).unwrap();
    for sub in ["d/s", "d/x"] {
        let out = env
            .snap()
            .args([
                "restore",
                &id,
                "--no-safety-snapshot",
                "--path",
                sub,
                "--target",
            ])
            .arg(&target)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{sub}: {}", stderr(&out));
        assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
        assert_victim_untouched(&v);
    }
}

/// Run an in-place restore that pauses between plan and execute, let
/// `meanwhile` change the target, then let it finish.
fn restore_with_pause_at(
    env: &Env,
    id: &str,
    pause: &str,
    meanwhile: impl FnOnce(),
) -> std::process::Output {
    let flag = env.path("pause-flag");
    let child = env
        .snap_process()
        .args(["restore", id])
        .env("SNAP_REPO", &env.repo)
        .env("SNAP_PAUSE_AT", pause)
        .env("SNAP_PAUSE_FILE", &flag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !flag.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "restore never paused"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    meanwhile();
    fs::remove_file(&flag).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_directory_swapped_for_a_symlink_during_restore_redirects_nothing() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("sub/a"), b"snapshot a");
    write(&src.join("sub/m"), b"precious m");
    fs::set_permissions(src.join("sub/m"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&src.join("top.txt"), b"top");
    let id = env.create_id(&src);
    // Changes the restore will undo: a rewrite, an extra file, a mode.
    write(&src.join("sub/a"), b"changed a, longer than before");
    write(&src.join("sub/extra"), b"extra");
    fs::set_permissions(src.join("sub/m"), fs::Permissions::from_mode(0o640)).unwrap();
    write(&src.join("top.txt"), b"top changed");
    let v = victim(&env);
    let out = restore_with_pause_at(&env, &id, "restore planned", || {
        // Between plan and execute, someone who can write inside the
        // target swaps the directory for a symlink to a place outside.
        fs::rename(src.join("sub"), env.path("sub-moved")).unwrap();
        symlink(&v, src.join("sub")).unwrap();
    });
    assert_victim_untouched(&v);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sub/"),
        "names the paths: {}",
        stderr(&out)
    );
    // What the swap did not touch was restored.
    assert_eq!(fs::read(src.join("top.txt")).unwrap(), b"top");
}

#[test]
fn the_repository_inside_a_directory_the_snapshot_lacks_survives() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f.txt"), b"file");
    let target = env.path("target");
    let repo = target.join("sub/repo");
    let snap = |args: &[&str]| {
        let mut c = env.snap();
        c.env("SNAP_REPO", &repo).args(args);
        c
    };
    snap(&["init"]).assert().success();
    let out = snap(&["create", "--json", src.to_str().unwrap()])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    write(&target.join("sub/other"), b"not in the snapshot");
    snap(&["restore", &id, "--target", target.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(fs::read(target.join("f.txt")).unwrap(), b"file");
    assert!(
        !target.join("sub/other").exists(),
        "extras are still removed"
    );
    snap(&["check", "--read-data"]).assert().success();
    // Its safety snapshot is in the repository too: the undo works.
    let list = snap(&["list", "--json"]).assert().success();
    let list: Vec<serde_json::Value> = serde_json::from_slice(&list.get_output().stdout).unwrap();
    assert_eq!(list.len(), 2, "the snapshot and the safety snapshot");
}

/// `snap` as the unprivileged user `nobody` when the tests run as root,
/// with the scratch directory handed to it.
fn as_nobody(env: &Env) -> Command {
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(assert_cmd::cargo::cargo_bin("snap"));
        c
    } else {
        Command::new(assert_cmd::cargo::cargo_bin("snap"))
    };
    c.env("SNAP_REPO", &env.repo)
        .env("SNAP_LOCK_WAIT", "10")
        .env("XDG_STATE_HOME", env.dir.path().join("state-nobody"));
    c
}

fn give_to_nobody(root: &Path) {
    if !is_root() {
        return;
    }
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        std::os::unix::fs::lchown(e.path(), Some(65534), Some(65534)).unwrap();
    }
}

#[test]
fn an_incomplete_safety_snapshot_stops_the_restore() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("ok.txt"), b"fine");
    give_to_nobody(env.dir.path());
    let out = as_nobody(&env)
        .args(["create", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = id["id"].as_str().unwrap().to_string();
    // A file the snapshot lacks, which nobody can read: the safety snapshot
    // cannot store it, so a restore that deletes it could never undo that.
    write(&src.join("secret"), b"cannot be read back");
    give_to_nobody(env.dir.path());
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    let out = as_nobody(&env).args(["restore", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(stderr(&out).contains("secret") && stderr(&out).contains("--force"));
    assert!(src.join("secret").exists(), "nothing was changed");
    let out = as_nobody(&env)
        .args(["restore", &id, "--force"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!src.join("secret").exists(), "--force restores anyway");
    assert!(stderr(&out).contains("secret"), "and says what is lost");
}

#[test]
fn a_crafted_chunk_row_is_damage_never_a_panic() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("big.bin"), noise(7, 3_000_000));
    write(&src.join("small.txt"), b"small");
    let id = env.create_id(&src);
    // Every chunk row of big.bin claims an absurd stored length (rows of
    // data packs: a tree blob's row is read for its tree, below).
    let kind_rows = |kind: u8, extra: &str| {
        let sql = format!(
            "UPDATE chunks SET stored_len = 4294967295
             WHERE pack IN (SELECT id FROM packs WHERE kind = {kind}){extra}"
        );
        rusqlite::Connection::open(env.repo.join("index.db"))
            .unwrap()
            .execute(&sql, [])
            .unwrap()
    };
    // A restore that fails with damage, never a panic; its stderr.
    let damaged_restore = |target: &Path| -> String {
        let out = env
            .snap()
            .args(["restore", &id, "--target"])
            .arg(target)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
        stderr(&out)
    };
    assert!(kind_rows(0, " AND raw_len > 10") > 1);
    let target = env.path("target");
    let err = damaged_restore(&target);
    assert!(err.contains("big.bin"), "{err}");
    assert_eq!(fs::read(target.join("small.txt")).unwrap(), b"small");
    assert!(!target.join("big.bin").exists(), "no wrong bytes written");

    // The same lie in the row of a tree blob (format 5 reads trees from
    // their packs): damage naming the pack, nothing written.
    assert!(kind_rows(1, "") >= 1);
    let target = env.path("target2");
    let err = damaged_restore(&target);
    assert!(err.contains("damaged"), "{err}");
    assert!(!target.join("small.txt").exists(), "nothing written");
}

fn dir_entry(name: &[u8], sub: snap::TreeId) -> Entry {
    Entry {
        name: name.to_vec(),
        kind: Kind::Dir,
        flags: 0,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        size: 0,
        dev: 0,
        ino: 0,
        nlink: 1,
        payload: Payload::Subtree(sub),
        xattrs: Vec::new(),
    }
}

/// Store `trees` (encoded) in the index and make `root` the root of the
/// only snapshot; returns its id.
fn plant_trees(env: &Env, trees: &[Vec<u8>], root: snap::TreeId) -> String {
    let conn = rusqlite::Connection::open(env.repo.join("index.db")).unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for enc in trees {
        tx.execute(
            "INSERT OR IGNORE INTO trees(hash, codec, data) VALUES (?1, 0, ?2)",
            rusqlite::params![Tree::id_of_encoding(enc).as_bytes().to_vec(), enc],
        )
        .unwrap();
    }
    tx.execute("UPDATE snapshots SET root = ?1", [root.as_bytes().to_vec()])
        .unwrap();
    tx.commit().unwrap();
    env.list()[0]["id"].as_str().unwrap().to_string()
}

fn assert_hostile_graph_is_damage(env: &Env, id: &str) {
    let target = env.path("target");
    let out = env
        .snap()
        .args(["restore", id, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(!target.exists() || fs::read_dir(&target).unwrap().next().is_none());
    let out = env.snap().arg("check").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "check names it: {}",
        stderr(&out)
    );
}

/// A repository with one real snapshot whose root is replaced by `levels`
/// nested trees, each level naming the level below once per name.
fn planted_graph(levels: usize, names: &[&[u8]]) -> (Env, String) {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"f");
    env.create_id(&src);
    let mut trees = vec![Tree::default().encode()];
    for _ in 0..levels {
        let below = Tree::id_of_encoding(trees.last().unwrap());
        let entries = names.iter().map(|n| dir_entry(n, below)).collect();
        trees.push(Tree::new(entries).encode());
    }
    let root = Tree::id_of_encoding(trees.last().unwrap());
    let id = plant_trees(&env, &trees, root);
    (env, id)
}

#[test]
fn a_deeply_nested_tree_graph_is_damage_not_a_stack_overflow() {
    let (env, id) = planted_graph(20_000, &[b"d"]);
    assert_hostile_graph_is_damage(&env, &id);
}

#[test]
fn a_tree_graph_that_expands_beyond_its_snapshot_is_damage() {
    // 16 levels, each holding two names for the same subtree: 4 KB of
    // trees that would plan 65,536 directories.
    let (env, id) = planted_graph(16, &[b"a", b"b"]);
    assert_hostile_graph_is_damage(&env, &id);
}

#[test]
fn a_lock_file_that_is_a_symlink_is_never_written_through() {
    let env = Env::new();
    let outside = env.path("precious.txt");
    write(&outside, b"precious");
    fs::remove_file(env.repo.join("lock")).unwrap();
    symlink(&outside, env.repo.join("lock")).unwrap();
    let src = env.path("src");
    write(&src.join("f"), b"f");
    let out = env.snap().arg("create").arg(&src).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("lock"), "{}", stderr(&out));
    assert_eq!(fs::read(&outside).unwrap(), b"precious");
}

#[test]
fn repository_files_are_private_to_their_owner() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"f");
    env.create_id(&src);
    for f in ["index.db", "lock"] {
        assert_eq!(mode(&env.repo.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&env.repo), 0o700);
    for e in walkdir::WalkDir::new(env.repo.join("packs")) {
        let e = e.unwrap();
        let want = if e.file_type().is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(e.path()), want, "{}", e.path().display());
    }
}

#[test]
fn restore_path_dot_restores_the_whole_snapshot() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    let id = env.create_id(&src);
    write(&src.join("a"), b"changed");
    env.snap()
        .args(["restore", &id, "--path", "."])
        .assert()
        .success();
    assert_eq!(fs::read(src.join("a")).unwrap(), b"a");
    env.snap()
        .args(["restore", &id, "--path", "../x"])
        .assert()
        .code(1);
}

#[test]
fn a_recorded_source_that_became_a_symlink_is_refused() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    let id = env.create_id(&src);
    let v = victim(&env);
    fs::rename(&src, env.path("src-old")).unwrap();
    symlink(&v, &src).unwrap();
    let out = env.snap().args(["restore", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--target"), "{}", stderr(&out));
    assert_victim_untouched(&v);
    // Naming it is the user's decision.
    env.snap()
        .args(["restore", &id, "--target"])
        .arg(&src)
        .assert()
        .success();
    assert_eq!(fs::read(v.join("a")).unwrap(), b"a");
}

#[test]
fn restore_path_puts_the_parents_mode_back() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("ro/f"), b"original");
    let id = env.create_id(&src);
    write(&src.join("ro/f"), b"changed by a migration");
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    env.snap()
        .args(["restore", &id, "--path", "ro/f"])
        .assert()
        .success();
    assert_eq!(fs::read(src.join("ro/f")).unwrap(), b"original");
    assert_eq!(mode(&src.join("ro")), 0o555);
}

#[test]
fn new_directories_are_private_until_their_metadata_is_set() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("private/secret"), b"s");
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    let id = env.create_id(&src);
    fs::remove_dir_all(src.join("private")).unwrap();
    let mut seen = None;
    let out = restore_with_pause_at(&env, &id, "restore contents written", || {
        seen = Some(mode(&src.join("private")));
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        seen,
        Some(0o700),
        "readable by others while its files were written"
    );
    assert_eq!(mode(&src.join("private")), 0o700);
}

#[test]
fn setuid_bits_of_another_owner_are_not_given_to_a_plain_user() {
    assert!(
        is_root(),
        "this test needs root to make a setuid file owned by someone else: run the tests as root, as CI does"
    );
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("tool"), b"#!/bin/sh\n");
    fs::set_permissions(src.join("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    give_to_nobody(env.dir.path());
    std::os::unix::fs::lchown(src.join("tool"), Some(0), Some(0)).unwrap();
    let out = as_nobody(&env)
        .args(["create", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = id["id"].as_str().unwrap().to_string();
    let target = env.path("target");
    let out = as_nobody(&env)
        .args(["restore", &id, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let m = fs::metadata(target.join("tool")).unwrap();
    assert_eq!(m.uid(), 65534);
    assert_eq!(
        m.mode() & 0o7777,
        0o755,
        "setuid of root's file given to nobody"
    );
}

#[test]
fn an_owner_of_minus_one_from_the_repository_is_refused_not_a_panic() {
    // Found by the restore_hostile fuzz target: (uid_t)-1 means "leave
    // unchanged" to chown(2), and rustix asserts it is never passed.
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"f");
    let id = env.create_id(&src);
    let conn = rusqlite::Connection::open(env.repo.join("index.db")).unwrap();
    conn.execute(
        r#"UPDATE snapshots SET root_meta = '{"mode":493,"uid":4294967295,"gid":4294967295,"mtime_ns":0}'"#,
        [],
    )
    .unwrap();
    drop(conn);
    let target = env.path("target");
    let out = env
        .snap()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    // Only root sets owners; for root the bad owner is named.
    let want = if is_root() { 3 } else { 0 };
    assert_eq!(out.status.code(), Some(want), "{}", stderr(&out));
    assert_eq!(fs::read(target.join("f")).unwrap(), b"f");
}

#[test]
fn another_filesystem_mounted_in_the_target_is_never_deleted() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"f");
    let id = env.create_id(&src);
    let disk = SmallDisk::mount(&src.join("mnt"), "1m")
        .expect("this test needs root to mount a tmpfs: run the tests as root, as CI does");
    write(&disk.path.join("theirs"), b"on another filesystem");
    write(&src.join("f"), b"changed");
    let out = env.snap().args(["restore", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("mounted"), "{}", stderr(&out));
    assert_eq!(
        fs::read(disk.path.join("theirs")).unwrap(),
        b"on another filesystem"
    );
    assert_eq!(
        fs::read(src.join("f")).unwrap(),
        b"f",
        "the rest is restored"
    );
}
