//! `snap restore`: make a directory exactly equal to a snapshot.
//!
//! Plan, then execute. The plan ([`plan`]) compares the snapshot with what
//! is on disk: entries that already match are left alone (they keep their
//! inode), files whose content differs are rewritten, entries the snapshot
//! lacks are deleted, metadata is reset. Execution ([`execute`]) works from
//! directory handles, never from paths, so nothing done to the target
//! meanwhile can redirect a change outside it (see `crate::confined`):
//!
//! 1. delete extra entries and entries of the wrong kind;
//! 2. create missing directories (mode 0700 until their final metadata);
//! 3. write new file contents to temporary files in their final directory
//!    (in parallel), make them durable with one `syncfs` per filesystem,
//!    rename each over its real name, and sync again: a crash leaves every
//!    file either old or new, never torn, and a rerun finishes the job
//!    (in batches of 4,096 files; a batch's `syncfs` runs while the next
//!    batch is written, and its renames wait for it);
//! 4. symlinks, special files, hard links, metadata fixes;
//! 5. directory metadata, children before parents.

mod execute;
mod fill;
mod plan;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::ops::create::{CreateOptions, SourceSpec, create};
use crate::progress::{Progress, Warning, WarningKind};
use crate::repo::Repository;
use crate::snapshot::{Snapshot, SourceRoot};
use crate::tree::{Kind, Payload};

pub use plan::{MAX_DEPTH, entry_budget, file_matches};

/// Paths in JSON as text, names that are not UTF-8 with U+FFFD in place
/// of their bad bytes (serde refuses them, which failed a whole plan).
mod lossy {
    use std::path::PathBuf;

    use serde::Serializer;
    use serde::ser::SerializeSeq;

    pub fn path<S: Serializer>(p: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string_lossy())
    }

    pub fn paths<S: Serializer>(ps: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(ps.len()))?;
        for p in ps {
            seq.serialize_element(&p.to_string_lossy())?;
        }
        seq.end()
    }

    pub fn pairs<S: Serializer>(ps: &[(PathBuf, String)], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(ps.len()))?;
        for (p, why) in ps {
            seq.serialize_element(&(p.to_string_lossy(), why))?;
        }
        seq.end()
    }
}

/// Prefix of the temporary files restore writes; leftovers from an
/// interrupted restore are extra entries and the next restore removes them.
pub const TEMP_PREFIX: &str = ".snap-tmp-";

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Where to restore; `None` restores into the snapshot's own source.
    pub target: Option<PathBuf>,
    /// Restore only this path of the snapshot (relative to its root).
    pub subpath: Option<PathBuf>,
    pub dry_run: bool,
    /// Compare file contents by hash instead of trusting size and mtime.
    pub verify: bool,
    /// Snapshot the current state first (when anything would change).
    pub safety_snapshot: bool,
    /// Go on even when the safety snapshot could not store everything.
    pub force: bool,
    /// For an in-place restore (no `target`): the directories the caller
    /// knows as its own sources (its config's, its record of what it
    /// snapshotted: see `crate::known_sources`), never the repository's
    /// word alone. `Some`: a snapshot whose recorded source is not among
    /// them is refused and needs `target`. `None`: the caller vouches for
    /// the snapshot (it took it, as a migration session does).
    pub known_sources: Option<Vec<PathBuf>>,
    /// Labels the safety snapshot carries besides its tag (a migration's
    /// rollback gives it the session's labels).
    pub safety_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    Delete {
        #[serde(serialize_with = "lossy::path")]
        path: PathBuf,
        dir: bool,
    },
    MakeDir {
        #[serde(serialize_with = "lossy::path")]
        path: PathBuf,
    },
    Write {
        #[serde(serialize_with = "lossy::path")]
        path: PathBuf,
        bytes: u64,
        #[serde(skip)]
        meta: Meta,
    },
    Symlink {
        #[serde(serialize_with = "lossy::path")]
        path: PathBuf,
        #[serde(skip)]
        meta: Meta,
    },
    Special {
        #[serde(serialize_with = "lossy::path")]
        path: PathBuf,
        #[serde(skip)]
        meta: Meta,
    },
    Link {
        #[serde(serialize_with = "lossy::path")]
        path: PathBuf,
        #[serde(serialize_with = "lossy::path")]
        to: PathBuf,
    },
    FixMeta {
        #[serde(serialize_with = "lossy::path")]
        path: PathBuf,
        #[serde(skip)]
        meta: Meta,
        /// Device and inode of the entry the plan saw: the metadata is set
        /// on that inode's handle, or on nothing.
        #[serde(skip)]
        seen: (u64, u64),
    },
    DirMeta {
        #[serde(serialize_with = "lossy::path")]
        path: PathBuf,
        #[serde(skip)]
        meta: Meta,
        /// Only the directory's own metadata differs (counted as a fix).
        #[serde(skip)]
        fix: bool,
    },
}

