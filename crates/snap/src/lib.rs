//! snap: content-addressed incremental snapshots of application data
//! directories, with exact, undoable rollback.
//!
//! # The API
//!
//! Everything an app needs is at the crate root: open a [`Repository`],
//! then call an operation with its options and a [`progress::Progress`]
//! (or [`NoProgress`]); each returns its statistics or an [`Error`].
//!
//! - an encrypted repository is opened through [`UnlockedRepository`]
//!   (its password once, then [`UnlockedRepository::open`] per operation);
//! - [`create`] ([`CreateOptions`]) takes a [`Snapshot`];
//! - [`plan_restore`] then [`execute_restore`] of that same [`Plan`]
//!   ([`RestoreOptions`], [`RestoreStats`]), or [`restore`] for both;
//! - [`begin_migration`] / [`finish_migration`] around an app's own
//!   migration ([`MigrationEnd`]);
//! - [`gc`] ([`GcOptions`], [`Policy`], [`GcStats`]), [`forget`],
//!   [`set_pinned`], [`check`] ([`CheckOptions`], [`CheckReport`]),
//!   [`repair_index`] ([`RepairStats`]).
//!
//! Long operations poll [`progress::Progress::cancelled`] at safe points.
//! Inside the process that owns the databases being snapshotted, open the
//! repository [`with_held_files`](Repository::with_held_files) (see
//! [`HeldFiles`]). The library reads no environment variable and prints
//! nothing. Exit codes for a CLI or a C ABI are in [`exit`].
//!
//! # Layers for tools
//!
//! Below that API the library's layers are public modules, for tools built
//! on snap (its own CLI, benchmarks and tests): [`ops`] (every operation,
//! with its options and statistics), [`repo`] and [`local_dir`] (opening
//! and creating repositories), [`lock`], [`keys`], [`objects`] (the
//! repository's own records), [`pack`], [`index`], [`spec`] (snapshot
//! ids), [`retention`], [`exclude`] and [`sqlite`]; and the crates below,
//! re-exported as the modules they are (`id`, `tree`, `snapshot`,
//! `config`, `compress`, `chunker`, `delta`, `grouping`, `error`, and
//! `storage` with its `fault` points). Only the root API is kept stable
//! between versions (docs/format.md, "Compatibility"). The modules that
//! implement them (the claimed-chunk set, confined writes, held files,
//! source metadata, tree storage, the write session, xattrs) are private:
//! nothing outside the crate reaches them.

// The layers below, as the modules they are: `crate::id` and the others
// resolve to them inside this crate, and tools name them `snap::id`.
pub use snap_format::{chunker, compress, config, delta, error, grouping, id, snapshot, tree};
pub use snap_storage as storage;
pub use snap_storage::fault;

pub mod exclude;
pub mod index;
pub mod keys;
pub mod local_dir;
pub mod lock;
pub mod objects;
pub mod ops;
pub mod pack;
pub mod repo;
pub mod retention;
pub mod spec;
pub mod sqlite;

mod claims;
mod confined;
mod held;
mod source;
mod tree_store;
mod write;
mod xattr;

pub mod exit;
pub mod progress;

pub use config::RepoConfig;
pub use error::{Error, Remedy, Result};
pub use held::HeldFiles;
pub use id::{ChunkId, PackId, SnapshotId, TreeId};
pub use lock::{LockMode, set_default_wait as set_lock_wait};
pub use ops::check::{CheckOptions, CheckReport, check};
pub use ops::copy::{CopiedSnapshot, CopyReport, CopyStats, copy};
pub use ops::create::{CreateOptions, SourceSpec, create};
pub use ops::gc::{GcOptions, GcStats, forget, gc, set_pinned};
pub use ops::migration::{
    MigrationEnd, Outcome, TAG_MIGRATED, TAG_PRE, TAG_ROLLED_BACK, begin_migration,
    finish_migration, is_unfinished, unfinished_session,
};
pub use ops::repair::{RepairStats, repair_index};
pub use ops::restore::{
    Plan, PlanSummary, RestoreOptions, RestoreStats, Step, execute_restore, plan_restore, restore,
};
pub use ops::unlock::UnlockedRepository;
pub use progress::{NoProgress, Progress, Warning, WarningKind};
pub use repo::{Repository, is_repository};
pub use retention::{Policy, parse_duration};
pub use snapshot::{Snapshot, SnapshotStats, SourceRoot};

/// This machine's host name, recorded in snapshots.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // on success when the name fits, and we stop at the first NUL anyway.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
