//! `snap create`: snapshot one directory.
//!
//! The walk runs on the calling thread and hands files that must be read to
//! a pool of readers (chunk, hash, dedup, compress; CPU work inside a file
//! fans out over rayon). New chunks go through a bounded queue to a single
//! pack writer. The calling thread owns the index transaction: it records
//! each pack after the writer has made it durable, stores each directory's
//! tree as soon as its last file is done, and commits the snapshot at the end
//! in the same transaction. Memory is bounded by the queues and by the
//! directories still waiting for files, not by the size of the source.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, Select, Sender, bounded, unbounded};
use rayon::prelude::*;

use crate::chunker::{Chunker, ChunkerParams};
use crate::claims::Claims;
use crate::compress::{Codec, compress_with};
use crate::error::{Error, IoContext, Result};
use crate::exclude::Excludes;
use crate::held::HeldFiles;
use crate::id::{ChunkId, SnapshotId, TreeId};
use crate::index::{ChunkLocation, Index};
use crate::config::CHUNK_MAX_LIMIT;
use crate::delta::Stored;
use crate::grouping::{Frame, Group, groupable};
use crate::pack::{Blob, FinishedPack, PackKind, Packer};
use crate::progress::{Progress, Warning, WarningKind};
use crate::write::WriteSession;
use crate::repo::{ChunkReader, Repository};
use crate::snapshot::{RootMeta, Snapshot, SnapshotStats, SourceRoot};
use crate::source::{entry_from_metadata, entry_from_stat, lstat_at, unchanged};
use crate::sqlite::{self, DbInfo};
use crate::storage::Storage;
use crate::tree::{Entry, Kind, Payload, Tree, flags};

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The directory to snapshot; with `sources`, the key that groups the
    /// snapshots of those sources (the config file's path).
    pub source: PathBuf,
    /// Exclude patterns for `source` (see crate::exclude).
    pub exclude: Vec<String>,
    /// Named sources, snapshotted together into one snapshot whose root
    /// holds one directory per name.
    pub sources: Vec<SourceSpec>,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Compare against this snapshot instead of the latest of the same source.
    pub parent: Option<SnapshotId>,
    /// Read every file, trusting no metadata.
    pub force: bool,
    pub pinned: bool,
    /// Run `PRAGMA quick_check` on every captured SQLite image.
    pub sqlite_check: bool,
    /// Do not descend into directories on another filesystem than their
    /// source's: each is stored as an empty directory (with its metadata).
    pub one_file_system: bool,
    /// Snapshot pseudo-filesystems (proc, sysfs, ...) too; without it a
    /// source on one is refused and one met below a source is skipped.
    pub pseudo_filesystems: bool,
    /// Set from outside (a signal handler) to stop: create then commits
    /// nothing and returns `Error::Interrupted`. [`Progress::cancelled`]
    /// is polled at the same points (each directory, each file).
    pub cancel: Option<Arc<AtomicBool>>,
    /// How many files are read at once; default three per core.
    pub workers: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSpec {
    pub name: String,
    pub path: PathBuf,
    pub exclude: Vec<String>,
}

/// Files modified this close to the snapshot's start are re-read next time:
/// a second write in the same timestamp tick would leave size and mtime
/// unchanged (the "racy git" problem). Linux stamps files from a clock with
/// jiffy resolution; 2 s also covers coarser filesystems.
const RACY_WINDOW_NS: i64 = 2_000_000_000;
/// How much of a file one reader chunks before fanning out the CPU work.
const BATCH_BYTES: usize = 4 << 20;
/// A file that keeps changing is read at most this many times.
const READ_ATTEMPTS: usize = 3;
pub use crate::repo::TMP_SQLITE_PREFIX;

struct FileJob {
    node: usize,
    slot: usize,
    path: PathBuf,
    rel: PathBuf,
    ino: u64,
    /// A database's pages in the parent snapshot (same path), the bases
    /// its changed pages are stored as deltas of (`crate::delta`).
    base_pages: Option<Vec<ChunkId>>,
}

enum FileOutcome {
    Stored {
        chunks: Vec<ChunkId>,
        meta: Entry,
        read_bytes: u64,
        changed: bool,
        /// Set when the file was captured as a SQLite database.
        db: Option<DbInfo>,
    },
    Vanished,
    Unreadable(String),
    Fatal(Error),
}

struct FileResult {
    node: usize,
    slot: usize,
    rel: PathBuf,
    outcome: FileOutcome,
}


/// A directory whose tree is not yet complete.
struct Node {
    entries: Vec<Entry>,
    /// Slots whose file vanished before it could be read.
    dropped: Vec<usize>,
    pending: usize,
    walked: bool,
    parent: Option<(usize, usize)>,
    /// The parent snapshot's tree for this directory: when the new tree
    /// comes out equal, its id is reused without encoding or storing.
    old: Option<(TreeId, Tree)>,
}

pub fn create(
    repo: &Repository,
    opts: &CreateOptions,
    progress: &dyn Progress,
) -> Result<Snapshot> {
    let started = Instant::now();
    let start_ns = now_ns();
    for t in &opts.tags {
        crate::snapshot::check_tag(t)?;
    }
    let roots = roots_of(opts)?;
    let key = if opts.sources.is_empty() {
        roots[0].1.clone()
    } else {
        opts.source.clone()
    };
    let parent = match &opts.parent {
        Some(id) => Some(
            repo.snapshot_by_id(id)?
                .ok_or_else(|| Error::NoSuchSnapshot(id.to_hex()))?,
        ),
        None => repo.latest_snapshot_of(&key)?,
    };
    let repo_keys = repo.place_keys()?;

    prepare_tmp_dir(repo)?;
    // The parent's size is the best estimate of this snapshot's (the
    // bytes read plus the bytes of unchanged files reused).
    progress.phase("create", parent.as_ref().map(|p| p.stats.total_bytes));
    repo.index.tune_for_create()?;
    let session = repo.write()?;
    crate::fault::pause("create started");
    let ctx = RunCtx {
        session: &session,
        opts,
        repo_keys: &repo_keys,
        start_ns,
        progress,
    };
    let result = walk_roots(&ctx, &roots, parent.as_ref());
    let (root, root_meta, mut stats, unreadable, dbs) = match result {
        Ok(r) => r,
        Err(e) => {
            drop(session);
            progress.finish();
            return Err(e);
        }
    };
    stats.duration_ms = started.elapsed().as_millis() as u64;
    let nonce: u64 = rand::random();
    let walked = Walked {
        root,
        root_meta,
        stats,
        unreadable,
        dbs,
    };
    let snapshot = snapshot_record(opts, &roots, key, parent, walked, start_ns, nonce);
    let commit = session.commit_snapshots(&[(&snapshot, nonce)]);
    progress.finish();
    commit.map(|()| snapshot)
}

