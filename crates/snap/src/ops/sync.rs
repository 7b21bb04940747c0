//! Bring a client's index up to date with a repository other clients
//! write to (a bucket): the objects are the truth, the index a cache.
//!
//! What can have happened since this client last looked, and what the
//! sync does about it:
//!
//! | remote change                       | sync                                      |
//! |-------------------------------------|-------------------------------------------|
//! | new snapshot objects                | insert them with their changes and trees  |
//! | new change records                  | apply them (tags, pins, forgets)          |
//! | new packs                           | index their footers                       |
//! | snapshot objects deleted (a gc)     | drop their rows                           |
//! | packs deleted (a gc's second phase) | rebuild the index from scratch            |
//!
//! A deleted pack forces a rebuild because the index keeps one location
//! per chunk: the chunk rows of a pack that is gone may hide a copy in
//! another pack, which only the footers can tell. Rebuilds are the same
//! code as `snap repair index`; they happen once per gc that deleted
//! packs, not per command.
//!
//! Order matters: snapshot objects are listed before packs, because a
//! writer uploads a snapshot's packs before the snapshot, so every pack
//! a listed snapshot needs is in the later pack listing.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::error::Result;
use crate::id::{PackId, SnapshotId};
use crate::index::Index;
use crate::lock::{LockMode, RepoLock, default_wait};
use crate::objects::{self, CHANGES_DIR, CONDEMNED_DIR};
use crate::ops::repair::{RepairStats, TreeLoader, repair_index_on};
use crate::pack::{FinishedPack, for_each_footer};
use crate::progress::Progress;
use crate::repo::{INDEX_FILE, list_packs};
use crate::storage::{Storage, pack_key};

