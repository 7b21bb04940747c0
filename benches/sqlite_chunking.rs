//! Which chunking stores a migrated SQLite database in fewer new bytes:
//! content-defined (FastCDC, the repository's sizes) or page-aligned fixed
//! chunks? `cargo bench --bench sqlite_chunking` builds a ~55 MB database
//! (the e2e bench's messages.db), applies three kinds of migration, and for
//! each strategy prints the bytes (zstd level 3, as stored) of the chunks the
//! migrated image has that the original does not, and the chunk count.
//!
//! Env: SNAP_BENCH_ROWS (default 250,000).

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use rusqlite::params;
use snap::chunker::{ChunkerParams, chunk_lengths};

mod common;
use common::{Rng, sqlite_db_in};

/// The migrations compared.
fn migrate(path: &Path, kind: &str, rows: usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut rng = Rng(0xabc);
    let tx = conn.unchecked_transaction().unwrap();
    match kind {
        // The e2e bench's migration: a column added, 5% of rows updated at
        // random ids.
        "5% random updates" => {
            tx.execute_batch("ALTER TABLE messages ADD COLUMN migrated INTEGER")
                .unwrap();
            let mut st = tx
                .prepare("UPDATE messages SET flags = flags + 1 WHERE id = ?1")
                .unwrap();
            for _ in 0..rows / 20 {
                st.execute([1 + rng.below(rows as u64) as i64]).unwrap();
            }
        }
        // A new table and index, the newest 2% of rows touched.
        "new table + recent rows" => {
            tx.execute_batch(
                "CREATE TABLE reactions(id INTEGER PRIMARY KEY, message INTEGER, emoji TEXT);
                 CREATE INDEX reactions_message ON reactions(message);",
            )
            .unwrap();
            let mut st = tx
                .prepare("INSERT INTO reactions(message, emoji) VALUES (?1, ?2)")
                .unwrap();
            for i in 0..rows / 50 {
                st.execute(params![(rows - i) as i64, "+1"]).unwrap();
            }
            tx.execute(
                "UPDATE messages SET flags = 9 WHERE id > ?1",
                [(rows - rows / 50) as i64],
            )
            .unwrap();
        }
        // A backfill: every row's value rewritten in place (same size).
        "backfill every row" => {
            tx.execute_batch("UPDATE messages SET flags = (flags + 1) % 4")
                .unwrap();
        }
        _ => unreachable!(),
    }
    tx.commit().unwrap();
}

fn fixed_lengths(len: usize, size: usize) -> Vec<usize> {
    let mut out = vec![size; len / size];
    if !len.is_multiple_of(size) {
        out.push(len % size);
    }
    out
}

fn cuts(data: &[u8], strategy: &str) -> Vec<usize> {
    match strategy {
        "CDC 4/16/64 KiB" => chunk_lengths(
            data,
            ChunkerParams {
                min: 4096,
                avg: 16384,
                max: 65536,
            },
        )
        .unwrap(),
        "CDC 1/4/16 KiB" => chunk_lengths(
            data,
            ChunkerParams {
                min: 1024,
                avg: 4096,
                max: 16384,
            },
        )
        .unwrap(),
        "pages, 4 KiB (1 page)" | DELTAS => fixed_lengths(data.len(), 4096),
        "pages, 16 KiB (4 pages)" => fixed_lengths(data.len(), 16384),
        "pages, 64 KiB (16 pages)" => fixed_lengths(data.len(), 65536),
        _ => unreachable!(),
    }
}

/// Format 3: one page per chunk, a new page stored as a delta of the old
/// image's page at the same place when that is smaller (plus the 32 bytes
/// of its base record in the pack footer).
const DELTAS: &str = "pages, 4 KiB, deltas (format 3)";

/// (new stored bytes, new chunks, total chunks of the new image)
fn added(old: &[u8], new: &[u8], strategy: &str) -> (u64, usize, usize) {
    let mut seen = HashSet::new();
    let mut o = 0;
    for l in cuts(old, strategy) {
        seen.insert(blake3::hash(&old[o..o + l]));
        o += l;
    }
    let mut bytes = 0u64;
    let mut count = 0;
    let mut o = 0;
    let new_cuts = cuts(new, strategy);
    for &l in &new_cuts {
        let piece = &new[o..o + l];
        if seen.insert(blake3::hash(piece)) {
            let whole = || snap::compress::Compressor::new(3)?.compress(piece);
            bytes += match old.get(o..o + l) {
                Some(base) if strategy == DELTAS => {
                    match snap::delta::encode(3, base, piece, whole).unwrap() {
                        snap::delta::Stored::Delta(d) => d.len() as u64 + 32,
                        snap::delta::Stored::Whole(_, w) => w.len() as u64,
                    }
                }
                _ => zstd::bulk::compress(piece, 3).unwrap().len() as u64,
            };
            count += 1;
        }
        o += l;
    }
    (bytes, count, new_cuts.len())
}

fn main() {
    let rows: usize = std::env::var("SNAP_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(250_000);
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.db");
    sqlite_db_in(&base, rows, &mut Rng(0x5eed), false);
    let original = fs::read(&base).unwrap();
    println!(
        "database: {} rows, {:.1} MB, page size 4096",
        rows,
        original.len() as f64 / 1e6
    );
    let strategies = [
        "CDC 4/16/64 KiB",
        "CDC 1/4/16 KiB",
        "pages, 4 KiB (1 page)",
        "pages, 16 KiB (4 pages)",
        "pages, 64 KiB (16 pages)",
        DELTAS,
    ];
    println!("| first backup | chunking | bytes stored | chunks |");
    println!("|---|---|---|---|");
    for s in strategies {
        let (bytes, count, _) = added(&[], &original, s);
        println!(
            "| whole image | {s} | {:.2} MB | {count} |",
            bytes as f64 / 1e6
        );
    }
    println!();
    println!("| migration | chunking | new bytes stored | new chunks | chunks in image |");
    println!("|---|---|---|---|---|");
    for kind in [
        "5% random updates",
        "new table + recent rows",
        "backfill every row",
    ] {
        let path = dir.path().join("migrated.db");
        fs::copy(&base, &path).unwrap();
        migrate(&path, kind, rows);
        let migrated = fs::read(&path).unwrap();
        for s in strategies {
            let (bytes, count, total) = added(&original, &migrated, s);
            println!(
                "| {kind} | {s} | {:.2} MB | {count} | {total} |",
                bytes as f64 / 1e6
            );
        }
    }
}