/// What to walk: (name, canonical path, metadata, excludes) per source.
fn roots_of(opts: &CreateOptions) -> Result<Vec<Root>> {
    if opts.sources.is_empty() {
        let (path, md) = source_dir(&opts.source, opts.pseudo_filesystems)?;
        return Ok(vec![(String::new(), path, md, compile(&opts.exclude)?)]);
    }
    opts.sources
        .iter()
        .map(|s| {
            let (path, md) = source_dir(&s.path, opts.pseudo_filesystems)?;
            Ok((s.name.clone(), path, md, compile(&s.exclude)?))
        })
        .collect()
}

/// What the walk of a create's sources made.
struct Walked {
    root: TreeId,
    root_meta: RootMeta,
    stats: SnapshotStats,
    unreadable: Vec<(String, String)>,
    dbs: Vec<(String, DbInfo)>,
}

/// The snapshot record of a create, its id computed.
fn snapshot_record(
    opts: &CreateOptions,
    roots: &[Root],
    key: PathBuf,
    parent: Option<Snapshot>,
    w: Walked,
    start_ns: i64,
    nonce: u64,
) -> Snapshot {
    let host = crate::hostname();
    let id = Snapshot::compute_id(
        start_ns,
        &host,
        key.as_os_str().as_bytes(),
        &w.root,
        parent.as_ref().map(|p| &p.id),
        nonce,
    );
    let sources = roots
        .iter()
        .map(|(name, path, _, ex)| SourceRoot {
            name: name.clone(),
            path: path.to_string_lossy().into_owned(),
            exclude: ex.as_ref().map_or(Vec::new(), |e| e.patterns().to_vec()),
        })
        .collect();
    Snapshot {
        id,
        time_ns: start_ns,
        host,
        source: key,
        root: w.root,
        parent: parent.map(|p| p.id),
        tags: opts.tags.clone(),
        labels: with_db_labels(&opts.labels, &w.dbs),
        complete: w.unreadable.is_empty(),
        pinned: opts.pinned,
        unreadable: w.unreadable,
        stats: w.stats,
        root_meta: w.root_meta,
        sources,
    }
}

/// Create tmp/, removing SQLite images an interrupted create left there
/// (create runs under the exclusive lock, so none is in use).
fn prepare_tmp_dir(repo: &Repository) -> Result<()> {
    let local = repo.local_dir();
    local.prepare_tmp()?;
    local.remove_stale_images();
    Ok(())
}

/// A source directory: its canonical path and metadata, or a clear error.
fn source_dir(path: &Path, pseudo_ok: bool) -> Result<(PathBuf, fs::Metadata)> {
    let canon = fs::canonicalize(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::BadSource {
                path: path.to_path_buf(),
                reason: "no such file or directory".into(),
            }
        } else {
            Error::io(path, e)
        }
    })?;
    let md = fs::metadata(&canon).at(&canon)?;
    if !md.is_dir() {
        return Err(Error::BadSource {
            path: path.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    if !pseudo_ok && let Some(kind) = pseudo_filesystem(&canon) {
        return Err(Error::BadSource {
            path: path.to_path_buf(),
            reason: format!(
                "is on a {kind} filesystem, whose files are made up as they are read (some never end); pass --pseudo-filesystems to snapshot it anyway"
            ),
        });
    }
    Ok((canon, md))
}

/// The kind of pseudo-filesystem `dir` is on (proc, sysfs, ...), if any.
pub fn pseudo_filesystem(dir: &Path) -> Option<&'static str> {
    let st = rustix::fs::statfs(dir).ok()?;
    // f_type magic numbers, from linux/magic.h.
    Some(match st.f_type as u64 {
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x6462_6720 => "debugfs",
        0x7472_6163 => "tracefs",
        0x7363_6673 => "securityfs",
        0x0027_e0eb => "cgroup",
        0x6367_7270 => "cgroup2",
        0x1cd1 => "devpts",
        0xcafe_4a11 => "bpf",
        0x6265_6570 => "configfs",
        0x6573_5543 => "fusectl",
        0x6165_676c => "pstore",
        0xde5e_81e4 => "efivarfs",
        _ => return None,
    })
}

fn compile(patterns: &[String]) -> Result<Option<Excludes>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    Excludes::new(patterns).map(Some).map_err(Error::Invalid)
}

fn root_meta_of(md: &fs::Metadata) -> RootMeta {
    RootMeta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
    }
}

type Root = (String, PathBuf, fs::Metadata, Option<Excludes>);
type WalkOutput = (
    TreeId,
    RootMeta,
    SnapshotStats,
    Vec<(String, String)>,
    Vec<(String, DbInfo)>,
);

/// Walk each root; one root is the snapshot's root, several become the
/// named directories of a new root tree.
fn walk_roots(ctx: &RunCtx, roots: &[Root], parent: Option<&Snapshot>) -> Result<WalkOutput> {
    let (repo, start_ns) = (ctx.session.repo(), ctx.start_ns);
    if let [(name, path, md, ex)] = roots
        && name.is_empty()
    {
        let parent_root = parent.filter(|p| !p.is_multi_source()).map(|p| p.root);
        let (tree, stats, unreadable, dbs) = run(ctx, path, ex.as_ref(), parent_root)?;
        return Ok((tree, root_meta_of(md), stats, unreadable, dbs));
    }
    let parent_tree = match parent.filter(|p| p.is_multi_source()) {
        Some(p) => Some(repo.load_tree(&p.root)?),
        None => None,
    };
    let mut entries = Vec::new();
    let mut stats = SnapshotStats::default();
    let mut unreadable = Vec::new();
    let mut dbs = Vec::new();
    for (name, path, md, ex) in roots {
        let old = parent_tree
            .as_ref()
            .and_then(|t| t.get(name.as_bytes()))
            .filter(|e| e.kind == Kind::Dir)
            .and_then(|e| e.subtree());
        let (tree, s, u, d) = run(ctx, path, ex.as_ref(), old)?;
        let mut e = entry_from_metadata(name.as_bytes().to_vec(), md);
        e.payload = Payload::Subtree(tree);
        entries.push(e);
        stats.add(&s);
        unreadable.extend(u.into_iter().map(|(p, why)| (format!("{name}/{p}"), why)));
        dbs.extend(d.into_iter().map(|(p, info)| (format!("{name}/{p}"), info)));
    }
    let root = ctx.session.store_tree(&Tree::new(entries))?;
    let meta = RootMeta {
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime_ns: start_ns,
    };
    Ok((root, meta, stats, unreadable, dbs))
}