/// What a step needs of its snapshot entry (the name is in its path).
/// Kept small: a restore plan holds one per file it writes.
#[derive(Debug, Clone)]
pub struct Meta {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub payload: Payload,
    pub xattrs: crate::xattr::Xattrs,
    /// The snapshot recorded this file as one of several hard links.
    pub linked: bool,
}

impl Meta {
    fn chunks(&self) -> &[crate::id::ChunkId] {
        match &self.payload {
            Payload::Chunks(c) => c,
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PlanSummary {
    pub write_files: u64,
    pub write_bytes: u64,
    pub delete_entries: u64,
    pub create_dirs: u64,
    pub links: u64,
    pub symlinks: u64,
    pub specials: u64,
    pub fix_metadata: u64,
    pub unchanged_files: u64,
    pub unchanged_bytes: u64,
}

/// What restore will do. `steps` are in execution order within each phase.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub snapshot: String,
    #[serde(serialize_with = "lossy::path")]
    pub target: PathBuf,
    /// Every directory the plan makes equal to a part of the snapshot.
    #[serde(serialize_with = "lossy::paths")]
    pub targets: Vec<PathBuf>,
    /// The directories every change is confined to (a source's directory;
    /// with `--path`, the source holding that path).
    #[serde(skip)]
    pub roots: Vec<PathBuf>,
    pub steps: Vec<Step>,
    /// Files written whole into directories the restore creates, when the
    /// plan was made only to be executed ([`restore`]): a `Write` step
    /// each in a plan from [`plan_restore`]. Kept as their indexes in
    /// their trees, so that a restore of millions of files into an empty
    /// directory does not hold a step per file.
    #[serde(skip)]
    pub(crate) fresh: Vec<FreshFiles>,
    pub summary: PlanSummary,
    /// Entries the snapshot could not store (unreadable at snapshot time):
    /// left as they are on disk.
    #[serde(serialize_with = "lossy::paths")]
    pub not_in_snapshot: Vec<PathBuf>,
    /// Directories whose stored tree is damaged or missing: nothing under
    /// them is planned, so whatever is on disk there stays as it is.
    #[serde(serialize_with = "lossy::pairs")]
    pub damaged: Vec<(PathBuf, String)>,
    /// Entries on disk the restore will not remove or replace, and why (a
    /// mount point, a directory holding the repository).
    #[serde(serialize_with = "lossy::pairs")]
    pub refused: Vec<(PathBuf, String)>,
}

/// Files of one directory the restore creates: entries `entries` of tree
/// `tree`, each written whole to `dir`/its name.
#[derive(Debug)]
pub(crate) struct FreshFiles {
    pub dir: PathBuf,
    pub tree: crate::id::TreeId,
    pub entries: Vec<u32>,
}

impl Plan {
    pub fn changes_anything(&self) -> bool {
        !self.steps.is_empty() || !self.fresh.is_empty()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreStats {
    pub written_files: u64,
    pub written_bytes: u64,
    pub deleted_entries: u64,
    pub created_dirs: u64,
    pub links: u64,
    pub symlinks: u64,
    pub specials: u64,
    pub fixed_metadata: u64,
    pub unchanged_files: u64,
    /// Entries that could not be restored, with the reason.
    pub failed: Vec<(String, String)>,
    /// Whether any of `failed` is due to damage in the repository.
    pub damaged: bool,
    pub safety_snapshot: Option<String>,
    pub duration_ms: u64,
}

/// Where a source of `snap` is restored to: its own path, or under --target
/// (a snapshot of several sources puts each in `<target>/<name>`).
fn source_target(snap: &Snapshot, src: &SourceRoot, opts: &RestoreOptions) -> PathBuf {
    match (&opts.target, src.name.is_empty()) {
        (Some(t), true) => t.clone(),
        (Some(t), false) => t.join(&src.name),
        (None, true) => snap.source.clone(),
        (None, false) => PathBuf::from(&src.path),
    }
}

/// `--path` as plain names: `.` parts dropped, `..` and absolute refused.
fn normalize_subpath(sub: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in sub.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(Error::usage(format!(
                    "{}: --path must be relative to the snapshot root, without `..`",
                    sub.display()
                )));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// A `--target` that is a symlink names the directory it points to (the
/// user chose it); below the target, no symlink is ever followed.
fn resolve_target(opts: &RestoreOptions) -> Result<RestoreOptions> {
    let mut o = opts.clone();
    if let Some(t) = &opts.target {
        check_target_symlinks(t)?;
        if fs::symlink_metadata(t).is_ok_and(|m| m.file_type().is_symlink()) {
            o.target = Some(fs::canonicalize(t).at(t)?);
        }
    }
    Ok(o)
}

/// A `--target` is followed through a symlink only where the kernel's
/// `protected_symlinks` would let the one restoring follow it: a symlink
/// in a sticky, world-writable directory (`/tmp`) must belong to the one
/// restoring or to the directory's owner, and the last component may be a
/// symlink only of the one restoring or of root. Otherwise another user
/// could plant `/tmp/NAME -> /root/dir` and have root's restore empty it.
fn check_target_symlinks(target: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let euid = rustix::process::geteuid().as_raw();
    let mut prefix = PathBuf::new();
    let parts: Vec<_> = target.components().collect();
    for (i, c) in parts.iter().enumerate() {
        prefix.push(c);
        let Ok(m) = fs::symlink_metadata(&prefix) else {
            return Ok(()); // the rest does not exist yet: created, not followed
        };
        if !m.file_type().is_symlink() {
            continue;
        }
        let refuse = |why: &str| {
            Err(Error::BadSource {
                path: prefix.clone(),
                reason: format!(
                    "is a symlink owned by uid {} {why}; a restore does not follow it (name the directory it points to)",
                    m.uid()
                ),
            })
        };
        let parent = prefix.parent().unwrap_or(Path::new("/"));
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(pm) = fs::metadata(parent) {
            let sticky_shared = pm.mode() & 0o1002 == 0o1002;
            if sticky_shared && m.uid() != euid && m.uid() != pm.uid() {
                return refuse("in a sticky, world-writable directory");
            }
        }
        if i + 1 == parts.len() && m.uid() != euid && m.uid() != 0 {
            return refuse("(not the user restoring, nor root)");
        }
    }
    Ok(())
}

/// Restore `snap` as `opts` say. With `dry_run`, returns the plan only.
pub fn restore(
    repo: &Repository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<(Plan, Option<RestoreStats>)> {
    // A plan only to be executed is compact; a dry run lists every step.
    let plan = plan::plan(repo, snap, &resolve_target(opts)?, !opts.dry_run)?;
    if opts.dry_run {
        return Ok((plan, None));
    }
    let stats = execute_restore(repo, snap, &plan, opts, progress)?;
    Ok((plan, Some(stats)))
}

/// What a restore of `snap` with `opts` would do, changing nothing.
pub fn plan_restore(repo: &Repository, snap: &Snapshot, opts: &RestoreOptions) -> Result<Plan> {
    plan::plan(repo, snap, &resolve_target(opts)?, false)
}

/// Carry out `plan` (from [`plan_restore`] with the same `snap` and
/// `opts`; `dry_run` is ignored). Whatever changed on disk since the plan
/// was made is found again step by step: an entry that is no longer what
/// the plan saw fails alone and is named in `failed`, and nothing is ever
/// done outside the plan's roots.
///
/// Cancellation ([`Progress::cancelled`]) is honoured before the safety
/// snapshot, before the first change and between batches of file writes;
/// a restore cancelled after it began leaves the target partly restored
/// (every file old or new, never torn): run it again to finish, or restore
/// the safety snapshot to undo.
pub fn execute_restore(
    repo: &Repository,
    snap: &Snapshot,
    plan: &Plan,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let started = Instant::now();
    if plan.snapshot != snap.id.to_hex() {
        return Err(Error::usage(format!(
            "the plan is for snapshot {}, not {}",
            plan.snapshot,
            snap.id.short()
        )));
    }
    let opts = &resolve_target(opts)?;
    let mut stats = RestoreStats {
        unchanged_files: plan.summary.unchanged_files,
        ..RestoreStats::default()
    };
    for (path, why) in &plan.damaged {
        progress.warn(&Warning::new(
            WarningKind::NotRestored,
            path,
            format!("{}: not restored: {why}", path.display()),
        ));
        stats.failed.push((path.display().to_string(), why.clone()));
        stats.damaged = true;
    }
    for (path, why) in &plan.refused {
        progress.warn(&Warning::new(
            WarningKind::NotRestored,
            path,
            format!("{}: left in place: {why}", path.display()),
        ));
        stats
            .failed
            .push((path.display().to_string(), format!("left in place: {why}")));
    }
    if progress.cancelled() {
        return Err(Error::Interrupted);
    }
    if opts.safety_snapshot && plan.changes_anything() {
        // Snapshot what is about to change, so the restore can be undone.
        if let Some(safety) = safety_snapshot(repo, snap, plan, opts, progress)? {
            stats.safety_snapshot = Some(safety.id.to_hex());
            if !safety.complete {
                let paths: Vec<String> = safety.unreadable.iter().map(|(p, _)| p.clone()).collect();
                if !opts.force {
                    return Err(Error::SafetySnapshotIncomplete {
                        snapshot: safety.id.short(),
                        paths,
                    });
                }
                progress.warn(&Warning::general(format!(
                    "--force: the safety snapshot {} could not store {}; if the restore changes them they cannot be brought back",
                    safety.id.short(),
                    paths.join(", ")
                )));
            }
        }
    }
    crate::fault::pause("restore planned");
    if progress.cancelled() {
        return Err(Error::Interrupted);
    }
    execute::execute(repo, plan, &mut stats, progress)?;
    stats.duration_ms = started.elapsed().as_millis() as u64;
    Ok(stats)
}

/// Snapshot the directories a restore is about to change (tagged
/// `pre-restore`). A new or empty target has nothing to protect.
fn safety_snapshot(
    repo: &Repository,
    snap: &Snapshot,
    plan: &Plan,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<Option<Snapshot>> {
    let non_empty = |d: &Path| -> Result<bool> {
        let is_dir = fs::symlink_metadata(d).is_ok_and(|m| m.is_dir());
        Ok(is_dir && !crate::local_dir::is_empty_dir(d).at(d)?)
    };
    let mut co = CreateOptions {
        tags: vec![crate::spec::SAFETY_TAG.to_string()],
        labels: opts.safety_labels.clone(),
        ..CreateOptions::default()
    };
    if snap.is_multi_source() {
        for src in &snap.sources {
            let dir = source_target(snap, src, opts);
            if plan.targets.contains(&dir) && non_empty(&dir)? {
                co.sources.push(SourceSpec {
                    name: src.name.clone(),
                    path: dir,
                    exclude: src.exclude.clone(),
                });
            }
        }
        if co.sources.is_empty() {
            return Ok(None);
        }
        co.source = snap.source.clone();
    } else {
        // The source's directory (the root every change is confined to);
        // with --path that is the directory the restored path lies in.
        let dir = plan.roots.first().cloned();
        match dir {
            Some(d) if non_empty(&d)? => co.source = d,
            _ => return Ok(None),
        }
        co.exclude = snap.excludes().to_vec();
    }
    create(repo, &co, progress).map(Some)
}

impl Step {
    pub fn path(&self) -> &Path {
        match self {
            Step::Delete { path, .. }
            | Step::MakeDir { path }
            | Step::Write { path, .. }
            | Step::Symlink { path, .. }
            | Step::Special { path, .. }
            | Step::Link { path, .. }
            | Step::FixMeta { path, .. }
            | Step::DirMeta { path, .. } => path,
        }
    }

    /// A short verb for what the step does (`DirMeta` is bookkeeping: None).
    pub fn verb(&self) -> Option<&'static str> {
        Some(match self {
            Step::Delete { .. } => "delete",
            Step::MakeDir { .. } => "mkdir",
            Step::Write { .. } => "write",
            Step::Symlink { .. } => "symlink",
            Step::Special { .. } => "special",
            Step::Link { .. } => "link",
            Step::FixMeta { .. } => "metadata",
            Step::DirMeta { .. } => return None,
        })
    }
}
