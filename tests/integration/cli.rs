//! Bad input: each error names the path and the cause, with the documented exit code.

use std::fs;
use std::time::{Duration, Instant};

use predicates::prelude::*;

use crate::common::*;

#[test]
fn missing_source_names_the_path() {
    let env = Env::new();
    env.snap()
        .args(["create", "/definitely/not/here"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("/definitely/not/here")
                .and(predicate::str::contains("no such file")),
        );
}

#[test]
fn a_file_as_source_is_refused() {
    let env = Env::new();
    let f = env.path("file");
    write(&f, b"x");
    env.snap().arg("create").arg(&f).assert().code(1).stderr(
        predicate::str::contains("not a directory")
            .and(predicate::str::contains(f.to_str().unwrap())),
    );
}

#[test]
fn a_path_that_is_not_a_repository_is_named() {
    let env = Env::new();
    let not_repo = env.path("elsewhere");
    fs::create_dir(&not_repo).unwrap();
    env.snap()
        .env("SNAP_REPO", &not_repo)
        .args(["list"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("not a snap repository")
                .and(predicate::str::contains("elsewhere")),
        );
}

#[test]
fn init_refuses_a_non_empty_directory_and_an_existing_repository() {
    let env = Env::new();
    let d = env.path("full");
    write(&d.join("precious"), b"data");
    env.snap()
        .arg("init")
        .arg(&d)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not empty"));
    assert_eq!(fs::read(d.join("precious")).unwrap(), b"data");
    env.snap()
        .arg("init")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already"));
}

#[test]
fn the_default_repository_is_created_on_first_use() {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    write(&src.join("f"), b"hello");
    let mut c = assert_cmd::Command::cargo_bin("snap").unwrap();
    c.env_remove("SNAP_REPO")
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("HOME", home.path())
        .arg("create")
        .arg(&src)
        .assert()
        .success()
        .stderr(predicate::str::contains("created repository"));
    assert!(home.path().join("data/snap/repo/index.db").is_file());
}

#[test]
fn unknown_and_bad_snapshot_ids_are_errors() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"1");
    env.create(&src);
    env.snap()
        .args(["ls", "ffffffffff"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no snapshot matches"));
    env.snap()
        .args(["ls", "not-hex"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no snapshot matches"));
    env.snap()
        .args(["ls", "latest", "nope"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nope"));
}

#[test]
fn a_locked_repository_waits_then_names_the_holder() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"1");
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(env.repo.join("lock"))
        .unwrap();
    lock.lock().unwrap();
    fs::write(env.repo.join("lock"), b"pid 4242 on testhost, `snap gc`").unwrap();
    let started = Instant::now();
    env.snap()
        .env("SNAP_LOCK_WAIT", "0.5")
        .arg("create")
        .arg(&src)
        .assert()
        .code(4)
        .stderr(predicate::str::contains("locked").and(predicate::str::contains("pid 4242")));
    assert!(started.elapsed() >= Duration::from_millis(500));
    drop(lock);
    env.snap().arg("create").arg(&src).assert().success();
}

/// Runs the binary as an unprivileged user, so permission errors happen
/// even when the tests run as root.
fn as_nobody(env: &Env) -> assert_cmd::Command {
    let mut c = if is_root() {
        let mut c = assert_cmd::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(assert_cmd::cargo::cargo_bin("snap"));
        c
    } else {
        assert_cmd::Command::cargo_bin("snap").unwrap()
    };
    c.env("SNAP_REPO", &env.repo)
        .env("SNAP_LOCK_WAIT", "10")
        .env("XDG_STATE_HOME", env.dir.path().join("state-nobody"));
    c
}

#[test]
fn unreadable_files_are_listed_and_the_snapshot_is_incomplete() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("ok.txt"), b"fine");
    write(&src.join("secret.txt"), b"hidden");
    write(&src.join("locked-dir/inside"), b"x");
    fs::set_permissions(src.join("secret.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(src.join("locked-dir"), fs::Permissions::from_mode(0o000)).unwrap();
    if is_root() {
        // Let the unprivileged user into the scratch directory and repository.
        for p in [
            env.dir.path().to_path_buf(),
            env.repo.clone(),
            env.repo.join("packs"),
            src.clone(),
        ] {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
        }
        for f in ["index.db", "lock"] {
            fs::set_permissions(env.repo.join(f), fs::Permissions::from_mode(0o666)).unwrap();
        }
        fs::set_permissions(src.join("ok.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = as_nobody(&env)
        .args(["create", "--json"])
        .arg(&src)
        .assert()
        .code(3);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("secret.txt") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(err.contains("locked-dir"), "{err}");
    let snap: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(snap["complete"], false);
    assert_eq!(snap["unreadable"].as_array().unwrap().len(), 2);
    let list = env.list();
    assert_eq!(list[0]["complete"], false);
}

#[test]
fn nothing_to_do_has_its_own_exit_code() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha");
    let id = env.create_id(&src);
    // The directory already equals the snapshot: restore and its dry run
    // say so with exit 6 and change nothing.
    let before = listing(&src);
    env.snap()
        .args(["restore", &id, "--dry-run"])
        .assert()
        .code(6);
    env.snap().args(["restore", &id]).assert().code(6);
    assert_eq!(listing(&src), before);
    assert_eq!(env.list().len(), 1, "no safety snapshot for a no-op");
    // Nothing to reclaim.
    env.snap().arg("gc").assert().code(6);
    // Once there is work, both succeed with 0.
    write(&src.join("a.txt"), b"changed");
    env.snap().args(["restore", &id]).assert().code(0);
    env.create(&src);
    env.snap().args(["gc", "--keep-last", "1"]).assert().code(0);
}
