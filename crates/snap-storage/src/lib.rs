//! Where a repository's objects live: packs, snapshot objects, change
//! records and the config. Every byte of those goes through [`Storage`];
//! the rest of snap knows objects only by key.
//!
//! Keys are `/`-separated names (`packs/ab/<id>.pack`, `snapshots/<id>`,
//! `changes/<name>`, `config`), never absolute, never with `.` or `..`
//! components, never starting with a dot (names starting with a dot are
//! an implementation's own temporaries and are never listed).
//!
//! What stays outside: `index.db` (a cache of what the objects say, opened
//! by [`crate::index`]), the `lock` file and `tmp/` (scratch space for
//! SQLite images); they live in the repository's local directory.
//!
//! # The durability contract
//!
//! Every implementation keeps these promises, and the conformance suite
//! (`tests/integration/storage.rs`) checks them for each one:
//!
//! - **Atomic, durable puts.** When [`Storage::put`] or
//!   [`ObjectWriter::commit`] returns `Ok`, the object is whole under its
//!   key and stays so through a crash or power loss. If the process dies
//!   during a put, the key afterwards holds either nothing or the whole
//!   object (for a key that existed: the old object or the new one), never a
//!   prefix. A put that fails leaves no visible object; the temporaries of a
//!   put that was interrupted are removed by [`Storage::remove_partial`].
//! - **Readers see whole objects.** A concurrent reader of a key being put
//!   sees it absent or whole; a listing taken during a put may or may not
//!   include it. Objects are never changed in place: snap writes each key
//!   once (the config being written once at init).
//! - **Exact reads.** [`ObjectReader::read_at`] returns exactly the bytes
//!   asked for, or an error; a range past the end is an error (the caller
//!   names the object as damaged). Callers still verify what they read
//!   (every pack byte is covered by a BLAKE3), so a storage that breaks this
//!   promise causes a damage report, never a wrong restore.
//! - **Deletes are barriers only after `flush`.** A delete that returned
//!   `Ok` makes the object invisible to later calls; it is durable once
//!   [`Storage::flush`] returns. After a crash before the flush a deleted
//!   object may reappear, so deletes must be safe to repeat (gc's are).
//! - **Listings are of committed objects only**, sorted by key.

pub mod fault;
mod faulty;
pub mod local;
mod memory;
#[cfg(feature = "s3")]
mod read_windows;
#[cfg(feature = "s3")]
pub mod s3;
pub mod sealed;

pub use faulty::{Fault, FaultyStorage};
pub use local::LocalStorage;
pub use memory::MemoryStorage;
#[cfg(feature = "s3")]
pub use s3::{S3Options, S3Storage, S3Url};
pub use sealed::{MasterKey, SealedStorage};
use std::path::Path;

use snap_format::{error, id};

use crate::error::{Error, Result};
use crate::id::PackId;

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// A repository's object store. Implementations are shared across threads.
pub trait Storage: Send + Sync {
    /// Where an object is, for messages: a path, or a URL.
    fn describe(&self, key: &str) -> String;

    /// Start writing an object that will be committed under a key in
    /// `dir` or below it (`packs`): the name may depend on the content (a
    /// pack's id is its footer's hash), so it is given at commit.
    fn create(&self, dir: &str) -> Result<Box<dyn ObjectWriter>>;

    /// Open an object for range reads. A missing object is
    /// `Error::Io` with `ErrorKind::NotFound` (see [`Error::is_not_found`]).
    fn open(&self, key: &str) -> Result<Box<dyn ObjectReader>>;

    /// Open an object whose size the caller has from a listing: a remote
    /// storage then skips the request that would ask for it. A size that
    /// is wrong shows in the reads (too short, or failing their checks).
    fn open_sized(&self, key: &str, size: u64) -> Result<Box<dyn ObjectReader>> {
        let _ = size;
        self.open(key)
    }

    /// The object's size, or `None` when there is none.
    fn size(&self, key: &str) -> Result<Option<u64>>;

    /// Every committed object whose key starts with `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Remove an object; removing a missing one is not an error.
    fn delete(&self, key: &str) -> Result<()>;

    /// Make every delete so far durable.
    fn flush(&self) -> Result<()>;

    /// Remove the temporaries of puts a crash interrupted; returns how
    /// many. Only under the repository's exclusive lock: another writer's
    /// put in progress looks the same.
    fn remove_partial(&self) -> Result<u64>;

