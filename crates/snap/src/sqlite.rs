//! Consistent capture of live SQLite databases in the source.
//!
//! A database file and its `-wal` copied one after the other can disagree
//! (a transaction committed between the two reads, or a checkpoint moving
//! pages), and the copy still "succeeds". Instead, a file whose header says
//! it is a SQLite database is read through SQLite's online backup API into
//! a temporary image: one read transaction, so the image is exactly the
//! database as of one commit, with the committed WAL content folded in. The
//! sidecars (`-wal`, `-shm`, `-journal`) are then not stored at all.
//!
//! Images are cut into whole pages (see docs/benchmarks.md, "SQLite
//! chunking"): a migration that touches scattered rows changes scattered
//! pages, and page-sized chunks store only those.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::held::HeldFiles;

/// The first 16 bytes of every SQLite 3 database.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Sidecar suffixes SQLite creates next to a database.
pub const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];
/// An image's chunk: a run of whole pages this long (pages are powers of
/// two of at most 64 KiB, so a run is always whole pages). Runs, not single
/// pages: a page is 4 KiB in most databases, and a chunk per page costs an
/// index row and a footer entry per 4 KiB; a changed run is stored as a
/// delta of the parent's run at the same place, which costs about what its
/// changed pages cost (docs/design.md, "Chunk sizes").
pub const IMAGE_CHUNK: usize = 64 << 10;
/// How long a capture waits for a writer holding an exclusive lock.
const BUSY_WAIT: Duration = Duration::from_secs(30);

/// What a capture learned about one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbInfo {
    /// `PRAGMA user_version`: the schema version migrations bump.
    pub user_version: u32,
    /// `PRAGMA quick_check` of the image, when asked for: "ok" or the
    /// first problems it reported.
    pub quick_check: Option<String>,
}

/// True when `header` (the first bytes of a file) is a SQLite database's.
pub fn is_database_header(header: &[u8]) -> bool {
    header.len() >= 100 && header[..16] == MAGIC[..]
}

/// The first 100 bytes of a file (where a SQLite header would be), if it
/// has them. Never follows a symlink and never blocks on a FIFO. With
/// `held`, through a descriptor that stays open (see crate::held).
pub fn read_header(path: &Path, held: Option<&HeldFiles>) -> Option<[u8; 100]> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut header = [0u8; 100];
    match held {
        Some(h) => h.open(path).and_then(|f| f.read_exact_at(&mut header, 0)),
        None => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .and_then(|f| f.read_exact_at(&mut header, 0)),
    }
    .ok()?;
    Some(header)
}

/// True when the file at `path` starts with a SQLite database header.
pub fn is_database_file(path: &Path, held: Option<&HeldFiles>) -> bool {
    read_header(path, held).is_some_and(|h| is_database_header(&h))
}

/// True when the database at `path` may have content outside its main
/// file: a non-empty `-wal`, or a `-journal` (a transaction in progress).
pub fn has_pending_sidecar(path: &Path) -> bool {
    let side = |suffix: &str| std::fs::symlink_metadata(sidecar(path, suffix)).ok();
    side("-wal").is_some_and(|m| m.len() > 0) || side("-journal").is_some()
}

/// The page size a header records (the value 1 means 65536).
pub fn page_size(header: &[u8]) -> Option<usize> {
    let raw = u16::from_be_bytes([*header.get(16)?, *header.get(17)?]) as usize;
    let size = if raw == 1 { 65536 } else { raw };
    (size >= 512 && size.is_power_of_two() && size <= 65536).then_some(size)
}

/// The chunk size for an image with this header (a valid page size):
/// [`IMAGE_CHUNK`], whole pages whatever their size.
pub fn chunk_size(header: &[u8]) -> Option<usize> {
    page_size(header).map(|_| IMAGE_CHUNK)
}

/// `PRAGMA user_version`, as the header stores it (offset 60, big-endian).
pub fn user_version(header: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(header.get(60..64)?.try_into().ok()?))
}

