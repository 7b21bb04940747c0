//! `snap gc`: apply a retention policy, then sweep what no snapshot uses.
//!
//! Order (each step is safe to interrupt):
//! 1. mark: walk the trees of the snapshots that stay; their chunks go into a
//!    temporary live set (SQLite temp store, not RAM);
//! 2. repack: copy the live chunks of mostly-dead packs into new packs, each
//!    fsynced and renamed into place (not yet referenced);
//! 3. one transaction: drop forgotten snapshots, point moved chunks at the new
//!    packs, drop rows of dead chunks, dead trees and dead packs; commit;
//! 4. unlink the pack files no row references any more, packs no row ever
//!    referenced (left by a crash), and stale temporary files.
//!
//! A crash before 3 leaves new unreferenced packs (removed by the next gc); a
//! crash after 3 leaves unreferenced old packs (likewise). A kept snapshot
//! never loses a chunk: rows move only after their new pack is durable, and
//! files are unlinked only after the commit.

use std::collections::{HashMap, HashSet};

use crate::index::PackRow;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId, SnapshotId, TreeId};
use crate::index::ChunkLocation;
use crate::pack::{Blob, FinishedPack, PackKind, Packer};
use crate::progress::Progress;
use crate::repo::{ChunkReader, Repository};
use crate::retention::{Policy, kept};
use crate::snapshot::Snapshot;
use crate::storage::pack_key;
use crate::tree::Kind;

#[derive(Debug, Clone)]
pub struct GcOptions {
    pub policy: Policy,
    pub dry_run: bool,
    /// Repack a pack when more than this share of its bytes is dead.
    pub repack_dead_share: f64,
    pub time_zone: jiff::tz::TimeZone,
    /// On shared storage, packs are deleted this long after a gc condemned
    /// them, if no snapshot written meanwhile uses them (the bound on how
    /// long a create on another client may run).
    pub grace: std::time::Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            policy: Policy::default(),
            dry_run: false,
            repack_dead_share: 0.3,
            time_zone: jiff::tz::TimeZone::system(),
            grace: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcStats {
    pub dry_run: bool,
    pub snapshots_kept: u64,
    /// Ids of the snapshots removed (or that would be, with --dry-run).
    pub snapshots_removed: Vec<String>,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub packs_written: u64,
    /// Pack files on disk that no index row referenced (crash leftovers).
    pub orphan_packs_deleted: u64,
    /// Shared storage: packs this gc condemned (deleted by a gc after the
    /// grace period), and condemned packs it kept because a snapshot
    /// written meanwhile uses them.
    pub packs_condemned: u64,
    pub packs_rescued: u64,
    pub chunks_removed: u64,
    pub trees_removed: u64,
    /// Bytes of pack files removed minus bytes of new packs written.
    pub reclaimed_bytes: u64,
    pub duration_ms: u64,
}

impl GcStats {
    /// Nothing was (or would be) removed, repacked or reclaimed.
    pub fn did_nothing(&self) -> bool {
        self.snapshots_removed.is_empty()
            && self.packs_deleted == 0
            && self.packs_repacked == 0
            && self.orphan_packs_deleted == 0
            && self.packs_condemned == 0
            && self.chunks_removed == 0
            && self.trees_removed == 0
    }
}

/// What a gc does, decided before it changes anything (what `--dry-run`
/// reports). On storage other clients write to, the same plan is carried
/// out by condemning instead of deleting (`gc_shared`).
pub(crate) struct GcPlan<'s> {
    pub live: Vec<&'s Snapshot>,
    pub dead: Vec<&'s Snapshot>,
    /// The trees the kept snapshots reach; the index's live set holds
    /// their chunks (after `mark`).
    pub live_trees: HashSet<TreeId>,
    /// Packs with nothing live in them.
    pub delete: Vec<PackRow>,
    /// Packs with more dead bytes than `repack_dead_share`.
    pub repack: Vec<PackRow>,
    /// Bytes still live in `repack`.
    pub repack_live_bytes: u64,
    /// Pack objects no index row names (on shared storage: nor any
    /// condemned record), with their sizes.
    pub orphans: Vec<Orphan>,
}