/// The snapshot's labels: the user's, then for each SQLite database its
/// `user_version:<path>` and, when checked, `quick_check:<path>`.
fn with_db_labels(
    user: &BTreeMap<String, String>,
    dbs: &[(String, DbInfo)],
) -> BTreeMap<String, String> {
    let mut labels = user.clone();
    for (path, info) in dbs {
        labels.insert(
            format!("user_version:{path}"),
            info.user_version.to_string(),
        );
        if let Some(q) = &info.quick_check {
            labels.insert(format!("quick_check:{path}"), q.clone());
        }
    }
    labels
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

type RunOutput = (
    TreeId,
    SnapshotStats,
    Vec<(String, String)>,
    Vec<(String, DbInfo)>,
);

/// What every walk of one create shares.
struct RunCtx<'a> {
    session: &'a WriteSession<'a>,
    opts: &'a CreateOptions,
    /// The repository's own directories (`Repository::places`): never read.
    repo_keys: &'a [(u64, u64)],
    start_ns: i64,
    progress: &'a dyn Progress,
}

fn run(
    rc: &RunCtx,
    source: &Path,
    excludes: Option<&Excludes>,
    parent_root: Option<TreeId>,
) -> Result<RunOutput> {
    let (repo, opts, progress) = (rc.session.repo(), rc.opts, rc.progress);
    let workers: usize = opts
        .workers
        .filter(|&n| n > 0)
        // Readers block on I/O and on rayon; three per core keep the cores busy.
        .unwrap_or_else(|| 3 * std::thread::available_parallelism().map_or(2, |n| n.get()));
    let (job_tx, job_rx) = bounded::<FileJob>(workers * 4);
    let (res_tx, res_rx) = unbounded::<FileResult>();
    let (chunk_tx, chunk_rx) = bounded::<Vec<Frame>>(16);
    let (pack_tx, pack_rx) = unbounded::<Result<FinishedPack>>();
    let claimed = Arc::new(Claims::new(repo.tmp_dir(), TMP_SQLITE_PREFIX));
    let cancel = opts.cancel.clone().unwrap_or_default();
    let params = ChunkerParams::from(repo.config());
    let level = repo.config().zstd_level;
    let target = repo.config().pack_target_bytes;
    // Reads the bases of deltas, shared by the workers.
    let reader = ChunkReader::new(repo.storage().clone());

    std::thread::scope(|scope| {
        let writer = {
            let storage = repo.storage().clone();
            scope.spawn(move || pack_writer(chunk_rx, pack_tx, storage, target))
        };
        let mut handles = Vec::new();
        for _ in 0..workers {
            let reader_index = repo.reader_index()?;
            let ctx = WorkerCtx {
                index: reader_index,
                tmp_dir: repo.tmp_dir(),
                sqlite_check: opts.sqlite_check,
                claimed: claimed.clone(),
                params,
                ids: repo.ids(),
                level,
                reader: Some(reader.clone()),
                group: Some(RefCell::new(Group::default())),
                chunk_tx: chunk_tx.clone(),
                cancel: cancel.clone(),
                progress,
                held: repo.held_files().cloned(),
            };
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            handles.push(scope.spawn(move || {
                for job in job_rx {
                    if ctx.progress.cancelled() {
                        ctx.cancel.store(true, Ordering::Relaxed);
                    }
                    let outcome = if ctx.cancel.load(Ordering::Relaxed) {
                        FileOutcome::Fatal(Error::Interrupted)
                    } else {
                        read_file(&ctx, &job)
                    };
                    if res_tx
                        .send(FileResult {
                            node: job.node,
                            slot: job.slot,
                            rel: job.rel,
                            outcome,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
                // What this thread's last group holds goes in a pack too.
                flush_group(&ctx)
            }));
        }
        drop((chunk_tx, res_tx, job_rx));

        let mut walk = Walk {
            repo,
            session: rc.session,
            force: opts.force,
            sqlite_check: opts.sqlite_check,
            excludes,
            one_fs_dev: if opts.one_file_system {
                Some(fs::metadata(source).at(source)?.dev())
            } else {
                None
            },
            source_dev: fs::metadata(source).at(source)?.dev(),
            pseudo_filesystems: opts.pseudo_filesystems,
            dbs: Vec::new(),
            repo_keys: rc.repo_keys,
            start_ns: rc.start_ns,
            progress,
            nodes: HashMap::new(),
            next_node: 0,
            root: None,
            stats: SnapshotStats::default(),
            unreadable: Vec::new(),
            job_tx: Some(job_tx),
            res_rx,
            pack_rx,
            cancel: cancel.clone(),
        };
        let result = walk.run(source, parent_root);
        if result.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        drop(walk.job_tx.take());
        let mut flushed = Ok(());
        for h in handles {
            let r = h.join().expect("reader thread panicked");
            flushed = flushed.and(r);
        }
        let writer_result = writer.join().expect("pack writer thread panicked");
        if writer_result.is_err() {
            // The cause (a storage error with its object) went to the pack
            // channel first: report it, not the writer's summary of it.
            while let Ok(p) = walk.pack_rx.try_recv() {
                p?;
            }
        }
        writer_result?;
        result?;
        flushed?;
        // Packs finished after the last file result: record them too.
        walk.drain_packs()?;
        let root = walk.root.expect("walk finished with a root tree");
        Ok((root, walk.stats, walk.unreadable, walk.dbs))
    })
}

/// A directory to visit: absolute path, path relative to the source, the
/// parent snapshot's tree for it, and where its tree id goes.
type DirVisit = (PathBuf, PathBuf, Option<TreeId>, Option<(usize, usize)>);

struct Walk<'a> {
    repo: &'a Repository,
    /// Where the walk's trees and packs go.
    session: &'a WriteSession<'a>,
    force: bool,
    sqlite_check: bool,
    excludes: Option<&'a Excludes>,
    /// With --one-file-system: the source's device; other ones are not entered.
    one_fs_dev: Option<u64>,
    /// The source's device: a directory on another is a mount, checked
    /// for a pseudo-filesystem (skipped unless `pseudo_filesystems`).
    source_dev: u64,
    pseudo_filesystems: bool,
    /// Each SQLite database captured (or reused unchanged), by relative path.
    dbs: Vec<(String, DbInfo)>,
    /// The repository's own directories (`Repository::places`): never read.
    repo_keys: &'a [(u64, u64)],
    start_ns: i64,
    progress: &'a dyn Progress,
    nodes: HashMap<usize, Node>,
    next_node: usize,
    root: Option<TreeId>,
    stats: SnapshotStats,
    unreadable: Vec<(String, String)>,
    job_tx: Option<Sender<FileJob>>,
    res_rx: Receiver<FileResult>,
    pack_rx: Receiver<Result<FinishedPack>>,
    cancel: Arc<AtomicBool>,
}

impl Walk<'_> {
    fn run(&mut self, source: &Path, parent_root: Option<TreeId>) -> Result<()> {
        // Stack of directories to visit: (absolute path, relative path,
        // parent snapshot's tree for it, where its tree id goes).
        let mut stack: Vec<DirVisit> =
            vec![(source.to_path_buf(), PathBuf::new(), parent_root, None)];
        while let Some((abs, rel, old_tree, slot)) = stack.pop() {
            self.visit_dir(&abs, &rel, old_tree, slot, &mut stack)?;
        }
        drop(self.job_tx.take());
        while self.root.is_none() {
            self.wait_one()?;
        }
        Ok(())
    }

    fn new_node(&mut self, node: Node) -> usize {
        let id = self.next_node;
        self.next_node += 1;
        self.nodes.insert(id, node);
        id
    }

    #[allow(clippy::type_complexity)]
    fn visit_dir(
        &mut self,
        abs: &Path,
        rel: &Path,
        old_tree: Option<TreeId>,
        slot: Option<(usize, usize)>,
        stack: &mut Vec<DirVisit>,
    ) -> Result<()> {
        if self.progress.cancelled() {
            self.cancel.store(true, Ordering::Relaxed);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let mut names: Vec<Vec<u8>> = Vec::new();
        let listing = fs::read_dir(abs).and_then(|rd| {
            for de in rd {
                names.push(de?.file_name().as_bytes().to_vec());
            }
            Ok(())
        });
        if let Err(e) = listing {
            if slot.is_none() {
                return Err(Error::io(abs, e));
            }
            self.record_unreadable(rel, &e.to_string());
            let (pn, pe) = slot.unwrap();
            let empty = self.session.store_tree(&Tree::default())?;
            let parent = self.nodes.get_mut(&pn).expect("parent node");
            parent.entries[pe].flags |= flags::UNREADABLE;
            parent.entries[pe].payload = Payload::Subtree(empty);
            parent.pending -= 1;
            return self.resolve(pn);
        }
        names.sort();
        // Sidecars of SQLite databases are not stored: the database's image
        // already holds their committed content (docs/format.md).
        let sidecars: HashSet<Vec<u8>> = names
            .iter()
            .filter(|n| {
                sqlite::sidecar_base(n).is_some_and(|base| {
                    names.binary_search_by(|x| x.as_slice().cmp(base)).is_ok()
                        && sqlite::is_database_file(
                            &abs.join(std::ffi::OsStr::from_bytes(base)),
                            self.repo.held_files().map(|h| &**h),
                        )
                })
            })
            .cloned()
            .collect();
        names.retain(|n| !sidecars.contains(n));
        let old: Option<(TreeId, Tree)> = match old_tree {
            Some(t) if !self.force => self.repo.load_tree(&t).ok().map(|tree| (t, tree)),
            _ => None,
        };
        let node_id = self.new_node(Node {
            entries: Vec::with_capacity(names.len()),
            dropped: Vec::new(),
            pending: 0,
            walked: false,
            parent: slot,
            old: None,
        });
        self.stats.dirs += 1;
        let dir_fd = match File::open(abs) {
            Ok(f) => f,
            Err(e) => return Err(Error::io(abs, e)),
        };
        for name in names {
            let path = abs.join(std::ffi::OsStr::from_bytes(&name));
            let child_rel = rel.join(std::ffi::OsStr::from_bytes(&name));
            let st = match lstat_at(&dir_fd, &name) {
                Ok(st) => st,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.progress.warn(&Warning::new(
                        WarningKind::Vanished,
                        &path,
                        format!(
                            "{}: vanished during the walk; not in the snapshot",
                            path.display()
                        ),
                    ));
                    continue;
                }
                Err(e) => {
                    self.record_unreadable(&child_rel, &e.to_string());
                    continue;
                }
            };
            if let Some(ex) = self.excludes
                && ex.excludes(&child_rel, st.kind() == Kind::Dir)
            {
                continue;
            }
            if st.kind() == Kind::Dir
                && st.dev != self.source_dev
                && !self.pseudo_filesystems
                && let Some(kind) = pseudo_filesystem(&path)
            {
                self.progress.warn(&Warning::new(
                    WarningKind::Skipped,
                    &path,
                    format!(
                        "{}: a {kind} filesystem (made up as it is read); skipped (--pseudo-filesystems takes it)",
                        path.display()
                    ),
                ));
                continue;
            }
            if st.kind() == Kind::Dir && self.repo_keys.contains(&(st.dev, st.ino)) {
                self.progress.warn(&Warning::new(
                    WarningKind::Skipped,
                    &path,
                    format!("{}: is the repository; excluded", path.display()),
                ));
                continue;
            }
            self.progress.entries(1);
            let mut entry = entry_from_stat(name.clone(), &st);
            if entry.kind != Kind::File {
                // Files get theirs from the open file, in the reader.
                entry.xattrs = self.xattrs_of(&path);
            }
            let old_entry = old.as_ref().and_then(|(_, t)| t.get(&name));
            let slot_idx = self.nodes[&node_id].entries.len();
            match entry.kind {
                Kind::Dir if self.one_fs_dev.is_some_and(|d| d != st.dev) => {
                    self.progress.warn(&Warning::new(
                        WarningKind::Skipped,
                        &path,
                        format!(
                            "{}: on another filesystem; stored as an empty directory (--one-file-system)",
                            path.display()
                        ),
                    ));
                    entry.payload = Payload::Subtree(self.session.store_tree(&Tree::default())?);
                    self.stats.dirs += 1;
                }
                Kind::Dir => {
                    let old_sub = old_entry
                        .filter(|o| o.kind == Kind::Dir)
                        .and_then(|o| o.subtree());
                    stack.push((path, child_rel, old_sub, Some((node_id, slot_idx))));
                    self.nodes.get_mut(&node_id).unwrap().pending += 1;
                }
                Kind::File => {
                    // A database image is reused only when nothing can be
                    // pending outside the main file.
                    let reusable = |o: &&Entry| {
                        unchanged(o, &entry)
                            && (!o.has_flag(flags::SQLITE_IMAGE)
                                || (!self.sqlite_check && !sqlite::has_pending_sidecar(&path)))
                    };
                    if let Some(o) = old_entry.filter(reusable) {
                        if o.has_flag(flags::SQLITE_IMAGE) {
                            entry.flags |= flags::SQLITE_IMAGE;
                            if let Some(v) =
                                sqlite::read_header(&path, self.repo.held_files().map(|h| &**h))
                                    .and_then(|h| sqlite::user_version(&h))
                            {
                                self.dbs.push((
                                    child_rel.to_string_lossy().into_owned(),
                                    DbInfo {
                                        user_version: v,
                                        quick_check: None,
                                    },
                                ));
                            }
                        }
                        entry.payload = o.payload.clone();
                        // Same ctime: the attributes did not change either.
                        entry.xattrs = o.xattrs.clone();
                        entry.flags |= self.racy_flag(&entry);
                        self.stats.reused_files += 1;
                        self.progress.bytes(entry.size);
                    } else {
                        self.submit(FileJob {
                            node: node_id,
                            slot: slot_idx,
                            path,
                            rel: child_rel,
                            ino: st.ino,
                            base_pages: old_entry
                                .filter(|o| {
                                    o.kind == Kind::File
                                        && o.has_flag(flags::SQLITE_IMAGE)
                                })
                                .map(|o| o.chunks().to_vec()),
                        })?;
                        self.nodes.get_mut(&node_id).unwrap().pending += 1;
                    }
                }
                Kind::Symlink => match fs::read_link(&path) {
                    Ok(t) => {
                        let t = t.as_os_str().as_bytes().to_vec();
                        entry.size = t.len() as u64;
                        entry.payload = Payload::Target(t);
                    }
                    Err(e) => {
                        self.record_unreadable(&child_rel, &e.to_string());
                        continue;
                    }
                },
                _ => {}
            }
            self.nodes.get_mut(&node_id).unwrap().entries.push(entry);
        }
        let node = self.nodes.get_mut(&node_id).unwrap();
        node.walked = true;
        node.old = old;
        self.resolve(node_id)
    }

    fn xattrs_of(&self, path: &Path) -> crate::xattr::Xattrs {
        crate::xattr::read(crate::xattr::At::Path(path)).unwrap_or_else(|e| {
            self.progress.warn(&Warning::new(
                WarningKind::Unreadable,
                path,
                format!("{}: extended attributes not read: {e}", path.display()),
            ));
            Vec::new()
        })
    }

    fn racy_flag(&self, e: &Entry) -> u8 {
        if e.mtime_ns > self.start_ns - RACY_WINDOW_NS {
            flags::RACY
        } else {
            0
        }
    }

    fn record_unreadable(&mut self, rel: &Path, reason: &str) {
        let shown = if rel.as_os_str().is_empty() {
            ".".to_string()
        } else {
            rel.to_string_lossy().into_owned()
        };
        self.progress.warn(&Warning::new(
            WarningKind::Unreadable,
            rel,
            format!("{shown}: could not be read: {reason}"),
        ));
        self.unreadable.push((shown, reason.to_string()));
    }

    /// Send a job to the readers, handling results while the queue is full.
    fn submit(&mut self, job: FileJob) -> Result<()> {
        let mut job = Some(job);
        while let Some(j) = job.take() {
            let tx = self.job_tx.clone().expect("job queue open during the walk");
            let mut sel = Select::new();
            let s = sel.send(&tx);
            let r = sel.recv(&self.res_rx);
            let p = sel.recv(&self.pack_rx);
            let op = sel.select();
            match op.index() {
                i if i == s => op
                    .send(&tx, j)
                    .map_err(|_| Error::Invalid("file readers stopped".into()))?,
                i if i == r => {
                    job = Some(j);
                    let res = op
                        .recv(&self.res_rx)
                        .map_err(|_| Error::Invalid("file readers stopped".into()))?;
                    self.handle(res)?;
                }
                i if i == p => {
                    job = Some(j);
                    if let Ok(pack) = op.recv(&self.pack_rx) {
                        self.record_pack(pack?)?;
                    }
                }
                _ => unreachable!(),
            }
        }
        Ok(())
    }

    /// Wait for one file result or finished pack.
    fn wait_one(&mut self) -> Result<()> {
        let mut sel = Select::new();
        let r = sel.recv(&self.res_rx);
        let p = sel.recv(&self.pack_rx);
        let op = sel.select();
        if op.index() == r {
            let res = op.recv(&self.res_rx).map_err(|_| {
                Error::Invalid("file readers stopped before the walk finished".into())
            })?;
            self.handle(res)
        } else {
            debug_assert_eq!(op.index(), p);
            match op.recv(&self.pack_rx) {
                Ok(pack) => self.record_pack(pack?),
                // The writer ends only after the readers: keep waiting for them.
                Err(_) => {
                    let res = self.res_rx.recv().map_err(|_| {
                        Error::Invalid("file readers stopped before the walk finished".into())
                    })?;
                    self.handle(res)
                }
            }
        }
    }

    fn drain_packs(&mut self) -> Result<()> {
        while let Ok(pack) = self.pack_rx.recv() {
            self.record_pack(pack?)?;
        }
        Ok(())
    }

    fn record_pack(&mut self, pack: FinishedPack) -> Result<()> {
        self.session.add_pack(&pack)?;
        self.stats.new_packs += 1;
        self.stats.new_chunks += pack.entries.len() as u64;
        for e in &pack.entries {
            self.stats.new_raw_bytes += e.raw_len as u64;
            // A group frame's bytes count once, with its first member.
            if e.codec != Codec::Grouped || e.inner == 0 {
                self.stats.new_stored_bytes += e.stored_len as u64;
            }
            self.stats.new_delta_chunks += e.base.is_some() as u64;
        }
        Ok(())
    }

    fn handle(&mut self, res: FileResult) -> Result<()> {
        let node = self
            .nodes
            .get_mut(&res.node)
            .expect("node of a pending file");
        match res.outcome {
            FileOutcome::Stored {
                chunks,
                meta,
                read_bytes,
                changed,
                db,
            } => {
                if let Some(info) = db {
                    self.dbs
                        .push((res.rel.to_string_lossy().into_owned(), info));
                }
                let node = self.nodes.get_mut(&res.node).expect("node");
                let e = &mut node.entries[res.slot];
                let name = std::mem::take(&mut e.name);
                *e = meta;
                e.name = name;
                e.payload = Payload::Chunks(chunks);
                if changed {
                    e.flags |= flags::CHANGED_DURING_READ;
                    self.progress.warn(&Warning::new(
                        WarningKind::Changed,
                        &res.rel,
                        format!(
                            "{}: changed while it was read, even after {READ_ATTEMPTS} attempts; stored as read and flagged",
                            res.rel.display()
                        ),
                    ));
                }
                let racy = self.racy_flag(&self.nodes[&res.node].entries[res.slot]);
                self.nodes.get_mut(&res.node).unwrap().entries[res.slot].flags |= racy;
                self.stats.read_bytes += read_bytes;
            }
            FileOutcome::Vanished => {
                node.dropped.push(res.slot);
                self.progress.warn(&Warning::new(
                    WarningKind::Vanished,
                    &res.rel,
                    format!(
                        "{}: vanished before it could be read; not in the snapshot",
                        res.rel.display()
                    ),
                ));
            }
            FileOutcome::Unreadable(reason) => {
                let e = &mut node.entries[res.slot];
                e.flags |= flags::UNREADABLE;
                e.payload = Payload::Chunks(Vec::new());
                self.record_unreadable(&res.rel, &reason);
            }
            FileOutcome::Fatal(e) => return Err(e),
        }
        let node = self.nodes.get_mut(&res.node).unwrap();
        node.pending -= 1;
        self.resolve(res.node)
    }

    /// Store the trees of finished directories, bottom-up.
    fn resolve(&mut self, mut node_id: usize) -> Result<()> {
        loop {
            let node = &self.nodes[&node_id];
            if !node.walked || node.pending > 0 {
                return Ok(());
            }
            let mut node = self.nodes.remove(&node_id).unwrap();
            node.dropped.sort_unstable();
            let mut entries = std::mem::take(&mut node.entries);
            for slot in node.dropped.iter().rev() {
                entries.remove(*slot);
            }
            for e in &entries {
                match e.kind {
                    Kind::File => {
                        self.stats.files += 1;
                        self.stats.total_bytes += e.size;
                    }
                    Kind::Dir => {}
                    Kind::Symlink => self.stats.symlinks += 1,
                    _ => self.stats.others += 1,
                }
            }
            let tree = Tree::new(entries);
            let id = match &node.old {
                Some((old_id, old_tree)) if *old_tree == tree => *old_id,
                _ => self.session.store_tree(&tree)?,
            };
            match node.parent {
                None => {
                    self.root = Some(id);
                    return Ok(());
                }
                Some((pn, pe)) => {
                    let parent = self.nodes.get_mut(&pn).expect("parent node");
                    parent.entries[pe].payload = Payload::Subtree(id);
                    parent.pending -= 1;
                    node_id = pn;
                }
            }
        }
    }
}

struct WorkerCtx<'a> {
    index: Index,
    /// Where SQLite images are written before they are chunked.
    tmp_dir: PathBuf,
    sqlite_check: bool,
    claimed: Arc<Claims>,
    params: ChunkerParams,
    ids: crate::id::Ids,
    level: i32,
    /// Reads the bases of deltas; `None` in a repository without deltas.
    reader: Option<ChunkReader>,
    /// This thread's new small chunks, waiting to be compressed together;
    /// `None` in a repository without groups.
    group: Option<RefCell<Group>>,
    chunk_tx: Sender<Vec<Frame>>,
    cancel: Arc<AtomicBool>,
    progress: &'a dyn Progress,
    /// In-process mode (see crate::held).
    held: Option<Arc<HeldFiles>>,
}

