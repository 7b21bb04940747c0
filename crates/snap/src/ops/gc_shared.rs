//! gc on storage that other clients write to (a bucket): nothing another
//! client may still need is deleted at once (docs/design.md, "Several
//! clients on one bucket").
//!
//! 1. Finish old condemnations: for each record older than the grace
//!    period, mark every snapshot the synced index knows (before this
//!    run's retention), then delete each of its packs that holds no live
//!    chunk, and rescue the others (a snapshot written meanwhile uses
//!    them); then delete the record.
//! 2. Condemn: mark the snapshots that stay, repack mostly-dead packs, and
//!    record the dead, repacked and orphan packs as condemned (an object,
//!    before the index commit). Their chunk rows leave the index's chunk
//!    table, so no create on any client that has seen the record dedups
//!    against them.
//! 3. Remove the snapshot objects this run forgot, and those forgotten
//!    earlier; never an object the index does not know (it may be a
//!    snapshot committed since the sync).

use std::collections::HashSet;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::id::{PackId, SnapshotId};
use crate::objects;
use crate::ops::gc::{
    GcPlan, GcStats, Orphan, commit_forgets_and_moves, delete_dead_trees, mark, repack_live,
};
use crate::ops::sync::record_mark;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::storage::pack_key;

/// Carry out `plan` on shared storage: repack, then condemn what the plan
/// deletes, repacks and finds orphaned (deleted by a later gc after the
/// grace period), in one transaction after the condemned record is
/// durable; then remove forgotten snapshot objects.
pub(crate) fn execute(
    repo: &Repository,
    plan: GcPlan,
    mut stats: GcStats,
    started: std::time::Instant,
    progress: &dyn Progress,
) -> Result<GcStats> {
    progress.phase("gc: repack", Some(plan.repack_live_bytes));
    let moved = repack_live(repo, &plan.repack, progress)?;
    if progress.cancelled() {
        return Err(Error::Interrupted);
    }
    // A repack may have written exactly the pack an interrupted gc left
    // (indexed since by a sync, with no rows, or not): it holds the moved
    // chunks now, and is neither deleted nor condemned.
    let written: HashSet<PackId> = moved.iter().map(|f| f.id).collect();
    let mut delete = plan.delete.clone();
    delete.retain(|p| !written.contains(&p.id));
    let orphans: Vec<PackId> = plan
        .orphans
        .iter()
        .map(|o| o.id)
        .filter(|id| !written.contains(id))
        .collect();
    stats.packs_written = moved.len() as u64;
    let doomed: Vec<PackId> = delete
        .iter()
        .chain(&plan.repack)
        .map(|p| p.id)
        .chain(orphans.iter().copied())
        .collect();
    stats.packs_condemned = doomed.len() as u64;
    let record = match doomed.is_empty() {
        true => None,
        false => Some(objects::write_condemned(&**repo.storage(), &doomed)?),
    };
    let dead_ids: Vec<SnapshotId> = plan.dead.iter().map(|s| s.id).collect();
    let forgets = repo.record_forgotten(&dead_ids)?;
    let session = repo.write()?;
    commit_forgets_and_moves(repo, &forgets, &plan.dead, &moved)?;
    if let Some(name) = &record {
        for p in delete.iter().chain(&plan.repack) {
            session.index().condemn_pack(p.rowid, name)?;
        }
        session.index().mark_applied(&record_mark(name))?;
    }
    // Dead chunk rows of packs that stay are kept: a create on another
    // client may have used them since this client's sync.
    delete_dead_trees(repo, &plan.live_trees)?;
    session.commit()?;
    remove_forgotten_objects(repo, &dead_ids)?;
    stats.reclaimed_bytes = stats
        .reclaimed_bytes
        .saturating_sub(moved.iter().map(|f| f.size).sum());
    stats.duration_ms = started.elapsed().as_millis() as u64;
    Ok(stats)
}

