//! Small repositories of every format, frozen under tests/frozen/ (each
//! written once by `write_a_frozen_repository`, never again): every future
//! snap must open them, check them, list them and restore them exactly,
//! with and without their index. If this test fails, a change broke
//! repositories that users already have.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::common::*;

/// `tests/frozen/format-N` and `format-N.manifest`.
fn frozen_root(format: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/frozen/format-{format}"))
}

/// One line per entry, everything restore promises except owners (the
/// test may run as another user than the one who wrote the repository).
fn manifest_of(root: &Path) -> Vec<String> {
    listing(root)
        .into_iter()
        .filter(|(p, _)| !p.as_os_str().is_empty())
        .map(|(p, i)| {
            let hex: String = p
                .as_os_str()
                .as_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let what = match (&i.content, &i.target) {
                (Some(h), _) => h.to_hex().to_string(),
                (_, Some(t)) => format!("-> {}", t.display()),
                _ => "-".into(),
            };
            let group = i
                .link_group
                .as_ref()
                .map_or("-".into(), |g| g.display().to_string());
            format!(
                "{hex} {} {:o} {} {}.{:09} {what} {group}",
                i.kind, i.mode, i.size, i.mtime.0, i.mtime.1
            )
        })
        .collect()
}

/// The manifest file: `snapshot <id> <tags,> <pinned>` then its entries.
fn read_manifest(format: u32) -> BTreeMap<String, (String, Vec<String>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/frozen/format-{format}.manifest"));
    let text = fs::read_to_string(path).expect("the frozen manifest");
    let mut out: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("snapshot ") {
            let (id, meta) = rest.split_once(' ').unwrap();
            out.insert(id.to_string(), (meta.to_string(), Vec::new()));
            current = Some(id.to_string());
        } else if let Some(id) = &current {
            out.get_mut(id).unwrap().1.push(line.to_string());
        }
    }
    out
}

fn meta_of(s: &serde_json::Value) -> String {
    let tags: Vec<&str> = s["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    format!("tags={} pinned={}", tags.join(","), s["pinned"])
}

/// An Env whose repository is a fresh copy of a frozen one.
fn frozen_copy(format: u32) -> Env {
    let dir = tempfile::Builder::new()
        .prefix("snap-frozen-")
        .tempdir()
        .unwrap();
    let repo = dir.path().join("repo");
    cp_a(&frozen_root(format), &repo);
    Env {
        dir,
        repo,
        vars: Vec::new(),
    }
}

fn assert_lists_and_restores(env: &Env, expected: &BTreeMap<String, (String, Vec<String>)>) {
    let listed = env.list();
    let got: BTreeMap<String, String> = listed
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), meta_of(s)))
        .collect();
    let want: BTreeMap<String, String> = expected
        .iter()
        .map(|(id, (m, _))| (id.clone(), m.clone()))
        .collect();
    assert_eq!(got, want);
    for (id, (_, entries)) in expected {
        let target = env.path(&format!("out-{}", &id[..8]));
        let _ = fs::remove_dir_all(&target);
        env.restore_to(id, &target);
        assert_eq!(
            &manifest_of(&target),
            entries,
            "snapshot {id} restores differently"
        );
    }
}

/// Format 5: trees grouped in tree packs, and no copy of them in the
/// (local) index, before and after `repair index`.
#[test]
fn the_frozen_format_5_repository_opens_checks_and_restores() {
    let q = |sql: &str| -> i64 {
        rusqlite::Connection::open(frozen_root(5).join("index.db"))
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    };
    let grouped_trees = "SELECT count(*) FROM chunks c JOIN packs p ON c.pack = p.id
                         WHERE p.kind = 1 AND c.codec = 3";
    assert!(
        q(grouped_trees) > 2,
        "the frozen format-5 repository groups trees"
    );
    assert!(
        q("SELECT count(*) FROM chunks WHERE codec = 2") > 0,
        "and holds deltas"
    );
    assert_eq!(q("SELECT count(*) FROM trees"), 0, "and copies no tree");
    opens_checks_and_restores(5);
}

/// A repository of an older, unreleased format (2-4: development steps
/// no release wrote) is refused with a message that names it and says
/// what to do, and is left byte for byte as it was.
#[test]
fn an_older_unreleased_format_is_refused_and_left_untouched() {
    let env = frozen_copy(5);
    let conn = rusqlite::Connection::open(env.repo.join("index.db")).unwrap();
    conn.execute(
        "UPDATE config SET value = '4' WHERE key = 'format_version'",
        [],
    )
    .unwrap();
    drop(conn);
    // What a refused open may leave: the lock file and SQLite's sidecars
    // (empty); everything the repository holds stays as it was.
    let held = |root: &Path| {
        let mut l = listing(root);
        l.retain(|p, _| !["lock", "index.db-wal", "index.db-shm"].contains(&p.to_str().unwrap()));
        l.remove(Path::new(""));
        l
    };
    let before = held(&env.repo);
    for args in [
        &["list"][..],
        &["check"],
        &["restore", "latest", "--dry-run"],
    ] {
        let out = env.snap().args(args).assert().failure();
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(stderr.contains("repository format 4"), "{args:?}: {stderr}");
        assert!(stderr.contains("snap init"), "{args:?}: {stderr}");
    }
    assert_eq!(held(&env.repo), before, "the repository was changed");
    // A pack of an older version is damage, not read with other rules.
    let env = frozen_copy(5);
    let pack = walkdir::WalkDir::new(env.repo.join("packs"))
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    bytes[8] = 4;
    fs::write(&pack, bytes).unwrap();
    let out = env.snap().args(["check", "--read-data"]).assert().code(5);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(stdout.contains("unknown pack version 4"), "{stdout}");
}

