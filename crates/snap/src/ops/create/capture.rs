//! SQLite databases captured as one committed state: read in place when
//! at rest or under SQLite's shared lock, else through the backup API into
//! a private image in the repository's `tmp/`.

use super::*;

/// A database stored as one committed state: `before` is the database
/// file's metadata, the chunks are its image's pages.
pub(super) fn stored_db(
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
pub(super) fn read_db_in_place(
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
pub(super) fn capture_db(
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