/// Step 1; returns the bytes of the packs deleted.
pub(crate) fn finish_condemned(
    repo: &Repository,
    all: &[&Snapshot],
    grace: Duration,
    stats: &mut GcStats,
    progress: &dyn Progress,
) -> Result<u64> {
    let storage = repo.storage();
    let now = jiff::Timestamp::now().as_nanosecond() as i64;
    let ripe: Vec<String> = objects::condemned_records(&**storage)?
        .into_iter()
        .filter(|(_, t)| now.saturating_sub(*t) >= grace.as_nanos() as i64)
        .map(|(n, _)| n)
        .collect();
    if ripe.is_empty() {
        return Ok(0);
    }
    // Live: every snapshot this client knows, including the ones this run
    // is about to forget (a create running now may have started from one).
    mark(repo, all, progress)?;
    let index = repo.index();
    let sizes: std::collections::HashMap<i64, u64> =
        index.packs()?.iter().map(|p| (p.rowid, p.size)).collect();
    let mut freed = 0;
    for name in ripe {
        let Some(packs) = objects::read_condemned(&**storage, &name)? else {
            continue;
        };
        let (mut gone, mut rescued) = (Vec::new(), Vec::new());
        for p in &packs {
            match index.pack_rowid(p)? {
                Some(r) if index.pack_has_live(r)? => rescued.push(r),
                Some(r) => {
                    storage.delete(&pack_key(p))?;
                    freed += sizes.get(&r).copied().unwrap_or(0);
                    gone.push(r);
                }
                // Never indexed, by any snapshot since: a create's leftover.
                None => {
                    storage.delete(&pack_key(p))?;
                    stats.orphan_packs_deleted += 1;
                }
            }
            crate::fault::point("gc deleted a condemned pack");
        }
        let session = repo.write()?;
        for &r in &rescued {
            session.index().rescue_pack(r)?;
        }
        for &r in &gone {
            session.index().delete_pack(r)?;
        }
        session.index().unmark_applied(&record_mark(&name))?;
        session.commit()?;
        storage.delete(&format!("{}/{name}", objects::CONDEMNED_DIR))?;
        stats.packs_deleted += gone.len() as u64;
        stats.packs_rescued += rescued.len() as u64;
    }
    storage.flush()?;
    Ok(freed)
}

/// Pack objects no index row names and no condemned record lists yet:
/// uploads of a create that has not committed (or never will).
pub(crate) fn unrecorded_orphans(
    repo: &Repository,
    packs: &[crate::index::PackRow],
) -> Result<Vec<Orphan>> {
    let storage = repo.storage();
    let mut known: HashSet<PackId> = packs.iter().map(|p| p.id).collect();
    for (name, _) in objects::condemned_records(&**storage)? {
        known.extend(objects::read_condemned(&**storage, &name)?.unwrap_or_default());
    }
    Ok(repo
        .pack_objects()?
        .into_iter()
        .filter(|(id, _)| !known.contains(id))
        .map(|(id, size)| Orphan { id, size })
        .collect())
}

/// The objects of snapshots this run forgot, and of snapshots forgotten
/// before (an applied forget, no row); never those of unknown snapshots.
fn remove_forgotten_objects(repo: &Repository, dead: &[SnapshotId]) -> Result<()> {
    let storage = repo.storage();
    let listed: HashSet<SnapshotId> = repo.snapshots()?.iter().map(|s| s.id).collect();
    let applied: HashSet<SnapshotId> = repo
        .index()
        .applied_changes()?
        .iter()
        .filter_map(|n| n.get(..64).and_then(SnapshotId::from_hex))
        .collect();
    let mut gone: Vec<SnapshotId> = dead.to_vec();
    for id in objects::object_ids(&**storage)? {
        if !listed.contains(&id) && applied.contains(&id) && !gone.contains(&id) {
            gone.push(id);
        }
    }
    for id in &gone {
        objects::delete_snapshot_files(&**storage, id)?;
        crate::fault::point("gc removed a snapshot object");
    }
    storage.flush()
}
