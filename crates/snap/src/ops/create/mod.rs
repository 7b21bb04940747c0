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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, Select, Sender, bounded, unbounded};
use rayon::prelude::*;

use crate::chunker::{Chunker, ChunkerParams};
use crate::claims::Claims;
use crate::compress::{Codec, compress_with};
use crate::config::CHUNK_MAX_LIMIT;
use crate::delta::Stored;
use crate::error::{Error, IoContext, Result};
use crate::exclude::Excludes;
use crate::grouping::{Frame, Group, groupable};
use crate::held::HeldFiles;
use crate::id::{ChunkId, SnapshotId, TreeId};
use crate::index::{ChunkLocation, Index};
use crate::pack::{Blob, FinishedPack, PackKind, Packer};
use crate::progress::{Progress, Warning, WarningKind};
use crate::repo::{ChunkReader, Repository};
use crate::snapshot::{RootMeta, Snapshot, SnapshotStats, SourceRoot};
use crate::source::{Stat, entry_from_metadata, entry_from_stat, lstat_at, unchanged};
use crate::sqlite::{self, DbInfo};
use crate::storage::Storage;
use crate::tree::{Entry, Kind, Payload, Tree, flags};
use crate::write::WriteSession;

mod capture;
mod chunks;
mod pack_writer;
mod read;
mod walk;

use capture::*;
use chunks::*;
use pack_writer::*;
use read::*;
use walk::*;

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
    Excludes::new(patterns).map(Some).map_err(Error::usage)
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
                reader: reader.clone(),
                group: RefCell::new(Group::default()),
                chunk_tx: chunk_tx.clone(),
                cancel: cancel.clone(),
                progress,
                held: repo.held_files().cloned(),
            };
            let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
            handles.push(scope.spawn(move || read_files(&ctx, job_rx, res_tx)));
        }
        drop((chunk_tx, res_tx, job_rx));

        let channels = (job_tx, res_rx, pack_rx);
        let mut walk = Walk::new(rc, source, excludes, channels, cancel.clone())?;
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
