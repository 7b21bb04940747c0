//! The damage matrix: each action (flip a byte, truncate, delete, zero a
//! range) in each place (a chunk frame, a pack footer, a tree, the SQLite
//! index). For every cell, `check --read-data` must find the damage and name
//! the pack (where there is one), the affected snapshot and files; a restore
//! of the affected snapshot must restore every unaffected file, name the
//! affected ones, write no wrong bytes, delete nothing it could not replace,
//! and exit non-zero; snapshots that do not use the damaged part restore
//! exactly.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Place {
    /// Inside a chunk frame of the pack holding only the victim file.
    ChunkFrame,
    /// Inside the footer of that pack.
    PackFooter,
    /// The index's copy of the victim directory's tree (as a bucket's
    /// repository keeps them; see `Env::with_tree_copies`).
    Tree,
    /// The tree pack holding the victim directory's tree, grouped with the
    /// new root's.
    TreePack,
    /// index.db, in its page structure.
    Index,
    /// index.db, one value of one chunk row (silent bit rot that SQLite's
    /// own integrity check cannot see).
    IndexValue,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Flip,
    Truncate,
    Delete,
    ZeroRange,
}

const PLACES: [Place; 6] = [
    Place::ChunkFrame,
    Place::PackFooter,
    Place::Tree,
    Place::TreePack,
    Place::Index,
    Place::IndexValue,
];
const ACTIONS: [Action; 4] = [
    Action::Flip,
    Action::Truncate,
    Action::Delete,
    Action::ZeroRange,
];

/// Two snapshots: `old` holds keep/ only; `new` adds victim/v.bin, whose
/// chunks are the only ones in the second pack and whose tree is new.
struct Fixture {
    env: Env,
    src: PathBuf,
    /// A `cp -a` copy of the source at the time of `new`.
    copy: PathBuf,
    old: String,
    new: String,
    victim_pack: PathBuf,
    victim_pack_id: String,
    /// The tree pack the second snapshot wrote.
    tree_pack: PathBuf,
}

fn fixture(place: Place) -> Fixture {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("keep/a.txt"), "unaffected text\n".repeat(500));
    write(&src.join("keep/b.bin"), noise(11, 300_000));
    let old = env.create_id(&src);
    let before: HashSet<PathBuf> = all_packs(&env.repo).into_iter().collect();
    write(&src.join("victim/v.bin"), noise(12, 300_000));
    let new = env.create_id(&src);
    if place == Place::Tree {
        env.with_tree_copies();
    }
    let (added, trees): (Vec<PathBuf>, Vec<PathBuf>) = all_packs(&env.repo)
        .into_iter()
        .filter(|p| !before.contains(p))
        .partition(|p| fs::read(p).unwrap()[12] == 0);
    assert_eq!(added.len(), 1, "the second snapshot writes one pack");
    assert_eq!(trees.len(), 1, "and one tree pack");
    let victim_pack = added[0].clone();
    let victim_pack_id = victim_pack
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let copy = env.path("copy");
    cp_a(&src, &copy);
    Fixture {
        env,
        src,
        copy,
        old,
        new,
        victim_pack,
        victim_pack_id,
        tree_pack: trees[0].clone(),
    }
}

fn all_packs(repo: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(repo.join("packs"))
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect()
}

/// Where the footer starts: N entries of 48 bytes before the 48-byte
/// trailer, whose first field is N (see docs/format.md).
fn footer_start(pack: &[u8]) -> usize {
    let n = pack.len();
    let count = u32::from_le_bytes(pack[n - 48..n - 44].try_into().unwrap()) as usize;
    n - 48 - 48 * count
}

fn damage_pack(pack: &Path, action: Action, in_footer: bool) {
    let mut bytes = fs::read(pack).unwrap();
    let (from, to) = if in_footer {
        (footer_start(&bytes), bytes.len())
    } else {
        (16, footer_start(&bytes))
    };
    let mid = from + (to - from) / 2;
    match action {
        Action::Flip => bytes[mid] ^= 0x10,
        Action::Truncate => bytes.truncate(if in_footer { to - 20 } else { mid }),
        Action::ZeroRange => bytes[mid..(mid + 512).min(to)].fill(0),
        Action::Delete => {
            fs::remove_file(pack).unwrap();
            return;
        }
    }
    fs::write(pack, &bytes).unwrap();
}

