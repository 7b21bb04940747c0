//! Encrypted repositories, in a local directory and in a bucket: no
//! object (nor this machine's cache) holds a byte of content or a plain
//! content id; a wrong or missing password fails with exit code 10 and
//! changes nothing; every altered object is named by `check --read-data`;
//! `key passwd` replaces the password without rewriting data.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

const MARKER: &[u8] = b"MARKER-7f3c91-this-text-must-never-be-stored-in-the-clear";
const WRONG_PASSWORD: i32 = 10;

/// App-like data with the marker in a text file, inside incompressible
/// noise (stored raw by an unencrypted repository, so the marker is
/// verbatim in its packs) and in a SQLite row; `small.txt` is one chunk.
fn app_with_marker(root: &Path) {
    let mut noisy = noise(3, 100_000);
    noisy.extend_from_slice(MARKER);
    noisy.extend(noise(4, 100_000));
    write(&root.join("media/blob.bin"), &noisy);
    write(&root.join("notes.txt"), [MARKER, b"\n"].concat().repeat(50));
    write(&root.join("small.txt"), b"a small file of one chunk\n");
    sqlite_db(&root.join("app.db"), 500);
    let conn = rusqlite::Connection::open(root.join("app.db")).unwrap();
    conn.execute("CREATE TABLE secrets(v BLOB); ", []).unwrap();
    conn.execute("INSERT INTO secrets VALUES (?1)", [MARKER])
        .unwrap();
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            let bytes = fs::read(e.path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// Every file's bytes under `dir`, by path.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_path_buf(), fs::read(e.path()).unwrap()))
        .collect()
}

/// Back up the marker data into `env`, whose objects are in `objects`;
/// assert what an encrypted (or, as the control, a plain) repository
/// holds.
fn back_up_and_look(env: &Env, objects: &Path, encrypted: bool) {
    let src = env.path("app");
    app_with_marker(&src);
    let id = env.create_id(&src);
    let out = env.path("out");
    env.restore_to(&id, &out);
    assert_same_tree(&src, &out);

    let in_objects = files_containing(objects, MARKER);
    let in_cache = files_containing(&env.cache_dir(), MARKER);
    // The plain BLAKE3 of a one-chunk file: an id anyone could compute.
    let plain_id = *blake3::hash(b"a small file of one chunk\n").as_bytes();
    let index_dirs = [objects.to_path_buf(), env.cache_dir()];
    let with_plain_id: Vec<_> = index_dirs
        .iter()
        .flat_map(|d| files_containing(d, &plain_id))
        .collect();
    if encrypted {
        assert!(
            in_objects.is_empty(),
            "content in the clear: {in_objects:?}"
        );
        assert!(in_cache.is_empty(), "content in the cache: {in_cache:?}");
        assert!(
            with_plain_id.is_empty(),
            "plain content ids: {with_plain_id:?}"
        );
    } else {
        // The control: the same search finds them in a plain repository.
        assert!(!in_objects.is_empty(), "the marker search finds nothing");
        assert!(!with_plain_id.is_empty(), "the id search finds nothing");
    }
}

#[test]
fn an_encrypted_directory_holds_no_content_and_no_plain_id() {
    let env = Env::encrypted();
    back_up_and_look(&env, &env.repo, true);
    assert!(
        !env.repo.join("index.db").exists(),
        "the index of an encrypted repository lives in the cache, not beside its objects"
    );
    let plain = Env::new();
    back_up_and_look(&plain, &plain.repo, false);
}

#[test]
fn an_encrypted_bucket_holds_no_content_and_no_plain_id() {
    let env = Env::on_s3("an_encrypted_bucket_holds_no_content");
    let srv = crate::s3server::server("an_encrypted_bucket_holds_no_content");
    let objects = srv.object_dir(env.repo.to_str().unwrap());
    back_up_and_look(&env, &objects, true);
    let plain = Env::on_s3_with("a_plain_bucket_holds_content", false);
    let objects = srv.object_dir(plain.repo.to_str().unwrap());
    back_up_and_look(&plain, &objects, false);
}

#[test]
fn a_wrong_or_missing_password_fails_with_its_code_and_changes_nothing() {
    let env = Env::encrypted();
    let src = env.path("app");
    app_with_marker(&src);
    let id = env.create_id(&src);
    write(&src.join("notes.txt"), "changed");
    let repo_before = contents(&env.repo);
    let cache_before = contents(&env.cache_dir());
    let target = env.path("target");
    let restore = ["restore", &id, "--target", target.to_str().unwrap()];
    let src_arg = src.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["create", src_arg],
        vec!["list"],
        restore.to_vec(),
        vec![
            "gc",
            "--keep-last",
            "0",
            "--grace",
            "0s",
            "--no-other-writers",
        ],
        vec!["forget", &id],
        vec!["check", "--read-data"],
        vec!["repair", "index"],
        vec!["key", "passwd"],
    ];
    for args in &commands {
        let wrong = env
            .snap()
            .env("SNAP_PASSWORD", "not the password")
            .env("SNAP_NEW_PASSWORD", "another")
            .args(args)
            .assert()
            .code(WRONG_PASSWORD);
        let err = String::from_utf8_lossy(&wrong.get_output().stderr).into_owned();
        assert!(err.contains("wrong password"), "{args:?}: {err}");
        let none = env
            .snap()
            .env_remove("SNAP_PASSWORD")
            .args(args)
            .assert()
            .code(WRONG_PASSWORD);
        let err = String::from_utf8_lossy(&none.get_output().stderr).into_owned();
        assert!(err.contains("SNAP_PASSWORD"), "{args:?}: {err}");
    }
    assert_eq!(contents(&env.repo), repo_before, "the repository changed");
    assert_eq!(
        contents(&env.cache_dir()),
        cache_before,
        "the cache changed"
    );
    assert!(!target.exists(), "a restore wrote without the key");
    // The right one still works, and the snapshot is intact.
    env.restore_to(&id, &target);
    assert_eq!(
        fs::read(target.join("small.txt")).unwrap(),
        b"a small file of one chunk\n"
    );
}

