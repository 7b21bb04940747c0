//! `snap stats`: how much the repository holds and what it costs on disk.

use serde::Serialize;

use crate::error::Result;
use crate::pack::PackKind;
use crate::repo::Repository;
use crate::snapshot::Snapshot;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RepoStats {
    pub snapshots: u64,
    /// Sum over snapshots of the bytes of the files they hold (what
    /// restoring every snapshot would write).
    pub logical_bytes: u64,
    /// Distinct chunks, and their raw size.
    pub unique_chunks: u64,
    pub unique_bytes: u64,
    /// Bytes those chunks take compressed in packs.
    pub compressed_bytes: u64,
    pub packs: u64,
    /// Bytes on disk: every pack (data and trees) plus the index.
    pub stored_bytes: u64,
    pub index_bytes: u64,
    /// logical / unique.
    pub dedup_ratio: f64,
    /// unique / compressed.
    pub compression_ratio: f64,
    /// logical / stored: what snapshots cost all told.
    pub space_saving_ratio: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

pub fn repo_stats(repo: &Repository) -> Result<RepoStats> {
    let snaps = repo.snapshots()?;
    let (unique_chunks, unique_bytes, compressed_bytes) =
        repo.index().blob_totals(PackKind::Data)?;
    let packs = repo.index().packs()?;
    let pack_bytes: u64 = packs.iter().map(|p| p.size).sum();
    let index_bytes: u64 = ["index.db", "index.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(repo.root().join(f)).ok())
        .map(|m| m.len())
        .sum();
    let logical_bytes = snaps.iter().map(|s| s.stats.total_bytes).sum();
    let stored_bytes = pack_bytes + index_bytes;
    Ok(RepoStats {
        snapshots: snaps.len() as u64,
        logical_bytes,
        unique_chunks,
        unique_bytes,
        compressed_bytes,
        packs: packs.len() as u64,
        stored_bytes,
        index_bytes,
        dedup_ratio: ratio(logical_bytes, unique_bytes),
        compression_ratio: ratio(unique_bytes, compressed_bytes),
        space_saving_ratio: ratio(logical_bytes, stored_bytes),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotSize {
    pub id: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub others: u64,
    /// The bytes of its files (what a restore writes).
    pub total_bytes: u64,
    /// What it added to the repository when it was taken: chunks no earlier
    /// snapshot had, raw and as stored.
    pub added_chunks: u64,
    pub added_raw_bytes: u64,
    pub added_stored_bytes: u64,
}

pub fn snapshot_size(s: &Snapshot) -> SnapshotSize {
    let st = &s.stats;
    SnapshotSize {
        id: s.id.to_hex(),
        files: st.files,
        dirs: st.dirs,
        symlinks: st.symlinks,
        others: st.others,
        total_bytes: st.total_bytes,
        added_chunks: st.new_chunks,
        added_raw_bytes: st.new_raw_bytes,
        added_stored_bytes: st.new_stored_bytes,
    }
}
