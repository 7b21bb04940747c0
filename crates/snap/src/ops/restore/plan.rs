//! The restore planner: compare a snapshot with what is on disk and list
//! the steps that make the disk equal to it. It only reads.
//!
//! Values read from the repository are bounded before they drive any work:
//! trees nest at most [`MAX_DEPTH`] deep, and a snapshot expands to at most
//! the number of entries its own statistics record; a tree graph that
//! expands beyond that (a crafted or damaged one) is damage.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Meta, Plan, PlanSummary, RestoreOptions, Step, normalize_subpath, source_target};
use crate::chunker::{Chunker, ChunkerParams};
use crate::error::{Error, IoContext, Result};
use crate::exclude::Excludes;
use crate::id::TreeId;
use crate::ops::ls::lookup;
use crate::repo::Repository;
use crate::snapshot::{RootMeta, Snapshot, SourceRoot};
use crate::source::kind_of;
use crate::tree::{Entry, Kind, Payload, Tree, flags};

/// Deepest nesting of directories a restore follows (PATH_MAX of 4096
/// bytes allows at most 2048 on Linux; real trees stay far below).
pub const MAX_DEPTH: usize = 1024;

/// The entries a snapshot may expand to: what its statistics count, plus
/// entries they do not (unreadable directories, the roots of sources).
pub fn entry_budget(snap: &Snapshot) -> u64 {
    let s = &snap.stats;
    s.files
        .saturating_add(s.dirs)
        .saturating_add(s.symlinks)
        .saturating_add(s.others)
        .saturating_add(snap.unreadable.len() as u64)
        .saturating_add(snap.sources.len() as u64 + 1)
}

/// Device and inode of the repository directory and of every directory
/// above it: a restore may delete none of them.
pub(super) fn protected_dirs(repo: &Repository) -> Result<HashSet<(u64, u64)>> {
    let mut out = HashSet::new();
    for place in repo.places() {
        let root = fs::canonicalize(&place).at(&place)?;
        for dir in root.ancestors() {
            let m = fs::metadata(dir).at(dir)?;
            out.insert((m.dev(), m.ino()));
        }
    }
    Ok(out)
}

/// An in-place restore goes only where the user's side says: the recorded
/// source must be absolute and, when the caller gives the sources it
/// knows, one of them (a repository someone else can write must not
/// choose which of the user's directories is emptied and refilled).
fn check_in_place_source(snap: &Snapshot, base: &Path, known: Option<&[PathBuf]>) -> Result<()> {
    let refuse = |reason: String| {
        Err(Error::BadSource {
            path: base.to_path_buf(),
            reason: format!(
                "{reason}; restore snapshot {} only into a directory named with --target",
                snap.id.short()
            ),
        })
    };
    if !base.is_absolute() {
        return refuse("the snapshot records a source path that is not absolute".into());
    }
    if let Some(known) = known
        && !known.iter().any(|k| k == base)
    {
        return refuse(
            "not a source this client snapshotted into this repository (nor one of the config file's sources)"
                .into(),
        );
    }
    Ok(())
}

/// An in-place restore trusts the snapshot's recorded source path only
/// when it still names a real directory of the one restoring (or, for
/// root, of the owner the snapshot recorded): a symlink there now, or
/// someone else's directory, needs `--target` to name it.
fn check_recorded_source(path: &Path, recorded_uid: u32) -> Result<()> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let refuse = |reason: String| {
        Err(Error::BadSource {
            path: path.to_path_buf(),
            reason: format!(
                "{reason}; restore into it only by naming it with --target {}",
                path.display()
            ),
        })
    };
    if m.file_type().is_symlink() {
        return refuse("the snapshot's source directory is now a symlink".into());
    }
    if !m.is_dir() {
        return refuse("the snapshot's source is now not a directory".into());
    }
    let euid = rustix::process::geteuid().as_raw();
    let owner_ok = m.uid() == euid || (euid == 0 && m.uid() == recorded_uid);
    if !owner_ok {
        return refuse(format!(
            "the directory belongs to uid {}, not to the user restoring (uid {euid})",
            m.uid()
        ));
    }
    Ok(())
}

