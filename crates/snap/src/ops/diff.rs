//! `snap diff`: what changed between two snapshots, or between a snapshot
//! and its source as it is now.
//!
//! Between snapshots the walk skips every subtree whose tree id is the
//! same on both sides, so its cost grows with what changed, not with the
//! size of the snapshots. Against the source, metadata decides first: a
//! file whose size differs is modified; one whose mtime differs is read
//! and compared by chunk hashes (modified, or metadata only); one whose
//! size and mtime match is unchanged unless `verify` asks to read it too
//! (or create flagged it as possibly changed while read). Directories are
//! compared by mode, owner and extended attributes, not mtime (which
//! changes with any content).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::chunker::ChunkerParams;
use crate::error::{Error, IoContext, Result};
use crate::exclude::Excludes;
use crate::id::TreeId;
use crate::ops::bounds::Bounds;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Entry, Kind, Payload, flags};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Removed,
    Modified,
    /// Same content, other mode, owner or mtime.
    Metadata,
    /// Another kind of entry (a file became a directory, ...).
    Type,
}

impl Change {
    /// The letter of the text form: `+ - M m T`.
    pub fn letter(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'm',
            Change::Type => 'T',
        }
    }
}

/// One changed path, relative to the snapshot root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub path: PathBuf,
    pub change: Change,
    /// The entry's kind after the change (before it, when removed).
    pub kind: Kind,
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffSummary {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub metadata: u64,
    pub type_changed: u64,
    /// Bytes of files added or grown, and of files removed or shrunk.
    pub bytes_added: u64,
    pub bytes_removed: u64,
}

impl DiffSummary {
    pub fn of(diffs: &[Difference]) -> DiffSummary {
        let mut s = DiffSummary::default();
        for d in diffs {
            match d.change {
                Change::Added => s.added += 1,
                Change::Removed => s.removed += 1,
                Change::Modified => s.modified += 1,
                Change::Metadata => s.metadata += 1,
                Change::Type => s.type_changed += 1,
            }
            let (b, a) = (d.size_before.unwrap_or(0), d.size_after.unwrap_or(0));
            s.bytes_added += a.saturating_sub(b);
            s.bytes_removed += b.saturating_sub(a);
        }
        s
    }
}

fn sizes(e: &Entry) -> Option<u64> {
    (e.kind == Kind::File).then_some(e.size)
}

fn push(
    out: &mut Vec<Difference>,
    path: PathBuf,
    change: Change,
    old: Option<&Entry>,
    new: Option<&Entry>,
) {
    let kind = new.or(old).map_or(Kind::File, |e| e.kind);
    out.push(Difference {
        path,
        change,
        kind,
        size_before: old.and_then(sizes),
        size_after: new.and_then(sizes),
    });
}

fn join(prefix: &Path, name: &[u8]) -> PathBuf {
    prefix.join(std::ffi::OsStr::from_bytes(name))
}

/// Differences from snapshot `a` to snapshot `b`, in path order.
pub fn diff_snapshots(repo: &Repository, a: &Snapshot, b: &Snapshot) -> Result<Vec<Difference>> {
    let mut out = Vec::new();
    diff_trees(repo, Some(a.root), Some(b.root), Path::new(""), &mut out)?;
    Ok(out)
}

fn load_entries(repo: &Repository, t: Option<TreeId>) -> Result<Vec<Entry>> {
    Ok(match t {
        Some(t) => repo.load_tree(&t)?.entries,
        None => Vec::new(),
    })
}

/// An entry's name with its old and new entries (either may be absent).
type Pair = (Vec<u8>, (Option<Entry>, Option<Entry>));

/// One directory being compared: its entries merged by name, and where.
struct Level {
    items: std::vec::IntoIter<Pair>,
    prefix: PathBuf,
}