/// Compress and send what this thread's group holds (at the end of its
/// files: every chunk claimed must reach a pack).
fn flush_group(ctx: &WorkerCtx) -> Result<()> {
    let Some(group) = &ctx.group else {
        return Ok(());
    };
    let group = std::mem::take(&mut *group.borrow_mut());
    if group.is_empty() || ctx.cancel.load(Ordering::Relaxed) {
        return Ok(());
    }
    let frame = group
        .into_frame(ctx.level)
        .map_err(|e| Error::Invalid(format!("compression failed: {e}")))?;
    ctx.chunk_tx
        .send(vec![frame])
        .map_err(|_| Error::Invalid("pack writer stopped".into()))
}

/// Open a regular file without following links, blocking on FIFOs or
/// updating atime (where permitted).
fn open_source(path: &Path) -> io::Result<File> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const NOATIME: i32 = libc::O_NOATIME;
    // Elsewhere atime is relaxed by the mount, not per open.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const NOATIME: i32 = 0;
    let base = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    match OpenOptions::new()
        .read(true)
        .custom_flags(base | NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            OpenOptions::new().read(true).custom_flags(base).open(path)
        }
        r => r,
    }
}

fn read_file(ctx: &WorkerCtx, job: &FileJob) -> FileOutcome {
    let file = match open_source(&job.path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return FileOutcome::Vanished,
        Err(e) => return FileOutcome::Unreadable(e.to_string()),
    };
    let mut header = [0u8; 100];
    let is_db = file.read_exact_at(&mut header, 0).is_ok() && sqlite::is_database_header(&header);
    // In-process, a descriptor of what may be the app's database stays open.
    let file: Arc<File> = match &ctx.held {
        Some(h)
            if crate::held::may_be_sqlite(
                &job.path,
                file.metadata().map_or(0, |m| m.len()),
                is_db,
            ) =>
        {
            h.keep(file)
        }
        _ => Arc::new(file),
    };
    let xattrs = {
        use std::os::fd::AsFd;
        crate::xattr::read(crate::xattr::At::Fd(file.as_fd())).unwrap_or_default()
    };
    let mut outcome = if is_db && let Some(outcome) = capture_db(ctx, job, &file, &header) {
        outcome
    } else {
        read_file_plain(ctx, job, &file)
    };
    if let FileOutcome::Stored { meta, .. } = &mut outcome {
        meta.xattrs = xattrs;
    }
    outcome
}

