//! A repository's local directory: `index.db` (a cache of what the
//! objects say), the `lock` and `tmp/`. For a repository on the local
//! filesystem it is the repository's directory; for one in a bucket, this
//! client's cache directory. Everything that creates, replaces or cleans
//! these files is here.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::storage::local::sync_dir;

pub const INDEX_FILE: &str = "index.db";
pub const TMP_DIR: &str = "tmp";
/// Temporary SQLite images in `tmp/` (removed under the exclusive lock if a
/// crash leaves one).
pub const TMP_SQLITE_PREFIX: &str = ".tmp-sqlite-";

/// A directory (0700), and its parents, made if missing.
pub fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .at(path)
}

/// Whether `path` is a directory with nothing in it; the error of reading
/// it otherwise (a missing one: `NotFound`).
pub fn is_empty_dir(path: &Path) -> std::io::Result<bool> {
    Ok(fs::read_dir(path)?.next().is_none())
}

/// The local directory of a repository.
#[derive(Debug, Clone)]
pub struct LocalDir(PathBuf);

impl LocalDir {
    pub fn new(path: &Path) -> LocalDir {
        LocalDir(path.to_path_buf())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn index_path(&self) -> PathBuf {
        self.0.join(INDEX_FILE)
    }

    /// Scratch space for SQLite images being captured (same filesystem as
    /// the packs, so a large database does not fill a small /tmp).
    pub fn tmp_dir(&self) -> PathBuf {
        self.0.join(TMP_DIR)
    }

    /// `tmp/`, made if missing.
    pub fn prepare_tmp(&self) -> Result<PathBuf> {
        let tmp = self.tmp_dir();
        create_private_dir(&tmp)?;
        Ok(tmp)
    }

    /// Remove the SQLite images (and claim spills) a killed create left in
    /// `tmp/`. Only under the exclusive lock: a running create's are the
    /// same files.
    pub fn remove_stale_images(&self) {
        let Ok(rd) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for de in rd.flatten() {
            if de
                .file_name()
                .to_string_lossy()
                .starts_with(TMP_SQLITE_PREFIX)
            {
                let _ = fs::remove_file(de.path());
            }
        }
    }

    /// Where a new index is built before it replaces `index.db` (`name`
    /// starts with a dot); leftovers of an earlier attempt are removed.
    pub fn staged_index(&self, name: &str) -> PathBuf {
        for suffix in ["", "-wal", "-shm"] {
            let _ = fs::remove_file(self.0.join(format!("{name}{suffix}")));
        }
        self.0.join(name)
    }

    /// Put a staged index (complete, committed, closed) in place of
    /// `index.db`: the old index's `-wal` and `-shm` go first, so SQLite
    /// never applies an old log to the new file; then the new file, 0600,
    /// renamed over the old one, and the directory made durable.
    pub fn install_index(&self, staged: &Path) -> Result<()> {
        for f in ["index.db-wal", "index.db-shm"] {
            match fs::remove_file(self.0.join(f)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(self.0.join(f), e));
                }
                _ => {}
            }
        }
        // SQLite gives the -wal and -shm files the database file's mode.
        fs::set_permissions(staged, fs::Permissions::from_mode(0o600)).at(staged)?;
        fs::rename(staged, self.index_path()).at(self.index_path())?;
        sync_dir(&self.0)
    }
}
