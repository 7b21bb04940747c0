//! Carry out a restore plan through directory handles (`crate::confined`):
//! every change is made relative to the handle of the directory that holds
//! the entry, reached from the restore root without following symlinks.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::FileType;

use super::fill::{self, WriteJob};
use super::plan::effective_mode;
use super::{Meta, Plan, RestoreStats, Step};
use crate::confined::{self, Confined, DirFd, RemoveError, TempFile};
use crate::error::{Error, IoContext, Result};
use crate::id::{ChunkId, PackId};
use crate::index::ChunkLocation;
use crate::pack::HEADER_LEN;
use crate::progress::{Progress, Warning, WarningKind};
use crate::repo::{ChunkReader, Repository};
use crate::tree::{Kind, Payload};

/// Files written between two durability barriers.
const WRITE_BATCH_FILES: usize = 4096;
/// Files sorted by where their content lies, then written batch by batch
/// (about 250 bytes each while they wait).
const WRITE_WINDOW_FILES: usize = 16 * WRITE_BATCH_FILES;

/// The state of one execution: the confined roots and what was done.
struct Exec<'p> {
    roots: Vec<Confined>,
    is_root: bool,
    /// The repository and the directories above it (device, inode).
    protected: HashSet<(u64, u64)>,
    /// Directories given owner write permission to accept changes, with
    /// their mode before; directories already looked at.
    widened: HashMap<(usize, PathBuf), u32>,
    looked_at: HashSet<(usize, PathBuf)>,
    /// One open file per filesystem written to, for the barriers.
    filesystems: Mutex<HashMap<u64, File>>,
    stats: &'p mut RestoreStats,
    progress: &'p dyn Progress,
}

pub(super) fn execute(
    repo: &Repository,
    plan: &Plan,
    stats: &mut RestoreStats,
    progress: &dyn Progress,
) -> Result<()> {
    progress.phase("restore", Some(plan.summary.write_bytes));
    // Directories at or above the roots (a target or a source directory
    // that does not exist yet) are made by path: the user or the vetted
    // snapshot named them. Everything below goes through handles.
    for step in &plan.steps {
        if let Step::MakeDir { path } = step
            && plan.roots.iter().any(|r| r.starts_with(path))
        {
            match fs::create_dir(path) {
                Ok(()) => stats.created_dirs += 1,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
    }
    let mut roots = Vec::with_capacity(plan.roots.len());
    let mut filesystems = HashMap::new();
    for r in &plan.roots {
        let c = Confined::open(r).at(r)?;
        let f = File::from(c.root().try_clone().at(r)?);
        let dev = f.metadata().at(r)?.dev_id();
        filesystems.entry(dev).or_insert(f);
        roots.push(c);
    }
    let mut x = Exec {
        roots,
        is_root: rustix::process::geteuid().is_root(),
        protected: super::plan::protected_dirs(repo)?,
        widened: HashMap::new(),
        looked_at: HashSet::new(),
        filesystems: Mutex::new(filesystems),
        stats,
        progress,
    };
    x.deletions(plan);
    x.directories(plan);
    if let Err(e) = x.contents(repo, plan) {
        // Directories opened up for writing get their mode back even when
        // the restore stops half way.
        x.put_back_widened(plan);
        let _ = x.barrier();
        return Err(e);
    }
    crate::fault::pause("restore contents written");
    x.links_and_metadata(plan);
    x.directory_metadata(plan);
    x.put_back_widened(plan);
    x.barrier()?;
    if x.stats.damaged {
        progress.warn(&Warning::general(
            "some files could not be restored because the repository is damaged; run `snap check --read-data`".into(),
        ));
    }
    Ok(())
}

trait DevId {
    fn dev_id(&self) -> u64;
}

impl DevId for fs::Metadata {
    fn dev_id(&self) -> u64 {
        std::os::unix::fs::MetadataExt::dev(self)
    }
}

/// Why a step failed because the target changed under the restore.
fn moved(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
            format!(
                "a directory on the way is no longer one (replaced by a symlink or file during the restore?): {e}"
            )
        }
        _ => e.to_string(),
    }
}