impl crate::repo::Repository {
    /// Open a repository that other clients may write to (a bucket): its
    /// objects are the truth, and this client's index, in its cache
    /// directory under `cache_base`, is brought up to date with them
    /// first (built from them when missing, as `repair index` does).
    pub fn open_remote(
        storage: Arc<dyn Storage>,
        cache_base: &Path,
        mode: Option<LockMode>,
        read_only: bool,
        progress: &dyn crate::progress::Progress,
    ) -> Result<(crate::repo::Repository, SyncStats)> {
        let cache = Self::cache_dir(&*storage, cache_base)?;
        crate::repo::create_private_dir(&cache)?;
        let stats = sync_index(&storage, &cache, progress)?;
        let mut repo = Self::open_on(storage, &cache, mode, read_only)?;
        repo.remote = true;
        Ok((repo, stats))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncStats {
    pub new_snapshots: u64,
    pub gone_snapshots: u64,
    pub new_changes: u64,
    pub new_packs: u64,
    pub gone_packs: u64,
    /// The whole index was rebuilt (it was missing, or packs were deleted).
    pub rebuilt: Option<RepairStats>,
    /// New objects not used this time, and why (a snapshot whose trees
    /// are not readable yet, a pack whose footer is damaged).
    pub skipped: Vec<(String, String)>,
}

impl SyncStats {
    pub fn changed(&self) -> bool {
        self.rebuilt.is_some()
            || self.new_snapshots + self.gone_snapshots + self.new_changes > 0
            || self.new_packs + self.gone_packs > 0
    }
}

/// What the remote has that the index does not, and the reverse.
struct Diff {
    new_snaps: Vec<SnapshotId>,
    gone_snaps: Vec<SnapshotId>,
    new_changes: u64,
    /// With the sizes the listing gave.
    new_packs: Vec<(PackId, u64)>,
    /// Row ids of indexed packs that are gone, and whether any chunk row
    /// points into them.
    gone_packs: Vec<(i64, bool)>,
    /// Condemned records not applied yet, and applied ones now gone.
    new_records: Vec<String>,
    gone_records: Vec<String>,
}

/// How an applied condemned record is named among the applied changes.
pub(crate) fn record_mark(name: &str) -> String {
    format!("{CONDEMNED_DIR}/{name}")
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.new_snaps.is_empty()
            && self.gone_snaps.is_empty()
            && self.new_changes == 0
            && self.new_packs.is_empty()
            && self.gone_packs.is_empty()
            && self.new_records.is_empty()
            && self.gone_records.is_empty()
    }
}

fn diff(index: &Index, storage: &dyn Storage) -> Result<Diff> {
    let remote_snaps: HashSet<SnapshotId> = objects::object_ids(storage)?.into_iter().collect();
    let applied = index.applied_changes()?;
    let new_changes = storage
        .list(&format!("{CHANGES_DIR}/"))?
        .iter()
        .filter(|o| {
            let name = o.key.rsplit('/').next().unwrap_or("");
            !applied.contains(name)
        })
        .count() as u64;
    let records: HashSet<String> = objects::condemned_records(storage)?
        .into_iter()
        .map(|(n, _)| record_mark(&n))
        .collect();
    let remote_packs: HashMap<PackId, u64> = list_packs(storage)?.into_iter().collect();
    let local_snaps: HashSet<SnapshotId> = index.snapshots()?.iter().map(|s| s.id).collect();
    let applied_ids: HashSet<SnapshotId> = applied
        .iter()
        .filter_map(|n| n.get(..64).and_then(SnapshotId::from_hex))
        .collect();
    let mut d = Diff {
        new_snaps: remote_snaps
            .iter()
            .filter(|id| !local_snaps.contains(id))
            // An index applies a snapshot's changes only with the snapshot,
            // so one it holds changes of but not the snapshot was forgotten
            // (its object stays until a gc deletes it).
            .filter(|id| !applied_ids.contains(id))
            .copied()
            .collect(),
        gone_snaps: local_snaps
            .iter()
            .filter(|id| !remote_snaps.contains(id))
            .copied()
            .collect(),
        new_changes,
        new_packs: Vec::new(),
        gone_packs: Vec::new(),
        new_records: records
            .iter()
            .filter(|m| !applied.contains(*m))
            .cloned()
            .collect(),
        gone_records: applied
            .iter()
            .filter(|m| m.starts_with(CONDEMNED_DIR) && !records.contains(*m))
            .cloned()
            .collect(),
    };
    d.new_records.sort();
    let mut local_packs = HashSet::new();
    for p in index.packs()? {
        local_packs.insert(p.id);
        if !remote_packs.contains_key(&p.id) {
            let referenced = !index.chunks_in_pack(p.rowid)?.is_empty();
            d.gone_packs.push((p.rowid, referenced));
        }
    }
    d.new_packs = remote_packs
        .into_iter()
        .filter(|(id, _)| !local_packs.contains(id))
        .collect();
    d.new_packs.sort();
    d.new_snaps.sort();
    Ok(d)
}

/// Bring the index in `root` up to date with `storage`, or build it when
/// it is missing. Takes the exclusive lock only when something changed.
pub fn sync_index(
    storage: &Arc<dyn Storage>,
    root: &Path,
    progress: &dyn Progress,
) -> Result<SyncStats> {
    let mut stats = SyncStats::default();
    if !root.join(INDEX_FILE).exists() {
        stats.rebuilt = Some(repair_index_on(storage.clone(), root, progress)?);
        return Ok(stats);
    }
    {
        let (index, _) = Index::open(&root.join(INDEX_FILE), root, true)?;
        if diff(&index, &**storage)?.is_empty() {
            return Ok(stats);
        }
    }
    let lock = RepoLock::acquire(root, LockMode::Exclusive, default_wait())?;
    let (index, _) = Index::open(&root.join(INDEX_FILE), root, false)?;
    let d = diff(&index, &**storage)?;
    if d.gone_packs.iter().any(|&(_, referenced)| referenced) {
        drop(index);
        drop(lock);
        stats.gone_packs = d.gone_packs.len() as u64;
        stats.rebuilt = Some(repair_index_on(storage.clone(), root, progress)?);
        return Ok(stats);
    }
    index.in_transaction(|| apply(&index, storage, &d, &mut stats))?;
    Ok(stats)
}

/// Apply the difference in one transaction.
fn apply(index: &Index, storage: &Arc<dyn Storage>, d: &Diff, stats: &mut SyncStats) -> Result<()> {
    for &(rowid, _) in &d.gone_packs {
        index.delete_pack(rowid)?;
        stats.gone_packs += 1;
    }
    for_each_footer(&**storage, &d.new_packs, |id, footer| {
        match footer {
            Ok(f) if f.id == *id => {
                index.insert_pack(&FinishedPack {
                    id: *id,
                    kind: f.kind,
                    size: f.size,
                    entries: f.entries,
                })?;
                stats.new_packs += 1;
            }
            // Deleted since the listing (a gc): nothing to index.
            Err(e) if e.is_not_found() => {}
            Ok(_) => stats.skipped.push((
                storage.describe(&pack_key(id)),
                "its footer hashes to another name".into(),
            )),
            Err(e) => stats
                .skipped
                .push((storage.describe(&pack_key(id)), e.to_string())),
        }
        Ok(())
    })?;
    apply_records(index, &**storage, d)?;
    for id in &d.gone_snaps {
        index.delete_snapshot(id)?;
        stats.gone_snapshots += 1;
    }
    let applied = index.applied_changes()?;
    let (mut changes, bad) = objects::read_changes(&**storage, |n| !applied.contains(n))?;
    stats.skipped.extend(bad);
    add_snapshots(index, storage, &d.new_snaps, &mut changes, stats)?;
    // Changes of snapshots the index already holds.
    let mut rest: Vec<_> = changes
        .into_iter()
        .flat_map(|(id, cs)| cs.into_iter().map(move |c| (id, c)))
        .collect();
    rest.sort_by_key(|(_, c)| c.time_ns);
    for (id, c) in rest {
        crate::repo::apply_to_index(index, &id, &c)?;
        index.mark_applied(&c.name)?;
        stats.new_changes += 1;
    }
    Ok(())
}

/// Condemn the indexed packs of new records; a record that is gone was
/// finished by a gc, which deleted its packs (their rows went with the
/// gone packs) or rescued them (they get their rows back).
fn apply_records(index: &Index, storage: &dyn Storage, d: &Diff) -> Result<()> {
    for mark in &d.new_records {
        let name = &mark[CONDEMNED_DIR.len() + 1..];
        let Some(packs) = objects::read_condemned(storage, name)? else {
            continue;
        };
        for p in packs {
            if let Some(rowid) = index.pack_rowid(&p)? {
                index.condemn_pack(rowid, name)?;
            }
        }
        index.mark_applied(mark)?;
    }
    if !d.gone_records.is_empty() {
        let gone: HashSet<&str> = d
            .gone_records
            .iter()
            .map(|m| &m[CONDEMNED_DIR.len() + 1..])
            .collect();
        for c in index.condemned_packs()? {
            if gone.contains(c.record.as_str()) {
                index.rescue_pack(c.rowid)?;
            }
        }
        for mark in &d.gone_records {
            index.unmark_applied(mark)?;
        }
    }
    Ok(())
}

/// Insert new snapshots with their changes (taken out of `changes`) and
/// load their trees; a snapshot whose trees are not all readable is left
/// for the next sync, and named.
fn add_snapshots(
    index: &Index,
    storage: &Arc<dyn Storage>,
    ids: &[SnapshotId],
    changes: &mut HashMap<SnapshotId, Vec<objects::Change>>,
    stats: &mut SyncStats,
) -> Result<()> {
    // A bucket's index keeps its trees (`Repository::keeps_tree_copies`).
    let mut loader = TreeLoader::new(index, storage.clone(), true);
    let mut held = Vec::new();
    for id in ids {
        let key = objects::snapshot_key(id);
        let bytes = match storage.read(&key) {
            Err(e) if e.is_not_found() => continue,
            r => r?,
        };
        let s = match objects::decode_snapshot(&bytes) {
            Ok(s) if s.id == *id => s,
            Ok(_) => {
                let why = "named for another snapshot".to_string();
                stats.skipped.push((storage.describe(&key), why));
                continue;
            }
            Err(why) => {
                stats.skipped.push((storage.describe(&key), why));
                continue;
            }
        };
        // Taken out of `changes` either way: a snapshot left for the next
        // sync keeps its changes pending with it.
        let mine = changes.remove(id).unwrap_or_default();
        let mark = |stats: &mut SyncStats| -> Result<()> {
            for c in &mine {
                index.mark_applied(&c.name)?;
                stats.new_changes += 1;
            }
            Ok(())
        };
        let Some(s) = objects::apply_changes(s, &mine) else {
            mark(stats)?;
            continue;
        };
        let missing = loader.load_all(s.root, crate::ops::restore::entry_budget(&s))?;
        if !missing.is_empty() {
            loader.unload_last()?;
            // Its writer made its packs durable before this object: data
            // missing now is lost, not late. Kept for `check` to name.
            held.push((*id, missing.join("; ")));
            stats
                .skipped
                .push((storage.describe(&key), missing.join("; ")));
            continue;
        }
        index.insert_snapshot(&s)?;
        mark(stats)?;
        stats.new_snapshots += 1;
    }
    index.set_held_back(&held)
}
