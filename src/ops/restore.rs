//! `snap restore`: make a directory exactly equal to a snapshot.
//!
//! Plan, then execute. The plan compares the snapshot with what is on disk:
//! entries that already match are left alone (they keep their inode), files
//! whose content differs are rewritten, entries the snapshot lacks are
//! deleted, metadata is reset. Execution order:
//!
//! 1. delete extra entries and entries of the wrong kind;
//! 2. create missing directories;
//! 3. write new file contents to temporary files in their final directory
//!    (in parallel), then make them durable with one `syncfs`, rename each
//!    over its real name, and `syncfs` again: a crash leaves every file
//!    either old or new, never torn, and a rerun finishes the job;
//! 4. symlinks, special files, hard links, metadata fixes;
//! 5. directory metadata, children before parents.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, Metadata};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::Serialize;

use crate::chunker::{Chunker, ChunkerParams};
use crate::error::{Error, IoContext, Result};
use crate::exclude::Excludes;
use crate::id::ChunkId;
use crate::index::ChunkLocation;
use crate::ops::create::{CreateOptions, SourceSpec, create};
use crate::ops::ls::lookup;
use crate::pack::decode_chunk;
use crate::progress::Progress;
use crate::repo::{ChunkReader, Repository};
use crate::snapshot::{RootMeta, Snapshot, SourceRoot};
use crate::source::kind_of;
use crate::tree::{Entry, Kind, Payload, Tree, flags};

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
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    Delete {
        path: PathBuf,
        dir: bool,
    },
    MakeDir {
        path: PathBuf,
    },
    Write {
        path: PathBuf,
        bytes: u64,
        #[serde(skip)]
        meta: Meta,
    },
    Symlink {
        path: PathBuf,
        #[serde(skip)]
        meta: Meta,
    },
    Special {
        path: PathBuf,
        #[serde(skip)]
        meta: Meta,
    },
    Link {
        path: PathBuf,
        to: PathBuf,
    },
    FixMeta {
        path: PathBuf,
        #[serde(skip)]
        meta: Meta,
    },
    DirMeta {
        path: PathBuf,
        #[serde(skip)]
        meta: Meta,
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
}

impl Meta {
    fn of(e: &Entry) -> Meta {
        Meta {
            kind: e.kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime_ns: e.mtime_ns,
            size: e.size,
            payload: e.payload.clone(),
        }
    }