/// If `name` is a sidecar (`x-wal`, `x-shm`, `x-journal`), the database
/// name it belongs to.
pub fn sidecar_base(name: &[u8]) -> Option<&[u8]> {
    SIDECARS
        .iter()
        .find_map(|s| name.strip_suffix(s.as_bytes()))
        .filter(|b| !b.is_empty())
}

fn sidecar(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

/// Copy the database at `source` into `image` (a new, empty file path) as
/// of one committed transaction, without changing anything next to the
/// source: no checkpoint, no recovery, no `-shm` left behind.
///
/// - A database in use in WAL mode (its `-shm` exists) is read live through
///   the backup API on a read-only connection.
/// - A database in rollback-journal mode is read the same way (a shared
///   lock keeps writers out during the copy).
/// - Otherwise (a WAL left without its `-shm`, a hot journal, a WAL-mode
///   file nobody has open), opening it would make SQLite create files or
///   repair it in place; the files are copied to scratch space first and
///   SQLite works on the copy.
///
/// With `held` (snap runs inside the app's process), SQLite never opens
/// the source: it is always copied, through descriptors that stay open.
pub fn capture(
    source: &Path,
    image: &Path,
    quick_check: bool,
    held: Option<&HeldFiles>,
) -> Result<DbInfo, String> {
    // An app that opens the database for each transaction and closes it
    // after switches it between in use and at rest many times a second:
    // each attempt takes the way the state it finds calls for, and a copy
    // that a writer overlapped is retried for as long as a writer's lock
    // would be waited for.
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        match capture_once(source, image, quick_check, held)? {
            Some(info) => return Ok(info),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            None => return Err("the database kept changing while it was copied".into()),
        }
    }
}

/// One attempt of `capture`: `None` when the files changed while they
/// were copied.
fn capture_once(
    source: &Path,
    image: &Path,
    quick_check: bool,
    held: Option<&HeldFiles>,
) -> Result<Option<DbInfo>, String> {
    let exists = |s: &str| std::fs::symlink_metadata(sidecar(source, s)).is_ok();
    let header = read_header(source, held).ok_or("cannot read the header")?;
    let wal_mode = header[18] == 2;
    if held.is_none() && (exists("-shm") || (!wal_mode && !exists("-wal"))) {
        // In use in WAL mode, or in rollback mode: SQLite's locks make a
        // live read consistent. A hot journal (left by a crash) makes the
        // read-only open fail; then the files are copied and recovered.
        match backup(source, false, image, quick_check, source, None) {
            Ok(info) => return Ok(Some(info)),
            Err(e) if wal_mode || !exists("-journal") => return Err(e),
            Err(_) => {}
        }
    }
    let copy = sidecar(image, ".source");
    let result = match copy_quiet_database(source, &copy, held) {
        Ok(true) => backup(&copy, true, image, quick_check, source, held).map(Some),
        Ok(false) => Ok(None),
        Err(e) => Err(e),
    };
    for s in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(sidecar(&copy, s));
    }
    result
}

/// Read a rollback-journal database in place, without an image: under a
/// read transaction no writer can change the main file (writing it needs an
/// exclusive lock), and in rollback mode the main file is the whole
/// committed database. `read` runs while the lock is held and reads the file.
/// `Ok(None)` when the database is not in that state (the caller then makes
/// an image with `capture`).
pub fn read_in_place<T>(
    source: &Path,
    quick_check: bool,
    read: impl FnOnce() -> T,
) -> Result<Option<(T, DbInfo)>, String> {
    let exists = |s: &str| std::fs::symlink_metadata(sidecar(source, s)).is_ok();
    let mut header = [0u8; 100];
    std::fs::File::open(source)
        .and_then(|f| f.read_exact_at(&mut header, 0))
        .map_err(|e| format!("cannot read the header: {e}"))?;
    let rollback_mode = header[18] == 1 && header[19] == 1;
    if !rollback_mode || exists("-wal") || exists("-shm") {
        return Ok(None);
    }
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open as a SQLite database: {e}"))?;
    src.busy_timeout(BUSY_WAIT)
        .map_err(|e| format!("cannot set a busy timeout: {e}"))?;
    src.execute_batch("BEGIN")
        .and_then(|_| src.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())))
        .map_err(|e| format!("cannot read the database: {e}"))?;
    // The shared lock is held from here to COMMIT: a writer in the middle
    // of a transaction (its -journal exists) cannot write the main file
    // until we let go, and SQLite refused the lock if the journal was hot
    // (left by a crash). The database may have switched to WAL meanwhile.
    if exists("-wal") {
        let _ = src.execute_batch("COMMIT");
        return Ok(None);
    }
    let user_version: u32 = src
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| format!("cannot read user_version: {e}"))?;
    let out = read();
    let quick_check = quick_check.then(|| run_quick_check(&src));
    let _ = src.execute_batch("COMMIT");
    Ok(Some((
        out,
        DbInfo {
            user_version,
            quick_check,
        },
    )))
}