impl Exec<'_> {
    /// Restored, but not exactly (listed with the failures: exit 3).
    fn partly(&mut self, path: &Path, why: String) {
        self.progress.warn(&Warning::new(
            WarningKind::NotRestored,
            path,
            format!("{}: restored, but {why}", path.display()),
        ));
        self.stats.failed.push((path.display().to_string(), why));
    }

    fn fail(&mut self, path: &Path, why: String) {
        self.progress.warn(&Warning::new(
            WarningKind::NotRestored,
            path,
            format!("{}: not restored: {why}", path.display()),
        ));
        self.stats.failed.push((path.display().to_string(), why));
    }

    /// Which root `path` lies under, and its path relative to that root.
    fn locate<'a>(&self, path: &'a Path) -> Option<(usize, &'a Path)> {
        self.roots
            .iter()
            .enumerate()
            .filter_map(|(i, r)| path.strip_prefix(r.root_path()).ok().map(|rel| (i, rel)))
            .max_by_key(|(_, rel)| std::cmp::Reverse(rel.components().count()))
    }

    /// The handle of the directory holding `path`, and its name there,
    /// with the directory made writable for us.
    fn parent_of<'a>(&mut self, path: &'a Path) -> io::Result<(usize, DirFd, &'a OsStr)> {
        let (ri, rel) = self.locate(path).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "outside every restore root")
        })?;
        let (dir, name) = self.roots[ri].parent(rel)?;
        self.widen(ri, rel.parent().unwrap_or(Path::new("")))?;
        Ok((ri, dir, name))
    }

    /// A read-only directory (restored last with its real mode) must accept
    /// our changes: give the owner write permission, note the mode before.
    fn widen(&mut self, ri: usize, dir_rel: &Path) -> io::Result<()> {
        let key = (ri, dir_rel.to_path_buf());
        if self.looked_at.contains(&key) {
            return Ok(());
        }
        let c = &mut self.roots[ri];
        let mode = if dir_rel.as_os_str().is_empty() {
            let st = rustix::fs::fstat(&**c.root())?;
            let mode = st.st_mode & 0o7777;
            if mode & 0o200 == 0 {
                rustix::fs::fchmod(
                    &**c.root(),
                    rustix::fs::Mode::from_raw_mode((mode | 0o700) as _),
                )?;
            }
            mode
        } else {
            let (pdir, name) = c.parent(dir_rel)?;
            let mode = confined::lstat(&pdir, name)?.st_mode & 0o7777;
            if mode & 0o200 == 0 {
                confined::chmod(&pdir, name, mode | 0o700)?;
            }
            mode
        };
        if mode & 0o200 == 0 {
            self.widened.insert(key.clone(), mode as u32);
        }
        self.looked_at.insert(key);
        Ok(())
    }

    /// 1. Entries the snapshot lacks or holds as another kind.
    fn deletions(&mut self, plan: &Plan) {
        for step in &plan.steps {
            let Step::Delete { path, dir } = step else {
                continue;
            };
            let r = match self.parent_of(path) {
                Err(e) => Err(RemoveError::Io(path.clone(), e)),
                Ok((ri, pdir, name)) => {
                    let protected = &self.protected;
                    let r = if *dir {
                        let keep = |d, i| protected.contains(&(d, i));
                        confined::remove_all(&pdir, name, path, &keep)
                    } else {
                        confined::unlink(&pdir, name).map_err(rm_io(path))
                    };
                    if let Some((_, rel)) = self.locate(path) {
                        self.roots[ri].forget(rel);
                    }
                    r
                }
            };
            match r {
                Ok(()) => self.stats.deleted_entries += 1,
                Err(RemoveError::Io(_, e)) if e.kind() == io::ErrorKind::NotFound => {
                    self.stats.deleted_entries += 1
                }
                Err(RemoveError::Io(p, e)) => {
                    self.fail(&p, format!("cannot delete: {}", moved(&e)))
                }
                Err(RemoveError::Refused(p, why)) => self.fail(&p, format!("left in place: {why}")),
            }
            crate::fault::point("restore deleted an entry");
        }
    }

    /// 2. Directories, parents first (the plan lists them in that order),
    ///    0700 until their metadata is set.
    fn directories(&mut self, plan: &Plan) {
        for step in &plan.steps {
            let Step::MakeDir { path } = step else {
                continue;
            };
            if plan.roots.iter().any(|r| r.starts_with(path)) {
                continue; // made by path above
            }
            let r = self.parent_of(path).and_then(|(_, dir, name)| {
                match confined::mkdir(&dir, name, 0o700) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        match confined::lstat(&dir, name) {
                            Ok(st) if confined::is_dir(&st) => Ok(false),
                            _ => Err(e),
                        }
                    }
                    r => r.map(|()| true),
                }
            });
            match r {
                Ok(true) => self.stats.created_dirs += 1,
                Ok(false) => {}
                Err(e) => self.fail(path, format!("cannot create the directory: {}", moved(&e))),
            }
        }
    }

    /// 3. File contents, in batches (bounded memory and bounded work between
    ///    barriers): locate chunks, write temporaries in parallel, one
    ///    barrier for the batch, then rename each over its real name.
    ///
    /// The files come from the plan's `Write` steps, then from its fresh
    /// files (expanded from their trees here), in windows of at most
    /// `WRITE_WINDOW_FILES`: memory is bounded by a window, whatever the
    /// number of files.
    fn contents(&mut self, repo: &Repository, plan: &Plan) -> Result<()> {
        let reader = ChunkReader::of_repository(repo)?;
        let mut ids: Vec<PackId> = repo.index.packs()?.into_iter().map(|p| p.id).collect();
        ids.sort_unstable();
        let rank: HashMap<PackId, u64> = ids.into_iter().zip(1..).collect();
        let w = Writer {
            repo,
            reader: &reader,
            rank: &rank,
        };
        // While one batch's barrier runs (it waits for the disk), the next
        // batch is read and written, across windows too; its renames wait
        // for its own barrier.
        std::thread::scope(|scope| -> Result<()> {
            let mut pending: Option<Pending> = None;
            let mut window: Vec<(PathBuf, Meta)> = Vec::new();
            for step in &plan.steps {
                if let Step::Write { path, meta, .. } = step {
                    window.push((path.clone(), meta.clone()));
                    if window.len() >= WRITE_WINDOW_FILES {
                        self.write_window(&w, scope, &mut pending, &mut window)?;
                    }
                }
            }
            for fresh in &plan.fresh {
                if self.progress.cancelled() {
                    break;
                }
                let tree = match repo.load_tree(&fresh.tree) {
                    Ok(t) => t,
                    Err(e) => {
                        self.stats.damaged |= e.is_damage();
                        self.fail(&fresh.dir, format!("its files not written: {e}"));
                        continue;
                    }
                };
                for &i in &fresh.entries {
                    let Some(e) = tree.entries.get(i as usize) else {
                        self.fail(&fresh.dir, format!("its tree has no entry {i}"));
                        continue;
                    };
                    window.push((fresh.dir.join(e.name_os()), Meta::of(e)));
                    if window.len() >= WRITE_WINDOW_FILES {
                        self.write_window(&w, scope, &mut pending, &mut window)?;
                    }
                }
            }
            if !window.is_empty() {
                self.write_window(&w, scope, &mut pending, &mut window)?;
            }
            if let Some(p) = pending.take() {
                self.rename_into_place(p)?;
            }
            if self.progress.cancelled() {
                return Err(Error::Interrupted);
            }
            Ok(())
        })
    }

    /// Write the files of `window` (emptied), in batches; the last batch
    /// is left in `pending`, its barrier running.
    fn write_window<'s>(
        &mut self,
        w: &Writer,
        scope: &'s std::thread::Scope<'s, '_>,
        pending: &mut Option<Pending<'s>>,
        window: &mut Vec<(PathBuf, Meta)>,
    ) -> Result<()> {
        let repo = w.repo;
        if self.progress.cancelled() {
            window.clear();
            return Ok(());
        }
        // In the order the packs hold the files' first chunks: reads then
        // sweep each pack once (create wrote files in another order than
        // the plan's path order). Directories already exist, and each
        // batch's renames follow its barrier, so any order is safe. The
        // key packs the pack's rank by id (1-based; 0: no chunk) and the
        // offset into 8 bytes. Packs in id order, as the readers' sweep
        // was measured with (the order the plan meets them restored the
        // app set 5-8% slower).
        let mut keyed: Vec<(u64, PathBuf, Meta)> = Vec::with_capacity(window.len());
        repo.index.in_read_transaction(|| {
            for (path, meta) in window.drain(..) {
                let loc = match meta.chunks().first() {
                    Some(first) => repo.chunk_location(first).ok().flatten(),
                    None => None,
                };
                let key = loc.map_or(0, |l| {
                    let r = w.rank.get(&l.pack).copied().unwrap_or(u64::from(u32::MAX));
                    (r << 32) | l.offset as u64
                });
                keyed.push((key, path, meta));
            }
            Ok(())
        })?;
        keyed.sort_by_key(|(key, ..)| *key);
        let mut files = keyed.into_iter().map(|(_, p, m)| (p, m));
        loop {
            let batch: Vec<(PathBuf, Meta)> = files.by_ref().take(WRITE_BATCH_FILES).collect();
            if batch.is_empty() || self.progress.cancelled() {
                return Ok(());
            }
            self.write_batch(w, scope, pending, batch)?;
        }
    }

    /// Write one batch to temporaries, rename the batch before it into
    /// place, and leave this one in `pending` with its barrier running.
    fn write_batch<'s>(
        &mut self,
        w: &Writer,
        scope: &'s std::thread::Scope<'s, '_>,
        pending: &mut Option<Pending<'s>>,
        batch: Vec<(PathBuf, Meta)>,
    ) -> Result<()> {
        let repo = w.repo;
        // The batch's lookups in one read transaction: one lock of the
        // index, not one per chunk.
        let (jobs, bases) = repo.index.in_read_transaction(|| {
            let jobs = self.write_jobs(repo, batch);
            let bases = crate::delta::bases_of(
                repo,
                jobs.iter().flat_map(|j| j.locs.iter().map(|(_, l)| l)),
            )?;
            Ok((jobs, bases))
        })?;
        let cx = fill::Context {
            reader: w.reader,
            bases: &bases,
            remote: repo.storage().is_remote(),
            is_root: self.is_root,
            progress: self.progress,
            filesystems: &self.filesystems,
        };
        let Ok(written) = fill::fill(&cx, &jobs) else {
            return Ok(()); // cancelled: the caller says so
        };
        let mut renames = Vec::new();
        for (job, r) in jobs.iter().zip(written) {
            match r {
                Ok((tmp, note)) => {
                    if let Some(why) = note {
                        self.partly(&job.path, format!("extended attributes not set: {why}"));
                    }
                    renames.push(Some(tmp))
                }
                Err(f) => {
                    self.stats.damaged |= f.damage;
                    self.fail(&job.path, f.message);
                    renames.push(None);
                }
            }
        }
        if let Some(p) = pending.take() {
            self.rename_into_place(p)?;
        }
        if renames.iter().all(Option::is_none) {
            return Ok(());
        }
        // One barrier for the batch instead of an fsync per file.
        let files = self.filesystem_handles()?;
        let barrier = scope.spawn(move || sync_filesystems(&files));
        *pending = Some(Pending {
            jobs,
            renames,
            barrier,
        });
        Ok(())
    }

    /// The write jobs of a batch: each file's chunk locations (checked) and
    /// its directory's handle; files for which either fails are reported.
    fn write_jobs(&mut self, repo: &Repository, batch: Vec<(PathBuf, Meta)>) -> Vec<WriteJob> {
        let mut jobs: Vec<WriteJob> = Vec::with_capacity(batch.len());
        for (path, meta) in batch {
            let locs = match locate_chunks(repo, &meta) {
                Ok(l) => l,
                Err(err) => {
                    self.stats.damaged |= err.is_damage();
                    self.fail(&path, err.to_string());
                    continue;
                }
            };
            let (dir, name) = match self.parent_of(&path) {
                Ok((_, dir, name)) => (dir, name.to_os_string()),
                Err(e) => {
                    self.fail(&path, moved(&e));
                    continue;
                }
            };
            jobs.push(WriteJob {
                path,
                meta,
                dir,
                name,
                locs,
            });
        }
        jobs
    }

    /// Wait for a batch's barrier, then rename its temporaries over their
    /// real names.
    fn rename_into_place(&mut self, p: Pending) -> Result<()> {
        p.barrier
            .join()
            .unwrap_or_else(|_| Err(Error::internal("restore", "sync panicked")))?;
        crate::fault::point("restore temporaries durable");
        for (job, tmp) in p.jobs.iter().zip(p.renames) {
            let Some(tmp) = tmp else { continue };
            match tmp.persist(&job.name) {
                Ok(()) => {
                    crate::fault::point("restore renamed a file into place");
                    self.stats.written_files += 1;
                    self.stats.written_bytes += job.meta.size;
                }
                Err(e) => self.fail(&job.path, format!("cannot rename into place: {e}")),
            }
        }
        Ok(())
    }

    /// A handle of each filesystem written to so far, for a barrier that
    /// runs while the next batch fills (which adds to the set).
    fn filesystem_handles(&self) -> Result<Vec<File>> {
        let filesystems = self.filesystems.lock().unwrap_or_else(|e| e.into_inner());
        filesystems
            .values()
            .map(|f| {
                f.try_clone()
                    .map_err(|e| Error::internal("restore", format!("a handle for sync: {e}")))
            })
            .collect()
    }

    /// 4. Symlinks, special files, hard links, metadata.
    fn links_and_metadata(&mut self, plan: &Plan) {
        for step in &plan.steps {
            let (path, meta) = match step {
                Step::Symlink { path, meta } | Step::Special { path, meta } => (path, meta),
                _ => continue,
            };
            let r = self
                .parent_of(path)
                .map_err(|e| moved(&e))
                .and_then(|(_, dir, name)| make_entry(&dir, name, meta, self.is_root));
            match r {
                Ok(()) if meta.kind == Kind::Symlink => self.stats.symlinks += 1,
                Ok(()) => self.stats.specials += 1,
                Err(why) => self.fail(path, why),
            }
        }
        for step in &plan.steps {
            let Step::Link { path, to } = step else {
                continue;
            };
            let r = self.link_target(to).and_then(|(from_dir, from)| {
                let (_, dir, name) = self.parent_of(path)?;
                confined::hard_link(&from_dir, from, &dir, name)
            });
            match r {
                Ok(()) => {
                    self.stats.links += 1;
                    crate::fault::point("restore linked a file");
                }
                Err(e) => self.fail(
                    path,
                    format!("cannot link to {}: {}", to.display(), moved(&e)),
                ),
            }
        }
        for step in &plan.steps {
            let Step::FixMeta { path, meta, seen } = step else {
                continue;
            };
            let r = self
                .parent_of(path)
                .map_err(|e| moved(&e))
                .and_then(|(_, dir, name)| fix_meta(&dir, name, meta, *seen, self.is_root));
            match r {
                Ok(()) => {
                    self.stats.fixed_metadata += 1;
                    crate::fault::point("restore fixed metadata");
                }
                Err(why) => self.fail(path, why),
            }
        }
    }

    fn link_target<'a>(&mut self, to: &'a Path) -> io::Result<(DirFd, &'a OsStr)> {
        let (ri, rel) = self.locate(to).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "outside every restore root")
        })?;
        self.roots[ri].parent(rel)
    }

    /// 5. Directory metadata, deepest first, so setting a child's mtime
    ///    does not disturb the parent's afterwards.
    fn directory_metadata(&mut self, plan: &Plan) {
        for step in plan.steps.iter().rev() {
            let Step::DirMeta { path, meta, fix } = step else {
                continue;
            };
            let Some((ri, rel)) = self.locate(path) else {
                self.fail(path, "outside every restore root".into());
                continue;
            };
            let is_root = self.is_root;
            let r = if rel.as_os_str().is_empty() {
                let owner = is_root.then_some((meta.uid, meta.gid));
                let mode = effective_mode(meta.mode, meta.uid, meta.gid);
                confined::set_meta_fd(&**self.roots[ri].root(), owner, mode, meta.mtime_ns)
                    .map_err(|e| e.to_string())
            } else {
                self.roots[ri]
                    .parent(rel)
                    .map_err(|e| moved(&e))
                    .and_then(|(dir, name)| set_meta(&dir, name, meta, is_root))
            };
            match r {
                Err(why) => self.fail(path, why),
                Ok(()) if *fix => self.stats.fixed_metadata += 1,
                Ok(()) => {}
            }
        }
    }

    /// Directories widened for our changes that the plan gives no final
    /// metadata of their own (the parent of a `--path`) get their mode back.
    fn put_back_widened(&mut self, plan: &Plan) {
        let with_meta: HashSet<&Path> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::DirMeta { path, .. } => Some(path.as_path()),
                _ => None,
            })
            .collect();
        let widened: Vec<_> = self.widened.drain().collect();
        for ((ri, rel), mode) in widened {
            let path = self.roots[ri].root_path().join(&rel);
            if with_meta.contains(path.as_path()) {
                continue;
            }
            let r = if rel.as_os_str().is_empty() {
                rustix::fs::fchmod(
                    &**self.roots[ri].root(),
                    rustix::fs::Mode::from_raw_mode(mode as _),
                )
                .map_err(io::Error::from)
            } else {
                self.roots[ri]
                    .parent(&rel)
                    .and_then(|(dir, name)| confined::chmod(&dir, name, mode))
            };
            if let Err(e) = r {
                self.fail(&path, format!("cannot put its mode back: {e}"));
            }
        }
    }

    /// Make everything written so far durable: one sync per filesystem.
    fn barrier(&self) -> Result<()> {
        sync_filesystems(&self.filesystem_handles()?)
    }
}

