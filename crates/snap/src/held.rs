//! Descriptors held open for an app that embeds snap in its own process.
//!
//! POSIX record locks belong to a process, not to a descriptor: when any
//! descriptor of a file is closed, every lock the process holds on that
//! file goes, including the ones the app's SQLite took through its own
//! descriptors ("How To Corrupt An SQLite Database File", 2.2). snap's
//! bundled SQLite is a second copy that shares no lock state with the
//! app's, so going through SQLite does not help either (2.3): its unlocks
//! would release the app's locks on the same byte ranges.
//!
//! So, in a process that embeds snap ([`crate::Repository::hold_sqlite_files`]):
//! - snap never opens a source database with its own SQLite: it copies
//!   the database's files (main file, `-wal`, `-journal`) through plain
//!   reads, checks that nothing changed while it copied, and lets SQLite
//!   work on the private copy;
//! - every descriptor of a file that is or may be SQLite's (a database
//!   header, an empty file, a sidecar's name) is opened once per inode
//!   and kept here, never closed, until the [`HeldFiles`] is dropped (when
//!   the repository is closed): the same thing SQLite's unix VFS does with
//!   its own descriptors while locks are held.
//!
//! `-shm` files are never opened.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct HeldFiles {
    /// One descriptor per (device, inode), shared by every reader.
    by_inode: Mutex<HashMap<(u64, u64), Arc<File>>>,
    /// Further descriptors of an inode already held (opened in a race):
    /// closing them would drop the locks too.
    spare: Mutex<Vec<Arc<File>>>,
}

impl std::fmt::Debug for HeldFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeldFiles({} open)", self.len())
    }
}

impl HeldFiles {
    /// A read-only descriptor of the regular file at `path` (never through
    /// a symlink, never blocking on a FIFO): the one already held for its
    /// inode, or a new one, held from now on.
    pub fn open(&self, path: &Path) -> io::Result<Arc<File>> {
        if let Ok(md) = std::fs::symlink_metadata(path)
            && let Some(f) = lock(&self.by_inode).get(&(md.dev(), md.ino()))
        {
            return Ok(f.clone());
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        Ok(self.keep(file))
    }

    /// Keep `file` open for as long as `self` lives; returns the descriptor
    /// to use for its inode.
    pub fn keep(&self, file: File) -> Arc<File> {
        let Ok(md) = file.metadata() else {
            // fstat failing on an open descriptor: keep it all the same.
            let file = Arc::new(file);
            lock(&self.spare).push(file.clone());
            return file;
        };
        let mut map = lock(&self.by_inode);
        match map.get(&(md.dev(), md.ino())) {
            Some(held) => {
                let held = held.clone();
                lock(&self.spare).push(Arc::new(file));
                held
            }
            None => {
                let file = Arc::new(file);
                map.insert((md.dev(), md.ino()), file.clone());
                file
            }
        }
    }

    /// How many inodes are held.
    pub fn len(&self) -> usize {
        lock(&self.by_inode).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a file may be one of SQLite's, so that its descriptor must be
/// held: a database header, an empty file (a database before its first
/// write), or a sidecar's name.
pub fn may_be_sqlite(path: &Path, len: u64, has_db_header: bool) -> bool {
    use std::os::unix::ffi::OsStrExt;
    has_db_header
        || len == 0
        || path
            .file_name()
            .is_some_and(|n| crate::sqlite::sidecar_base(n.as_bytes()).is_some())
}
