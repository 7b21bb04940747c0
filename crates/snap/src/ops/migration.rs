//! Migration sessions: what `snap guard` does around a migration, for an
//! app that runs its migration itself (inside its own process, where there
//! is no shell and no subprocess to guard).
//!
//! 1. [`begin_migration`] takes a snapshot of the sources, tagged
//!    `pre-migration` and pinned (no retention policy can remove it while
//!    the migration runs). It refuses while an earlier session of the same
//!    sources was never finished: that directory may be half-migrated, and
//!    a new session would take it as "before".
//! 2. The app migrates.
//! 3. [`finish_migration`] with `succeeded`: the snapshot is unpinned and
//!    tagged `migrated` (with `keep`, only the newest N of those stay).
//!    Without: the sources are restored in place to the snapshot (itself
//!    undoable: the restore takes its `pre-restore` snapshot of the failed
//!    state), and the snapshot is unpinned and tagged `rolled-back`.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::ops::create::{CreateOptions, create};
use crate::ops::restore::{RestoreOptions, RestoreStats, restore};
use crate::progress::{Progress, Warning, WarningKind};
use crate::repo::Repository;
use crate::snapshot::Snapshot;

/// The snapshot a session takes before the migration (it always holds the
/// state before, whatever the outcome adds).
pub const TAG_PRE: &str = "pre-migration";
/// Added to the pre-migration snapshot when the migration succeeded and
/// its changes stayed.
pub const TAG_KEPT: &str = "migration-kept";
/// Added to it when the migration failed and was rolled back.
pub const TAG_ROLLED_BACK: &str = "rolled-back";
/// The snapshot of the migrated state ([`snapshot_migrated`]).
pub const TAG_MIGRATED: &str = "migrated";
/// The label tying every snapshot of one session together (the
/// pre-migration snapshot, a rollback's safety snapshot, the migrated
/// state): a random id. snap's own label: its key holds a `:`.
pub const LABEL_RUN: &str = "migration:run";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The migration succeeded; the changes stay.
    Migrated,
    /// The migration failed; the sources are exactly the snapshot again.
    RolledBack,
    /// The migration failed and some entries could not be rolled back
    /// (listed in `restore.failed`).
    RollbackIncomplete,
}

/// How a session ended.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationEnd {
    pub outcome: Outcome,
    /// The pre-migration snapshot.
    pub snapshot: SnapshotId,
    /// The rollback, when there was one.
    pub restore: Option<RestoreStats>,
    /// What the rollback changed back: `"<verb> <path>"`, at most 100.
    pub rolled_back: Vec<String>,
    pub rolled_back_more: usize,
    /// Older `migrated` snapshots forgotten because of `keep`.
    pub forgotten: Vec<SnapshotId>,
}

/// Whether `s` is a session that was begun and never finished.
pub fn is_unfinished(s: &Snapshot) -> bool {
    s.pinned
        && s.tags.iter().any(|t| t == TAG_PRE)
        && !s.tags.iter().any(|t| t == TAG_KEPT || t == TAG_ROLLED_BACK)
}

/// The keys a session of `what` is recorded under: the source as named,
/// whether or not a migration has since turned it into a symlink
/// (canonicalizing would follow that symlink away).
fn source_keys(what: &CreateOptions) -> Vec<PathBuf> {
    if !what.sources.is_empty() {
        return vec![what.source.clone()];
    }
    let as_named = what
        .source
        .parent()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .zip(what.source.file_name())
        .map(|(p, n)| p.join(n));
    let resolved = std::fs::canonicalize(&what.source).ok();
    [as_named, resolved, Some(what.source.clone())]
        .into_iter()
        .flatten()
        .collect()
}

/// The session of `what`'s sources that was begun and never ended (the
/// process that ran it died): its pinned pre-migration snapshot. End it
/// with [`finish_migration`]: `succeeded` false rolls back what the dead
/// session left, true keeps it.
pub fn unfinished_session(repo: &Repository, what: &CreateOptions) -> Result<Option<Snapshot>> {
    let keys = source_keys(what);
    Ok(repo
        .snapshots()?
        .into_iter()
        .find(|s| keys.contains(&s.source) && is_unfinished(s)))
}

fn refuse_unfinished(repo: &Repository, what: &CreateOptions) -> Result<()> {
    match unfinished_session(repo, what)? {
        None => Ok(()),
        Some(s) => Err(Error::UnfinishedMigration {
            dir: source_keys(what).swap_remove(0),
            snapshot: s.id.to_hex(),
            time: s.time_string(),
        }),
    }
}

