//! The reader threads: open each file the walk hands them, read it (a
//! database as one committed state), and report what it holds.

use super::*;

/// A reader thread: read each job's file, send its result, and at the end
/// put what this thread's last group holds in a pack too.
pub(super) fn read_files(
    ctx: &WorkerCtx,
    jobs: Receiver<FileJob>,
    results: Sender<FileResult>,
) -> Result<()> {
    for job in jobs {
        if ctx.progress.cancelled() {
            ctx.cancel.store(true, Ordering::Relaxed);
        }
        let outcome = if ctx.cancel.load(Ordering::Relaxed) {
            FileOutcome::Fatal(Error::Interrupted)
        } else {
            read_file(ctx, &job)
        };
        let result = FileResult {
            node: job.node,
            slot: job.slot,
            rel: job.rel,
            outcome,
        };
        if results.send(result).is_err() {
            break;
        }
    }
    flush_group(ctx)
}

pub(super) struct WorkerCtx<'a> {
    pub(super) index: Index,
    /// Where SQLite images are written before they are chunked.
    pub(super) tmp_dir: PathBuf,
    pub(super) sqlite_check: bool,
    pub(super) claimed: Arc<Claims>,
    pub(super) params: ChunkerParams,
    pub(super) ids: crate::id::Ids,
    pub(super) level: i32,
    /// Reads the bases of deltas.
    pub(super) reader: ChunkReader,
    /// This thread's new small chunks, waiting to be compressed together.
    pub(super) group: RefCell<Group>,
    pub(super) chunk_tx: Sender<Vec<Frame>>,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) progress: &'a dyn Progress,
    /// In-process mode (see crate::held).
    pub(super) held: Option<Arc<HeldFiles>>,
}

/// Compress and send what this thread's group holds (at the end of its
/// files: every chunk claimed must reach a pack).
pub(super) fn flush_group(ctx: &WorkerCtx) -> Result<()> {
    let group = std::mem::take(&mut *ctx.group.borrow_mut());
    if group.is_empty() || ctx.cancel.load(Ordering::Relaxed) {
        return Ok(());
    }
    let frame = group
        .into_frame(ctx.level)
        .map_err(|e| Error::internal("compression", e.to_string()))?;
    ctx.chunk_tx
        .send(vec![frame])
        .map_err(|_| Error::internal("create", "the pack writer stopped"))
}

/// Open a regular file without following links, blocking on FIFOs or
/// updating atime (where permitted).
pub(super) fn open_source(path: &Path) -> io::Result<File> {
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

pub(super) fn read_file(ctx: &WorkerCtx, job: &FileJob) -> FileOutcome {
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
pub(super) fn read_file_plain(ctx: &WorkerCtx, job: &FileJob, file: &File) -> FileOutcome {
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

pub(super) enum ReadError {
    Io(io::Error),
    Fatal(Error),
}

/// Reads a file from its start at explicit offsets: a descriptor shared
/// with another reader (a held one, see crate::held) has no position to
/// fight over.
pub(super) struct ReadAdapter<'a>(pub(super) &'a File, pub(super) u64);
impl Read for ReadAdapter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read_at(buf, self.1)?;
        self.1 += n as u64;
        Ok(n)
    }
}