/// Every directory from `base` down to `target`'s parent must be a real
/// directory or missing (then made, top down; returned in that order): a
/// restore never follows a symlink inside its target.
fn check_parents(base: &Path, target: &Path) -> Result<Vec<PathBuf>> {
    let rel = target.strip_prefix(base).unwrap_or(Path::new(""));
    let mut dir = base.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    let mut missing = Vec::new();
    for c in &parents[..parents.len().saturating_sub(1)] {
        dir.push(c);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::BadSource {
                    path: dir,
                    reason: "is a symlink; restore does not follow symlinks inside its target"
                        .into(),
                });
            }
            Ok(_) => {
                return Err(Error::BadSource {
                    path: dir,
                    reason: "is not a directory, but the restored path is below it".into(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(dir.clone()),
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    Ok(missing)
}

/// The plan of restoring `snap` as `opts` say. `compact`: the plan is
/// only for executing, so the files of directories the restore creates are
/// kept as their indexes in their trees (`Plan::fresh`), not as steps.
pub fn plan(
    repo: &Repository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    compact: bool,
) -> Result<Plan> {
    let opts = &super::resolve_target(opts)?;
    let mut p = Planner::new(repo, snap, opts.verify, compact)?;
    let sub = match &opts.subpath {
        Some(s) => normalize_subpath(s)?,
        None => None,
    };
    let sub = sub.as_deref();
    let multi = snap.is_multi_source();
    let sources = pick_sources(snap, sub)?;
    let root_tree = if multi {
        Some(repo.load_tree(&snap.root)?)
    } else {
        None
    };
    let mut targets = Vec::new();
    let mut roots = Vec::new();
    if multi
        && let Some(t) = &opts.target
        && fs::symlink_metadata(t).is_err()
    {
        // The directory that holds the sources; not itself in the snapshot.
        p.steps.push(Step::MakeDir { path: t.clone() });
        p.summary.create_dirs += 1;
    }
    for src in &sources {
        let base = source_target(snap, src, opts);
        let (tree, meta) = source_tree(repo, snap, root_tree.as_ref(), src)?;
        if opts.target.is_none() {
            check_in_place_source(snap, &base, opts.known_sources.as_deref())?;
            check_recorded_source(&base, meta.uid)?;
        }
        p.root = base.clone();
        p.excludes = if src.exclude.is_empty() {
            None
        } else {
            Some(Excludes::new(&src.exclude).map_err(Error::usage)?)
        };
        // The part of the snapshot under this source, relative to its root.
        let rel: Option<PathBuf> = match (multi, sub) {
            (true, Some(s)) => Some(s.components().skip(1).collect::<PathBuf>())
                .filter(|r| !r.as_os_str().is_empty()),
            (true, None) => None,
            (false, s) => s.map(Path::to_path_buf),
        };
        match &rel {
            None => p.plan_root(&tree, meta, &base)?,
            Some(rel) => {
                let in_snapshot = |a: &Path| {
                    if multi {
                        Path::new(&src.name).join(a)
                    } else {
                        a.to_path_buf()
                    }
                };
                p.plan_subpath(snap, &base, rel, &in_snapshot)?;
            }
        }
        targets.push(match rel {
            Some(rel) => base.join(rel),
            None => base.clone(),
        });
        roots.push(base);
    }
    // The steps grew by doubling: give the slack back before the restore
    // (a step per file, up to half of it unused).
    p.steps.shrink_to_fit();
    Ok(Plan {
        snapshot: snap.id.to_hex(),
        target: if multi {
            opts.target.clone().unwrap_or_else(|| targets[0].clone())
        } else {
            targets[0].clone()
        },
        targets,
        roots,
        steps: p.steps,
        fresh: p.fresh,
        summary: p.summary,
        not_in_snapshot: p.not_in_snapshot,
        damaged: p.damaged,
        refused: p.refused,
    })
}

/// The sources of `snap` a restore of `sub` covers: the one unnamed source
/// of a snapshot of one directory, else the named sources `sub` starts
/// with (all of them without `sub`).
fn pick_sources(snap: &Snapshot, sub: Option<&Path>) -> Result<Vec<SourceRoot>> {
    if !snap.is_multi_source() {
        return Ok(vec![SourceRoot {
            path: snap.source.to_string_lossy().into_owned(),
            exclude: snap.excludes().to_vec(),
            ..SourceRoot::default()
        }]);
    }
    let first = sub
        .and_then(|s| s.components().next())
        .map(|c| c.as_os_str());
    let picked: Vec<SourceRoot> = snap
        .sources
        .iter()
        .filter(|s| first.is_none_or(|f| f == OsStr::new(&s.name)))
        .cloned()
        .collect();
    if picked.is_empty() {
        return Err(Error::NotInSnapshot {
            path: sub.unwrap_or(Path::new("")).to_path_buf(),
            snapshot: snap.id.short(),
        });
    }
    Ok(picked)
}

impl<'a> Planner<'a> {
    fn new(repo: &'a Repository, snap: &Snapshot, verify: bool, compact: bool) -> Result<Self> {
        Ok(Planner {
            repo,
            verify,
            params: ChunkerParams::from(repo.config()),
            ids: repo.ids(),
            is_root: rustix::process::geteuid().is_root(),
            steps: Vec::new(),
            summary: PlanSummary::default(),
            leaders: HashMap::new(),
            not_in_snapshot: Vec::new(),
            damaged: Vec::new(),
            refused: Vec::new(),
            root: PathBuf::new(),
            excludes: None,
            repo_keys: repo.place_keys()?,
            protected: protected_dirs(repo)?,
            depth: 0,
            budget: entry_budget(snap),
            bounds: crate::ops::bounds::Bounds::new(snap.id.short()),
            snapshot: snap.id.short(),
            compact,
            fresh: Vec::new(),
        })
    }

    /// `--path`: the entry at `rel` below `base`, and the directories
    /// between that the target lacks, made with the snapshot's metadata.
    fn plan_subpath(
        &mut self,
        snap: &Snapshot,
        base: &Path,
        rel: &Path,
        in_snapshot: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<()> {
        let repo = self.repo;
        let path_in_snapshot = in_snapshot(rel);
        let (entry, _) =
            lookup(repo, snap, &path_in_snapshot)?.ok_or_else(|| Error::NotInSnapshot {
                path: path_in_snapshot.clone(),
                snapshot: snap.id.short(),
            })?;
        let target = base.join(rel);
        // The directories between the target and the path, top down.
        let between: Vec<&Path> = {
            let mut v: Vec<&Path> = rel.ancestors().skip(1).collect();
            v.retain(|a| !a.as_os_str().is_empty());
            v.reverse();
            v
        };
        // Those the restore makes: all of them in a new target (made too,
        // as a plain restore makes it); in an existing one, those missing.
        let made: Vec<&Path> = if !fs::symlink_metadata(base).is_ok_and(|m| m.is_dir()) {
            self.plan_missing_dirs(base);
            between.clone()
        } else {
            let missing = check_parents(base, &target)?;
            between
                .iter()
                .copied()
                .filter(|a| missing.contains(&base.join(a)))
                .collect()
        };
        for a in &made {
            self.steps.push(Step::MakeDir { path: base.join(a) });
            self.summary.create_dirs += 1;
        }
        let disk = fs::symlink_metadata(&target).ok();
        self.plan_entry(&entry, &target, disk, None)?;
        for a in made.iter().rev() {
            if let Some((e, _)) = lookup(repo, snap, &in_snapshot(a))? {
                self.steps.push(Step::DirMeta {
                    path: base.join(a),
                    meta: Meta::of(&e),
                    fix: false,
                });
            }
        }
        Ok(())
    }
}

/// The tree and directory metadata of one source of `snap`.
fn source_tree(
    repo: &Repository,
    snap: &Snapshot,
    root_tree: Option<&Tree>,
    src: &SourceRoot,
) -> Result<(crate::id::TreeId, RootMeta)> {
    let Some(t) = root_tree else {
        return Ok((snap.root, snap.root_meta));
    };
    let e = t.get(src.name.as_bytes()).ok_or_else(|| Error::Damaged {
        path: repo.index_path(),
        reason: format!(
            "snapshot {} has no tree for source {}",
            snap.id.short(),
            src.name
        ),
    })?;
    let sub_tree = e.subtree().ok_or_else(|| Error::Damaged {
        path: repo.index_path(),
        reason: format!("source {} is not a directory in the snapshot", src.name),
    })?;
    Ok((
        sub_tree,
        RootMeta {
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime_ns: e.mtime_ns,
        },
    ))
}

impl Meta {
    pub(super) fn of(e: &Entry) -> Meta {
        Meta {
            kind: e.kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime_ns: e.mtime_ns,
            size: e.size,
            payload: e.payload.clone(),
            xattrs: e.xattrs.clone(),
            linked: e.hardlink_key().is_some(),
        }
    }
}

/// The mode a restore gives an entry: as stored, except that a user other
/// than root does not hand itself setuid or setgid bits that belonged to
/// another owner or group (the file is now its own).
pub fn effective_mode(mode: u32, uid: u32, gid: u32) -> u32 {
    let euid = rustix::process::geteuid();
    if euid.is_root() {
        return mode;
    }
    let mut m = mode;
    if uid != euid.as_raw() {
        m &= !0o4000;
    }
    if gid != rustix::process::getegid().as_raw() {
        m &= !0o2000;
    }
    m
}

/// What became of an entry on disk that the snapshot lacks.
#[derive(PartialEq)]
enum Extra {
    Removed,
    /// A directory that stays because it holds excluded paths.
    Partly,
    Kept,
}

struct Leader {
    path: PathBuf,
    /// The leader's inode when it is left in place.
    kept_ino: Option<u64>,
    /// The index of the leader's Write step, when it is rewritten.
    write_step: Option<usize>,
    size: u64,
}

struct Planner<'a> {
    repo: &'a Repository,
    verify: bool,
    params: ChunkerParams,
    ids: crate::id::Ids,
    is_root: bool,
    steps: Vec<Step>,
    summary: PlanSummary,
    leaders: HashMap<(u64, u64), Leader>,
    not_in_snapshot: Vec<PathBuf>,
    damaged: Vec<(PathBuf, String)>,
    /// The directory being made equal to a source, and that source's
    /// excludes: paths they match were never backed up and are never deleted.
    root: PathBuf,
    excludes: Option<Excludes>,
    /// The repository's directory: never deleted, even inside a source.
    /// The repository's own directories (`Repository::places`).
    repo_keys: Vec<(u64, u64)>,
    /// What the trees read so far allow the walk (`crate::ops::bounds`).
    bounds: crate::ops::bounds::Bounds,
    /// The repository and the directories above it: never deleted whole.
    protected: HashSet<(u64, u64)>,
    refused: Vec<(PathBuf, String)>,
    /// How deep the directory being planned is, and how many more entries
    /// the snapshot may expand to (see [`entry_budget`]).
    depth: usize,
    budget: u64,
    snapshot: String,
    /// Keep the files of new directories as `FreshFiles`, not as steps.
    compact: bool,
    fresh: Vec<super::FreshFiles>,
}

/// The mount a directory is on (`confined::mount_id`): a bind mount of the
/// same filesystem has its parent's device, never its mount id. Unknown
/// (it vanished): a key no mount has, so it counts as another mount and
/// is left alone.
fn mount_key(path: &Path) -> u64 {
    crate::confined::mount_id_of(path).unwrap_or(u64::MAX)
}

fn mtime_ns(m: &Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

impl Planner<'_> {
    fn meta_equal(&self, e: &Entry, m: &Metadata, path: &Path) -> bool {
        let mode_ok =
            e.kind == Kind::Symlink || m.mode() & 0o7777 == effective_mode(e.mode, e.uid, e.gid);
        let owner_ok = !self.is_root || (m.uid() == e.uid && m.gid() == e.gid);
        // The inode the snapshot read, its ctime unmoved: its attributes
        // are the ones recorded (setting one moves ctime), so the
        // llistxattr per entry is only paid for entries touched since.
        let untouched = m.dev() == e.dev
            && m.ino() == e.ino
            && m.ctime() * 1_000_000_000 + m.ctime_nsec() == e.ctime_ns;
        mode_ok
            && owner_ok
            && mtime_ns(m) == e.mtime_ns
            && (untouched
                || !crate::xattr::differs(crate::xattr::At::Path(path), &e.xattrs, self.is_root))
    }

    fn delete(&mut self, path: &Path, m: &Metadata) {
        self.steps.push(Step::Delete {
            path: path.to_path_buf(),
            dir: m.is_dir(),
        });
        self.summary.delete_entries += 1;
    }

    /// Make `target` the directory `tree` with metadata `rm`.
    fn plan_root(&mut self, id: &TreeId, rm: RootMeta, target: &Path) -> Result<()> {
        let disk = fs::symlink_metadata(target).ok();
        let exists = match &disk {
            Some(m) if m.is_dir() => true,
            Some(_) => {
                return Err(Error::BadSource {
                    path: target.to_path_buf(),
                    reason: "restore target exists and is not a directory".into(),
                });
            }
            None => false,
        };
        if !exists {
            self.plan_missing_dirs(target);
        }
        let tree = self.repo.load_tree(id)?;
        let dirty = self.plan_dir(&tree, *id, target, disk.as_ref().map(|_| mount_key(target)))?;
        let meta_differs = disk.as_ref().is_none_or(|m| {
            m.mode() & 0o7777 != effective_mode(rm.mode, rm.uid, rm.gid)
                || mtime_ns(m) != rm.mtime_ns
                || (self.is_root && (m.uid() != rm.uid || m.gid() != rm.gid))
        });
        if dirty || meta_differs {
            let fix = exists && !dirty;
            if fix {
                self.summary.fix_metadata += 1;
            }
            self.steps.push(Step::DirMeta {
                fix,
                path: target.to_path_buf(),
                meta: Meta {
                    kind: Kind::Dir,
                    mode: rm.mode,
                    uid: rm.uid,
                    gid: rm.gid,
                    mtime_ns: rm.mtime_ns,
                    size: 0,
                    payload: Payload::None,
                    // The source directory's own attributes are not kept.
                    xattrs: Vec::new(),
                    linked: false,
                },
            });
        }
        Ok(())
    }

    /// The target and any missing parents (a source directory deleted
    /// together with its parent), outermost first.
    fn plan_missing_dirs(&mut self, target: &Path) {
        let missing: Vec<&Path> = target
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && fs::symlink_metadata(a).is_err())
            .collect();
        for dir in missing.into_iter().rev() {
            self.steps.push(Step::MakeDir {
                path: dir.to_path_buf(),
            });
            self.summary.create_dirs += 1;
        }
    }

    /// Whether an entry on disk that the snapshot lacks must stay: the
    /// excludes kept it out, or it is the repository itself.
    fn keep_extra(&self, path: &Path, m: &Metadata) -> bool {
        if m.is_dir() && self.repo_keys.contains(&(m.dev(), m.ino())) {
            return true;
        }
        match (&self.excludes, path.strip_prefix(&self.root)) {
            (Some(ex), Ok(rel)) => ex.excludes(rel, m.is_dir()),
            _ => false,
        }
    }

    /// Delete an entry the snapshot lacks, except what must stay: a
    /// directory holding excluded paths or the repository stays, emptied of
    /// everything else; another filesystem mounted here stays whole.
    fn plan_extra(&mut self, path: &Path, m: &Metadata, parent_mount: Option<u64>) -> Extra {
        if self.keep_extra(path, m) {
            return Extra::Kept;
        }
        let mount = m.is_dir().then(|| mount_key(path));
        if mount.is_some() && parent_mount.is_some() && mount != parent_mount {
            self.refused.push((
                path.to_path_buf(),
                "another filesystem is mounted there; not in the snapshot, not deleted".into(),
            ));
            return Extra::Kept;
        }
        let holds_repo = m.is_dir() && self.protected.contains(&(m.dev(), m.ino()));
        if m.is_dir() && (self.excludes.is_some() || holds_repo) {
            let mut whole = true;
            let mut any = false;
            if let Ok(rd) = fs::read_dir(path) {
                for de in rd.flatten() {
                    let p = de.path();
                    if let Ok(cm) = fs::symlink_metadata(&p) {
                        match self.plan_extra(&p, &cm, mount) {
                            Extra::Removed => any = true,
                            Extra::Partly => (any, whole) = (true, false),
                            Extra::Kept => whole = false,
                        }
                    }
                }
            }
            if !whole {
                return if any { Extra::Partly } else { Extra::Kept };
            }
        }
        self.delete(path, m);
        Extra::Removed
    }

    /// Plan one directory's children; true when anything in it changes.
    /// `dev` is the directory's device when it exists on disk.
    fn plan_dir(&mut self, tree: &Tree, id: TreeId, dir: &Path, dev: Option<u64>) -> Result<bool> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::Damaged {
                path: self.repo.index_path(),
                reason: format!(
                    "snapshot {} nests directories deeper than {MAX_DEPTH} levels at {}",
                    self.snapshot,
                    dir.display()
                ),
            });
        }
        self.bounds
            .enter(self.repo, &id, tree.entries.len(), self.depth)?;
        self.depth += 1;
        let r = self.plan_children(tree, id, dir, dev);
        self.depth -= 1;
        r
    }

    fn plan_children(
        &mut self,
        tree: &Tree,
        id: TreeId,
        dir: &Path,
        dev: Option<u64>,
    ) -> Result<bool> {
        let mut dirty = false;
        // In a directory the restore creates, a plain file is written
        // whole: kept as its index in the tree, not as a step (see
        // `FreshFiles`), when the plan is only for executing.
        let mut fresh = Vec::new();
        let mut on_disk: HashMap<Vec<u8>, Metadata> = HashMap::new();
        if dev.is_some() {
            let rd = fs::read_dir(dir).at(dir)?;
            for de in rd {
                let de = de.at(dir)?;
                let name = de.file_name().as_bytes().to_vec();
                let path = dir.join(de.file_name());
                let m = match fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(path, e)),
                };
                if tree.get(&name).is_none() {
                    dirty |= self.plan_extra(&path, &m, dev) != Extra::Kept;
                } else {
                    on_disk.insert(name, m);
                }
            }
        }
        for (i, e) in tree.entries.iter().enumerate() {
            if self.compact
                && dev.is_none()
                && e.kind == Kind::File
                && e.hardlink_key().is_none()
                && !e.has_flag(flags::UNREADABLE)
                && e.uid != u32::MAX
                && e.gid != u32::MAX
            {
                self.spend_budget()?;
                fresh.push(i as u32);
                self.summary.write_files += 1;
                self.summary.write_bytes += e.size;
                dirty = true;
                continue;
            }
            let path = dir.join(e.name_os());
            let disk = on_disk.remove(&e.name);
            dirty |= self.plan_entry(e, &path, disk, dev)?;
        }
        if !fresh.is_empty() {
            self.fresh.push(super::FreshFiles {
                dir: dir.to_path_buf(),
                tree: id,
                entries: fresh,
            });
        }
        Ok(dirty)
    }

    /// One more entry of the snapshot expanded: damage past its budget.
    fn spend_budget(&mut self) -> Result<()> {
        self.budget = self.budget.checked_sub(1).ok_or_else(|| Error::Damaged {
            path: self.repo.index_path(),
            reason: format!(
                "the trees of snapshot {} expand to more entries than the snapshot records",
                self.snapshot
            ),
        })?;
        Ok(())
    }

    /// Plan one entry of the snapshot at `path` (`disk`: what is there
    /// now, not followed). Returns whether anything at or below it changes.
    fn plan_entry(
        &mut self,
        e: &Entry,
        path: &Path,
        disk: Option<Metadata>,
        parent_mount: Option<u64>,
    ) -> Result<bool> {
        self.spend_budget()?;
        if e.uid == u32::MAX || e.gid == u32::MAX {
            // To chown, -1 means "leave as it is": no file is owned by it.
            self.damaged.push((
                path.to_path_buf(),
                format!(
                    "the snapshot records owner {}:{}, which no file can have",
                    e.uid, e.gid
                ),
            ));
            return Ok(false);
        }
        if e.has_flag(flags::UNREADABLE) {
            // Never stored: whatever is on disk stays.
            self.not_in_snapshot.push(path.to_path_buf());
            return Ok(false);
        }
        let Some((disk, dirty)) = self.clear_other_kind(e, path, disk, parent_mount) else {
            return Ok(false);
        };
        match e.kind {
            Kind::Dir => self.plan_dir_entry(e, path, disk, dirty),
            Kind::File => Ok(self.plan_file(e, path, disk) | dirty),
            Kind::Symlink => Ok(self.plan_symlink(e, path, disk) | dirty),
            Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev => {
                Ok(self.plan_special(e, path, disk) | dirty)
            }
        }
    }

    /// What is on disk at `path` when it is another kind of entry than the
    /// snapshot's (or another device): planned for deletion. `None` when it
    /// must stay (a mount point, or what holds the repository); else what
    /// is left on disk and whether that changed anything.
    fn clear_other_kind(
        &mut self,
        e: &Entry,
        path: &Path,
        disk: Option<Metadata>,
        parent_mount: Option<u64>,
    ) -> Option<(Option<Metadata>, bool)> {
        let Some(m) = disk else {
            return Some((None, false));
        };
        let wrong_device = matches!(e.kind, Kind::CharDev | Kind::BlockDev)
            && Some(m.rdev())
                != match e.payload {
                    Payload::Device(r) => Some(r),
                    _ => None,
                };
        if kind_of(&m) == e.kind && !wrong_device {
            return Some((Some(m), false));
        }
        let mounted = m.is_dir() && parent_mount.is_some_and(|d| d != mount_key(path));
        if m.is_dir() && (mounted || self.protected.contains(&(m.dev(), m.ino()))) {
            let why = if mounted {
                "another filesystem is mounted there"
            } else {
                "it holds the repository"
            };
            self.refused.push((
                path.to_path_buf(),
                format!("the snapshot has a {:?} here, but {why}", e.kind).to_lowercase(),
            ));
            return None;
        }
        self.delete(path, &m);
        Some((None, true))
    }

    /// A directory: made when missing, its children planned, its own
    /// metadata set last (`DirMeta`).
    fn plan_dir_entry(
        &mut self,
        e: &Entry,
        path: &Path,
        disk: Option<Metadata>,
        mut dirty: bool,
    ) -> Result<bool> {
        let path_buf = path.to_path_buf();
        let exists = disk.is_some();
        if !exists {
            self.steps.push(Step::MakeDir {
                path: path_buf.clone(),
            });
            self.summary.create_dirs += 1;
        }
        let sub_id = e.subtree().unwrap_or(TreeId([0; 32]));
        let tree = match e.subtree() {
            Some(sub) => self.repo.load_tree(&sub),
            None => Err(Error::Damaged {
                path: self.repo.index_path(),
                reason: "the directory entry has no tree".into(),
            }),
        };
        let tree = match tree {
            Ok(t) => t,
            Err(err) if err.is_damage() => {
                // Restore everything else; touch nothing under here.
                self.damaged.push((path_buf, err.to_string()));
                return Ok(dirty || !exists);
            }
            Err(err) => return Err(err),
        };
        let child_dirty =
            self.plan_dir(&tree, sub_id, path, disk.as_ref().map(|_| mount_key(path)))?;
        let meta_differs = disk.as_ref().is_none_or(|m| !self.meta_equal(e, m, path));
        if child_dirty || meta_differs {
            let fix = exists && !child_dirty;
            if fix {
                self.summary.fix_metadata += 1;
            }
            self.steps.push(Step::DirMeta {
                path: path_buf.clone(),
                meta: Meta::of(e),
                fix,
            });
            dirty = true;
        }
        Ok(dirty)
    }

    /// A regular file: kept, its metadata fixed, rewritten, or linked to
    /// the first name of its inode. Returns whether it changes.
    fn plan_file(&mut self, e: &Entry, path: &Path, disk: Option<Metadata>) -> bool {
        let path_buf = path.to_path_buf();
        let mut dirty = false;
        if let Some(key) = e.hardlink_key()
            && self.leaders.contains_key(&key)
        {
            return self.plan_later_name(e, path, disk, key);
        }
        enum Act {
            Keep,
            Meta,
            Write,
        }
        let act = match &disk {
            None => Act::Write,
            Some(m) => {
                let same_stat = m.size() == e.size && mtime_ns(m) == e.mtime_ns;
                // A file modified within the timestamp tick of its
                // snapshot (flagged racy) could have changed again
                // without changing size or mtime: compare content.
                let same_content = if self.verify || (same_stat && e.has_flag(flags::RACY)) {
                    m.size() == e.size && self.content_equal(path, e)
                } else {
                    same_stat
                };
                // Root never chowns or chmods a file that has other
                // names the snapshot did not record: someone may have
                // linked another user's file here. It is rewritten
                // instead (a new inode; the other names keep theirs).
                let foreign_links = self.is_root && m.nlink() > 1 && e.hardlink_key().is_none();
                if !same_content {
                    Act::Write
                } else if self.meta_equal(e, m, path) {
                    Act::Keep
                } else if foreign_links {
                    Act::Write
                } else {
                    Act::Meta
                }
            }
        };
        let mut write_step = None;
        let kept_ino = match act {
            Act::Keep => {
                self.summary.unchanged_files += 1;
                self.summary.unchanged_bytes += e.size;
                disk.as_ref().map(|m| m.ino())
            }
            Act::Meta => {
                let m = disk.as_ref().expect("Act::Meta comes of an entry on disk");
                self.steps.push(Step::FixMeta {
                    path: path_buf.clone(),
                    meta: Meta::of(e),
                    seen: (m.dev(), m.ino()),
                });
                self.summary.fix_metadata += 1;
                dirty = true;
                disk.as_ref().map(|m| m.ino())
            }
            Act::Write => {
                write_step = Some(self.steps.len());
                self.steps.push(Step::Write {
                    path: path_buf.clone(),
                    bytes: e.size,
                    meta: Meta::of(e),
                });
                self.summary.write_files += 1;
                self.summary.write_bytes += e.size;
                dirty = true;
                None
            }
        };
        if let Some(key) = e.hardlink_key() {
            self.leaders.insert(
                key,
                Leader {
                    path: path_buf,
                    kept_ino,
                    write_step,
                    size: e.size,
                },
            );
        }
        dirty
    }

    /// A later name of an inode the snapshot holds several names of: a
    /// link to the first name, or, when this name still holds the content
    /// and the first was to be rewritten, the first linked to this one.
    fn plan_later_name(
        &mut self,
        e: &Entry,
        path: &Path,
        disk: Option<Metadata>,
        key: (u64, u64),
    ) -> bool {
        let path_buf = path.to_path_buf();
        let leader = &self.leaders[&key];
        let (to, kept_ino, write_step) = (leader.path.clone(), leader.kept_ino, leader.write_step);
        if let (Some(m), Some(ino)) = (&disk, kept_ino)
            && m.ino() == ino
        {
            self.summary.unchanged_files += 1;
            return false;
        }
        // If this name still holds the right content and the first
        // name was going to be rewritten, keep this one instead and
        // link the first name to it: fewer writes, inodes kept.
        if let (Some(m), Some(idx)) = (&disk, write_step)
            && m.size() == e.size
            && mtime_ns(m) == e.mtime_ns
            && (!self.verify || self.content_equal(path, e))
        {
            let m = m.clone();
            let old_size = self.leaders[&key].size;
            self.steps[idx] = Step::Link {
                path: to.clone(),
                to: path_buf.clone(),
            };
            self.steps.push(Step::Delete {
                path: to.clone(),
                dir: false,
            });
            self.summary.write_files -= 1;
            self.summary.write_bytes -= old_size;
            self.summary.links += 1;
            if self.meta_equal(e, &m, path) {
                self.summary.unchanged_files += 1;
                self.summary.unchanged_bytes += e.size;
            } else {
                self.steps.push(Step::FixMeta {
                    path: path_buf.clone(),
                    meta: Meta::of(e),
                    seen: (m.dev(), m.ino()),
                });
                self.summary.fix_metadata += 1;
            }
            self.leaders.insert(
                key,
                Leader {
                    path: path_buf,
                    kept_ino: Some(m.ino()),
                    write_step: None,
                    size: e.size,
                },
            );
            return true;
        }
        if let Some(m) = disk.clone() {
            self.delete(path, &m);
        }
        self.steps.push(Step::Link { path: path_buf, to });
        self.summary.links += 1;
        true
    }

    /// A symlink: kept when its target is the snapshot's, else made anew.
    fn plan_symlink(&mut self, e: &Entry, path: &Path, disk: Option<Metadata>) -> bool {
        let path_buf = path.to_path_buf();
        let mut dirty = false;
        let want = match &e.payload {
            Payload::Target(t) => t.clone(),
            _ => Vec::new(),
        };
        let same = disk.is_some()
            && fs::read_link(path)
                .map(|t| t.as_os_str().as_bytes() == want.as_slice())
                .unwrap_or(false);
        if same {
            let m = disk.as_ref().expect("`same` needs an entry on disk");
            if !self.meta_equal(e, m, path) {
                self.steps.push(Step::FixMeta {
                    path: path_buf.clone(),
                    meta: Meta::of(e),
                    seen: (m.dev(), m.ino()),
                });
                self.summary.fix_metadata += 1;
                dirty = true;
            }
        } else {
            if let Some(m) = disk.clone() {
                self.delete(path, &m);
            }
            self.steps.push(Step::Symlink {
                path: path_buf.clone(),
                meta: Meta::of(e),
            });
            self.summary.symlinks += 1;
            dirty = true;
        }
        dirty
    }

    /// A FIFO, socket or device node: made when missing.
    fn plan_special(&mut self, e: &Entry, path: &Path, disk: Option<Metadata>) -> bool {
        let path_buf = path.to_path_buf();
        let mut dirty = false;
        match &disk {
            Some(m) => {
                if !self.meta_equal(e, m, path) {
                    self.steps.push(Step::FixMeta {
                        path: path_buf.clone(),
                        meta: Meta::of(e),
                        seen: (m.dev(), m.ino()),
                    });
                    self.summary.fix_metadata += 1;
                    dirty = true;
                }
            }
            None => {
                self.steps.push(Step::Special {
                    path: path_buf.clone(),
                    meta: Meta::of(e),
                });
                self.summary.specials += 1;
                dirty = true;
            }
        }
        dirty
    }

    fn content_equal(&self, path: &Path, e: &Entry) -> bool {
        file_matches(path, e, self.params, self.ids)
    }
}

