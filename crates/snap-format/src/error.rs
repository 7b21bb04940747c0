//! The library's one error type. Its rules:
//!
//! - The variant says who must act: the caller (input to change:
//!   [`Error::Usage`], a missing repository, a lock held elsewhere, a
//!   password), the repository's data (damage, with where it is: a file or
//!   object by path, a pack by id, the index by path), the system (I/O, with
//!   the path), or snap itself ([`Error::Internal`], with the operation).
//! - Every variant that concerns a file or object names it.
//! - What to do about an error follows from its variant, never from its
//!   text: [`Error::remedy`] for the CLI and the C ABI, [`Error::is_damage`]
//!   for exit code 5.
//! - Messages are one line, lower case, and say what was being done.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path}: not a snap repository (no index.db); run `snap init {path}` to create one", path = .path.display())]
    NotARepository { path: PathBuf },

    #[error("{path}: directory is not empty and is not a snap repository; refusing to initialise it", path = .path.display())]
    InitNonEmpty { path: PathBuf },

    #[error("{path}: repository format version {found} is newer than this snap supports ({supported}); upgrade snap", path = .path.display())]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error("{path}: repository format {found} is not read by this snap (it reads format 5, the first released one; see docs/format.md, Compatibility): restore what you need with the snap that wrote it, then `snap init` a new repository and take new snapshots", path = .path.display())]
    OldFormat { path: PathBuf, found: u32 },

    #[error("{path}: repository is locked by another process ({holder}); waited {waited_secs} s", path = .path.display())]
    Locked {
        path: PathBuf,
        holder: String,
        waited_secs: u64,
    },

    /// The index database (SQLite) failed; `corrupt` when SQLite says the
    /// file is malformed or not a database.
    #[error("{path}: index database error: {message}", path = .path.display())]
    Index {
        path: PathBuf,
        message: String,
        corrupt: bool,
    },

    #[error("{path}: damaged: {reason}", path = .path.display())]
    Damaged { path: PathBuf, reason: String },

    #[error("pack {pack}: damaged: {reason}")]
    PackDamaged {
        pack: crate::id::PackId,
        reason: String,
    },

    #[error("chunk {id} is not in the index: {context}")]
    MissingChunk { id: String, context: String },

    #[error("tree {id} is not in the index")]
    MissingTree { id: String },

    #[error("no snapshot matches {0:?}")]
    NoSuchSnapshot(String),

    #[error("{prefix:?} matches {count} snapshots; give more digits")]
    AmbiguousSnapshot { prefix: String, count: usize },

    #[error("{path}: {reason}", path = .path.display())]
    BadSource { path: PathBuf, reason: String },

    #[error("{path}: not found in snapshot {snapshot}", path = .path.display())]
    NotInSnapshot { path: PathBuf, snapshot: String },

    #[error("{path}:{line}: {key}{sep}{reason}", path = .path.display(), sep = if .key.is_empty() { "" } else { ": " })]
    Config {
        path: PathBuf,
        line: usize,
        key: String,
        reason: String,
    },

    #[error("invalid repository config: {0}")]
    BadConfig(String),

    /// The index's own content is damaged or missing (its file by path):
    /// `snap repair index` rebuilds it from the repository's files.
    #[error("{path}: damaged: {reason}", path = .path.display())]
    IndexDamaged { path: PathBuf, reason: String },

    /// Input the caller must change: an argument or option, a name, a
    /// password, a pattern, or a state the command cannot start from (the
    /// message names which and why).
    #[error("{reason}")]
    Usage { reason: String },

    /// snap itself failed during `operation` (a worker stopped, compression
    /// failed, a thread panicked): not the caller's input, not the data.
    #[error("{operation}: internal error: {reason}")]
    Internal {
        operation: &'static str,
        reason: String,
    },

    /// Making written files durable (syncfs) failed: the files may not
    /// survive a crash.
    #[error("making the written files durable failed: {source}")]
    SyncFailed {
        #[source]
        source: io::Error,
    },

    #[error("the safety snapshot {snapshot} could not read {}: a restore would change what it cannot bring back, so nothing was changed; make them readable, or pass --force to restore anyway and lose them", .paths.join(", "))]
    SafetySnapshotIncomplete {
        snapshot: String,
        paths: Vec<String>,
    },

    #[error("{repo}: wrong password: no key of the repository opens with it")]
    WrongPassword { repo: String },

    #[error("{repo}: the repository is encrypted and no password was given ({why})")]
    NoPassword { repo: String, why: String },

    #[error("interrupted")]
    Interrupted,

    /// A migration session of `source` was begun and never ended (its
    /// process died): the directory may be half-migrated. End it first,
    /// rolling back or keeping what it left (`Remedy::EndMigration`).
    #[error("{dir}: an earlier migration session did not finish (snapshot {short} from {time}, still pinned); the directory may be half-migrated", dir = .dir.display(), short = &.snapshot[..8.min(.snapshot.len())])]
    UnfinishedMigration {
        dir: PathBuf,
        snapshot: String,
        time: String,
    },
}

impl Error {
    /// Input the caller must change; see [`Error::Usage`].
    pub fn usage(reason: impl Into<String>) -> Self {
        Error::Usage {
            reason: reason.into(),
        }
    }

    /// snap failed in `operation`; see [`Error::Internal`].
    pub fn internal(operation: &'static str, reason: impl Into<String>) -> Self {
        Error::Internal {
            operation,
            reason: reason.into(),
        }
    }

    /// What the one who sees this error can do about it, when there is
    /// one thing to say; each front end words it in its own terms (the
    /// CLI names a command, the C ABI does not).
    pub fn remedy(&self) -> Option<Remedy> {
        match self {
            _ if self.is_index_damage() => Some(Remedy::RepairIndex),
            Error::Internal { .. } => Some(Remedy::ReportBug),
            Error::UnfinishedMigration { .. } => Some(Remedy::EndMigration),
            _ => None,
        }
    }

    /// Attach a path to an io::Error; used through `IoContext`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the damage is in `index.db` itself (which `snap repair
    /// index` rebuilds), not in the repository's files.
    pub fn is_index_damage(&self) -> bool {
        matches!(
            self,
            Error::IndexDamaged { .. } | Error::Index { corrupt: true, .. }
        )
    }

    /// True for a storage object (or file) that is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// True for errors that mean stored data is damaged (exit code 5).
    pub fn is_damage(&self) -> bool {
        match self {
            Error::Damaged { .. }
            | Error::IndexDamaged { .. }
            | Error::PackDamaged { .. }
            | Error::MissingChunk { .. }
            | Error::MissingTree { .. } => true,
            // SQLite's own verdict on the index file: malformed or not a database.
            Error::Index { corrupt, .. } => *corrupt,
            _ => false,
        }
    }
}

/// What can be done about an error (see [`Error::remedy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// The index is damaged or missing: rebuild it from the repository's
    /// own files (no data is lost).
    RepairIndex,
    /// snap failed: a bug to report.
    ReportBug,
    /// An unfinished migration session must be ended first: rolled back
    /// (restore its snapshot, unpin it) or kept (unpin it).
    EndMigration,
}

/// `.at(path)` turns an `io::Result` into a `Result` that names the path.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