/// What every window of a restore writes with.
struct Writer<'a> {
    repo: &'a Repository,
    reader: &'a ChunkReader,
    /// Each pack's rank by id (1-based), for the order of the writes.
    rank: &'a HashMap<PackId, u64>,
}

/// A batch whose temporaries are filled, waiting for its barrier: each
/// job's temporary (`None` where the file failed).
struct Pending<'s> {
    jobs: Vec<WriteJob>,
    renames: Vec<Option<TempFile>>,
    barrier: std::thread::ScopedJoinHandle<'s, Result<()>>,
}

/// One sync per filesystem.
fn sync_filesystems(files: &[File]) -> Result<()> {
    for f in files {
        confined::sync_filesystem(f).map_err(|e| Error::SyncFailed { source: e })?;
    }
    Ok(())
}

fn rm_io(path: &Path) -> impl Fn(io::Error) -> RemoveError + '_ {
    move |e| RemoveError::Io(path.to_path_buf(), e)
}

/// Every chunk's location, each checked against what a pack can hold and
/// the file's size, before anything is written: a damaged or crafted index
/// row is damage, never a wrong slice.
fn locate_chunks(repo: &Repository, meta: &Meta) -> Result<Vec<(ChunkId, ChunkLocation)>> {
    let mut locs = Vec::with_capacity(meta.chunks().len());
    let mut total: u64 = 0;
    for id in meta.chunks() {
        let loc = repo.require_chunk_location(id)?;
        let bad = |why: &str| Error::PackDamaged {
            pack: loc.pack,
            reason: format!("index row of chunk {}: {why}", id.short()),
        };
        if (loc.offset as u64) < HEADER_LEN {
            return Err(bad("offset inside the pack header"));
        }
        if loc.raw_len > crate::config::CHUNK_MAX_LIMIT
            || loc.stored_len > crate::config::CHUNK_MAX_LIMIT + 1024
        {
            return Err(bad("length out of bounds"));
        }
        total = total
            .checked_add(loc.raw_len as u64)
            .ok_or_else(|| bad("lengths overflow"))?;
        locs.push((*id, loc));
    }
    if total != meta.size {
        return Err(Error::Damaged {
            path: repo.index_path(),
            reason: format!(
                "the snapshot lists {} bytes but the index's chunks hold {total}",
                meta.size
            ),
        });
    }
    Ok(locs)
}