/// Decide: which snapshots the policy keeps, what they reach (marked in
/// the index's live set), and what happens to each pack.
pub(crate) fn plan<'s>(
    repo: &Repository,
    opts: &GcOptions,
    all: &'s [Snapshot],
    shared: bool,
    progress: &dyn Progress,
) -> Result<GcPlan<'s>> {
    progress.phase("gc: mark", None);
    let keep: HashSet<SnapshotId> = if opts.policy.is_empty() {
        all.iter().map(|s| s.id).collect()
    } else {
        kept(all, &opts.policy, &opts.time_zone)
    };
    let (live, dead): (Vec<_>, Vec<_>) = all.iter().partition(|s| keep.contains(&s.id));
    let live_trees = mark(repo, &live, progress)?;
    let index = repo.index();
    let liveness = index.pack_liveness()?;
    let packs = index.packs()?;
    let (delete, repack) = decide_packs(repo, opts, &packs, &liveness)?;
    let repack_live_bytes = repack
        .iter()
        .map(|p| liveness.get(&p.rowid).map_or(0, |l| l.1))
        .sum();
    let orphans = if shared {
        crate::ops::gc_shared::unrecorded_orphans(repo, &packs)?
    } else {
        let referenced: HashSet<PackId> = packs.iter().map(|p| p.id).collect();
        orphan_packs(repo, &referenced)?
    };
    Ok(GcPlan {
        live,
        dead,
        live_trees,
        delete,
        repack,
        repack_live_bytes,
        orphans,
    })
}

pub fn gc(repo: &Repository, opts: &GcOptions, progress: &dyn Progress) -> Result<GcStats> {
    let started = std::time::Instant::now();
    let mut stats = GcStats {
        dry_run: opts.dry_run,
        ..GcStats::default()
    };
    let all = repo.snapshots()?;
    let shared = repo.is_remote() && !opts.dry_run;
    if shared {
        // Condemnations of earlier runs come first: their grace period is
        // judged against every snapshot the synced index knows.
        let all: Vec<&Snapshot> = all.iter().collect();
        stats.reclaimed_bytes =
            crate::ops::gc_shared::finish_condemned(repo, &all, opts.grace, &mut stats, progress)?;
    }
    let plan = plan(repo, opts, &all, shared, progress)?;
    stats.snapshots_kept = plan.live.len() as u64;
    stats.snapshots_removed = plan.dead.iter().map(|s| s.id.to_hex()).collect();
    stats.packs_repacked = plan.repack.len() as u64;
    if shared {
        return crate::ops::gc_shared::execute(repo, plan, stats, started, progress);
    }
    stats.chunks_removed = repo.index().dead_chunk_stats()?.0;
    stats.trees_removed = repo.index().dead_tree_blobs()?;
    stats.packs_deleted = plan.delete.len() as u64;
    stats.orphan_packs_deleted = plan.orphans.len() as u64;
    if opts.dry_run {
        // Estimate: repacked packs keep their live bytes.
        stats.reclaimed_bytes = plan.freed_bytes().saturating_sub(plan.repack_live_bytes);
    } else {
        execute(repo, &plan, &mut stats, progress)?;
    }
    stats.duration_ms = started.elapsed().as_millis() as u64;
    Ok(stats)
}

impl GcPlan<'_> {
    /// Bytes of the packs the plan removes (deleted, repacked, orphans).
    fn freed_bytes(&self) -> u64 {
        let packs: u64 = self.delete.iter().chain(&self.repack).map(|p| p.size).sum();
        packs + self.orphans.iter().map(|o| o.size).sum::<u64>()
    }
}

/// Carry out a plan on storage only this client writes: repack, one
/// transaction, then remove what no row references.
fn execute(
    repo: &Repository,
    plan: &GcPlan,
    stats: &mut GcStats,
    progress: &dyn Progress,
) -> Result<()> {
    // Repack: new packs durable before any row points at them.
    progress.phase("gc: repack", Some(plan.repack_live_bytes));
    let moved = repack_live(repo, &plan.repack, progress)?;
    // The last point where stopping leaves everything as it was (new packs
    // nothing points at are orphans the next gc removes).
    if progress.cancelled() {
        return Err(Error::Interrupted);
    }
    let new_bytes: u64 = moved.iter().map(|f| f.size).sum();
    stats.packs_written = moved.len() as u64;

    // One transaction, after the repository's files record the forgets.
    let records = repo.record_forgotten(&plan.dead.iter().map(|s| s.id).collect::<Vec<_>>())?;
    let session = repo.write()?;
    commit_forgets_and_moves(repo, &records, &plan.dead, &moved)?;
    session.index().delete_dead_chunks()?;
    for p in plan.delete.iter().chain(&plan.repack) {
        session.index().delete_pack(p.rowid)?;
    }
    delete_dead_trees(repo, &plan.live_trees)?;
    session.commit()?;

    // Remove what no row references any more.
    progress.phase("gc: delete", None);
    stats.orphan_packs_deleted = sweep(repo, plan.delete.iter().chain(&plan.repack))?;
    stats.reclaimed_bytes = plan.freed_bytes().saturating_sub(new_bytes);
    Ok(())
}