#[test]
fn every_altered_object_is_found_by_check_read_data() {
    let env = Env::encrypted();
    let src = env.path("app");
    app_with_marker(&src);
    let id = env.create_id(&src);
    env.snap()
        .args(["tag", &id, "--add", "kept"])
        .assert()
        .success();
    write(&src.join("notes.txt"), "changed");
    env.create_id(&src);
    let objects: Vec<PathBuf> = contents(&env.repo)
        .into_keys()
        .filter(|p| {
            let rel = p.strip_prefix(&env.repo).unwrap();
            rel != Path::new("config") && !rel.starts_with("keys")
        })
        .collect();
    let kinds = ["packs", "snapshots", "changes"];
    for kind in kinds {
        assert!(
            objects
                .iter()
                .any(|p| p.strip_prefix(&env.repo).unwrap().starts_with(kind)),
            "no {kind} object to alter"
        );
    }
    env.snap().args(["check", "--read-data"]).assert().success();
    for obj in &objects {
        let good = fs::read(obj).unwrap();
        for at in [good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            fs::write(obj, &bad).unwrap();
            let out = env.snap().args(["check", "--read-data"]).assert().code(5);
            let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned()
                + &String::from_utf8_lossy(&out.get_output().stderr);
            let name = obj.file_name().unwrap().to_string_lossy();
            let stem = name.trim_end_matches(".pack");
            assert!(
                text.contains(&stem[..stem.len().min(16)]),
                "{obj:?} at {at}: not named in {text}"
            );
        }
        fs::write(obj, &good).unwrap();
    }
    env.snap().args(["check", "--read-data"]).assert().success();
}

#[test]
fn key_passwd_then_the_new_password_opens_and_the_old_does_not() {
    let env = Env::encrypted();
    let src = env.path("app");
    app_with_marker(&src);
    let id = env.create_id(&src);
    let packs = || -> Vec<PathBuf> {
        let all = contents(&env.repo.join("packs"));
        all.into_keys().collect()
    };
    let packs_before = packs();
    let new_pw = env.path("new-password");
    fs::write(&new_pw, "a new password\n").unwrap();
    env.snap()
        .args(["key", "passwd", "--new-password-file"])
        .arg(&new_pw)
        .assert()
        .success();
    env.snap().arg("list").assert().code(WRONG_PASSWORD);
    let with_new = |args: &[&str]| {
        env.snap()
            .env_remove("SNAP_PASSWORD")
            .arg("--password-file")
            .arg(&new_pw)
            .args(args)
            .assert()
            .success()
    };
    with_new(&["list"]);
    let out = env.path("out");
    with_new(&["restore", &id, "--target", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
    assert_eq!(packs(), packs_before, "no data was rewritten");
    let keys = fs::read_dir(env.repo.join("keys")).unwrap().count();
    assert_eq!(keys, 1, "the old key object is gone");
}

#[test]
fn init_refuses_an_empty_password_and_a_bucket_is_encrypted_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        repo: dir.path().join("repo"),
        dir,
        vars: Vec::new(),
    };
    env.snap()
        .env("SNAP_PASSWORD", "")
        .args(["init", "--encrypt"])
        .assert()
        .failure();
    assert!(!env.repo.join("config").exists());
    let s3 = Env::on_s3("a_bucket_is_encrypted_by_default");
    let srv = crate::s3server::server("a_bucket_is_encrypted_by_default");
    let objects = srv.object_dir(s3.repo.to_str().unwrap());
    let config = fs::read_to_string(objects.join("config")).unwrap();
    assert!(config.contains("\"encryption\""), "{config}");
    assert_eq!(fs::read_dir(objects.join("keys")).unwrap().count(), 1);
}

#[test]
fn a_bucket_config_altered_to_say_plain_makes_no_client_write_plain_objects() {
    let env = Env::on_s3("a_bucket_config_altered_to_say_plain");
    let srv = crate::s3server::server("a_bucket_config_altered_to_say_plain");
    let objects = srv.object_dir(env.repo.to_str().unwrap());
    let src = env.path("app");
    app_with_marker(&src);
    env.create_id(&src);
    let config = fs::read_to_string(objects.join("config")).unwrap();
    let plain: serde_json::Value = {
        let mut v: serde_json::Value = serde_json::from_str(&config).unwrap();
        v.as_object_mut().unwrap().remove("encryption");
        v
    };
    fs::write(objects.join("config"), plain.to_string()).unwrap();
    write(&src.join("new.txt"), [MARKER, b" in a new file"].concat());
    let before = srv.object_keys(env.repo.to_str().unwrap());
    // The key objects say the repository is encrypted, whatever the
    // config says (and this client's cache remembers it too).
    let out = env.snap().arg("create").arg(&src).assert().code(5);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("the config was altered"), "{err}");
    assert_eq!(srv.object_keys(env.repo.to_str().unwrap()), before);
    assert!(files_containing(&objects, MARKER).is_empty());
}