/// The tree stored by `new` for victim/: new in that snapshot, not its root.
fn damage_tree(f: &Fixture, action: Action) {
    let conn = rusqlite::Connection::open(f.env.repo.join("index.db")).unwrap();
    let root: Vec<u8> = conn
        .query_row(
            "SELECT root FROM snapshots ORDER BY time_ns DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let old_root: Vec<u8> = conn
        .query_row(
            "SELECT root FROM snapshots ORDER BY time_ns ASC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // The trees of `old` are its root and keep/ (the earliest rows); the
    // victim's tree is the one row that is neither those nor the new root.
    let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = conn
        .prepare("SELECT id, hash, data FROM trees ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "old root, keep/, new root, victim/");
    let (id, _, mut data) = rows
        .into_iter()
        .skip(2)
        .find(|(_, h, _)| *h != root && *h != old_root)
        .unwrap();
    match action {
        Action::Flip => {
            let mid = data.len() / 2;
            data[mid] ^= 0x10;
        }
        Action::Truncate => data.truncate(data.len() / 2),
        Action::ZeroRange => {
            let mid = data.len() / 2;
            let end = (mid + 16).min(data.len());
            data[mid..end].fill(0);
        }
        Action::Delete => {
            conn.execute("DELETE FROM trees WHERE id = ?1", [id])
                .unwrap();
            return;
        }
    }
    conn.execute(
        "UPDATE trees SET data = ?1 WHERE id = ?2",
        rusqlite::params![data, id],
    )
    .unwrap();
}

fn damage_index(f: &Fixture, action: Action) {
    let path = f.env.repo.join("index.db");
    // Everything committed is in the main file (snap checkpoints on close).
    let wal = f.env.repo.join("index.db-wal");
    assert!(!wal.exists() || fs::metadata(&wal).unwrap().len() == 0);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    let chunks_root: i64 = conn
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'chunks'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(conn);
    let mut bytes = fs::read(&path).unwrap();
    let page = ((chunks_root - 1) * page_size) as usize;
    match action {
        // The b-tree page type byte of the chunk table's root page.
        Action::Flip => bytes[page] ^= 0x40,
        Action::Truncate => bytes.truncate(bytes.len() / 2),
        Action::ZeroRange => bytes[page..page + page_size as usize].fill(0),
        Action::Delete => {
            fs::remove_file(&path).unwrap();
            return;
        }
    }
    fs::write(&path, &bytes).unwrap();
}

/// Bit rot in one value SQLite does not checksum: the victim's chunk rows.
fn damage_index_value(f: &Fixture, action: Action) {
    let conn = rusqlite::Connection::open(f.env.repo.join("index.db")).unwrap();
    let pack_hash = hex_to_bytes(&f.victim_pack_id);
    let sql = match action {
        Action::Flip => "UPDATE chunks SET offset = (offset | 16) - (offset & 16) WHERE pack = ?1",
        Action::Truncate => "UPDATE chunks SET stored_len = stored_len / 2 WHERE pack = ?1",
        Action::ZeroRange => "UPDATE chunks SET offset = 0 WHERE pack = ?1",
        Action::Delete => "DELETE FROM chunks WHERE pack = ?1",
    };
    let pack_row: i64 = conn
        .query_row("SELECT id FROM packs WHERE hash = ?1", [pack_hash], |r| {
            r.get(0)
        })
        .unwrap();
    let n = conn.execute(sql, [pack_row]).unwrap();
    assert!(n > 0);
}

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run one cell; returns a line describing what was checked.
fn cell(place: Place, action: Action) -> String {
    let f = fixture(place);
    match place {
        Place::ChunkFrame => damage_pack(&f.victim_pack, action, false),
        Place::PackFooter => damage_pack(&f.victim_pack, action, true),
        Place::Tree => damage_tree(&f, action),
        Place::TreePack => {
            damage_pack(&f.tree_pack, action, false);
            return tree_pack_cell(&f, action);
        }
        Place::Index => damage_index(&f, action),
        Place::IndexValue => damage_index_value(&f, action),
    }
    let label = format!("{place:?} x {action:?}");
    if (place, action) == (Place::Tree, Action::Delete) {
        // A copy the index lacks is read from its blob in the tree pack
        // (the repository's own record), verified: nothing is lost.
        f.env
            .snap()
            .args(["check", "--read-data"])
            .assert()
            .success();
        let out_dir = f.env.path("out");
        f.env.restore_to(&f.new, &out_dir);
        assert_same_tree(&f.copy, &out_dir);
        return format!("{label}: read from its tree pack instead; check ok, restore exact");
    }

    // check --read-data finds it and names what it can.
    let all = failed_check(&f, &label);
    let new_short = &f.new[..8];
    match place {
        Place::ChunkFrame | Place::PackFooter | Place::IndexValue => {
            assert!(
                all.contains(&f.victim_pack_id),
                "{label}: pack named: {all}"
            );
            assert!(all.contains(new_short), "{label}: snapshot named: {all}");
            assert!(
                !all.contains(&f.old[..8]),
                "{label}: old is unaffected: {all}"
            );
            if place != Place::PackFooter || action != Action::Flip {
                assert!(all.contains("victim/v.bin"), "{label}: file named: {all}");
            }
        }
        Place::Tree => {
            assert!(all.contains(new_short), "{label}: snapshot named: {all}");
            assert!(all.contains("victim"), "{label}: directory named: {all}");
            assert!(
                !all.contains(&f.old[..8]),
                "{label}: old is unaffected: {all}"
            );
        }
        Place::Index => assert!(all.contains("index.db"), "{label}: index named: {all}"),
        Place::TreePack => unreachable!("tree_pack_cell checks these"),
    }

    // Restore of the affected snapshot into a new directory.
    let out_dir = f.env.path("out");
    let r = restore_new(&f, Some(&out_dir));
    let rtext = text(&r);
    let victim_data_ok = place == Place::PackFooter && action != Action::Delete;
    if place == Place::Index {
        assert_eq!(r.status.code(), Some(5), "{label}: restore: {rtext}");
        assert!(rtext.contains("index.db"), "{label}: {rtext}");
        assert_no_wrong_bytes(&out_dir, &f.copy);
        return format!("{label}: check exit 5 names index.db; restore exit 5, no wrong bytes");
    }
    for rel in ["keep/a.txt", "keep/b.bin"] {
        assert_eq!(
            fs::read(out_dir.join(rel)).unwrap(),
            fs::read(f.copy.join(rel)).unwrap(),
            "{label}: unaffected {rel} restored"
        );
    }
    if victim_data_ok {
        // The footer is only an index of the pack: the chunks themselves
        // are intact and verified, so the restore is whole.
        assert_eq!(r.status.code(), Some(0), "{label}: {rtext}");
        assert_same_tree(&f.copy, &out_dir);
    } else {
        assert_eq!(r.status.code(), Some(5), "{label}: restore exit: {rtext}");
        assert!(rtext.contains("victim"), "{label}: affected named: {rtext}");
        assert!(
            !out_dir.join("victim/v.bin").exists(),
            "{label}: no wrong data written"
        );
    }

    // In place: the source drifted; the restore must put keep/ back and
    // leave the victim (which it cannot restore) exactly as it is now.
    write(&f.src.join("keep/a.txt"), "drifted");
    write(&f.src.join("victim/v.bin"), "current contents");
    let r = restore_new(&f, None);
    let rtext = text(&r);
    assert_eq!(
        fs::read(f.src.join("keep/a.txt")).unwrap(),
        fs::read(f.copy.join("keep/a.txt")).unwrap(),
        "{label}: in place: unaffected file restored: {rtext}"
    );
    if victim_data_ok {
        assert_eq!(r.status.code(), Some(0), "{label}: {rtext}");
        assert_same_tree(&f.copy, &f.src);
    } else {
        assert_eq!(r.status.code(), Some(5), "{label}: in place: {rtext}");
        assert_eq!(
            fs::read_to_string(f.src.join("victim/v.bin")).unwrap(),
            "current contents",
            "{label}: in place: what could not be restored is left, not deleted"
        );
    }

    assert_old_restores_exactly(&f);
    let outcome = if victim_data_ok {
        "chunks intact, restore whole (exit 0)"
    } else {
        "affected restore partial (exit 5), unaffected files restored"
    };
    format!("{label}: found and named; {outcome}; old snapshot exact")
}

/// `check --read-data` fails with damage (exit 5); what it printed.
fn failed_check(f: &Fixture, label: &str) -> String {
    let out = f
        .env
        .snap()
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{label}: check must fail: {all}"
    );
    all
}

/// Restore the second snapshot into `target`, or in place (without a
/// safety snapshot) when `None`.
fn restore_new(f: &Fixture, target: Option<&Path>) -> std::process::Output {
    let mut cmd = f.env.snap();
    cmd.args(["restore", &f.new]);
    match target {
        Some(t) => cmd.arg("--target").arg(t),
        None => cmd.arg("--no-safety-snapshot"),
    };
    cmd.output().unwrap()
}

/// Nothing wrong was written under `out`: whatever exists is as in `copy`.
fn assert_no_wrong_bytes(out: &Path, copy: &Path) {
    for e in walkdir::WalkDir::new(out).into_iter().flatten() {
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(out).unwrap();
            assert_eq!(
                fs::read(e.path()).unwrap(),
                fs::read(copy.join(rel)).unwrap()
            );
        }
    }
}

/// The snapshot that does not use the damaged part restores exactly.
fn assert_old_restores_exactly(f: &Fixture) {
    let old_out = f.env.path("old-out");
    f.env.restore_to(&f.old, &old_out);
    assert_same_tree(&f.copy.join("keep"), &old_out.join("keep"));
}

/// The tree pack of the second snapshot is damaged: it holds the new root
/// and victim/ (a group frame, or the two raw when they do not compress).
/// Whatever the damage hits, nothing wrong is written, nothing the restore
/// cannot replace is deleted, and the old snapshot restores exactly.
fn tree_pack_cell(f: &Fixture, action: Action) -> String {
    let label = format!("TreePack x {action:?}");
    let all = failed_check(f, &label);
    assert!(all.contains(&f.new[..8]), "{label}: snapshot named: {all}");
    assert!(
        !all.contains(&f.old[..8]),
        "{label}: old is unaffected: {all}"
    );
    let tree_pack_id = f.tree_pack.file_stem().unwrap().to_string_lossy();
    if action != Action::Delete {
        assert!(all.contains(&*tree_pack_id), "{label}: pack named: {all}");
    }

    let out_dir = f.env.path("out");
    let r = restore_new(f, Some(&out_dir));
    assert_eq!(r.status.code(), Some(5), "{label}: restore: {}", text(&r));
    assert_no_wrong_bytes(&out_dir, &f.copy);
    // In place over a drifted source: keep/ is put back only when the
    // root could be read; victim/ (whose tree is in the pack) is left.
    write(&f.src.join("keep/a.txt"), "drifted");
    write(&f.src.join("victim/v.bin"), "current contents");
    let r = restore_new(f, None);
    assert_eq!(r.status.code(), Some(5), "{label}: in place: {}", text(&r));
    let keep = fs::read(f.src.join("keep/a.txt")).unwrap();
    let root_read = keep != b"drifted";
    if root_read {
        assert_eq!(keep, fs::read(f.copy.join("keep/a.txt")).unwrap());
    }
    assert_eq!(
        fs::read_to_string(f.src.join("victim/v.bin")).unwrap(),
        "current contents",
        "{label}: in place: what could not be restored is left, not deleted"
    );

    assert_old_restores_exactly(f);
    let outcome = if root_read {
        "root intact: unaffected files restored, victim/ left (exit 5)"
    } else {
        "root unreadable: new snapshot refused whole, nothing changed (exit 5)"
    };
    format!("{label}: found and named; {outcome}; no wrong bytes; old snapshot exact")
}

#[test]
fn damage_matrix() {
    let mut cells = Vec::new();
    for place in PLACES {
        for action in ACTIONS {
            cells.push(cell(place, action));
        }
    }
    assert_eq!(cells.len(), 24);
    for c in &cells {
        eprintln!("{c}");
    }
}