/// Create a symlink or special file `name` in `dir` with its metadata.
fn make_entry(dir: &DirFd, name: &OsStr, e: &Meta, is_root: bool) -> Result<(), String> {
    match (e.kind, &e.payload) {
        (Kind::Symlink, Payload::Target(t)) => {
            confined::symlink(OsStr::from_bytes(t), dir, name).map_err(|e| e.to_string())?
        }
        (Kind::Symlink, _) => {
            confined::symlink(OsStr::new(""), dir, name).map_err(|e| e.to_string())?
        }
        (Kind::CharDev | Kind::BlockDev, _) if !is_root => {
            return Err("device nodes can only be created as root".into());
        }
        (kind, payload) => {
            let (ft, rdev) = match (kind, payload) {
                (Kind::Fifo, _) => (FileType::Fifo, 0),
                (Kind::Socket, _) => (FileType::Socket, 0),
                (Kind::CharDev, Payload::Device(r)) => (FileType::CharacterDevice, *r),
                (Kind::BlockDev, Payload::Device(r)) => (FileType::BlockDevice, *r),
                _ => return Err("not a special file".into()),
            };
            let mode = effective_mode(e.mode, e.uid, e.gid) & 0o7777;
            confined::mknod(dir, name, ft, mode, rdev).map_err(|e| e.to_string())?
        }
    }
    set_meta(dir, name, e, is_root)
}

