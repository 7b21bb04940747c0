//! Fill a batch of files with their content, reading each pack once.
//!
//! The chunks a batch needs are sorted by where they lie in the packs and
//! cut into runs: chunks of one pack that are adjacent (or, on a remote
//! storage, close) are read with one call, and a chunk that several files
//! or places use is read and decoded once, then written at each place.
//! Workers take the runs in pack order; on a remote storage more workers
//! than cores keep requests in flight while others decode and write.

use std::ffi::OsString;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;

use super::plan::effective_mode;
use super::{Meta, TEMP_PREFIX};
use crate::confined::{self, DirFd, TempFile};
use crate::delta::Locate;
use crate::error::{Error, IoContext, Result};
use crate::id::ChunkId;
use crate::index::ChunkLocation;
use crate::pack::decode_chunk;
use crate::progress::Progress;
use crate::repo::ChunkReader;

/// Largest run of chunks read with one call.
const READ_RUN_MAX: u64 = 8 << 20;

/// On a remote storage, chunks this close are read with one request: the
/// bytes between cost less than another round trip.
const REMOTE_GAP: u64 = 256 << 10;

/// Workers on a remote storage, whatever the number of cores: most of
/// their time is spent waiting for a response.
const REMOTE_WORKERS: usize = 8;

/// A file to write: its path, its entry, the directory and name it goes
/// to, where its chunks are.
pub(super) struct WriteJob {
    pub path: PathBuf,
    pub meta: Meta,
    pub dir: DirFd,
    pub name: OsString,
    pub locs: Vec<(ChunkId, ChunkLocation)>,
}

/// A temporary file with the content, and what of its extended attributes
/// could not be set.
pub(super) type Written = (TempFile, Option<String>);

/// Why one file could not be written.
pub(super) struct Failure {
    pub damage: bool,
    pub message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            damage: e.is_damage(),
            message: e.to_string(),
        }
    }
}

/// How the files are written.
pub(super) struct Context<'a> {
    pub reader: &'a ChunkReader,
    /// Where the bases of the batch's deltas are (`crate::delta`).
    pub bases: &'a (dyn Locate + Sync),
    pub remote: bool,
    pub is_root: bool,
    pub progress: &'a dyn Progress,
    /// One open file per filesystem written to, for the barriers.
    pub filesystems: &'a Mutex<std::collections::HashMap<u64, File>>,
}

/// A temporary being filled.
struct Open {
    tmp: TempFile,
    file: File,
    filled: AtomicU64,
    failure: OnceLock<Failure>,
}

/// One use of a chunk: the `chunk`th of job `job`, at `pos` in its file.
#[derive(Clone, Copy)]
struct Place {
    job: u32,
    chunk: u32,
    pos: u64,
}

/// Places read with one call: their range in the sorted places, and the
/// bytes of the pack they cover.
struct Run {
    places: Range<usize>,
    start: u64,
    end: u64,
}

/// Write each job's content to a temporary beside it, with the snapshot's
/// metadata: one result per job, in order. `Err` only when cancelled.
pub(super) fn fill(cx: &Context, jobs: &[WriteJob]) -> Result<Vec<Result<Written, Failure>>> {
    let opened: Vec<Result<Open, Failure>> = jobs
        .par_iter()
        .map(|job| -> Result<Open, Failure> {
            let (tmp, file) = TempFile::create(&job.dir, TEMP_PREFIX).at(&job.path)?;
            Ok(Open {
                tmp,
                file,
                filled: AtomicU64::new(0),
                failure: OnceLock::new(),
            })
        })
        .collect();
    let places = sorted_places(jobs, &opened);
    let runs = runs(jobs, &places, if cx.remote { REMOTE_GAP } else { 0 });
    let workers = if cx.remote {
        REMOTE_WORKERS.max(rayon::current_num_threads())
    } else {
        rayon::current_num_threads()
    };
    let (next, cancelled) = (AtomicUsize::new(0), AtomicBool::new(false));
    std::thread::scope(|s| {
        for _ in 0..workers.min(runs.len()) {
            s.spawn(|| {
                let mut reader = cx.reader.clone();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(run) = runs.get(i) else { break };
                    if cx.progress.cancelled() {
                        cancelled.store(true, Ordering::Relaxed);
                        break;
                    }
                    read_run(cx, &mut reader, jobs, &opened, &places, run);
                }
            });
        }
    });
    if cancelled.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    Ok(opened
        .into_par_iter()
        .zip(jobs)
        .map(|(open, job)| {
            let r = finish(cx, job, open?);
            crate::fault::point("restore wrote a temporary file");
            r
        })
        .collect())
}

/// Every chunk use of the jobs whose temporaries opened, sorted by where
/// the chunk lies.
fn sorted_places(jobs: &[WriteJob], opened: &[Result<Open, Failure>]) -> Vec<Place> {
    let mut places = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        if opened[j].is_err() {
            continue;
        }
        let mut pos = 0;
        for (c, (_, loc)) in job.locs.iter().enumerate() {
            places.push(Place {
                job: j as u32,
                chunk: c as u32,
                pos,
            });
            pos += loc.raw_len as u64;
        }
    }
    let at = |p: &Place| {
        let loc = &jobs[p.job as usize].locs[p.chunk as usize].1;
        (loc.pack, loc.offset, loc.stored_len)
    };
    places.sort_unstable_by_key(at);
    places
}