/// Which packs gc deletes (nothing live in them) and which it repacks
/// (more dead than `repack_dead_share`); condemned packs are not this
/// run's (a dry run on shared storage).
fn decide_packs(
    repo: &Repository,
    opts: &GcOptions,
    packs: &[PackRow],
    liveness: &HashMap<i64, (u64, u64)>,
) -> Result<(Vec<PackRow>, Vec<PackRow>)> {
    let mut delete = Vec::new();
    let mut repack = Vec::new();
    let condemned: HashSet<i64> = repo
        .index()
        .condemned_packs()?
        .iter()
        .map(|c| c.rowid)
        .collect();
    for p in packs.iter().filter(|p| !condemned.contains(&p.rowid)) {
        let (live_n, live_bytes) = liveness.get(&p.rowid).copied().unwrap_or((0, 0));
        if live_n == 0 {
            delete.push(p.clone());
        } else {
            let payload = p.payload();
            let dead_bytes = payload.saturating_sub(live_bytes);
            if payload > 0 && dead_bytes as f64 / payload as f64 > opts.repack_dead_share {
                repack.push(p.clone());
            }
        }
    }
    Ok((delete, repack))
}

/// After gc's commit: the packs it dropped, the orphans the committed
/// index names none of, leftovers of interrupted writes, and snapshot
/// files no snapshot row names. Returns how many orphan packs went.
fn sweep<'p>(repo: &Repository, gone: impl Iterator<Item = &'p PackRow>) -> Result<u64> {
    let index = repo.index();
    let storage = repo.storage();
    for p in gone {
        storage.delete(&pack_key(&p.id))?;
        crate::fault::point("gc unlinked a pack");
    }
    // Orphans are listed again from the committed index: a repack may just
    // have written a pack with exactly the content (and so the name) of an
    // orphan left by an earlier crash, and that pack is referenced now.
    let referenced: HashSet<PackId> = index.packs()?.iter().map(|p| p.id).collect();
    let orphans = orphan_packs(repo, &referenced)?;
    for o in &orphans {
        storage.delete(&pack_key(&o.id))?;
    }
    storage.remove_partial()?;
    repo.remove_stale_images();
    storage.flush()?;
    // Snapshot files the committed index no longer names: forgotten ones,
    // and objects of creates that crashed before their commit (their packs
    // were orphans, removed above).
    let listed: HashSet<SnapshotId> = repo.snapshots()?.iter().map(|s| s.id).collect();
    for id in crate::objects::object_ids(&**storage)? {
        if !listed.contains(&id) {
            crate::objects::delete_snapshot_files(&**storage, &id)?;
            crate::fault::point("gc removed a snapshot object");
        }
    }
    for id in crate::objects::changed_ids(&**storage)? {
        if !listed.contains(&id) {
            crate::objects::delete_snapshot_files(&**storage, &id)?;
        }
    }
    storage.flush()?;
    Ok(orphans.len() as u64)
}

/// In gc's transaction: the forget records applied, the forgotten
/// snapshots' rows dropped, the repacked chunks pointed at their new packs.
pub(crate) fn commit_forgets_and_moves(
    repo: &Repository,
    records: &[String],
    dead_snaps: &[&crate::snapshot::Snapshot],
    moved: &[FinishedPack],
) -> Result<()> {
    let index = repo.index();
    for name in records {
        index.mark_applied(name)?;
    }
    for s in dead_snaps {
        index.delete_snapshot(&s.id)?;
    }
    for f in moved {
        let rowid = index.insert_pack_row(f)?;
        for e in &f.entries {
            index.move_chunk(&e.id, rowid, e)?;
        }
    }
    Ok(())
}

/// In gc's transaction: the rows of trees no kept snapshot reaches.
pub(crate) fn delete_dead_trees(repo: &Repository, live_trees: &HashSet<TreeId>) -> Result<()> {
    let index = repo.index();
    for t in index.tree_ids()? {
        if !live_trees.contains(&t) {
            index.delete_tree(&t)?;
        }
    }
    Ok(())
}