/// Size, mtime and ctime (ns) of a database's main file and of each
/// sidecar (`None` where absent).
type Stamp = Option<(u64, i64, i64, i64, i64)>;

fn stamps(source: &Path) -> [Stamp; 4] {
    use std::os::unix::fs::MetadataExt;
    ["", "-wal", "-journal", "-shm"].map(|s| {
        std::fs::symlink_metadata(sidecar(source, s)).ok().map(|m| {
            (
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
        })
    })
}

/// Read a WAL-mode database at rest in place, without SQLite and without
/// an image. At rest means no `-wal`, `-shm` or `-journal`: the last
/// connection closed cleanly, after checkpointing everything, so the main
/// file is the whole committed database. SQLite cannot open it without
/// creating a `-shm` next to it, so consistency comes from the stamps of
/// the four files, the same test as the private copy's: a writer that
/// opens the database during `read` creates sidecars, and one that also
/// finished, checkpointed and closed changed the main file's mtime and
/// ctime. `file` is the open main file (its header is read after the first
/// stamps). `None` when the database is not at rest or something touched
/// it meanwhile: the caller then makes an image with `capture`.
pub fn read_at_rest<T>(
    source: &Path,
    file: &std::fs::File,
    read: impl FnOnce() -> T,
) -> Option<(T, DbInfo)> {
    let before = stamps(source);
    if before[0].is_none() || before[1..].iter().any(Option::is_some) {
        return None;
    }
    let mut header = [0u8; 100];
    file.read_exact_at(&mut header, 0).ok()?;
    if !is_database_header(&header) || header[18] != 2 || header[19] != 2 {
        return None;
    }
    let out = read();
    (stamps(source) == before).then(|| {
        let info = DbInfo {
            user_version: user_version(&header).unwrap_or(0),
            quick_check: None,
        };
        (out, info)
    })
}

fn run_quick_check(c: &Connection) -> String {
    // A malformed file can make the check itself fail: that is its verdict.
    let rows = c.prepare("PRAGMA quick_check(20)").and_then(|mut st| {
        st.query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
    });
    match rows {
        Ok(rows) => rows.join("; "),
        Err(e) => format!("error: {e}"),
    }
}

/// Copy a database nobody has open, with its `-wal` and `-journal`, to
/// `copy` (and sidecars named after it); with `held`, through descriptors
/// that stay open. `Ok(false)` when any of the files changed meanwhile
/// (their stamps differ): the copy may be torn.
fn copy_quiet_database(
    source: &Path,
    copy: &Path,
    held: Option<&HeldFiles>,
) -> Result<bool, String> {
    let before = stamps(source);
    for s in ["", "-wal", "-journal"] {
        let from = sidecar(source, s);
        if std::fs::symlink_metadata(&from).is_ok() {
            let to = sidecar(copy, s);
            match held {
                Some(h) => h.open(&from).and_then(|f| copy_from(&f, &to)),
                None => std::fs::copy(&from, &to).map(|_| ()),
            }
            .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
        }
    }
    Ok(stamps(source) == before)
}

/// Copy all of `from` (read at offsets, so a shared descriptor's position
/// does not matter) into a new file `to`.
fn copy_from(from: &std::fs::File, to: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::fs::File::create(to)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = from.read_at(&mut buf, at)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
        at += n as u64;
    }
}