/// Read a file's bytes as they are, re-reading it if it changes meanwhile.
fn read_file_plain(ctx: &WorkerCtx, job: &FileJob, file: &File) -> FileOutcome {
    let mut changed = false;
    for _attempt in 0..READ_ATTEMPTS {
        let before = match file.metadata() {
            Ok(m) => m,
            Err(e) => return FileOutcome::Unreadable(e.to_string()),
        };
        if !before.is_file() {
            return FileOutcome::Unreadable(
                "replaced by a non-regular file during the walk".into(),
            );
        }
        if before.ino() != job.ino {
            ctx.progress.warn(&Warning::new(
                WarningKind::Changed,
                &job.rel,
                format!(
                    "{}: replaced during the walk; storing the new file",
                    job.rel.display()
                ),
            ));
        }
        let read = chunk_file(ctx, file, before.len(), None, None);
        let (chunks, read_bytes) = match read {
            Ok(r) => r,
            Err(ReadError::Io(e)) => return FileOutcome::Unreadable(e.to_string()),
            Err(ReadError::Fatal(e)) => return FileOutcome::Fatal(e),
        };
        let after = match file.metadata() {
            Ok(m) => m,
            Err(e) => return FileOutcome::Unreadable(e.to_string()),
        };
        let same = before.len() == read_bytes
            && after.len() == before.len()
            && after.mtime() == before.mtime()
            && after.mtime_nsec() == before.mtime_nsec()
            && after.ctime() == before.ctime()
            && after.ctime_nsec() == before.ctime_nsec();
        let mut meta = entry_from_metadata(Vec::new(), &before);
        meta.size = read_bytes;
        if same || _attempt + 1 == READ_ATTEMPTS {
            changed = !same;
            return FileOutcome::Stored {
                chunks,
                meta,
                read_bytes,
                changed,
                db: None,
            };
        }
    }
    unreachable!("the last attempt always returns (changed = {changed})")
}

