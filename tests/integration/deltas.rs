//! Format 3: changed SQLite pages stored as deltas of the parent
//! snapshot's pages, through the real binary: smaller growth, exact
//! restores, bases kept by gc, bounded chains, damage named by check, and
//! the index rebuilt with its bases.

use std::collections::HashMap;
use std::path::Path;

use crate::common::*;

/// Words of a message: text that compresses about as well as real text.
fn words(seed: usize) -> String {
    const W: [&str; 16] = [
        "meeting", "tomorrow", "invoice", "sent", "the", "photo", "from", "trip", "call", "me",
        "when", "you", "land", "thanks", "again", "price",
    ];
    let mut x = seed as u64 ^ 0x9e37_79b9_7f4a_7c15;
    (0..18)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let w = W[(x >> 60) as usize];
            format!("{w}{}", (x >> 40) % 100)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A database of `rows` rows of text (about 150 bytes each), in `mode`
/// ("wal" or "delete"), closed cleanly.
fn app_db(path: &Path, rows: usize, mode: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(path).unwrap();
    c.pragma_update(None, "journal_mode", mode).unwrap();
    c.execute_batch(
        "CREATE TABLE messages(id INTEGER PRIMARY KEY, sender TEXT, body TEXT, read INTEGER);
         CREATE INDEX messages_sender ON messages(sender);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute(
            "INSERT INTO messages(sender, body, read) VALUES (?1, ?2, 0)",
            rusqlite::params![
                format!("user{}@example.org", i % 97),
                format!("message {i}: {}", words(i))
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// A migration: a column added, then `percent` of the rows updated at
/// pseudo-random ids (the same ones for the same `seed`).
fn migrate(path: &Path, rows: usize, percent: usize, seed: u64) {
    let c = rusqlite::Connection::open(path).unwrap();
    let has_column: bool = c
        .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'flags'")
        .unwrap()
        .exists([])
        .unwrap();
    if !has_column {
        c.execute_batch("ALTER TABLE messages ADD COLUMN flags INTEGER DEFAULT 0")
            .unwrap();
    }
    let tx = c.unchecked_transaction().unwrap();
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    for _ in 0..rows * percent / 100 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let id = (x >> 33) as usize % rows + 1;
        tx.execute(
            "UPDATE messages SET read = 1, flags = flags + 1 WHERE id = ?1",
            [id as i64],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// (delta chunk rows, longest chain) in a local repository's index.
fn delta_rows(repo: &Path) -> (usize, u32) {
    let c = rusqlite::Connection::open(repo.join("index.db")).unwrap();
    let mut st = c
        .prepare("SELECT hash, base FROM chunks WHERE codec = 2")
        .unwrap();
    let bases: HashMap<Vec<u8>, Vec<u8>> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let depth = |h: &Vec<u8>| {
        let (mut d, mut h) = (0, h);
        while let Some(b) = bases.get(h) {
            d += 1;
            h = b;
        }
        d
    };
    let longest = bases.keys().map(depth).max().unwrap_or(0);
    (bases.len(), longest)
}

fn integrity(db: &Path) -> String {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

const ROWS: usize = 20_000;

/// The 4 KiB pages of each database under `after` that differ from the
/// same file under `before` (new pages included).
fn changed_pages(before: &Path, after: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for rel in ["messages.db", "cache/cache.db"] {
        let (old, new) = (
            std::fs::read(before.join(rel)).unwrap(),
            std::fs::read(after.join(rel)).unwrap(),
        );
        for (i, page) in new.chunks(4096).enumerate() {
            if old.get(i * 4096..i * 4096 + page.len()) != Some(page) {
                out.push(page.to_vec());
            }
        }
    }
    out
}

/// An app directory with a WAL and a rollback-journal database and a file.
fn app_dir(env: &Env) -> std::path::PathBuf {
    let app = env.path("app");
    app_db(&app.join("messages.db"), ROWS, "wal");
    app_db(&app.join("cache/cache.db"), ROWS / 4, "delete");
    write(&app.join("prefs.json"), br#"{"theme":"dark"}"#);
    app
}

#[test]
fn a_migrated_database_grows_the_repository_by_page_deltas_and_restores_exactly() {
    let env = Env::new();
    let (grown, whole, (deltas, depth)) = {
        let app = app_dir(&env);
        let before = env.create_id(&app);
        cp_a(&app, &env.path("before"));
        let size = dir_bytes(&env.repo.join("packs"));
        migrate(&app.join("messages.db"), ROWS, 5, 1);
        migrate(&app.join("cache/cache.db"), ROWS / 4, 5, 2);
        let created = env.create(&app);
        let after = created["id"].as_str().unwrap().to_string();
        let grown = dir_bytes(&env.repo.join("packs")) - size;
        // --json reports the deltas (absent when there are none).
        let reported = created["stats"]["new_delta_chunks"].as_u64().unwrap_or(0);
        assert_eq!(reported as usize, delta_rows(&env.repo).0);
        // Both snapshots restore exactly, and the databases are sound.
        for (id, want) in [(&after, app.clone()), (&before, env.path("before"))] {
            let out = env.path(&format!("out-{id}"));
            env.restore_to(id, &out);
            assert_same_tree(&want, &out);
            assert_eq!(integrity(&out.join("messages.db")), "ok");
        }
        env.snap().args(["check", "--read-data"]).assert().success();
        // What the changed pages cost stored whole: each compressed alone
        // at the repository's level, as a repository without deltas
        // would store them (groups aside).
        let whole: usize = changed_pages(&env.path("before"), &app)
            .iter()
            .map(|p| zstd::bulk::compress(p, 3).unwrap().len().min(p.len()))
            .sum();
        (grown, whole as u64, delta_rows(&env.repo))
    };
    assert!(deltas > 50, "only {deltas} delta chunks");
    assert_eq!(depth, 1);
    // The packs grow by a fraction of the changed pages (their footer
    // entries and trees stay).
    eprintln!("packs grew by {grown} bytes with deltas; the changed pages are {whole} compressed");
    assert!(
        grown * 3 < whole,
        "deltas grew the packs by {grown} bytes, whole pages would cost {whole}"
    );
}

#[test]
fn chains_of_deltas_are_bounded_and_every_snapshot_restores() {
    let env = Env::new();
    let app = env.path("app");
    app_db(&app.join("messages.db"), 4000, "delete");
    let mut ids = vec![env.create_id(&app)];
    let mut copies = vec![env.path("v0")];
    cp_a(&app, &copies[0]);
    // Each migration touches the same rows, so each page's chain grows.
    for i in 1..=11 {
        migrate(&app.join("messages.db"), 4000, 5, 7);
        ids.push(env.create_id(&app));
        let copy = env.path(&format!("v{i}"));
        cp_a(&app, &copy);
        copies.push(copy);
    }
    let (deltas, depth) = delta_rows(&env.repo);
    assert!(deltas > 0);
    assert!(
        (2..=8).contains(&depth),
        "longest chain {depth}: at most snap's bound of 8"
    );
    for (id, want) in ids.iter().zip(&copies) {
        let out = env.path(&format!("out-{id}"));
        env.restore_to(id, &out);
        assert_same_tree(want, &out);
    }
    // In place, the newest back to the first (the plan rewrites the file).
    env.snap()
        .args(["restore", &ids[0], "--target"])
        .arg(&app)
        .assert()
        .success();
    assert_same_tree(&copies[0], &app);
}

#[test]
fn gc_keeps_the_bases_of_live_deltas_when_their_snapshot_is_forgotten() {
    let env = Env::new();
    let app = app_dir(&env);
    let first = env.create_id(&app);
    migrate(&app.join("messages.db"), ROWS, 5, 3);
    let second = env.create_id(&app);
    let want = env.path("want");
    cp_a(&app, &want);
    assert!(delta_rows(&env.repo).0 > 0);
    env.snap().args(["forget", &first]).assert().success();
    // Repack everything that lost a byte: bases are copied, not dropped.
    env.snap()
        .args(["gc", "--repack-threshold", "0"])
        .assert()
        .success();
    env.snap().args(["check", "--read-data"]).assert().success();
    let out = env.path("out");
    env.restore_to(&second, &out);
    assert_same_tree(&want, &out);
    // The index can be rebuilt from the packs, bases included.
    std::fs::remove_file(env.repo.join("index.db")).unwrap();
    let _ = std::fs::remove_file(env.repo.join("index.db-wal"));
    let _ = std::fs::remove_file(env.repo.join("index.db-shm"));
    env.snap().args(["repair", "index"]).assert().success();
    assert!(
        delta_rows(&env.repo).0 > 0,
        "bases come back from the footers"
    );
    let again = env.path("again");
    env.restore_to(&second, &again);
    assert_same_tree(&want, &again);
}

#[test]
fn a_damaged_base_is_damage_for_its_deltas_never_wrong_bytes() {
    let env = Env::new();
    let app = env.path("app");
    app_db(&app.join("messages.db"), ROWS, "delete");
    env.create_id(&app);
    // Every data pack so far holds only the first snapshot's pages: the
    // bases of what follows.
    let base_packs = data_packs(&env.repo);
    migrate(&app.join("messages.db"), ROWS, 5, 4);
    let second = env.create_id(&app);
    assert!(delta_rows(&env.repo).0 > 0);
    for pack in &base_packs {
        let mut bytes = std::fs::read(pack).unwrap();
        for at in (64..bytes.len() / 2).step_by(4096) {
            bytes[at] ^= 0x55;
        }
        std::fs::write(pack, &bytes).unwrap();
    }
    let out = env.snap().args(["check", "--read-data"]).assert().code(5);
    let report = String::from_utf8_lossy(&out.get_output().stdout).to_string()
        + &String::from_utf8_lossy(&out.get_output().stderr);
    assert!(report.contains("messages.db"), "{report}");
    let target = env.path("out");
    let restore = env
        .snap()
        .args(["restore", &second, "--target"])
        .arg(&target)
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&restore.get_output().stderr).to_string();
    assert!(err.contains("messages.db"), "{err}");
    // Whatever was written is never the damaged database under its name.
    assert!(!target.join("messages.db").exists());
}
