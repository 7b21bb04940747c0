//! The snapshot record: what a snapshot is, apart from its trees.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// What was snapshotted. One entry with an empty name: the directory
    /// `source` itself is the root. Named entries: a snapshot of several
    /// sources (from snap.toml), the root tree holding one directory per
    /// name. Exclude patterns are kept so a restore never deletes what was
    /// left out.
    pub sources: Vec<SourceRoot>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceRoot {
    /// The source's name in snap.toml; empty for a snapshot of one directory.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Where the source lives (UTF-8, as snap.toml names it; for a snapshot
    /// of one directory, `Snapshot::source` holds the exact bytes).
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// The `root_meta` column: the source directory's metadata, plus the
/// sources (absent in records without any: they mean "the root is
/// `source`, nothing excluded").
#[derive(Serialize, Deserialize)]
pub struct RootRecord {
    #[serde(flatten)]
    pub meta: RootMeta,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceRoot>,
}

impl Snapshot {
    /// True for a snapshot of several named sources.
    /// Where an in-place restore of this snapshot would write: its source
    /// directory, or each of its named sources' directories.
    pub fn source_paths(&self) -> Vec<PathBuf> {
        if self.is_multi_source() {
            self.sources
                .iter()
                .map(|s| PathBuf::from(&s.path))
                .collect()
        } else {
            vec![self.source.clone()]
        }
    }

    pub fn is_multi_source(&self) -> bool {
        self.sources.iter().any(|s| !s.name.is_empty())
    }

    /// Exclude patterns of a one-directory snapshot.
    pub fn excludes(&self) -> &[String] {
        self.sources
            .iter()
            .find(|s| s.name.is_empty())
            .map_or(&[], |s| s.exclude.as_slice())
    }
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
    /// New chunks stored as deltas of the parent's pages (format 3; absent
    /// from snapshot objects when zero, so older ones keep their bytes).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub new_delta_chunks: u64,
    pub duration_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SnapshotStats {
    /// Add another walk's counts (a snapshot of several sources).
    pub fn add(&mut self, o: &SnapshotStats) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.others += o.others;
        self.total_bytes += o.total_bytes;
        self.read_bytes += o.read_bytes;
        self.reused_files += o.reused_files;
        self.new_chunks += o.new_chunks;
        self.new_raw_bytes += o.new_raw_bytes;
        self.new_stored_bytes += o.new_stored_bytes;
        self.new_packs += o.new_packs;
        self.new_delta_chunks += o.new_delta_chunks;
    }
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

impl Snapshot {
    /// The snapshot as `snap list --json` and `snap create --json` print it
    /// (and the C ABI returns it): ids in hex, the time in RFC 3339.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id.to_hex(),
            "time": self.time_string(),
            "host": self.host,
            "source": self.source.to_string_lossy(),
            "tags": self.tags,
            "labels": self.labels,
            "parent": self.parent.map(|p| p.to_hex()),
            "root": self.root.to_hex(),
            "complete": self.complete,
            "pinned": self.pinned,
            "unreadable": self.unreadable,
            "stats": self.stats,
        })
    }
}

/// A tag is one printable word of the user's: not empty, at most 128
/// bytes, no control characters (a newline would forge a row of `list`)
/// and no comma (`list` joins tags with commas).
pub fn check_tag(tag: &str) -> crate::error::Result<()> {
    let bad = |why: &str| Err(crate::error::Error::usage(format!("tag {tag:?}: {why}")));
    if tag.is_empty() {
        return bad("is empty");
    }
    if tag.len() > 128 {
        return bad("is longer than 128 bytes");
    }
    if tag.chars().any(|c| c.is_control()) {
        return bad("holds a control character (a newline, an escape)");
    }
    if tag.contains(',') {
        return bad("holds a comma");
    }
    Ok(())
}