/// Compare trees `a` and `b` (either may be absent) under `prefix`,
/// depth first, parents before children. Iterative and bounded by what it
/// reads (crate::ops::bounds): a deep or expanding graph is damage.
fn diff_trees(
    repo: &Repository,
    a: Option<TreeId>,
    b: Option<TreeId>,
    prefix: &Path,
    out: &mut Vec<Difference>,
) -> Result<()> {
    let mut bounds = Bounds::new(String::from("compared"));
    let mut stack = Vec::new();
    open_level(repo, &mut bounds, &mut stack, a, b, prefix.to_path_buf())?;
    while let Some(top) = stack.last_mut() {
        let Some((name, pair)) = top.items.next() else {
            stack.pop();
            continue;
        };
        let path = join(&top.prefix, &name);
        let below = match pair {
            (Some(old), None) => {
                push(out, path.clone(), Change::Removed, Some(&old), None);
                (old.subtree(), None)
            }
            (None, Some(new)) => {
                push(out, path.clone(), Change::Added, None, Some(&new));
                (None, new.subtree())
            }
            (Some(old), Some(new)) if old.kind != new.kind => {
                push(out, path.clone(), Change::Type, Some(&old), Some(&new));
                (old.subtree(), new.subtree())
            }
            (Some(old), Some(new)) if old.kind == Kind::Dir => {
                if !same_owner_and_mode(&old, &new) {
                    push(out, path.clone(), Change::Metadata, Some(&old), Some(&new));
                }
                (old.subtree(), new.subtree())
            }
            (Some(old), Some(new)) => {
                if old.size != new.size || old.payload != new.payload {
                    push(out, path, Change::Modified, Some(&old), Some(&new));
                } else if !same_owner_and_mode(&old, &new) || old.mtime_ns != new.mtime_ns {
                    push(out, path, Change::Metadata, Some(&old), Some(&new));
                }
                continue;
            }
            (None, None) => continue,
        };
        open_level(repo, &mut bounds, &mut stack, below.0, below.1, path)?;
    }
    Ok(())
}

/// Push the comparison of `a` and `b` (nothing when they are the same).
fn open_level(
    repo: &Repository,
    bounds: &mut Bounds,
    stack: &mut Vec<Level>,
    a: Option<TreeId>,
    b: Option<TreeId>,
    prefix: PathBuf,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let mut merged: BTreeMap<Vec<u8>, (Option<Entry>, Option<Entry>)> = BTreeMap::new();
    for (side, t) in [(0, a), (1, b)] {
        let entries = load_entries(repo, t)?;
        if let Some(id) = t {
            bounds.enter(repo, &id, entries.len(), stack.len())?;
        }
        for e in entries {
            let slot = merged.entry(e.name.clone()).or_default();
            if side == 0 {
                slot.0 = Some(e);
            } else {
                slot.1 = Some(e);
            }
        }
    }
    stack.push(Level {
        items: merged.into_iter().collect::<Vec<_>>().into_iter(),
        prefix,
    });
    Ok(())
}

fn same_owner_and_mode(a: &Entry, b: &Entry) -> bool {
    (a.kind == Kind::Symlink || a.mode == b.mode)
        && a.uid == b.uid
        && a.gid == b.gid
        && a.xattrs == b.xattrs
}

/// An entry removed, with everything below it.
fn gone(repo: &Repository, e: &Entry, path: PathBuf, out: &mut Vec<Difference>) -> Result<()> {
    push(out, path.clone(), Change::Removed, Some(e), None);
    diff_trees(repo, e.subtree(), None, &path, out)
}

/// Differences from snapshot `s` to its source directories as they are now.
pub fn diff_source(repo: &Repository, s: &Snapshot, verify: bool) -> Result<Vec<Difference>> {
    let ctx = SourceDiff {
        repo,
        params: ChunkerParams::from(repo.config()),
        ids: repo.ids(),
        verify,
        repo_root: fs::canonicalize(repo.root()).ok(),
    };
    let mut out = Vec::new();
    let root = repo.load_tree(&s.root)?;
    if s.sources.iter().all(|r| r.name.is_empty()) {
        let patterns = s
            .sources
            .first()
            .map(|r| r.exclude.clone())
            .unwrap_or_default();
        let ex = Excludes::new(&patterns).map_err(Error::usage)?;
        ctx.dir(
            Some(s.root),
            Some(&s.source),
            Path::new(""),
            Path::new(""),
            &ex,
            &mut out,
        )?;
        return Ok(out);
    }
    for r in &s.sources {
        let ex = Excludes::new(&r.exclude).map_err(Error::usage)?;
        let entry = root.get(r.name.as_bytes());
        let dir = PathBuf::from(&r.path);
        let on_disk = fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
        let rel = PathBuf::from(&r.name);
        match (entry.and_then(|e| e.subtree()), on_disk) {
            (Some(t), true) => ctx.dir(Some(t), Some(&dir), &rel, Path::new(""), &ex, &mut out)?,
            (Some(_), false) => gone(repo, entry.expect("has a subtree"), rel, &mut out)?,
            (None, true) => {
                let md = fs::symlink_metadata(&dir).at(&dir)?;
                let e = crate::source::entry_from_metadata(r.name.as_bytes().to_vec(), &md);
                push(&mut out, rel.clone(), Change::Added, None, Some(&e));
                ctx.dir(None, Some(&dir), &rel, Path::new(""), &ex, &mut out)?;
            }
            (None, false) => {}
        }
    }
    Ok(out)
}