/// A database stored as one committed state: `before` is the database
/// file's metadata, the chunks are its image's pages.
fn stored_db(
    before: &fs::Metadata,
    chunks: Vec<ChunkId>,
    read_bytes: u64,
    info: DbInfo,
) -> FileOutcome {
    let mut meta = entry_from_metadata(Vec::new(), before);
    meta.size = read_bytes;
    meta.flags |= flags::SQLITE_IMAGE;
    FileOutcome::Stored {
        chunks,
        meta,
        read_bytes,
        changed: false,
        db: Some(info),
    }
}

/// Store a database straight from its file when its state allows: in
/// rollback-journal mode under SQLite's shared lock, or in WAL mode at rest
/// (see `sqlite::read_at_rest`). `None` when neither applies, or when the
/// file changed during the read: the caller then makes an image.
fn read_db_in_place(
    ctx: &WorkerCtx,
    job: &FileJob,
    file: &File,
    header: &[u8; 100],
    before: &std::fs::Metadata,
) -> Option<FileOutcome> {
    let size = sqlite::chunk_size(header)?;
    let bases = job.base_pages.as_deref();
    let chunk = || chunk_file(ctx, file, before.len(), Some(size), bases);
    // In-process, snap's SQLite must not touch the app's database; a
    // requested quick_check needs SQLite, so an image.
    let in_place = match ctx.held {
        None => sqlite::read_in_place(&job.path, ctx.sqlite_check, chunk).ok()?,
        Some(_) => None,
    };
    let read = in_place.or_else(|| {
        (!ctx.sqlite_check)
            .then(|| sqlite::read_at_rest(&job.path, file, chunk))
            .flatten()
    });
    match read? {
        (Ok((chunks, read_bytes)), info) => {
            let after = file.metadata().ok();
            // Nothing but SQLite should write it; if something did, make an image.
            after
                .is_some_and(|a| {
                    a.len() == read_bytes
                        && a.mtime_nsec() == before.mtime_nsec()
                        && a.mtime() == before.mtime()
                })
                .then(|| stored_db(before, chunks, read_bytes, info))
        }
        (Err(ReadError::Io(e)), _) => Some(FileOutcome::Unreadable(e.to_string())),
        (Err(ReadError::Fatal(e)), _) => Some(FileOutcome::Fatal(e)),
    }
}