/// Cut the sorted places into runs of one pack, each at most
/// `READ_RUN_MAX` long (or one chunk), with gaps of at most `gap` bytes.
fn runs(jobs: &[WriteJob], places: &[Place], gap: u64) -> Vec<Run> {
    let loc = |p: &Place| jobs[p.job as usize].locs[p.chunk as usize].1;
    let mut runs: Vec<Run> = Vec::new();
    for (i, p) in places.iter().enumerate() {
        let l = loc(p);
        let (start, end) = (l.offset as u64, l.offset as u64 + l.stored_len as u64);
        if let Some(run) = runs.last_mut() {
            let same_pack = loc(&places[run.places.start]).pack == l.pack;
            if same_pack && start <= run.end + gap && end.max(run.end) - run.start <= READ_RUN_MAX {
                run.places.end = i + 1;
                run.end = run.end.max(end);
                continue;
            }
        }
        runs.push(Run {
            places: i..i + 1,
            start,
            end,
        });
    }
    runs
}

/// Read one run, decode each chunk in it once, write it at each place.
/// A failure is recorded on the files it touches; the others go on.
fn read_run(
    cx: &Context,
    reader: &mut ChunkReader,
    jobs: &[WriteJob],
    opened: &[Result<Open, Failure>],
    places: &[Place],
    run: &Run,
) {
    let places = &places[run.places.clone()];
    let fail_all = |e: Error| {
        let f = Failure::from(e);
        for p in places {
            if let Ok(open) = &opened[p.job as usize] {
                let _ = open.failure.set(Failure {
                    damage: f.damage,
                    message: f.message.clone(),
                });
            }
        }
    };
    let first = jobs[places[0].job as usize].locs[places[0].chunk as usize].1;
    let pack = match reader.pack(&first.pack) {
        Ok(p) => p,
        Err(e) => return fail_all(e),
    };
    // At most READ_RUN_MAX, or one chunk's checked length: fits a u32.
    let bytes = match pack.read_run(run.start, (run.end - run.start) as u32) {
        Ok(b) => b,
        Err(e) => return fail_all(e),
    };
    let mut last: Option<(ChunkId, ChunkLocation, Vec<u8>)> = None;
    for p in places {
        let (job, Ok(open)) = (&jobs[p.job as usize], &opened[p.job as usize]) else {
            continue;
        };
        if open.failure.get().is_some() {
            continue;
        }
        let (id, loc) = job.locs[p.chunk as usize];
        let reuse = matches!(&last, Some((i, l, _)) if *i == id && *l == loc);
        if !reuse {
            let at = (loc.offset as u64 - run.start) as usize;
            let decoded = bytes
                .get(at..at + loc.stored_len as usize)
                .ok_or_else(|| {
                    crate::pack::damaged(
                        pack.id(),
                        format!("chunk {} lies outside what was read", id.short()),
                    )
                })
                .and_then(|stored| {
                    let base = reader.base_of(&id, &loc, cx.bases)?;
                    let base = base.as_ref().map(|(b, _)| b.as_slice());
                    decode_chunk(pack.ids(), pack.id(), &loc.entry(&id), stored, base)
                });
            match decoded {
                Ok(data) => last = Some((id, loc, data)),
                Err(e) => {
                    let _ = open.failure.set(e.into());
                    continue;
                }
            }
        }
        let data = &last.as_ref().expect("decoded above").2;
        // A block of zeros is left as a hole: sparse files stay sparse.
        if !(data.len() >= 4096 && data.iter().all(|&b| b == 0))
            && let Err(e) = open.file.write_all_at(data, p.pos)
        {
            let _ = open.failure.set(Error::io(&job.path, e).into());
            continue;
        }
        open.filled.fetch_add(data.len() as u64, Ordering::Relaxed);
        cx.progress.bytes(data.len() as u64);
    }
}

/// Check that a filled temporary got all its bytes, then set its length,
/// metadata and extended attributes.
fn finish(cx: &Context, job: &WriteJob, open: Open) -> Result<Written, Failure> {
    if let Some(f) = open.failure.into_inner() {
        return Err(f);
    }
    let (tmp, file, filled) = (open.tmp, open.file, open.filled.into_inner());
    if filled != job.meta.size {
        return Err(Error::Damaged {
            path: job.path.clone(),
            reason: format!(
                "snapshot lists {} bytes but its chunks hold {filled}",
                job.meta.size
            ),
        }
        .into());
    }
    file.set_len(filled).at(&job.path)?;
    let e = &job.meta;
    let owner = cx.is_root.then_some((e.uid, e.gid));
    confined::set_meta_fd(
        &file,
        owner,
        effective_mode(e.mode, e.uid, e.gid),
        e.mtime_ns,
    )
    .at(&job.path)?;
    // Attributes go on the open temporary (a new file may have inherited
    // a default ACL: `apply` removes what the snapshot lacks).
    let note = {
        use std::os::fd::AsFd;
        match crate::xattr::apply(crate::xattr::At::Fd(file.as_fd()), &e.xattrs, cx.is_root) {
            Ok(refused) if refused.is_empty() => None,
            Ok(refused) => Some(refused.join("; ")),
            Err(err) => Some(err.to_string()),
        }
    };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    file.sync_all().at(&job.path)?;
    // Remember one file per filesystem for the barriers.
    let dev = std::os::unix::fs::MetadataExt::dev(&file.metadata().at(&job.path)?);
    let mut fss = cx.filesystems.lock().unwrap_or_else(|e| e.into_inner());
    if let std::collections::hash_map::Entry::Vacant(v) = fss.entry(dev) {
        v.insert(file.try_clone().at(&job.path)?);
    }
    Ok((tmp, note))
}