/// Owner (as root), mode (not for symlinks) and mtime of `dir/name`, never
/// through a symlink.
fn set_meta(dir: &DirFd, name: &OsStr, e: &Meta, is_root: bool) -> Result<(), String> {
    if is_root {
        confined::chown(dir, name, e.uid, e.gid)
            .map_err(|e| format!("cannot set the owner: {e}"))?;
    }
    if e.kind != Kind::Symlink {
        confined::chmod(dir, name, effective_mode(e.mode, e.uid, e.gid))
            .map_err(|e| format!("cannot set the mode: {}", moved(&e)))?;
    }
    confined::set_mtime(dir, name, e.mtime_ns).map_err(|e| format!("cannot set the mtime: {e}"))?;
    set_xattrs(dir, name, e, is_root)
}

/// The metadata of an entry whose content the plan kept: set only on the
/// inode the plan saw, and, by root, never on a file with names the
/// snapshot did not record (see `confined::set_meta_seen`).
fn fix_meta(
    dir: &DirFd,
    name: &OsStr,
    e: &Meta,
    seen: (u64, u64),
    is_root: bool,
) -> Result<(), String> {
    let owner = is_root.then_some((e.uid, e.gid));
    let mode = (e.kind != Kind::Symlink).then(|| effective_mode(e.mode, e.uid, e.gid));
    let lone = is_root && !e.linked;
    confined::set_meta_seen(dir, name, seen, owner, mode, e.mtime_ns, lone)
        .map_err(|err| format!("metadata not set: {}", moved(&err)))?;
    set_xattrs(dir, name, e, is_root)
}

/// The entry's extended attributes, exactly (what this user may set):
/// through the pinned directory handle, never following `name`.
fn set_xattrs(dir: &DirFd, name: &OsStr, e: &Meta, is_root: bool) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let mut p = std::ffi::OsString::from(format!("/proc/self/fd/{}/", dir.as_raw_fd()));
    p.push(name);
    let at = crate::xattr::At::Path(Path::new(&p));
    if e.xattrs.is_empty() && !crate::xattr::differs(at, &e.xattrs, is_root) {
        return Ok(());
    }
    match crate::xattr::apply(at, &e.xattrs, is_root) {
        Ok(refused) if refused.is_empty() => Ok(()),
        Ok(refused) => Err(format!(
            "extended attributes not set: {}",
            refused.join("; ")
        )),
        Err(err) => Err(format!("extended attributes not set: {err}")),
    }
}
