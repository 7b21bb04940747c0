//! What the C ABI tests share: the library's location, an app-like data
//! directory, and the repository as the library sees it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The directory holding libsnap_ffi.so: cargo builds it next to the test
/// binaries (target/<profile>/deps).
pub fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().to_path_buf();
    assert!(
        dir.join("libsnap_ffi.so").exists(),
        "libsnap_ffi.so is not in {}",
        dir.display()
    );
    dir
}

/// An app's data directory: a SQLite database (WAL mode when `wal`, else
/// rollback-journal mode, closed), preferences and a media file.
pub fn app_dir(dir: &Path, wal: bool) {
    std::fs::create_dir_all(dir.join("media")).unwrap();
    let c = rusqlite::Connection::open(dir.join("app.db")).unwrap();
    let mode = if wal { "WAL" } else { "DELETE" };
    c.execute_batch(&format!(
        "PRAGMA page_size=4096; PRAGMA journal_mode={mode};
         CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);
         PRAGMA user_version=1;"
    ))
    .unwrap();
    for i in 0..2000 {
        c.execute(
            "INSERT INTO notes(body) VALUES (?1)",
            [format!("note {i} {}", "x".repeat(40))],
        )
        .unwrap();
    }
    drop(c);
    std::fs::write(dir.join("prefs.json"), "{\"schema\": 1}\n").unwrap();
    let media: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("media/a.bin"), media).unwrap();
}

/// The snapshots in `repo`, as the library lists them.
pub fn cli_list(repo: &Path) -> Vec<serde_json::Value> {
    let r = snap::Repository::open_read_only(repo, None).unwrap();
    r.snapshots().unwrap().iter().map(|s| s.to_json()).collect()
}