/// Store a SQLite database (`header`: its first 100 bytes) as one
/// committed state, cut into whole pages: read in place when its state
/// allows (`read_db_in_place`), else through an image made by the backup
/// API. `None` when SQLite cannot read it (not really a database,
/// encrypted, ...): the caller then stores the plain bytes.
fn capture_db(
    ctx: &WorkerCtx,
    job: &FileJob,
    file: &File,
    header: &[u8; 100],
) -> Option<FileOutcome> {
    let before = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Some(FileOutcome::Unreadable(e.to_string())),
    };
    if let Some(stored) = read_db_in_place(ctx, job, file, header, &before) {
        return Some(stored);
    }
    let image = match tempfile::Builder::new()
        .prefix(TMP_SQLITE_PREFIX)
        .suffix(".db")
        .tempfile_in(&ctx.tmp_dir)
    {
        Ok(f) => f.into_temp_path(),
        Err(e) => return Some(FileOutcome::Fatal(Error::io(&ctx.tmp_dir, e))),
    };
    let info = match sqlite::capture(&job.path, &image, ctx.sqlite_check, ctx.held.as_deref()) {
        Ok(info) => {
            crate::fault::pause("sqlite image written");
            info
        }
        Err(why) => {
            ctx.progress.warn(&Warning::new(
                WarningKind::Other,
                &job.rel,
                format!(
                    "{}: looks like a SQLite database but could not be captured through SQLite ({why}); stored as plain bytes",
                    job.rel.display()
                ),
            ));
            if ctx.sqlite_check {
                // A database SQLite cannot read fails its check.
                return match read_file_plain(ctx, job, file) {
                    FileOutcome::Stored {
                        chunks,
                        meta,
                        read_bytes,
                        changed,
                        ..
                    } => Some(FileOutcome::Stored {
                        chunks,
                        meta,
                        read_bytes,
                        changed,
                        db: Some(DbInfo {
                            user_version: sqlite::user_version(header).unwrap_or(0),
                            quick_check: Some(format!("not readable by SQLite: {why}")),
                        }),
                    }),
                    other => Some(other),
                };
            }
            return None;
        }
    };
    let read = File::open(&image).and_then(|f| {
        let mut header = [0u8; 100];
        f.read_exact_at(&mut header, 0)?;
        Ok((f, header))
    });
    let (img, header) = match read {
        Ok(r) => r,
        Err(e) => return Some(FileOutcome::Fatal(Error::io(&*image, e))),
    };
    let len = match img.metadata() {
        Ok(m) => m.len(),
        Err(e) => return Some(FileOutcome::Fatal(Error::io(&*image, e))),
    };
    let size = sqlite::chunk_size(&header);
    let bases = job.base_pages.as_deref();
    let (chunks, read_bytes) = match chunk_file(ctx, &img, len, size, bases) {
        Ok(r) => r,
        Err(ReadError::Io(e)) => return Some(FileOutcome::Fatal(Error::io(&*image, e))),
        Err(ReadError::Fatal(e)) => return Some(FileOutcome::Fatal(e)),
    };
    Some(stored_db(&before, chunks, read_bytes, info))
}

enum ReadError {
    Io(io::Error),
    Fatal(Error),
}

