//! Hostile index rows and trees fed to a real restore into a temporary
//! directory: the restore returns an error or a result, never panics, and
//! never writes, deletes or changes anything outside its target.
//!
//! Each input first picks what to plant in a real repository's index:
//! 0: the bytes as a tree that replaces the snapshot's root;
//! 1: the bytes as a tree, pointed to by a directory entry of the root;
//! 2: chunk rows overwritten with values from the bytes;
//! 3: the snapshot's statistics and root metadata from the bytes;
//! 4: an expanding graph (levels and fan-out from the bytes, every level
//!    naming the next several times) with statistics claiming 2^62 files;
//! 5: a chain of nested trees, as deep as the bytes say (up to 50,000).
//!
//! Besides the restore, `ls -r` (walk), `diff` and `check` run on it: each
//! returns, bounded, without a panic or a stack overflow.
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use snap::lock::LockMode;
use snap::ops::create::{CreateOptions, create};
use snap::ops::restore::{RestoreOptions, restore};
use snap::progress::NoProgress;
use snap::tree::{Entry, Kind, Payload, Tree};
use snap::{Repository, TreeId};

struct World {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    pristine_index: Vec<u8>,
    outside: PathBuf,
    sandbox: PathBuf,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        Repository::init(&repo, &snap::config::RepoConfig::default()).unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("a.txt"), b"alpha").unwrap();
        fs::write(src.join("d/big.bin"), vec![7u8; 300_000]).unwrap();
        std::os::unix::fs::symlink("../outside", src.join("link")).unwrap();
        {
            let r = Repository::open(&repo, Some(LockMode::Exclusive)).unwrap();
            let co = CreateOptions {
                source: src.clone(),
                ..CreateOptions::default()
            };
            create(&r, &co, &NoProgress).unwrap();
        }
        let pristine_index = fs::read(repo.join("index.db")).unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir_all(outside.join("x")).unwrap();
        fs::write(outside.join("keep"), b"keep").unwrap();
        fs::write(outside.join("x/keep"), b"keep").unwrap();
        let sandbox = dir.path().join("sandbox");
        World {
            _dir: dir,
            repo,
            pristine_index,
            outside,
            sandbox,
        }
    })
}

