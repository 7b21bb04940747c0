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

#[test]
fn the_frozen_format_2_repository_opens_checks_and_restores() {
    opens_checks_and_restores(2);
}

/// Format 3: its second snapshot stores the database's changed pages as
/// deltas of the first's.
#[test]
fn the_frozen_format_3_repository_opens_checks_and_restores() {
    let deltas: i64 = rusqlite::Connection::open(frozen_root(3).join("index.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM chunks WHERE codec = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(deltas > 0, "the frozen format-3 repository holds deltas");
    opens_checks_and_restores(3);
}

/// Format 4: small chunks (database pages, small files) compressed in
/// groups; the second snapshot's changed pages are deltas, some of them
/// of grouped pages.
#[test]
fn the_frozen_format_4_repository_opens_checks_and_restores() {
    let count = |codec: u8| -> i64 {
        rusqlite::Connection::open(frozen_root(4).join("index.db"))
            .unwrap()
            .query_row(
                "SELECT count(*) FROM chunks WHERE codec = ?1",
                [codec],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert!(count(3) > 1, "the frozen format-4 repository holds groups");
    assert!(count(2) > 0, "the frozen format-4 repository holds deltas");
    opens_checks_and_restores(4);
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

/// A write to an older repository migrates its index to the current
/// schema (the new columns), and keeps writing its own format: no group
/// goes into a format-2 or format-3 repository, no delta into format 2,
/// no group of trees into format 4 (whose index keeps copying trees).
#[test]
fn older_repositories_gain_the_new_index_columns_and_keep_their_format() {
    for format in [2u32, 3, 4] {
        let expected = read_manifest(format);
        let env = frozen_copy(format);
        let src = env.path("more");
        for i in 0..50u32 {
            write(
                &src.join(format!("{i}.txt")),
                format!("note {i} ").repeat(100),
            );
        }
        sqlite_db(&src.join("app.db"), 500);
        env.create(&src);
        let conn = rusqlite::Connection::open(env.repo.join("index.db")).unwrap();
        let schema: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(schema, 4, "format {format}: the current index schema");
        let newest: i64 = conn
            .query_row(
                "SELECT count(*) FROM chunks WHERE codec >= ?1",
                [format],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(newest, 0, "format {format} got a codec it cannot hold");
        let q = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        let grouped_trees = q("SELECT count(*) FROM chunks c JOIN packs p ON c.pack = p.id
                               WHERE p.kind = 1 AND c.codec = 3");
        assert_eq!(grouped_trees, 0, "format {format} got grouped trees");
        let blobs =
            q("SELECT count(*) FROM chunks c JOIN packs p ON c.pack = p.id WHERE p.kind = 1");
        let copies = q("SELECT count(*) FROM trees");
        assert!(
            copies >= blobs && blobs > 0,
            "format {format}: trees copied ({copies} of {blobs})"
        );
        // Every pack still carries the repository's version.
        for pack in walkdir::WalkDir::new(env.repo.join("packs"))
            .into_iter()
            .map(|e| e.unwrap().path().to_path_buf())
            .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        {
            let bytes = fs::read(&pack).unwrap();
            assert_eq!(bytes[8] as u32, format, "{}", pack.display());
        }
        env.snap().args(["check", "--read-data"]).assert().success();
        for (id, (_, entries)) in &expected {
            let target = env.path(&format!("again-{}", &id[..8]));
            env.restore_to(id, &target);
            assert_eq!(&manifest_of(&target), entries);
        }
    }
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
    if format >= 5 {
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
/// (format-2 was written before the database migration step existed).
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
    env.snap()
        .args(["init", "--format", &format])
        .assert()
        .success();
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