/// Copy every page of `src` into `dst` in one step: one read
/// transaction, one consistent state; a writer holding its lock is waited
/// for up to `BUSY_WAIT`.
fn copy_pages(src: &Connection, dst: &mut Connection) -> Result<(), String> {
    let backup = Backup::new(src, dst).map_err(|e| format!("backup failed: {e}"))?;
    let started = Instant::now();
    loop {
        match backup.step(-1) {
            Ok(StepResult::Done) => return Ok(()),
            Ok(StepResult::More) => {}
            Ok(StepResult::Busy | StepResult::Locked) if started.elapsed() < BUSY_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(_) => return Err("the database stayed locked by a writer".into()),
            Err(e) => return Err(format!("backup failed: {e}")),
        }
    }
}

/// Give the image the source's change counter, schema cookie and library
/// version (`src_header`), so that a database nobody was writing is stored
/// byte for byte as it is on disk; from a private copy (`writable`), kept
/// only if the image then equals the copied main file `original`.
fn stamp_header(
    image: &Path,
    src_header: &[u8; 100],
    writable: bool,
    original: &Path,
    held: Option<&HeldFiles>,
) -> Result<(), String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| format!("cannot finish the image: {e}"))?;
    let mut own = [0u8; 100];
    let fix = |h: &[u8]| {
        f.write_all_at(&h[24..28], 24)
            .and_then(|_| f.write_all_at(&h[40..44], 40))
            .and_then(|_| f.write_all_at(&h[92..100], 92))
    };
    f.read_exact_at(&mut own, 0)
        .and_then(|_| fix(src_header))
        .and_then(|_| {
            if writable && !same_bytes(image, original, held)? {
                fix(&own)?;
            }
            Ok(())
        })
        .map_err(|e| format!("cannot finish the image: {e}"))
}

/// The backup itself, from `source` (read-only unless `writable`, for a
/// private copy that SQLite may need to recover) into `image`. `original`
/// is the database `source` was copied from (or `source` itself); `held`
/// is how to open it.
fn backup(
    source: &Path,
    writable: bool,
    image: &Path,
    quick_check: bool,
    original: &Path,
    held: Option<&HeldFiles>,
) -> Result<DbInfo, String> {
    let flags = if writable {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    };
    // Opened before the connection and closed after it: closing any
    // descriptor of a file drops all of this process's POSIX locks on it,
    // including SQLite's read lock, so the header is read through this one.
    let header_file =
        std::fs::File::open(source).map_err(|e| format!("cannot open the database: {e}"))?;
    let src = Connection::open_with_flags(source, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| format!("cannot open as a SQLite database: {e}"))?;
    src.busy_timeout(BUSY_WAIT)
        .map_err(|e| format!("cannot set a busy timeout: {e}"))?;
    let mut dst = Connection::open(image).map_err(|e| format!("cannot create the image: {e}"))?;
    // Scratch space: no journal and no fsync for writing the image (the
    // snapshot's durability comes from the packs, written later).
    dst.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
        .map_err(|e| format!("cannot create the image: {e}"))?;
    // One read transaction around the backup and the header read below, so
    // both see the same committed state.
    src.execute_batch("BEGIN")
        .and_then(|_| src.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())))
        .map_err(|e| format!("cannot read the database: {e}"))?;
    let mut src_header = [0u8; 100];
    copy_pages(&src, &mut dst)?;
    // With nothing pending outside the main file, the image holds exactly
    // the main file's pages.
    let quiescent = !has_pending_sidecar(source);
    let header_read = header_file.read_exact_at(&mut src_header, 0);
    let _ = src.execute_batch("COMMIT");
    drop(src);
    drop(header_file);
    let user_version: u32 = dst
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| format!("cannot read user_version: {e}"))?;
    let quick_check = quick_check.then(|| run_quick_check(&dst));
    // The image keeps the source's journal mode (a WAL database restores
    // as a WAL database); closing it folds back anything the checks put in
    // its own WAL, so the image file alone is complete.
    dst.close()
        .map_err(|(_, e)| format!("cannot close the image: {e}"))?;
    for s in SIDECARS {
        let _ = std::fs::remove_file(sidecar(image, s));
    }
    // The backup stamps the image's header with its own change counter,
    // schema cookie and library version. When the main file held the whole
    // database, give the image the source's, so that a database nobody was
    // writing is stored byte for byte as it is on disk. A private copy is
    // stable, so there the result is compared and the stamp kept only if
    // the image then equals the copied main file.
    if (quiescent || writable) && header_read.is_ok() && is_database_header(&src_header) {
        stamp_header(image, &src_header, writable, original, held)?;
    }
    Ok(DbInfo {
        user_version,
        quick_check,
    })
}