/// Fill the index's live set with every chunk and tree blob `snaps`
/// reach; returns the live trees.
pub(crate) fn mark(
    repo: &Repository,
    snaps: &[&crate::snapshot::Snapshot],
    progress: &dyn Progress,
) -> Result<HashSet<TreeId>> {
    let index = repo.index();
    index.live_reset()?;
    let mut live_trees: HashSet<TreeId> = HashSet::new();
    let mut stack: Vec<TreeId> = snaps.iter().map(|s| s.root).collect();
    while let Some(t) = stack.pop() {
        if !live_trees.insert(t) {
            continue;
        }
        let tree = repo.load_tree(&t)?;
        for e in &tree.entries {
            match e.kind {
                Kind::Dir => stack.extend(e.subtree()),
                Kind::File => index.live_add(e.chunks())?,
                _ => {}
            }
        }
        // The tree's own blob in a tree pack.
        index.live_add(&[ChunkId(t.0)])?;
        progress.entries(1);
        if progress.cancelled() {
            return Err(Error::Interrupted);
        }
    }
    // A live delta needs its base (crate::delta).
    index.live_add_bases()?;
    Ok(live_trees)
}

/// Copy the live blobs of `repack` into new packs (one packer per kind:
/// trees stay in tree packs), verifying each before it is copied so a
/// damaged chunk is never spread. Returns the packs, durable, not yet
/// referenced.
pub(crate) fn repack_live(
    repo: &Repository,
    repack: &[crate::index::PackRow],
    progress: &dyn Progress,
) -> Result<Vec<FinishedPack>> {
    let index = repo.index();
    let (tx, rx) = crossbeam_channel::unbounded();
    let target = repo.config().pack_target_bytes;
    let new_packer = |kind| Packer::new(repo.storage().clone(), kind, target, tx.clone());
    let mut packers = [new_packer(PackKind::Data), new_packer(PackKind::Tree)];
    let mut reader = ChunkReader::new(repo.storage().clone());
    for p in repack {
        if progress.cancelled() {
            return Err(Error::Interrupted);
        }
        let pack = reader.pack(&p.id)?;
        let max = p.kind.blob_max();
        let packer = &mut packers[p.kind as usize];
        let live = index.live_chunks_in_pack(p.rowid)?;
        // Blobs by frame: a group's live members share one (its dead
        // members stay inside it, unlisted).
        for frame in live.chunk_by(|a, b| (a.offset, a.stored_len) == (b.offset, b.stored_len)) {
            let first = &frame[0];
            let stored = pack.read_stored_max(first.offset as u64, first.stored_len, max)?;
            for e in frame {
                // A delta is checked through its base and copied as it is.
                let base = reader.base_of(&e.id, &ChunkLocation::of(p.id, e), index)?;
                let base = base.as_ref().map(|(b, _)| b.as_slice());
                crate::pack::decode_blob(pack.ids(), &p.id, e, &stored, max, base)?;
            }
            let blobs: Vec<Blob> = frame.iter().map(Blob::from).collect();
            packer.add_frame(&blobs, &stored)?;
            progress.bytes(stored.len() as u64);
        }
    }
    for packer in packers {
        packer.finish()?;
    }
    drop(tx);
    rx.into_iter().collect()
}

/// A pack object no index row references: renamed into place by an
/// interrupted create or gc. Safe to delete only under the exclusive lock.
pub(crate) struct Orphan {
    pub id: PackId,
    pub size: u64,
}

fn orphan_packs(repo: &Repository, referenced: &HashSet<PackId>) -> Result<Vec<Orphan>> {
    Ok(repo
        .pack_objects()?
        .into_iter()
        .filter(|(id, _)| !referenced.contains(id))
        .map(|(id, size)| Orphan { id, size })
        .collect())
}

/// Remove snapshots by id (no sweep: `gc` reclaims the space). A pinned
/// snapshot is refused, and then nothing is forgotten.
pub fn forget(repo: &Repository, ids: &[SnapshotId]) -> Result<()> {
    for id in ids {
        match repo.snapshot_by_id(id)? {
            None => return Err(Error::NoSuchSnapshot(id.to_hex())),
            Some(s) if s.pinned => {
                return Err(Error::usage(format!(
                    "snapshot {} is pinned; `snap unpin {}` first",
                    s.id.short(),
                    s.id.short()
                )));
            }
            Some(_) => {}
        }
    }
    let records = repo.record_forgotten(ids)?;
    let session = repo.write()?;
    for name in &records {
        session.index().mark_applied(name)?;
    }
    for id in ids {
        if !session.index().delete_snapshot(id)? {
            return Err(Error::NoSuchSnapshot(id.to_hex()));
        }
    }
    session.commit()
}

pub fn set_pinned(repo: &Repository, id: &SnapshotId, pinned: bool) -> Result<()> {
    if !repo.set_pinned(id, pinned)? {
        return Err(Error::NoSuchSnapshot(id.to_hex()));
    }
    Ok(())
}
