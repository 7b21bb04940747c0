//! How the library reports progress and non-fatal problems. It never prints:
//! the caller supplies an implementation (the binary's terminal bar, the C
//! ABI's JSON events, or nothing).

use std::path::{Path, PathBuf};

use serde::Serialize;

/// What kind of non-fatal problem a [`Warning`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WarningKind {
    /// A file or directory could not be read; it is not in the snapshot.
    Unreadable,
    /// An entry disappeared between the walk and its read.
    Vanished,
    /// A file kept changing while it was read; stored as read and flagged.
    Changed,
    /// An entry deliberately left out (the repository itself, another
    /// filesystem with `one_file_system`).
    Skipped,
    /// A restore could not restore or had to leave an entry.
    NotRestored,
    /// Anything else (a SQLite capture falling back to plain bytes, ...).
    Other,
}

/// A problem that does not stop the operation.
#[derive(Debug, Clone, Serialize)]
pub struct Warning {
    pub kind: WarningKind,
    /// The entry concerned, when there is one.
    pub path: Option<PathBuf>,
    /// The whole sentence, path included, as the CLI prints it.
    pub message: String,
}

impl Warning {
    pub fn new(kind: WarningKind, path: &Path, message: String) -> Warning {
        Warning {
            kind,
            path: Some(path.to_path_buf()),
            message,
        }
    }

    /// A warning about no single entry.
    pub fn general(message: String) -> Warning {
        Warning {
            kind: WarningKind::Other,
            path: None,
            message,
        }
    }
}

pub trait Progress: Sync {
    /// A phase starts; `total_bytes` when known (an estimate: it may be
    /// passed).
    fn phase(&self, _name: &str, _total_bytes: Option<u64>) {}
    /// Entries visited (files, directories, ...).
    fn entries(&self, _n: u64) {}
    /// Bytes processed in the current phase.
    fn bytes(&self, _n: u64) {}
    /// A problem that does not stop the operation.
    fn warn(&self, _warning: &Warning) {}
    /// The operation is over; hide any bar.
    fn finish(&self) {}
    /// Polled by long operations at safe points (between files, between
    /// packs, before anything irreversible): when it returns true, the
    /// operation stops, commits nothing more, and returns
    /// [`crate::Error::Interrupted`].
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