/// Whether the file `a` holds the same bytes as the source file `b`
/// (opened through `held` when given).
fn same_bytes(a: &Path, b: &Path, held: Option<&HeldFiles>) -> std::io::Result<bool> {
    let fa = std::fs::File::open(a)?;
    let fb = match held {
        Some(h) => h.open(b)?,
        None => std::sync::Arc::new(std::fs::File::open(b)?),
    };
    let len = fa.metadata()?.len();
    if len != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    while at < len {
        let n = ((len - at) as usize).min(ba.len());
        fa.read_exact_at(&mut ba[..n], at)?;
        fb.read_exact_at(&mut bb[..n], at)?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_names() {
        assert_eq!(sidecar_base(b"app.db-wal"), Some(&b"app.db"[..]));
        assert_eq!(sidecar_base(b"app.db-journal"), Some(&b"app.db"[..]));
        assert_eq!(sidecar_base(b"-shm"), None);
        assert_eq!(sidecar_base(b"app.db"), None);
    }

    #[test]
    fn header_fields() {
        let mut h = [0u8; 100];
        h[..16].copy_from_slice(MAGIC);
        h[16..18].copy_from_slice(&1u16.to_be_bytes());
        h[60..64].copy_from_slice(&7u32.to_be_bytes());
        assert!(is_database_header(&h));
        assert_eq!(page_size(&h), Some(65536));
        assert_eq!(user_version(&h), Some(7));
        h[16..18].copy_from_slice(&1024u16.to_be_bytes());
        assert_eq!(chunk_size(&h), Some(IMAGE_CHUNK));
        h[16..18].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(page_size(&h), None);
        assert!(!is_database_header(&h[..50]));
    }

    /// A WAL-mode database closed cleanly, with `rows` rows.
    fn wal_at_rest(dir: &Path, rows: u32) -> std::path::PathBuf {
        let path = dir.join("app.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA user_version=3; CREATE TABLE t(x)")
            .unwrap();
        for i in 0..rows {
            c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        drop(c);
        assert!(!sidecar(&path, "-wal").exists() && !sidecar(&path, "-shm").exists());
        path
    }

    #[test]
    fn a_wal_database_at_rest_is_read_in_place_and_a_writer_meanwhile_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = wal_at_rest(dir.path(), 50);
        let file = std::fs::File::open(&path).unwrap();
        let read = || std::fs::read(&path).unwrap();
        let (bytes, info) = read_at_rest(&path, &file, read).expect("at rest");
        assert_eq!(bytes, std::fs::read(&path).unwrap());
        assert_eq!(info.user_version, 3);
        let names = |d: &Path| std::fs::read_dir(d).unwrap().count();
        assert_eq!(
            names(dir.path()),
            1,
            "the read created files next to the database"
        );

        // A writer that opens, commits, checkpoints and closes during the
        // read leaves no sidecar behind, but the main file's stamps moved.
        let write = || {
            std::thread::sleep(Duration::from_millis(20));
            let c = Connection::open(&path).unwrap();
            c.execute("INSERT INTO t VALUES (99)", []).unwrap();
        };
        assert!(read_at_rest(&path, &file, write).is_none());
        assert_eq!(names(dir.path()), 1);

        // Not at rest: a connection is open (its -wal and -shm exist).
        let open = Connection::open(&path).unwrap();
        open.execute("INSERT INTO t VALUES (100)", []).unwrap();
        assert!(read_at_rest(&path, &file, || ()).is_none());
        drop(open);
        // Rollback-journal mode is read_in_place's case, not this one.
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode=DELETE")
            .unwrap();
        assert!(read_at_rest(&path, &file, || ()).is_none());
    }
}
