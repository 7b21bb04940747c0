//! snap: content-addressed incremental snapshots of application data
//! directories, with exact, undoable rollback.
//!
//! Modules, from the bottom up:
//! - [`id`], [`error`], [`config`], [`progress`]: ids, the error type, format parameters, reporting.
//! - [`chunker`], [`compress`]: FastCDC chunking and per-chunk zstd.
//! - [`pack`]: the pack file format, writer and reader.
//! - [`tree`]: the canonical directory encoding.
//! - [`index`]: the SQLite index (the only module that sees rusqlite).
//! - [`lock`], [`repo`]: the repository on disk and its lock.
//! - [`source`]: reading metadata of the directory being snapshotted.
//! - [`retention`]: which snapshots a gc keeps.
//! - [`ops`]: create, restore, ls, gc, check: options in, statistics out.

pub mod chunker;
pub mod compress;
pub mod config;
pub mod confined;
pub mod error;
pub mod exclude;
pub mod exit;
pub mod fault;
pub mod held;
pub mod id;
pub mod index;
pub mod lock;
pub mod objects;
pub mod ops;
pub mod pack;
pub mod progress;
pub mod repo;
pub mod retention;
pub mod snapshot;
pub mod source;
pub mod spec;
pub mod sqlite;
pub mod storage;
pub mod tree;
pub mod user_config;
pub mod xattr;

pub use error::{Error, Result};
pub use id::{ChunkId, PackId, SnapshotId, TreeId};
pub use repo::Repository;
pub use snapshot::Snapshot;

/// This machine's host name, recorded in snapshots.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // on success when the name fits, and we stop at the first NUL anyway.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
