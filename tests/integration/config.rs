//! snap.toml: named sources with excludes, labels, default retention, and
//! clear errors for malformed files.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

/// An app that keeps data in two places, with caches to leave out.
struct App {
    env: Env,
    config: PathBuf,
    db: PathBuf,
    docs: PathBuf,
}

fn app() -> App {
    let env = Env::new();
    let db = env.path("app/db");
    let docs = env.path("home/docs");
    sqlite_db(&db.join("main.db"), 500);
    write(&db.join("main.db.tmp"), b"scratch");
    write(&docs.join("notes.txt"), b"my notes\n");
    write(&docs.join("cache/thumb-1.bin"), noise(3, 20_000));
    write(&docs.join("sub/cache/thumb-2.bin"), noise(4, 20_000));
    let config = env.path("snap.toml");
    fs::write(
        &config,
        format!(
            r#"# the example app
[labels]
app = "notes"

[sources.db]
path = "{}"
exclude = ["*.tmp"]

[sources.docs]
path = "{}"
exclude = ["cache/"]

[retention]
keep_last = 2
"#,
            db.display(),
            docs.display()
        ),
    )
    .unwrap();
    App {
        env,
        config,
        db,
        docs,
    }
}

impl App {
    fn snap(&self) -> assert_cmd::Command {
        let mut c = self.env.snap();
        c.arg("--config").arg(&self.config);
        c
    }