    /// Write a whole object atomically and durably.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let (dir, _) = split_key(key);
        let mut w = self.create(dir)?;
        w.write(bytes)?;
        w.commit(key)
    }

    /// Requests sent so far, for a storage that counts them (a remote one).
    fn request_counts(&self) -> Option<RequestCounts> {
        None
    }

    /// Whether each read waits on a network: readers then keep several
    /// reads in flight.
    fn is_remote(&self) -> bool {
        false
    }

    /// The local directory that holds the objects, for a storage on this
    /// machine's filesystem (whatever seals them); `None` for a remote one.
    /// A restore never deletes it and a create never reads it.
    fn local_dir(&self) -> Option<&Path> {
        None
    }

    /// The key of chunk and tree ids in an encrypted repository (see
    /// [`crate::id::Ids`]); `None`: ids are plain BLAKE3.
    fn id_key(&self) -> Option<[u8; 32]> {
        None
    }

    /// Read a whole object.
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        let r = self.open(key)?;
        let size = r.size();
        r.read_at(0, size)
    }

    /// Read a whole object, or `None` when there is none under `key` (on
    /// object storage one GET, not a HEAD and a GET).
    fn read_if_exists(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.size(key)? {
            Some(_) => self.read(key).map(Some),
            None => Ok(None),
        }
    }
}

/// An object already read whole, opened again from memory.
pub struct BytesReader {
    pub describe: String,
    pub bytes: Vec<u8>,
}

impl ObjectReader for BytesReader {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(self.bytes[offset as usize..end as usize].to_vec()),
            _ => Err(short_object(self.describe.clone(), offset, len, size)),
        }
    }
}

/// Requests sent, by kind, since the storage was opened (retries not counted:
/// the client retries below the storage).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    pub put: u64,
    pub get: u64,
    pub head: u64,
    pub list: u64,
    pub delete: u64,
    /// Bytes sent in PUT bodies and received in GET bodies.
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl RequestCounts {
    pub fn total(&self) -> u64 {
        self.put + self.get + self.head + self.list + self.delete
    }
}

/// An object being written. Dropping it without `commit` discards it.
pub trait ObjectWriter: Send {
    fn write(&mut self, bytes: &[u8]) -> Result<()>;

    /// Bytes written so far.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Make the object durable and visible under `key`, which must lie in
    /// or below the directory given to `create`. May run on another thread than the
    /// writes, so the next object is written while this one is synced.
    fn commit(self: Box<Self>, key: &str) -> Result<()>;
}

/// An open object.
pub trait ObjectReader: Send + Sync {
    /// Its size when it was opened.
    fn size(&self) -> u64;

    /// Exactly `len` bytes at `offset`, or an error.
    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// Like `read_at`, for a read the caller planned (a restore reads
    /// each range it needs once): a remote storage fetches exactly these
    /// bytes and keeps none of them for later reads.
    fn read_planned(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.read_at(offset, len)
    }
}

/// `("packs/ab", "x.pack")` from `"packs/ab/x.pack"`; `("", "config")`.
pub fn split_key(key: &str) -> (&str, &str) {
    match key.rfind('/') {
        Some(i) => (&key[..i], &key[i + 1..]),
        None => ("", key),
    }
}

/// Refuse keys that could name something outside the repository.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.') && !c.contains('\0'));
    if ok {
        Ok(())
    } else {
        Err(Error::internal(
            "storage",
            format!("not a valid object key: {key:?}"),
        ))
    }
}

/// The repository's config object: plain in every repository (sealed
/// storage passes it through), so that a reader learns how to open it.
pub const CONFIG_FILE: &str = "config";
/// Where the key objects of an encrypted repository are (plain: each is
/// sealed by its own password).
pub const KEYS_DIR: &str = "keys";
pub const PACKS_PREFIX: &str = "packs/";

/// The key of a pack: `packs/<2 hex>/<id>.pack`.
pub fn pack_key(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}.pack", &hex[..2])
}

/// The pack a key names, when it names one.
pub fn pack_of_key(key: &str) -> Option<PackId> {
    let rest = key.strip_prefix(PACKS_PREFIX)?;
    let (dir, name) = split_key(rest);
    let id = PackId::from_hex(name.strip_suffix(".pack")?)?;
    (dir == &id.to_hex()[..2]).then_some(id)
}

/// The error for a read past the end of an object.
pub fn short_object(what: String, offset: u64, len: u64, size: u64) -> Error {
    Error::Damaged {
        path: what.into(),
        reason: format!("object is {size} bytes, too short for {len} bytes at offset {offset}"),
    }
}