/// Chunk a file, sending new chunks to the pack writer. Returns the chunk
/// list and the number of bytes read. With `base_pages` (a database's
/// pages in the parent snapshot), a new page may be stored as a delta of
/// the page at the same place.
fn chunk_file(
    ctx: &WorkerCtx,
    file: &File,
    size_hint: u64,
    fixed: Option<usize>,
    base_pages: Option<&[ChunkId]>,
) -> std::result::Result<(Vec<ChunkId>, u64), ReadError> {
    let mut chunker = match fixed {
        Some(size) => Chunker::fixed(ReadAdapter(file, 0), size, BATCH_BYTES, size_hint),
        None => Chunker::with_size_hint(ReadAdapter(file, 0), ctx.params, BATCH_BYTES, size_hint),
    };
    let mut ids_all = Vec::new();
    let mut total = 0u64;
    loop {
        let (buf, cuts) = match chunker.next_batch() {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => return Err(ReadError::Io(e)),
        };
        let hasher = ctx.ids;
        let ids: Vec<ChunkId> = if cuts.len() > 1 {
            cuts.par_iter()
                .map(|&(o, l)| hasher.chunk(&buf[o..o + l]))
                .collect()
        } else {
            cuts.iter()
                .map(|&(o, l)| hasher.chunk(&buf[o..o + l]))
                .collect()
        };
        // Claim the chunks nobody has stored: once in this run (the set) or
        // before it (the index, as committed).
        let fresh = ctx
            .claimed
            .claim(&ids, |id| ctx.index.has_chunk(id))
            .map_err(ReadError::Fatal)?;
        let bases = delta_bases(ctx, base_pages, ids_all.len(), &ids, &fresh)?;
        let chunk = |i: usize| {
            let (o, l) = cuts[i];
            &buf[o..o + l]
        };
        // Chunks without a delta base go in this thread's group when they
        // are small and compressible; the rest are compressed alone.
        let (grouped, alone): (Vec<_>, Vec<_>) = fresh
            .iter()
            .zip(&bases.each)
            .partition(|(i, base)| ctx.group.is_some() && base.is_none() && groupable(chunk(**i)));
        let (level, reader) = (ctx.level, &ctx.reader);
        let compress = |(&i, base): (&usize, &Option<(ChunkId, ChunkLocation)>)| {
            let page = chunk(i);
            let raw = base
                .as_ref()
                .and_then(|b| Some((b.0, read_base(reader, b, &bases)?)));
            let (codec, data, base) = match raw {
                Some((base_id, base)) => {
                    match crate::delta::encode(level, &base, page, || compress_with(level, page))? {
                        Stored::Delta(d) => (Codec::Delta, d, Some(base_id)),
                        Stored::Whole(c, d) => (c, d, None),
                    }
                }
                None => {
                    let (c, d) = compress_with(level, page)?;
                    (c, d, None)
                }
            };
            let blob = Blob {
                id: ids[i],
                codec,
                raw_len: page.len() as u32,
                base,
                inner: 0,
            };
            Ok::<_, io::Error>(Frame::single(blob, data))
        };
        let full = match &ctx.group {
            Some(g) => g
                .borrow_mut()
                .fill(grouped.iter().map(|&(&i, _)| (ids[i], chunk(i)))),
            None => Vec::new(),
        };
        // One job (a small file) runs here: handing it to rayon would cost
        // a hop between threads.
        let frames: io::Result<Vec<Frame>> = if alone.len() + full.len() > 1 {
            alone
                .into_par_iter()
                .map(compress)
                .chain(full.into_par_iter().map(|g| g.into_frame(level)))
                .collect()
        } else {
            alone
                .into_iter()
                .map(compress)
                .chain(full.into_iter().map(|g| g.into_frame(level)))
                .collect()
        };
        let new = frames
            .map_err(|e| ReadError::Fatal(Error::Invalid(format!("compression failed: {e}"))))?;
        if !new.is_empty() && ctx.chunk_tx.send(new).is_err() {
            return Err(ReadError::Fatal(Error::Invalid(
                "pack writer stopped".into(),
            )));
        }
        let batch_bytes: u64 = cuts.iter().map(|c| c.1 as u64).sum();
        total += batch_bytes;
        ctx.progress.bytes(batch_bytes);
        ids_all.extend(ids);
        if ctx.cancel.load(Ordering::Relaxed) {
            return Err(ReadError::Fatal(Error::Interrupted));
        }
    }
    Ok((ids_all, total))
}

/// Where the bases of a batch's fresh chunks lie: one per fresh chunk
/// (`None`: store it whole), and the locations of those bases' own bases.
struct DeltaBases {
    each: Vec<Option<(ChunkId, ChunkLocation)>>,
    chains: HashMap<ChunkId, ChunkLocation>,
    /// Bases that are not deltas, read ahead by runs.
    whole: HashMap<ChunkId, Arc<Vec<u8>>>,
}

/// For each fresh chunk (`fresh`, indexes into `ids`, the batch that
/// starts at chunk `first` of the file), the base to store it as a delta
/// of: the parent's page at the same place, when it is a chunk this
/// repository dedups against (not one a gc condemned). Only index lookups
/// here (a connection is this thread's); the bases are read in parallel.
fn delta_bases(
    ctx: &WorkerCtx,
    base_pages: Option<&[ChunkId]>,
    first: usize,
    ids: &[ChunkId],
    fresh: &[usize],
) -> std::result::Result<DeltaBases, ReadError> {
    let mut each = Vec::with_capacity(fresh.len());
    for &i in fresh {
        let base = match (base_pages.and_then(|p| p.get(first + i)), &ctx.reader) {
            (Some(b), Some(_)) if *b != ids[i] => ctx
                .index
                .dedup_location(b)
                .map_err(ReadError::Fatal)?
                .map(|loc| (*b, loc)),
            _ => None,
        };
        each.push(base);
    }
    let locs = each.iter().flatten().map(|(_, l)| l);
    let chains = crate::delta::bases_of(&ctx.index, locs).map_err(ReadError::Fatal)?;
    // Pages of one database lie together in the packs of an earlier
    // create: a few reads fetch a batch's bases (on a bucket, without
    // pulling whole windows of the packs around them).
    let whole = match &ctx.reader {
        Some(r) => r.clone().read_by_runs(&each.iter().flatten().copied().collect::<Vec<_>>()),
        None => HashMap::new(),
    };
    Ok(DeltaBases {
        each,
        chains,
        whole,
    })
}

/// A base's raw bytes, when it can be read and is less than
/// `delta::MAX_DEPTH` deltas deep. One that cannot be read is no base: the
/// page is stored whole, and `check` names the damage.
fn read_base(
    reader: &Option<ChunkReader>,
    (id, loc): &(ChunkId, ChunkLocation),
    bases: &DeltaBases,
) -> Option<Arc<Vec<u8>>> {
    if let Some(bytes) = bases.whole.get(id) {
        return Some(bytes.clone());
    }
    let (bytes, depth) = reader
        .clone()?
        .read_with_depth(id, loc, &bases.chains)
        .ok()?;
    (depth < crate::delta::MAX_DEPTH && bytes.len() <= CHUNK_MAX_LIMIT as usize).then_some(bytes)
}

/// Reads a file from its start at explicit offsets: a descriptor shared
/// with another reader (a held one, see crate::held) has no position to
/// fight over.
struct ReadAdapter<'a>(&'a File, u64);
impl Read for ReadAdapter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read_at(buf, self.1)?;
        self.1 += n as u64;
        Ok(n)
    }
}

/// The single pack writer: feeds new chunks to a [`Packer`], which seals
/// packs at the target size and commits them on its finisher thread, so
/// this thread never waits for the disk. After an error it drains its queue
/// so readers never block, and reports the error once.
fn pack_writer(
    rx: Receiver<Vec<Frame>>,
    done: Sender<Result<FinishedPack>>,
    storage: Arc<dyn Storage>,
    target: u64,
) -> Result<()> {
    let mut packer = Some(Packer::new(storage, PackKind::Data, target, done.clone()));
    let mut failed: Option<String> = None;
    for batch in rx {
        let Some(p) = packer.as_mut() else { continue };
        if let Err(e) = batch
            .into_iter()
            .try_for_each(|f| {
                f.parts()
                    .into_iter()
                    .try_for_each(|(blobs, data)| p.add_frame(blobs, data))
            })
        {
            failed = Some(e.to_string());
            packer = None;
            let _ = done.send(Err(e));
        }
    }
    if let Some(p) = packer
        && let Err(e) = p.finish()
    {
        failed = Some(e.to_string());
        let _ = done.send(Err(e));
    }
    match failed {
        Some(msg) => Err(Error::Invalid(format!("pack writer failed: {msg}"))),
        None => Ok(()),
    }
}