/// Take the pinned `pre-migration` snapshot of `what` (its tags are kept
/// and `pre-migration` added). An incomplete snapshot (something could not
/// be read) is refused: a rollback could not bring those paths back.
pub fn begin_migration(
    repo: &Repository,
    what: &CreateOptions,
    progress: &dyn Progress,
) -> Result<Snapshot> {
    refuse_unfinished(repo, what)?;
    let mut co = what.clone();
    co.tags.retain(|t| t != TAG_PRE);
    co.tags.push(TAG_PRE.to_string());
    co.pinned = true;
    let run: [u8; 8] = rand::random();
    co.labels
        .insert(LABEL_RUN.to_string(), crate::objects::hex(&run));
    let snap = create(repo, &co, progress)?;
    if !snap.complete {
        repo.set_pinned(&snap.id, false)?;
        return Err(Error::usage(format!(
            "the pre-migration snapshot {} is incomplete ({} path(s) unreadable: {}); a rollback could not restore them, so the migration must not run",
            snap.id.short(),
            snap.unreadable.len(),
            snap.unreadable
                .iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(snap)
}

/// End the session begun with snapshot `id`: keep the changes
/// (`succeeded`) or roll the sources back in place. `keep`: after a
/// success, only the newest N `migrated` snapshots of these sources stay.
pub fn finish_migration(
    repo: &Repository,
    id: &SnapshotId,
    succeeded: bool,
    keep: Option<usize>,
    progress: &dyn Progress,
) -> Result<MigrationEnd> {
    let snap = repo
        .snapshot_by_id(id)?
        .ok_or_else(|| Error::NoSuchSnapshot(id.to_hex()))?;
    if !is_unfinished(&snap) {
        return Err(Error::usage(format!(
            "snapshot {} is not an unfinished migration session (it must be pinned and tagged only {TAG_PRE})",
            snap.id.short()
        )));
    }
    let mut end = MigrationEnd {
        outcome: Outcome::Migrated,
        snapshot: snap.id,
        restore: None,
        rolled_back: Vec::new(),
        rolled_back_more: 0,
        forgotten: Vec::new(),
    };
    // The snapshot keeps `pre-migration` (it holds that state) and gains
    // the outcome.
    let mut tags = snap.tags.clone();
    if succeeded {
        tags.push(TAG_KEPT.to_string());
    } else {
        roll_back(repo, &snap, &mut end, progress)?;
        tags.push(TAG_ROLLED_BACK.to_string());
    }
    repo.set_tags(&snap.id, &tags)?;
    repo.set_pinned(&snap.id, false)?;
    if succeeded && let Some(keep) = keep {
        let mut old: Vec<_> = repo
            .snapshots()?
            .into_iter()
            .filter(|s| s.source == snap.source && s.tags.iter().any(|t| t == TAG_KEPT))
            .filter(|s| !s.pinned)
            .collect();
        old.sort_by_key(|s| std::cmp::Reverse(s.time_ns));
        let gone: Vec<_> = old.into_iter().skip(keep).map(|s| s.id).collect();
        if !gone.is_empty() {
            crate::ops::gc::forget(repo, &gone)?;
            end.forgotten = gone;
        }
    }
    Ok(end)
}

/// After a session that kept its changes: a snapshot of the migrated
/// state, of the same sources with the same excludes, tagged `migrated`
/// and carrying the session's labels (its run id among them).
pub fn snapshot_migrated(
    repo: &Repository,
    pre: &SnapshotId,
    what: &CreateOptions,
    progress: &dyn Progress,
) -> Result<Snapshot> {
    let snap = repo
        .snapshot_by_id(pre)?
        .ok_or_else(|| Error::NoSuchSnapshot(pre.to_hex()))?;
    if !snap.tags.iter().any(|t| t == TAG_KEPT) {
        return Err(Error::usage(format!(
            "snapshot {} is not a migration that kept its changes",
            snap.id.short()
        )));
    }
    let mut co = what.clone();
    co.tags = vec![TAG_MIGRATED.to_string()];
    co.labels = session_labels(&snap);
    co.pinned = false;
    co.parent = Some(snap.id);
    create(repo, &co, progress)
}

/// The labels every snapshot of a session carries: the user's and the run
/// id (not the ones snap derives from each snapshot's databases).
fn session_labels(pre: &Snapshot) -> std::collections::BTreeMap<String, String> {
    pre.labels
        .iter()
        .filter(|(k, _)| !k.contains(':') || k.as_str() == LABEL_RUN)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn roll_back(
    repo: &Repository,
    snap: &Snapshot,
    end: &mut MigrationEnd,
    progress: &dyn Progress,
) -> Result<()> {
    replace_source_symlinks(snap, progress)?;
    let (plan, stats) = restore(
        repo,
        snap,
        &RestoreOptions {
            safety_snapshot: true,
            // The safety snapshot is part of the session: its labels too.
            safety_labels: session_labels(snap),
            // The rollback is the point: what the failed migration left
            // unreadable is named by the warning, not a reason to stop.
            force: true,
            ..RestoreOptions::default()
        },
        progress,
    )?;
    let stats = stats.expect("not a dry run");
    let changes: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|st| Some(format!("{} {}", st.verb()?, st.path().display())))
        .collect();
    end.rolled_back_more = changes.len().saturating_sub(100);
    end.rolled_back = changes.into_iter().take(100).collect();
    end.outcome = if stats.failed.is_empty() {
        Outcome::RolledBack
    } else {
        Outcome::RollbackIncomplete
    };
    end.restore = Some(stats);
    Ok(())
}

/// A migration that replaced a source directory with a symlink: the
/// snapshot was taken of a real directory, so the rollback removes the
/// symlink (never what it points to) and restores the directory.
fn replace_source_symlinks(snap: &Snapshot, progress: &dyn Progress) -> Result<()> {
    let paths: Vec<PathBuf> = if snap.is_multi_source() {
        snap.sources
            .iter()
            .map(|s| PathBuf::from(&s.path))
            .collect()
    } else {
        vec![snap.source.clone()]
    };
    for p in paths {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            progress.warn(&Warning::new(
                WarningKind::Other,
                &p,
                format!(
                    "{}: the migration replaced the directory with a symlink; removing the symlink (not what it points to) to restore the directory",
                    p.display()
                ),
            ));
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}
