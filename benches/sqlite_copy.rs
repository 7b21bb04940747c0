//! Why snap reads databases through SQLite: copying a live WAL database
//! file by file (as cp, tar, restic and borg do) against snap's capture.
//!
//! `cargo bench --bench sqlite_copy` runs a writer that keeps an invariant
//! in every transaction (tables a and b hold the same number of rows, with
//! frequent checkpoints), and meanwhile takes N copies of the database:
//! - plain: copy `db`, then `db-wal` (what a file-level backup stores);
//! - snap: `snap::sqlite::capture` (the backup API on a read-only
//!   connection).
//!
//! Each copy is opened alone and counted as corrupt (integrity_check not
//! "ok", or it cannot be opened), inconsistent (counts differ), or good.
//!
//! Env: SNAP_BENCH_COPIES (default 100).

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Default, Debug)]
struct Tally {
    good: u32,
    inconsistent: u32,
    corrupt: u32,
}

fn verdict(db: &Path, t: &mut Tally) {
    let r = (|| -> rusqlite::Result<(String, i64, i64)> {
        let c = rusqlite::Connection::open(db)?;
        let check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        let a: i64 = c.query_row("SELECT count(*) FROM a", [], |r| r.get(0))?;
        let b: i64 = c.query_row("SELECT count(*) FROM b", [], |r| r.get(0))?;
        Ok((check, a, b))
    })();
    match r {
        Ok((check, _, _)) if check != "ok" => t.corrupt += 1,
        Ok((_, a, b)) if a != b => t.inconsistent += 1,
        Ok(_) => t.good += 1,
        Err(_) => t.corrupt += 1,
    }
}

fn main() {
    let copies: u32 = std::env::var("SNAP_BENCH_COPIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE a(id INTEGER PRIMARY KEY, body TEXT);
             CREATE TABLE b(id INTEGER PRIMARY KEY, body TEXT);",
        )
        .unwrap();
        // ~60 MB to start with, so that a copy takes long enough for the
        // writer's checkpoints to land in the middle of it.
        let tx = c.unchecked_transaction().unwrap();
        for n in 0..50_000 {
            let body = format!("seed {n} ").repeat(60);
            tx.execute("INSERT INTO a(body) VALUES (?1)", [&body])
                .unwrap();
            tx.execute("INSERT INTO b(body) VALUES (?1)", [&body])
                .unwrap();
        }
        tx.commit().unwrap();
    }
    // Control: with no writer, copying the files works.
    let mut quiet = Tally::default();
    for i in 0..5 {
        let p = dir.path().join(format!("quiet-{i}.db"));
        fs::copy(&db, &p).unwrap();
        let _ = fs::copy(
            dir.path().join("live.db-wal"),
            dir.path().join(format!("quiet-{i}.db-wal")),
        );
        verdict(&p, &mut quiet);
        let _ = fs::remove_file(&p);
    }
    let stop = AtomicBool::new(false);
    let (plain, snap) = std::thread::scope(|s| {
        s.spawn(|| {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute_batch("PRAGMA wal_autocheckpoint=50").unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tx = c.unchecked_transaction().unwrap();
                let body = format!("row {n} ").repeat(60);
                tx.execute("INSERT INTO a(body) VALUES (?1)", [&body])
                    .unwrap();
                tx.execute("INSERT INTO b(body) VALUES (?1)", [&body])
                    .unwrap();
                // Rows change all over the file, as an app's updates do;
                // the size stays bounded (the oldest rows go).
                tx.execute(
                    "UPDATE a SET body = ?1 WHERE id = (abs(random()) % 50000) + 1",
                    [&body],
                )
                .unwrap();
                if n % 100 == 99 {
                    tx.execute_batch(
                        "DELETE FROM a WHERE id IN (SELECT id FROM a ORDER BY id LIMIT 90);
                         DELETE FROM b WHERE id IN (SELECT id FROM b ORDER BY id LIMIT 90);",
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
                n += 1;
                // A busy app, not a bulk load: about 2,000 transactions a second.
                std::thread::sleep(std::time::Duration::from_micros(500));
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (mut plain, mut snap) = (Tally::default(), Tally::default());
        for i in 0..copies {
            let p = dir.path().join(format!("plain-{i}.db"));
            let _ = fs::copy(&db, &p);
            let _ = fs::copy(
                dir.path().join("live.db-wal"),
                dir.path().join(format!("plain-{i}.db-wal")),
            );
            verdict(&p, &mut plain);
            let img = dir.path().join(format!("snap-{i}.db"));
            match snap::sqlite::capture(&db, &img, false, None) {
                Ok(_) => verdict(&img, &mut snap),
                Err(_) => snap.corrupt += 1,
            }
            for f in [&p, &img] {
                let _ = fs::remove_file(f);
                let mut wal = f.as_os_str().to_owned();
                wal.push("-wal");
                let _ = fs::remove_file(wal);
            }
        }
        stop.store(true, Ordering::Relaxed);
        (plain, snap)
    });
    println!(
        "{copies} copies of a ~60 MB database under constant writes (WAL, checkpoint every 50 pages)"
    );
    println!("| method | good | inconsistent (a != b) | corrupt or unreadable |");
    println!("|---|---|---|---|");
    println!(
        "| copy db, then db-wal, no writer (control, 5 copies) | {} | {} | {} |",
        quiet.good, quiet.inconsistent, quiet.corrupt
    );
    println!(
        "| copy db, then db-wal | {} | {} | {} |",
        plain.good, plain.inconsistent, plain.corrupt
    );
    println!(
        "| snap (backup API) | {} | {} | {} |",
        snap.good, snap.inconsistent, snap.corrupt
    );
}