    fn chunks(&self) -> &[ChunkId] {
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
    pub target: PathBuf,
    /// Every directory the plan makes equal to a part of the snapshot.
    pub targets: Vec<PathBuf>,
    pub steps: Vec<Step>,
    pub summary: PlanSummary,
    /// Entries the snapshot could not store (unreadable at snapshot time):
    /// left as they are on disk.
    pub not_in_snapshot: Vec<PathBuf>,
    /// Directories whose stored tree is damaged or missing: nothing under
    /// them is planned, so whatever is on disk there stays as it is.
    pub damaged: Vec<(PathBuf, String)>,
}

impl Plan {
    pub fn changes_anything(&self) -> bool {
        !self.steps.is_empty()
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

pub fn plan(repo: &Repository, snap: &Snapshot, opts: &RestoreOptions) -> Result<Plan> {
    let repo_md = fs::metadata(repo.root()).at(repo.root())?;
    let mut p = Planner {
        repo,
        verify: opts.verify,
        params: ChunkerParams::from(repo.config()),
        is_root: unsafe { libc::geteuid() } == 0,
        steps: Vec::new(),
        summary: PlanSummary::default(),
        leaders: HashMap::new(),
        not_in_snapshot: Vec::new(),
        damaged: Vec::new(),
        root: PathBuf::new(),
        excludes: None,
        repo_key: (repo_md.dev(), repo_md.ino()),
    };
    let sub = opts
        .subpath
        .as_deref()
        .filter(|s| !s.as_os_str().is_empty());
    // The sources to restore: a snapshot of one directory has one, unnamed.
    let one = [SourceRoot {
        path: snap.source.to_string_lossy().into_owned(),
        exclude: snap.excludes().to_vec(),
        ..SourceRoot::default()
    }];
    let sources: Vec<&SourceRoot> = if snap.is_multi_source() {
        let first = sub
            .and_then(|s| s.components().next())
            .map(|c| c.as_os_str());
        let picked: Vec<&SourceRoot> = snap
            .sources
            .iter()
            .filter(|s| first.is_none_or(|f| f == OsStr::new(&s.name)))
            .collect();
        if picked.is_empty() {
            return Err(Error::NotInSnapshot {
                path: sub.unwrap_or(Path::new("")).to_path_buf(),
                snapshot: snap.id.short(),
            });
        }
        picked
    } else {
        vec![&one[0]]
    };
    let multi = snap.is_multi_source();
    let root_tree = if multi {
        Some(repo.load_tree(&snap.root)?)
    } else {
        None
    };
    let mut targets = Vec::new();
    if multi
        && let Some(t) = &opts.target
        && fs::symlink_metadata(t).is_err()
    {
        // The directory that holds the sources; not itself in the snapshot.
        p.steps.push(Step::MakeDir { path: t.clone() });
        p.summary.create_dirs += 1;
    }
    for src in sources {
        let base = source_target(snap, src, opts);
        p.root = base.clone();
        p.excludes = if src.exclude.is_empty() {
            None
        } else {
            Some(Excludes::new(&src.exclude).map_err(Error::Invalid)?)
        };
        // The part of the snapshot under this source, relative to its root.
        let rel: Option<PathBuf> = match (multi, sub) {
            (true, Some(s)) => Some(s.components().skip(1).collect::<PathBuf>())
                .filter(|r| !r.as_os_str().is_empty()),
            (true, None) => None,
            (false, s) => s.map(Path::to_path_buf),
        };
        let (tree, meta) = if let Some(t) = &root_tree {
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
            (
                sub_tree,
                RootMeta {
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    mtime_ns: e.mtime_ns,
                },
            )
        } else {
            (snap.root, snap.root_meta)
        };
        match rel {
            None => p.plan_root(&tree, meta, &base)?,
            Some(rel) => {
                let path_in_snapshot = if multi {
                    Path::new(&src.name).join(&rel)
                } else {
                    rel.clone()
                };
                let (entry, _) = lookup(repo, snap, &path_in_snapshot)?
                    .expect("a non-empty path names an entry");
                let target = base.join(&rel);
                let parent = target.parent().map(Path::to_path_buf).unwrap_or_default();
                if !parent.is_dir() {
                    return Err(Error::BadSource {
                        path: parent,
                        reason: "the parent directory of the restored path does not exist".into(),
                    });
                }
                let disk = fs::symlink_metadata(&target).ok();
                p.plan_entry(&entry, &target, disk)?;
            }
        }
        targets.push(match sub {
            Some(_) if !multi => base.join(sub.unwrap()),
            _ => base,
        });
    }
    Ok(Plan {
        snapshot: snap.id.to_hex(),
        target: if multi {
            opts.target.clone().unwrap_or_else(|| targets[0].clone())
        } else {
            targets[0].clone()
        },
        targets,
        steps: p.steps,
        summary: p.summary,
        not_in_snapshot: p.not_in_snapshot,
        damaged: p.damaged,
    })
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
    repo_key: (u64, u64),
}

fn mtime_ns(m: &Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

impl Planner<'_> {
    fn meta_equal(&self, e: &Entry, m: &Metadata) -> bool {
        let mode_ok = e.kind == Kind::Symlink || m.mode() & 0o7777 == e.mode;
        let owner_ok = !self.is_root || (m.uid() == e.uid && m.gid() == e.gid);
        mode_ok && owner_ok && mtime_ns(m) == e.mtime_ns
    }

    fn delete(&mut self, path: &Path, m: &Metadata) {
        self.steps.push(Step::Delete {
            path: path.to_path_buf(),
            dir: m.is_dir(),
        });
        self.summary.delete_entries += 1;
    }

    /// Make `target` the directory `tree` with metadata `rm`.
    fn plan_root(&mut self, tree: &crate::id::TreeId, rm: RootMeta, target: &Path) -> Result<()> {
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
            // The target and any missing parents (a source directory
            // deleted together with its parent), outermost first.
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
        let tree = self.repo.load_tree(tree)?;
        let dirty = self.plan_dir(&tree, target, exists)?;
        let meta_differs = disk.as_ref().is_none_or(|m| {
            m.mode() & 0o7777 != rm.mode
                || mtime_ns(m) != rm.mtime_ns
                || (self.is_root && (m.uid() != rm.uid || m.gid() != rm.gid))
        });
        if dirty || meta_differs {
            if exists && !dirty {
                self.summary.fix_metadata += 1;
            }
            self.steps.push(Step::DirMeta {
                path: target.to_path_buf(),
                meta: Meta {
                    kind: Kind::Dir,
                    mode: rm.mode,
                    uid: rm.uid,
                    gid: rm.gid,
                    mtime_ns: rm.mtime_ns,
                    size: 0,
                    payload: Payload::None,
                },
            });
        }
        Ok(())
    }

    /// Whether an entry on disk that the snapshot lacks must stay: the
    /// excludes kept it out, or it is the repository itself.
    fn keep_extra(&self, path: &Path, m: &Metadata) -> bool {
        if m.is_dir() && (m.dev(), m.ino()) == self.repo_key {
            return true;
        }
        match (&self.excludes, path.strip_prefix(&self.root)) {
            (Some(ex), Ok(rel)) => ex.excludes(rel, m.is_dir()),
            _ => false,
        }
    }

    /// Delete an entry the snapshot lacks, except what must stay: a
    /// directory holding excluded paths stays, emptied of everything else.
    fn plan_extra(&mut self, path: &Path, m: &Metadata) -> Extra {
        if self.keep_extra(path, m) {
            return Extra::Kept;
        }
        if m.is_dir() && self.excludes.is_some() {
            let mut whole = true;
            let mut any = false;
            if let Ok(rd) = fs::read_dir(path) {
                for de in rd.flatten() {
                    let p = de.path();
                    if let Ok(cm) = fs::symlink_metadata(&p) {
                        match self.plan_extra(&p, &cm) {
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
    fn plan_dir(&mut self, tree: &Tree, dir: &Path, exists: bool) -> Result<bool> {
        let mut dirty = false;
        let mut on_disk: HashMap<Vec<u8>, Metadata> = HashMap::new();
        if exists {
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
                    dirty |= self.plan_extra(&path, &m) != Extra::Kept;
                } else {
                    on_disk.insert(name, m);
                }
            }
        }
        for e in &tree.entries {
            let path = dir.join(e.name_os());
            let disk = on_disk.remove(&e.name);
            dirty |= self.plan_entry(e, &path, disk)?;
        }
        Ok(dirty)
    }

    fn plan_entry(&mut self, e: &Entry, path: &Path, mut disk: Option<Metadata>) -> Result<bool> {
        if e.has_flag(flags::UNREADABLE) {
            // Never stored: whatever is on disk stays.
            self.not_in_snapshot.push(path.to_path_buf());
            return Ok(false);
        }
        let mut dirty = false;
        if let Some(m) = &disk {
            let k = kind_of(m);
            let wrong_device = matches!(e.kind, Kind::CharDev | Kind::BlockDev)
                && Some(m.rdev())
                    != match e.payload {
                        Payload::Device(r) => Some(r),
                        _ => None,
                    };
            if k != e.kind || wrong_device {
                let m = m.clone();
                self.delete(path, &m);
                disk = None;
                dirty = true;
            }
        }
        let path_buf = path.to_path_buf();
        match e.kind {
            Kind::Dir => {
                let exists = disk.is_some();
                if !exists {
                    self.steps.push(Step::MakeDir {
                        path: path_buf.clone(),
                    });
                    self.summary.create_dirs += 1;
                }
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
                let child_dirty = self.plan_dir(&tree, path, exists)?;
                let meta_differs = disk.as_ref().is_none_or(|m| !self.meta_equal(e, m));
                if child_dirty || meta_differs {
                    if exists && !child_dirty {
                        self.summary.fix_metadata += 1;
                    }
                    self.steps.push(Step::DirMeta {
                        path: path_buf.clone(),
                        meta: Meta::of(e),
                    });
                    dirty = true;
                }
            }
            Kind::File => {
                if let Some(key) = e.hardlink_key()
                    && let Some(leader) = self.leaders.get(&key)
                {
                    let (to, kept_ino, write_step) =
                        (leader.path.clone(), leader.kept_ino, leader.write_step);
                    if let (Some(m), Some(ino)) = (&disk, kept_ino)
                        && m.ino() == ino
                    {
                        self.summary.unchanged_files += 1;
                        return Ok(dirty);
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
                        if self.meta_equal(e, &m) {
                            self.summary.unchanged_files += 1;
                            self.summary.unchanged_bytes += e.size;
                        } else {
                            self.steps.push(Step::FixMeta {
                                path: path_buf.clone(),
                                meta: Meta::of(e),
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
                        return Ok(true);
                    }
                    if let Some(m) = disk.clone() {
                        self.delete(path, &m);
                    }
                    self.steps.push(Step::Link { path: path_buf, to });
                    self.summary.links += 1;
                    return Ok(true);
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
                        let same_content = if self.verify || (same_stat && e.has_flag(flags::RACY))
                        {
                            m.size() == e.size && self.content_equal(path, e)
                        } else {
                            same_stat
                        };
                        if !same_content {
                            Act::Write
                        } else if self.meta_equal(e, m) {
                            Act::Keep
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
                        self.steps.push(Step::FixMeta {
                            path: path_buf.clone(),
                            meta: Meta::of(e),
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
            }
            Kind::Symlink => {
                let want = match &e.payload {
                    Payload::Target(t) => t.clone(),
                    _ => Vec::new(),
                };
                let same = disk.is_some()
                    && fs::read_link(path)
                        .map(|t| t.as_os_str().as_bytes() == want.as_slice())
                        .unwrap_or(false);
                if same {
                    if !self.meta_equal(e, disk.as_ref().unwrap()) {
                        self.steps.push(Step::FixMeta {
                            path: path_buf.clone(),
                            meta: Meta::of(e),
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
            }
            Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev => match &disk {
                Some(m) => {
                    if !self.meta_equal(e, m) {
                        self.steps.push(Step::FixMeta {
                            path: path_buf.clone(),
                            meta: Meta::of(e),
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
            },
        }
        Ok(dirty)
    }

    /// Does the file at `path` hold exactly the snapshot's chunks?
    fn content_equal(&self, path: &Path, e: &Entry) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        let mut chunker = if e.has_flag(flags::SQLITE_IMAGE) {
            // Images are cut into whole pages (see crate::sqlite).
            let mut header = [0u8; 100];
            let size = file
                .read_exact_at(&mut header, 0)
                .ok()
                .and_then(|_| crate::sqlite::chunk_size(&header));
            match size {
                Some(size) => Chunker::fixed(file, size, 4 << 20, e.size),
                None => return false,
            }
        } else {
            Chunker::new(file, self.params, 4 << 20)
        };
        let want = e.chunks();
        let mut i = 0;
        loop {
            match chunker.next_batch() {
                Ok(Some((buf, cuts))) => {
                    for (o, l) in cuts {
                        if want.get(i) != Some(&ChunkId::of(&buf[o..o + l])) {
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
}

/// Restore `snap` as `opts` say. With `dry_run`, returns the plan only.
pub fn restore(
    repo: &Repository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<(Plan, Option<RestoreStats>)> {
    let started = Instant::now();
    let plan = plan(repo, snap, opts)?;
    if opts.dry_run {
        return Ok((plan, None));
    }
    let mut stats = RestoreStats {
        unchanged_files: plan.summary.unchanged_files,
        ..RestoreStats::default()
    };
    for (path, why) in &plan.damaged {
        progress.warn(&format!("{}: not restored: {why}", path.display()));
        stats.failed.push((path.display().to_string(), why.clone()));
        stats.damaged = true;
    }
    if opts.safety_snapshot && plan.changes_anything() {
        // Snapshot what is about to change, so the restore can be undone.
        if let Some(safety) = safety_snapshot(repo, snap, &plan, opts, progress)? {
            stats.safety_snapshot = Some(safety.id.to_hex());
        }
    }
    execute(repo, &plan, &mut stats, progress)?;
    stats.duration_ms = started.elapsed().as_millis() as u64;
    Ok((plan, Some(stats)))
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
    let non_empty =
        |d: &Path| -> Result<bool> { Ok(d.is_dir() && fs::read_dir(d).at(d)?.next().is_some()) };
    let mut co = CreateOptions {
        tags: vec!["pre-restore".to_string()],
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
        // The target itself, or, when a single entry (--path) is restored,
        // the directory that holds it.
        let dir = if plan.target.is_dir() {
            Some(plan.target.clone())
        } else if opts.subpath.is_some() {
            plan.target
                .parent()
                .map(Path::to_path_buf)
                .filter(|p| p.is_dir())
        } else {
            None
        };
        match dir {
            Some(d) if non_empty(&d)? => co.source = d,
            _ => return Ok(None),
        }
        if opts.subpath.is_none() {
            co.exclude = snap.excludes().to_vec();
        }
    }
    create(repo, &co, progress).map(Some)
}

/// Files written between two durability barriers.
const WRITE_BATCH_FILES: usize = 4096;

/// A file to write: its path, its snapshot entry, where its chunks are.
type WriteJob<'a> = (&'a Path, &'a Meta, Vec<(ChunkId, ChunkLocation)>);

fn execute(
    repo: &Repository,
    plan: &Plan,
    stats: &mut RestoreStats,
    progress: &dyn Progress,
) -> Result<()> {
    let is_root = unsafe { libc::geteuid() } == 0;
    let fail = |stats: &mut RestoreStats, path: &Path, why: String| {
        progress.warn(&format!("{}: not restored: {why}", path.display()));
        stats.failed.push((path.display().to_string(), why));
    };
    progress.phase("restore", Some(plan.summary.write_bytes));

    // 1. Deletions.
    for step in &plan.steps {
        if let Step::Delete { path, dir } = step {
            make_parent_writable(path);
            let r = if *dir {
                fs::remove_dir_all(path)
            } else {
                fs::remove_file(path)
            };
            match r {
                Ok(()) => stats.deleted_entries += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => stats.deleted_entries += 1,
                Err(e) => return Err(Error::io(path, e)),
            }
            crate::fault::point("restore deleted an entry");
        }
    }
    // 2. Directories, parents first (the plan lists them in that order).
    for step in &plan.steps {
        if let Step::MakeDir { path } = step {
            make_parent_writable(path);
            match fs::create_dir(path) {
                Ok(()) => stats.created_dirs += 1,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
    }
    // 3. File contents, in batches (bounded memory and bounded work between
    //    barriers): locate chunks, write temporaries in parallel, one
    //    `syncfs` for the batch, then rename each over its real name.
    let packs_dir = repo.packs_dir();
    let mut damaged = false;
    let writes: Vec<(&PathBuf, &Meta)> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Write { path, meta, .. } => Some((path, meta)),
            _ => None,
        })
        .collect();
    for batch in writes.chunks(WRITE_BATCH_FILES) {
        let mut jobs: Vec<WriteJob> = Vec::with_capacity(batch.len());
        for &(path, e) in batch {
            let mut locs = Vec::with_capacity(e.chunks().len());
            let mut missing = None;
            for id in e.chunks() {
                match repo.chunk_location(id)? {
                    Some(l) => locs.push((*id, l)),
                    None => {
                        missing = Some(*id);
                        break;
                    }
                }
            }
            match missing {
                None => jobs.push((path, e, locs)),
                Some(id) => {
                    damaged = true;
                    fail(
                        stats,
                        path,
                        format!("chunk {} is missing from the index", id.short()),
                    )
                }
            }
        }
        for (path, _, _) in &jobs {
            make_parent_writable(path);
        }
        let written: Vec<(&Path, &Meta, Result<tempfile::TempPath>)> = jobs
            .par_iter()
            .map_init(
                || ChunkReader::new(packs_dir.clone()),
                |reader, (path, e, locs)| {
                    let r = write_temp(reader, path, e, locs, is_root, progress);
                    crate::fault::point("restore wrote a temporary file");
                    (*path, *e, r)
                },
            )
            .collect();
        drop(jobs);
        let mut renames = Vec::new();
        for (path, e, r) in written {
            match r {
                Ok(tmp) => renames.push((path, e, tmp)),
                Err(err) => {
                    damaged |= err.is_damage();
                    fail(stats, path, err.to_string());
                }
            }
        }
        if !renames.is_empty() {
            // One barrier for the batch instead of an fsync per file.
            for t in &plan.targets {
                syncfs(t)?;
            }
            crate::fault::point("restore temporaries durable");
            for (path, e, tmp) in renames {
                tmp.persist(path)
                    .map_err(|err| Error::io(path, err.error))?;
                crate::fault::point("restore renamed a file into place");
                stats.written_files += 1;
                stats.written_bytes += e.size;
            }
        }
    }
    // 4. Symlinks, special files, hard links, metadata.
    for step in &plan.steps {
        let r = match step {
            Step::Symlink { path, meta: e } => {
                make_symlink(path, e, is_root).map(|_| stats.symlinks += 1)
            }
            Step::Special { path, meta: e } => {
                make_special(path, e, is_root).map(|_| stats.specials += 1)
            }
            _ => Ok(()),
        };
        if let Err(err) = r {
            fail(stats, step_path(step), err.to_string());
        }
    }
    for step in &plan.steps {
        if let Step::Link { path, to } = step {
            match fs::hard_link(to, path) {
                Ok(()) => {
                    stats.links += 1;
                    crate::fault::point("restore linked a file");
                }
                Err(e) => fail(stats, path, format!("cannot link to {}: {e}", to.display())),
            }
        }
    }
    for step in &plan.steps {
        if let Step::FixMeta { path, meta: e } = step {
            match set_meta_path(path, e.kind, e.mode, e.uid, e.gid, e.mtime_ns, is_root) {
                Ok(()) => {
                    stats.fixed_metadata += 1;
                    crate::fault::point("restore fixed metadata");
                }
                Err(err) => fail(stats, path, err.to_string()),
            }
        }
    }
    // 5. Directory metadata, deepest first, so setting a child's mtime does
    //    not disturb the parent's afterwards.
    for step in plan.steps.iter().rev() {
        if let Step::DirMeta { path, meta: e } = step {
            set_meta_path(path, Kind::Dir, e.mode, e.uid, e.gid, e.mtime_ns, is_root)?;
        }
    }
    for t in &plan.targets {
        syncfs(t)?;
    }
    stats.damaged |= damaged;
    if stats.damaged {
        progress.warn("some files could not be restored because the repository is damaged; run `snap check --read-data`");
    }
    Ok(())
}

impl Step {
    pub fn path(&self) -> &Path {
        step_path(self)
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

fn step_path(step: &Step) -> &Path {
    match step {
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

/// A read-only directory (restored last with its real mode) must accept
/// our changes: give the owner write permission; the final metadata pass
/// puts the real mode back.
fn make_parent_writable(path: &Path) {
    if let Some(parent) = path.parent()
        && let Ok(m) = fs::metadata(parent)
        && m.mode() & 0o200 == 0
    {
        let _ = fs::set_permissions(
            parent,
            fs::Permissions::from_mode((m.mode() & 0o7777) | 0o700),
        );
    }
}

/// Write one file's content to a temporary file beside it, with the
/// snapshot's metadata; returns the temporary to be renamed.
fn write_temp(
    reader: &mut ChunkReader,
    path: &Path,
    e: &Meta,
    locs: &[(ChunkId, ChunkLocation)],
    is_root: bool,
    progress: &dyn Progress,
) -> Result<tempfile::TempPath> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .at(dir)?;
    let tmp_path = tmp.path().to_path_buf();
    let file = tmp.as_file_mut();
    let mut pos: u64 = 0;
    let mut i = 0;
    // Adjacent chunks of one pack are read with one call.
    while i < locs.len() {
        let first = locs[i].1;
        let mut j = i + 1;
        let mut end = first.offset as u64 + first.stored_len as u64;
        while j < locs.len()
            && locs[j].1.pack == first.pack
            && locs[j].1.offset as u64 == end
            && end - first.offset as u64 <= 8 << 20
        {
            end += locs[j].1.stored_len as u64;
            j += 1;
        }
        let pack = reader.pack(&first.pack)?;
        let run = pack.read_stored(first.offset as u64, (end - first.offset as u64) as u32)?;
        for (id, loc) in &locs[i..j] {
            let start = (loc.offset - first.offset) as usize;
            let stored = &run[start..start + loc.stored_len as usize];
            let data = decode_chunk(pack.path(), id, loc.codec, stored, loc.raw_len)?;
            if data.len() >= 4096 && data.iter().all(|&b| b == 0) {
                // Leave a hole: sparse files stay sparse.
                file.seek(SeekFrom::Current(data.len() as i64))
                    .at(&tmp_path)?;
            } else {
                file.write_all(&data).at(&tmp_path)?;
            }
            pos += data.len() as u64;
            progress.bytes(data.len() as u64);
        }
        i = j;
    }
    if pos != e.size {
        return Err(Error::Damaged {
            path: path.to_path_buf(),
            reason: format!("snapshot lists {} bytes but its chunks hold {pos}", e.size),
        });
    }
    file.set_len(pos).at(&tmp_path)?;
    if is_root {
        std::os::unix::fs::fchown(&*file, Some(e.uid), Some(e.gid)).at(&tmp_path)?;
    }
    file.set_permissions(fs::Permissions::from_mode(e.mode))
        .at(&tmp_path)?;
    let mtime = system_time(e.mtime_ns);
    file.set_times(fs::FileTimes::new().set_modified(mtime).set_accessed(mtime))
        .at(&tmp_path)?;
    Ok(tmp.into_temp_path())
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("{}: path contains a NUL byte", path.display())))
}

fn make_symlink(path: &Path, e: &Meta, is_root: bool) -> Result<()> {
    let target = match &e.payload {
        Payload::Target(t) => OsStr::from_bytes(t),
        _ => OsStr::new(""),
    };
    std::os::unix::fs::symlink(target, path).at(path)?;
    set_meta_path(
        path,
        Kind::Symlink,
        e.mode,
        e.uid,
        e.gid,
        e.mtime_ns,
        is_root,
    )
}

fn make_special(path: &Path, e: &Meta, is_root: bool) -> Result<()> {
    let (fmt, rdev) = match (e.kind, &e.payload) {
        (Kind::Fifo, _) => (libc::S_IFIFO, 0),
        (Kind::Socket, _) => (libc::S_IFSOCK, 0),
        (Kind::CharDev, Payload::Device(r)) => (libc::S_IFCHR, *r),
        (Kind::BlockDev, Payload::Device(r)) => (libc::S_IFBLK, *r),
        _ => {
            return Err(Error::Invalid(format!(
                "{}: not a special file",
                path.display()
            )));
        }
    };
    if matches!(e.kind, Kind::CharDev | Kind::BlockDev) && !is_root {
        return Err(Error::Invalid(format!(
            "{}: device nodes can only be created as root",
            path.display()
        )));
    }
    let c = cpath(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            fmt | (e.mode & 0o7777) as libc::mode_t,
            rdev as libc::dev_t,
        )
    };
    if rc != 0 {
        return Err(Error::io(path, io::Error::last_os_error()));
    }
    set_meta_path(path, e.kind, e.mode, e.uid, e.gid, e.mtime_ns, is_root)
}

/// Set owner (as root), mode (not for symlinks) and mtime, without
/// following a symlink at `path`.
fn set_meta_path(
    path: &Path,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    is_root: bool,
) -> Result<()> {
    if is_root {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).at(path)?;
    }
    if kind != Kind::Symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).at(path)?;
    }
    let t = filetime::FileTime::from_unix_time(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(path, t, t).at(path)
}

/// Flush the filesystem holding `path` (one barrier for many files).
fn syncfs(path: &Path) -> Result<()> {
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new("/"))
    };
    let f = File::open(dir).at(dir)?;
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is valid while `f` lives.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(Error::io(dir, io::Error::last_os_error()));
    }
    Ok(())
}