/// The fixed cut size of an image of `size` bytes in `n` chunks: the power
/// of two (512 B to 16 MiB) that cuts it into exactly `n` (unique when
/// `n > 1`: twice the size cuts fewer). One chunk: the image itself, if
/// a chunk can be that large. `None`: no fixed size cuts so.
pub(crate) fn image_cut(size: u64, n: usize) -> Option<usize> {
    const MAX: u64 = crate::config::CHUNK_MAX_LIMIT as u64;
    match n {
        0 => (size == 0).then_some(512),
        1 => (size <= MAX).then_some(size.max(1) as usize),
        _ => (9..=24)
            .map(|b| 1usize << b)
            .find(|&s| size.div_ceil(s as u64) == n as u64),
    }
}

/// Does the file at `path` hold exactly the chunks of `e`?
pub fn file_matches(path: &Path, e: &Entry, params: ChunkerParams, ids: crate::id::Ids) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut chunker = if e.has_flag(flags::SQLITE_IMAGE) {
        // Images are cut into fixed runs of pages (see crate::sqlite), of a
        // size that older snaps chose differently: the entry tells it.
        match image_cut(e.size, e.chunks().len()) {
            Some(size) => Chunker::fixed(file, size, 4 << 20, e.size),
            None => return false,
        }
    } else {
        Chunker::new(file, params, 4 << 20)
    };
    let want = e.chunks();
    let mut i = 0;
    loop {
        match chunker.next_batch() {
            Ok(Some((buf, cuts))) => {
                for (o, l) in cuts {
                    if want.get(i) != Some(&ids.chunk(&buf[o..o + l])) {
                        return false;
                    }
                    i += 1;
                }
            }
            Ok(None) => return i == want.len(),
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::image_cut;

    #[test]
    fn an_image_cut_is_found_from_its_size_and_chunk_count() {
        // Older snaps cut images page by page, current ones in 64 KiB runs.
        assert_eq!(image_cut(10 * 4096, 10), Some(4096));
        assert_eq!(image_cut(10 * 4096, 1), Some(10 * 4096));
        assert_eq!(image_cut(1 << 20, 16), Some(64 << 10));
        assert_eq!(image_cut((1 << 20) + 4096, 17), Some(64 << 10));
        assert_eq!(image_cut(0, 0), Some(512));
        // No power of two cuts 3 pages into 2 equal-size chunks plus none.
        assert_eq!(image_cut(3 * 4096, 5), None);
        assert_eq!(image_cut(4096, 0), None);
        // One chunk larger than any chunk can be: refused, not allocated.
        assert_eq!(image_cut(1 << 40, 1), None);
    }
}