fn opens_checks_and_restores(format: u32) {
    let expected = read_manifest(format);
    assert_eq!(expected.len(), 2, "the manifest names two snapshots");
    let env = frozen_copy(format);
    env.snap().args(["check", "--read-data"]).assert().success();
    assert_lists_and_restores(&env, &expected);
    // Without its index: rebuilt from the repository's own objects.
    for f in ["index.db", "index.db-wal", "index.db-shm"] {
        let _ = fs::remove_file(env.repo.join(f));
    }
    env.snap().args(["repair", "index"]).assert().success();
    {
        let copies: i64 = rusqlite::Connection::open(env.repo.join("index.db"))
            .unwrap()
            .query_row("SELECT count(*) FROM trees", [], |r| r.get(0))
            .unwrap();
        assert_eq!(copies, 0, "a rebuilt local index copies no tree");
    }
    env.snap().args(["check", "--read-data"]).assert().success();
    assert_lists_and_restores(&env, &expected);
}

/// Not a test: `SNAP_FROZEN_OUT=DIR SNAP_FROZEN_FORMAT=N cargo test --test
/// integration write_a_frozen -- --ignored` writes DIR/format-N and its
/// manifest, to be copied under tests/frozen/ once per format version
/// (the current format only: snap writes no other).
#[test]
#[ignore]
fn write_a_frozen_repository() {
    let out = PathBuf::from(std::env::var("SNAP_FROZEN_OUT").expect("set SNAP_FROZEN_OUT"));
    let format = std::env::var("SNAP_FROZEN_FORMAT").unwrap_or_else(|_| "5".into());
    let scratch = tempfile::tempdir().unwrap();
    let env = Env {
        repo: out.join(format!("format-{format}")),
        dir: scratch,
        vars: Vec::new(),
    };
    env.snap().arg("init").assert().success();
    let src = env.path("app");
    write(&src.join("prefs.json"), br#"{"theme":"dark"}"#);
    write(&src.join("notes/readme.txt"), "small text\n".repeat(50));
    write(&src.join("media/blob.bin"), noise(42, 96 * 1024));
    write(
        &src.join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
        b"latin1 name",
    );
    write(&src.join("hard/a"), b"two names");
    fs::hard_link(src.join("hard/a"), src.join("notes/b")).unwrap();
    std::os::unix::fs::symlink("prefs.json", src.join("link")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    sqlite_db(&src.join("data/app.db"), 2000);
    let fix_times = || {
        let all: Vec<PathBuf> = walkdir::WalkDir::new(&src)
            .contents_first(true)
            .into_iter()
            .map(|e| e.unwrap().path().to_path_buf())
            .collect();
        for (i, p) in all.iter().enumerate() {
            set_mtime(p, 1_700_000_000 + i as i64, 500 + i as u32);
        }
    };
    fix_times();
    let mut manifest = String::new();
    let mut add = |id: &str, meta: &str| {
        manifest.push_str(&format!("snapshot {id} {meta}\n"));
        for l in manifest_of(&src) {
            manifest.push_str(&l);
            manifest.push('\n');
        }
    };
    let created = env
        .snap()
        .args([
            "create",
            "--json",
            "--tag",
            "pre-migration",
            "--label",
            "schema=3",
        ])
        .arg(&src)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&created.get_output().stdout).unwrap();
    let one = v["id"].as_str().unwrap().to_string();
    env.snap().args(["pin", &one]).assert().success();
    add(&one, "tags=pre-migration pinned=true");
    write(&src.join("prefs.json"), br#"{"theme":"light"}"#);
    fs::remove_file(src.join("link")).unwrap();
    write(&src.join("media/new.bin"), noise(43, 10 * 1024));
    // A migration of scattered rows: changed pages, stored as deltas.
    rusqlite::Connection::open(src.join("data/app.db"))
        .unwrap()
        .execute_batch("UPDATE users SET score = score + 1 WHERE id % 7 = 0")
        .unwrap();
    fix_times();
    let two = env.create_id(&src);
    add(&two, "tags= pinned=false");
    // A third, forgotten: its change record stays until gc.
    write(&src.join("later.txt"), b"forgotten");
    let three = env.create_id(&src);
    env.snap().args(["forget", &three]).assert().success();
    fs::write(out.join(format!("format-{format}.manifest")), manifest).unwrap();
    let _ = fs::remove_file(env.repo.join("lock"));
}
