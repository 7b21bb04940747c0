//! Data generators shared by the benchmarks, so that they measure the same
//! data (the e2e bench's databases are the chunking bench's input).

use std::fs;
use std::path::Path;

use rusqlite::params;

/// xorshift: deterministic, no external state.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub const WORDS: &[&str] = &[
    "user",
    "session",
    "token",
    "event",
    "click",
    "view",
    "error",
    "warning",
    "sync",
    "upload",
    "download",
    "cache",
    "miss",
    "hit",
    "request",
    "response",
    "latency",
    "ms",
    "status",
    "ok",
    "failed",
    "retry",
    "account",
    "settings",
    "theme",
    "dark",
    "light",
    "notification",
    "message",
    "thread",
    "attachment",
];

pub fn text(rng: &mut Rng, len: usize) -> String {
    let mut s = String::with_capacity(len + 64);
    while s.len() < len {
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
        s.push(if rng.below(12) == 0 { '\n' } else { ' ' });
        if rng.below(5) == 0 {
            s.push_str(&rng.below(100_000).to_string());
            s.push(' ');
        }
    }
    s.truncate(len);
    s
}

/// A message database like an app's: `rows` messages with an index, built
/// in WAL mode and checkpointed, then left in WAL mode at rest when `wal`
/// (closed cleanly: no `-wal` or `-shm` beside it, the state most apps'
/// databases are in between runs), else in rollback-journal mode.
pub fn sqlite_db_in(path: &Path, rows: usize, rng: &mut Rng, wal: bool) {
    let _ = fs::remove_file(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
         CREATE TABLE messages(id INTEGER PRIMARY KEY, thread INTEGER, sender TEXT, body TEXT, ts INTEGER, flags INTEGER);
         CREATE INDEX messages_thread ON messages(thread, ts);",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut st = tx
            .prepare(
                "INSERT INTO messages(thread, sender, body, ts, flags) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .unwrap();
        for i in 0..rows {
            let len = 40 + rng.below(300) as usize;
            st.execute(params![
                rng.below(5000) as i64,
                format!("user{}", rng.below(2000)),
                text(rng, len),
                1_600_000_000 + i as i64,
                rng.below(4) as i64
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    let mode = if wal { "WAL" } else { "DELETE" };
    conn.execute_batch(&format!(
        "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode={mode};"
    ))
    .unwrap();
}