fn listing(root: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let content = if m.is_file() { fs::read(&p).unwrap() } else { Vec::new() };
        out.push((p.clone(), m.mode(), content));
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

fn u32_at(data: &[u8], i: usize) -> u32 {
    let mut b = [0u8; 4];
    for (k, v) in b.iter_mut().enumerate() {
        *v = data.get(i + k).copied().unwrap_or(0);
    }
    u32::from_le_bytes(b)
}

/// A directory entry (`sub` given) or an empty file entry (`None`).
fn dir_entry(name: &[u8], sub: Option<TreeId>) -> Entry {
    Entry {
        name: name.to_vec(),
        kind: if sub.is_some() { Kind::Dir } else { Kind::File },
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
        payload: match sub {
            Some(t) => Payload::Subtree(t),
            None => Payload::Chunks(Vec::new()),
        },
        xattrs: Vec::new(),
    }
}

fn plant(conn: &rusqlite::Connection, data: &[u8]) {
    let (kind, rest) = match data.split_first() {
        Some((k, r)) => (k % 6, r),
        None => return,
    };
    let put_tree = |enc: &[u8]| -> TreeId {
        let id = Tree::id_of_encoding(enc);
        conn.execute(
            "INSERT OR IGNORE INTO trees(hash, codec, data) VALUES (?1, 0, ?2)",
            rusqlite::params![id.as_bytes().to_vec(), enc],
        )
        .unwrap();
        id
    };
    match kind {
        0 => {
            let id = put_tree(rest);
            conn.execute("UPDATE snapshots SET root = ?1", [id.as_bytes().to_vec()])
                .unwrap();
        }
        1 => {
            let sub = put_tree(rest);
            let e = Entry {
                name: b"d".to_vec(),
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
            };
            let root = put_tree(&Tree::new(vec![e]).encode());
            conn.execute("UPDATE snapshots SET root = ?1", [root.as_bytes().to_vec()])
                .unwrap();
        }
        2 => {
            conn.execute(
                "UPDATE chunks SET offset = ?1, stored_len = ?2, raw_len = ?3, codec = ?4",
                rusqlite::params![
                    u32_at(rest, 0),
                    u32_at(rest, 4),
                    u32_at(rest, 8),
                    u32_at(rest, 12) % 3
                ],
            )
            .unwrap();
        }
        4 | 5 => {
            let leaf = Tree::new(vec![dir_entry(b"f", None)]);
            let mut t = put_tree(&leaf.encode());
            let (levels, fanout) = if kind == 4 {
                (rest.first().copied().unwrap_or(8) as usize % 64, 2 + rest.get(1).copied().unwrap_or(0) as usize % 3)
            } else {
                (u32_at(rest, 0) as usize % 50_000, 1)
            };
            for _ in 0..levels {
                let names: Vec<Entry> = (0..fanout)
                    .map(|i| dir_entry(format!("d{i}").as_bytes(), Some(t)))
                    .collect();
                t = put_tree(&Tree::new(names).encode());
            }
            let stats = r#"{"files":4611686018427387904,"dirs":4611686018427387904,"symlinks":0,"others":0,"total_bytes":0,"read_bytes":0,"reused_files":0,"new_chunks":0,"new_raw_bytes":0,"new_stored_bytes":0,"new_packs":0,"duration_ms":0}"#;
            conn.execute(
                "UPDATE snapshots SET root = ?1, stats = ?2",
                rusqlite::params![t.as_bytes().to_vec(), stats],
            )
            .unwrap();
        }
        _ => {
            let stats = format!(
                r#"{{"files":{},"dirs":{},"symlinks":0,"others":0,"total_bytes":0,"read_bytes":0,"reused_files":0,"new_chunks":0,"new_raw_bytes":0,"new_stored_bytes":0,"new_packs":0,"duration_ms":0}}"#,
                u32_at(rest, 0) % 8,
                u32_at(rest, 4) % 8
            );
            let meta = format!(
                r#"{{"mode":{},"uid":{},"gid":{},"mtime_ns":{}}}"#,
                u32_at(rest, 8) & 0o7777,
                u32_at(rest, 12),
                u32_at(rest, 16),
                u32_at(rest, 20) as i32
            );
            conn.execute("UPDATE snapshots SET stats = ?1, root_meta = ?2", [stats, meta])
                .unwrap();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let before = listing(&w.outside);
    for f in ["index.db-wal", "index.db-shm"] {
        let _ = fs::remove_file(w.repo.join(f));
    }
    fs::write(w.repo.join("index.db"), &w.pristine_index).unwrap();
    {
        let conn = rusqlite::Connection::open(w.repo.join("index.db")).unwrap();
        // One transaction: a chain of 50,000 trees is one commit, not 50,000.
        conn.execute_batch("BEGIN").unwrap();
        plant(&conn, data);
        conn.execute_batch("COMMIT").unwrap();
    }
    let _ = fs::remove_dir_all(&w.sandbox);
    fs::create_dir_all(&w.sandbox).unwrap();
    let target = w.sandbox.join("target");
    if let Ok(repo) = Repository::open(&w.repo, Some(LockMode::Exclusive))
        && let Ok(snap) = repo.find_snapshot("latest")
    {
        let opts = RestoreOptions {
            target: Some(target.clone()),
            ..RestoreOptions::default()
        };
        let _ = restore(&repo, &snap, &opts, &NoProgress);
        let mut seen = 0u64;
        let _ = snap::ops::ls::walk(&repo, &snap.root, Path::new(""), &mut |_, _| {
            seen += 1;
            Ok(())
        });
        let _ = snap::ops::diff::diff_source(&repo, &snap, false);
        let _ = snap::check(&repo, &snap::CheckOptions::default(), &NoProgress);
    }
    assert_eq!(listing(&w.outside), before, "a restore changed something outside its target");
    // Nothing but the target appeared in the sandbox.
    for e in fs::read_dir(&w.sandbox).unwrap() {
        assert_eq!(e.unwrap().path(), target);
    }
});