/// An entry of the source as it is now, and where it is.
type OnDisk = (Entry, PathBuf);

struct SourceDiff<'a> {
    repo: &'a Repository,
    params: ChunkerParams,
    ids: crate::id::Ids,
    verify: bool,
    /// Never reported: create leaves the repository out of a source.
    repo_root: Option<PathBuf>,
}

impl SourceDiff<'_> {
    /// Compare tree `t` with directory `dir` (either may be absent).
    /// `rel` is the path in the snapshot, `in_source` the path below the
    /// source (what excludes match).
    fn dir(
        &self,
        t: Option<TreeId>,
        dir: Option<&Path>,
        rel: &Path,
        in_source: &Path,
        ex: &Excludes,
        out: &mut Vec<Difference>,
    ) -> Result<()> {
        let mut merged: BTreeMap<Vec<u8>, (Option<Entry>, Option<OnDisk>)> = BTreeMap::new();
        for e in load_entries(self.repo, t)? {
            let name = e.name.clone();
            merged.entry(name).or_default().0 = Some(e);
        }
        if let Some(dir) = dir {
            for de in fs::read_dir(dir).at(dir)? {
                let de = de.at(dir)?;
                let path = de.path();
                let Ok(md) = fs::symlink_metadata(&path) else {
                    continue; // vanished meanwhile
                };
                let name = de.file_name().as_bytes().to_vec();
                if ex.excludes(&join(in_source, &name), md.is_dir())
                    || self.repo_root.as_deref() == Some(path.as_path())
                {
                    continue;
                }
                let mut e = crate::source::entry_from_metadata(name.clone(), &md);
                e.xattrs = crate::xattr::read(crate::xattr::At::Path(&path)).unwrap_or_default();
                merged.entry(name).or_default().1 = Some((e, path));
            }
        }
        for (name, pair) in merged {
            let (rel_path, src_path) = (join(rel, &name), join(in_source, &name));
            match pair {
                (Some(old), None) => gone(self.repo, &old, rel_path, out)?,
                (None, Some((new, path))) => {
                    push(out, rel_path.clone(), Change::Added, None, Some(&new));
                    if new.kind == Kind::Dir {
                        self.dir(None, Some(&path), &rel_path, &src_path, ex, out)?;
                    }
                }
                (Some(old), Some((new, path))) if old.kind != new.kind => {
                    push(out, rel_path.clone(), Change::Type, Some(&old), Some(&new));
                    let sub = (new.kind == Kind::Dir).then_some(path.as_path());
                    self.dir(old.subtree(), sub, &rel_path, &src_path, ex, out)?;
                }
                (Some(old), Some((new, path))) => {
                    if old.kind == Kind::Dir {
                        if !same_owner_and_mode(&old, &new) {
                            push(
                                out,
                                rel_path.clone(),
                                Change::Metadata,
                                Some(&old),
                                Some(&new),
                            );
                        }
                        self.dir(old.subtree(), Some(&path), &rel_path, &src_path, ex, out)?;
                    } else if let Some(change) = self.compare(&old, &new, &path) {
                        push(out, rel_path, change, Some(&old), Some(&new));
                    }
                }
                (None, None) => {}
            }
        }
        Ok(())
    }

    /// How a non-directory changed, if it did.
    fn compare(&self, old: &Entry, new: &Entry, path: &Path) -> Option<Change> {
        let meta_same = same_owner_and_mode(old, new) && old.mtime_ns == new.mtime_ns;
        let content_same = match old.kind {
            Kind::File => {
                let suspect =
                    old.flags & (flags::RACY | flags::CHANGED_DURING_READ | flags::UNREADABLE) != 0;
                if old.size != new.size {
                    false
                } else if old.mtime_ns != new.mtime_ns || self.verify || suspect {
                    crate::ops::restore::file_matches(path, old, self.params, self.ids)
                } else {
                    true
                }
            }
            Kind::Symlink => match (&old.payload, fs::read_link(path)) {
                (Payload::Target(t), Ok(now)) => t.as_slice() == now.as_os_str().as_bytes(),
                _ => false,
            },
            _ => old.payload == new.payload,
        };
        match (content_same, meta_same) {
            (false, _) => Some(Change::Modified),
            (true, false) => Some(Change::Metadata),
            (true, true) => None,
        }
    }
}
