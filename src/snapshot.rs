//! The snapshot record: what a snapshot is, apart from its trees.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::id::{SnapshotId, TreeId};

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub id: SnapshotId,
    /// Nanoseconds since the Unix epoch (UTC).
    pub time_ns: i64,
    pub host: String,
    /// The absolute path that was snapshotted (raw bytes; lossy in JSON).
    pub source: PathBuf,
    pub root: TreeId,
    pub parent: Option<SnapshotId>,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// False when some files could not be read (see `unreadable`).
    pub complete: bool,
    pub pinned: bool,
    /// Paths (relative to `source`) with the reason they were not stored.
    pub unreadable: Vec<(String, String)>,
    pub stats: SnapshotStats,
    /// Metadata of the source directory itself (its tree holds its children).
    pub root_meta: RootMeta,
}

#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RootMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
}

/// Statistics recorded with a snapshot (the JSON column `stats`).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SnapshotStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub others: u64,
    /// Sum of the sizes of all files in the snapshot.
    pub total_bytes: u64,
    /// Bytes read from the source (unchanged files are not read).
    pub read_bytes: u64,
    pub reused_files: u64,
    pub new_chunks: u64,
    /// Uncompressed size of the chunks this snapshot added.
    pub new_raw_bytes: u64,
    /// Bytes those chunks take in packs (after dedup and compression).
    pub new_stored_bytes: u64,
    pub new_packs: u64,
    pub duration_ms: u64,
}

impl Snapshot {
    /// The id is the BLAKE3 of the fields that define the snapshot, so two
    /// snapshots never share one even when their content is the same.
    pub fn compute_id(
        time_ns: i64,
        host: &str,
        source: &[u8],
        root: &TreeId,
        parent: Option<&SnapshotId>,
        nonce: u64,
    ) -> SnapshotId {
        let mut h = blake3::Hasher::new();
        h.update(b"snap-snapshot-v1\0");
        h.update(&time_ns.to_le_bytes());
        h.update(&(host.len() as u64).to_le_bytes());
        h.update(host.as_bytes());
        h.update(&(source.len() as u64).to_le_bytes());
        h.update(source);
        h.update(root.as_bytes());
        h.update(parent.map(|p| p.0).unwrap_or([0; 32]).as_slice());
        h.update(&nonce.to_le_bytes());
        SnapshotId(*h.finalize().as_bytes())
    }

    /// RFC 3339 time in UTC with nanoseconds.
    pub fn time_string(&self) -> String {
        format_time_ns(self.time_ns)
    }
}

pub fn format_time_ns(ns: i64) -> String {
    match jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(t) => t.to_string(),
        Err(_) => format!("@{ns}ns"),
    }
}

/// Local, second-resolution time for human tables.
pub fn format_time_local(ns: i64) -> String {
    match jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(t) => t
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => format!("@{ns}ns"),
    }
}