    fn create(&self, extra: &[&str]) -> serde_json::Value {
        let out = self
            .snap()
            .args(["create", "--json"])
            .args(extra)
            .assert()
            .success();
        serde_json::from_slice(&out.get_output().stdout).unwrap()
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(dir)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn create_snapshots_every_source_into_one_snapshot_without_the_excludes() {
    let a = app();
    let v = a.create(&["--label", "app_version=2.3.0"]);
    assert_eq!(v["labels"]["app"], "notes");
    assert_eq!(v["labels"]["app_version"], "2.3.0");
    assert_eq!(v["labels"]["user_version:db/main.db"], "0");
    let id = v["id"].as_str().unwrap();
    let out = a.env.path("out");
    a.snap()
        .args(["restore", id, "--target"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(
        names(&out),
        vec!["db", "db/main.db", "docs", "docs/notes.txt", "docs/sub"]
    );
    // In list (text and JSON) and `ls --json`; `ls` prints one line per
    // entry on stdout and nothing on stderr (`ls | wc -l`).
    let list = a.snap().arg("list").assert().success();
    let text = String::from_utf8_lossy(&list.get_output().stdout).to_string();
    assert!(text.contains("app=notes app_version=2.3.0"), "{text}");
    let ls = a.snap().args(["ls", id, "--json"]).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&ls.get_output().stdout).unwrap();
    assert_eq!(v["snapshot"]["labels"]["app_version"], "2.3.0", "{v}");
    let ls = a.snap().args(["ls", id]).assert().success();
    let text = String::from_utf8_lossy(&ls.get_output().stdout).to_string();
    let err = String::from_utf8_lossy(&ls.get_output().stderr).to_string();
    assert_eq!(err, "", "ls writes nothing to stderr");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains(" db\n") && text.contains(" docs\n"), "{text}");
}

#[test]
fn in_place_restore_puts_each_source_back_and_never_deletes_excluded_paths() {
    let a = app();
    let id = a.create(&[])["id"].as_str().unwrap().to_string();
    let db_before = a.env.path("db-before");
    cp_a(&a.db, &db_before);
    // The app runs on: data changes, caches change and grow.
    let c = rusqlite::Connection::open(a.db.join("main.db")).unwrap();
    c.execute_batch("DELETE FROM users WHERE id > 100; PRAGMA user_version = 9;")
        .unwrap();
    drop(c);
    write(&a.db.join("main.db.tmp"), b"newer scratch");
    write(&a.db.join("other.tmp"), b"new scratch");
    write(&a.docs.join("notes.txt"), b"edited\n");
    write(&a.docs.join("extra.txt"), b"not in the snapshot\n");
    write(&a.docs.join("cache/thumb-3.bin"), noise(5, 1000));
    write(&a.docs.join("newdir/cache/thumb-4.bin"), noise(6, 1000));
    write(&a.docs.join("newdir/gone.txt"), b"goes");
    a.snap().args(["restore", &id]).assert().success();
    // Data is back.
    assert_eq!(fs::read(a.docs.join("notes.txt")).unwrap(), b"my notes\n");
    assert!(!a.docs.join("extra.txt").exists());
    assert!(!a.docs.join("newdir/gone.txt").exists());
    let c = rusqlite::Connection::open(a.db.join("main.db")).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 500);
    drop(c);
    // Everything the excludes kept out is exactly as the app left it.
    assert_eq!(
        fs::read(a.db.join("main.db.tmp")).unwrap(),
        b"newer scratch"
    );
    assert_eq!(fs::read(a.db.join("other.tmp")).unwrap(), b"new scratch");
    assert!(a.docs.join("cache/thumb-1.bin").exists());
    assert!(a.docs.join("cache/thumb-3.bin").exists());
    assert!(a.docs.join("sub/cache/thumb-2.bin").exists());
    assert!(a.docs.join("newdir/cache/thumb-4.bin").exists());
    // A source deleted with its parent comes back, parents and all.
    let db_parent = a.db.parent().unwrap().to_path_buf();
    fs::remove_dir_all(&db_parent).unwrap();
    a.snap()
        .args(["restore", &id, "--no-safety-snapshot"])
        .assert()
        .success();
    assert_same_tree_except(&db_before, &a.db, &["main.db.tmp"]);
    // A restore by hand of one source with --path.
    write(&a.docs.join("notes.txt"), b"edited again\n");
    a.snap()
        .args([
            "restore",
            &id,
            "--path",
            "docs/notes.txt",
            "--no-safety-snapshot",
        ])
        .assert()
        .success();
    assert_eq!(fs::read(a.docs.join("notes.txt")).unwrap(), b"my notes\n");
}

#[test]
fn gc_applies_the_configured_retention_and_a_named_repository_is_created() {
    let a = app();
    // The config names its own repository (relative to the file).
    let text = fs::read_to_string(&a.config).unwrap();
    fs::write(&a.config, format!("repository = \"repo2\"\n{text}")).unwrap();
    let snap = || {
        let mut c = assert_cmd::Command::cargo_bin("snap").unwrap();
        c.env_remove("SNAP_REPO")
            .env("XDG_CONFIG_HOME", a.env.path("config"))
            .env("XDG_DATA_HOME", a.env.path("data"))
            .arg("--config")
            .arg(&a.config);
        c
    };
    for _ in 0..4 {
        snap().args(["create", "-q"]).assert().success();
    }
    assert!(a.env.path("repo2/index.db").exists());
    snap().arg("gc").assert().success();
    let out = snap().args(["list", "--json"]).assert().success();
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(list.len(), 2, "keep_last = 2 from snap.toml");
}

#[test]
fn the_config_is_found_next_to_the_repository_and_in_the_user_config_dir() {
    let a = app();
    // Next to the repository.
    fs::copy(&a.config, a.env.repo.join("snap.toml")).unwrap();
    let v = a.env.create_in_config_mode();
    assert_eq!(v["labels"]["app"], "notes");
    fs::remove_file(a.env.repo.join("snap.toml")).unwrap();
    // In $XDG_CONFIG_HOME/snap/.
    let dir = a.env.path("config/snap");
    fs::create_dir_all(&dir).unwrap();
    let text = fs::read_to_string(&a.config)
        .unwrap()
        .replace("notes", "other");
    fs::write(dir.join("snap.toml"), text).unwrap();
    let v = a.env.create_in_config_mode();
    assert_eq!(v["labels"]["app"], "other");
}

impl Env {
    fn create_in_config_mode(&self) -> serde_json::Value {
        let out = self.snap().args(["create", "--json"]).assert().success();
        serde_json::from_slice(&out.get_output().stdout).unwrap()
    }
}

#[test]
fn a_malformed_config_names_the_file_the_line_and_the_key() {
    let env = Env::new();
    let cfg = env.path("snap.toml");
    let fails_with = |text: &str, needle: &dyn Fn(&str) -> bool| {
        fs::write(&cfg, text).unwrap();
        let out = env
            .snap()
            .arg("--config")
            .arg(&cfg)
            .arg("create")
            .assert()
            .code(1);
        let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(needle(&err), "{text:?}: {err}");
    };
    for (text, line, key) in [
        (
            "[sources.db]\npath = \"/x\"\nexclud = [\"*.tmp\"]\n",
            3,
            "exclud",
        ),
        (
            "[sources.db]\npath = \"/x\"\nexclude = [\"a[\"]\n",
            3,
            "sources.db.exclude",
        ),
        (
            "[retention]\nkeep_within = \"forever\"\n",
            2,
            "retention.keep_within",
        ),
        ("[sources.db\npath = 1\n", 1, ""),
    ] {
        fails_with(text, &|err| {
            err.contains(&format!("snap.toml:{line}:")) && err.contains(key)
        });
    }
    // No sources and no path: a clear message, not a guess.
    fails_with("[labels]\na = \"b\"\n", &|err| {
        err.contains("no directory given")
    });
    // A source whose directory is missing is named.
    fails_with("[sources.db]\npath = \"/no/such/dir\"\n", &|err| {
        err.contains("/no/such/dir")
    });
}

/// Entry-by-entry comparison, leaving out `skip` (excluded names that the
/// snapshot never held).
fn assert_same_tree_except(expected: &Path, actual: &Path, skip: &[&str]) {
    let drop = |mut l: std::collections::BTreeMap<PathBuf, Info>| {
        l.retain(|p, _| !skip.iter().any(|s| p == Path::new(s)));
        l.remove(Path::new(""));
        l
    };
    assert_eq!(drop(listing(expected)), drop(listing(actual)));
}
