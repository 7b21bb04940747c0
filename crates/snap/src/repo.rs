//! A repository: its objects behind a [`Storage`], its index (a cache of
//! what the objects say) and lock in a local directory, and the shared
//! reads (trees, chunks, snapshots) every operation needs.
//!
//! ```text
//! objects (storage/):  config, snapshots/<id>, changes/<name>, packs/<2 hex>/<id>.pack
//! local directory:     index.db (SQLite, WAL), lock (flock), tmp/ (SQLite images)
//! ```
//!
//! For a repository on the local filesystem both are the same directory.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::RepoConfig;
use crate::delta::Locate;
use crate::error::{Error, IoContext, Result};
use crate::held::HeldFiles;
use crate::id::{ChunkId, Ids, PackId, SnapshotId, TreeId};
use crate::index::{ChunkLocation, Index};
use crate::lock::{LockMode, RepoLock, default_wait};
use crate::pack::PackReader;
use crate::snapshot::Snapshot;
use crate::storage::{LocalStorage, Storage};
use crate::tree::Tree;
use crate::tree_store::{TreeFrames, TreeSource, TreeWriter, compress_tree};

use crate::local_dir::LocalDir;
pub use crate::local_dir::{INDEX_FILE, TMP_DIR, TMP_SQLITE_PREFIX, create_private_dir};
pub const PACKS_DIR: &str = "packs";

pub struct Repository {
    root: PathBuf,
    storage: Arc<dyn Storage>,
    pub(crate) index: Index,
    config: RepoConfig,
    _lock: Option<RepoLock>,
    /// Trees being packed by `store_tree`; `flush_trees` waits for their
    /// packs and indexes them, before the snapshot that needs them commits.
    tree_writer: Mutex<Option<TreeWriter>>,
    /// Reads trees from tree packs (`crate::tree_store`), with its cache
    /// of decoded tree groups.
    tree_reader: ChunkReader,
    tree_frames: TreeFrames,
    /// Set when snap runs inside the process whose databases it snapshots.
    held: Option<Arc<HeldFiles>>,
    /// Other clients may write to the storage too (opened by
    /// `open_remote`): gc deletes in two phases.
    pub(crate) remote: bool,
    /// How chunk and tree ids are computed (keyed when encrypted).
    ids: Ids,
}

/// Create a repository directory (and missing parents) readable by its
/// owner only: the repository holds every name and every chunk hash.
/// Whether this process cannot write in directory `path` (a read-only
/// mount, or another user's directory): read-only commands then take no
/// lock and create nothing there.
pub fn is_read_only_place(path: &Path) -> bool {
    matches!(
        rustix::fs::access(path, rustix::fs::Access::WRITE_OK),
        Err(rustix::io::Errno::ROFS | rustix::io::Errno::ACCESS | rustix::io::Errno::PERM)
    )
}

/// Is `path` a directory holding a snap repository?
pub fn is_repository(path: &Path) -> bool {
    path.join(INDEX_FILE).is_file()
}

impl Repository {
    /// Create a repository at `path` (new or empty directory).
    pub fn init(path: &Path, config: &RepoConfig) -> Result<()> {
        config.validate()?;
        if is_repository(path) {
            return Err(Error::usage(format!(
                "{}: already a snap repository",
                path.display()
            )));
        }
        match crate::local_dir::is_empty_dir(path) {
            Ok(empty) => {
                if !empty {
                    return Err(Error::InitNonEmpty {
                        path: path.to_path_buf(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_private_dir(path)?;
            }
            Err(e) => return Err(Error::io(path, e)),
        }
        create_private_dir(&path.join(PACKS_DIR))?;
        Self::init_on(Arc::new(LocalStorage::new(path)), path, config)
    }

    /// Create a repository in `storage` (empty) whose index and lock live
    /// in the local directory `local`.
    pub fn init_on(storage: Arc<dyn Storage>, path: &Path, config: &RepoConfig) -> Result<()> {
        config.validate()?;
        let mut config = config.clone();
        if config.id.is_empty() {
            config.id = RepoConfig::new_id();
        }
        let config = &config;
        create_private_dir(path)?;
        let lock = RepoLock::acquire(path, LockMode::Exclusive, default_wait())?;
        if is_repository(path) || storage.size(crate::objects::CONFIG_FILE)?.is_some() {
            return Err(Error::usage(format!(
                "{}: already holds a snap repository",
                storage.describe(crate::objects::CONFIG_FILE)
            )));
        }
        crate::objects::write_config(&*storage, config)?;
        // The index is written last: its presence is what makes a repository.
        let local = LocalDir::new(path);
        let staged = local.staged_index(".index.db.init");
        drop(Index::create(&staged, config)?);
        local.install_index(&staged)?;
        drop(lock);
        Ok(())
    }

    /// Open an existing repository holding the lock in `mode` (or none).
    pub fn open(path: &Path, mode: Option<LockMode>) -> Result<Repository> {
        Self::open_with(path, mode, false)
    }

    /// Open for reading only: the index is opened read-only, so not even a
    /// WAL checkpoint changes the repository's bytes.
    pub fn open_read_only(path: &Path, mode: Option<LockMode>) -> Result<Repository> {
        Self::open_with(path, mode, true)
    }

    fn open_with(path: &Path, mode: Option<LockMode>, read_only: bool) -> Result<Repository> {
        Self::open_on(Arc::new(LocalStorage::new(path)), path, mode, read_only)
    }

    /// Open the repository in `storage` with its index and lock in `path`.
    pub fn open_on(
        storage: Arc<dyn Storage>,
        path: &Path,
        mode: Option<LockMode>,
        read_only: bool,
    ) -> Result<Repository> {
        if !path.join(INDEX_FILE).exists()
            && (path.join(PACKS_DIR).is_dir() || crate::objects::holds_a_repository(&*storage))
        {
            // An encrypted repository opened without its key: its index is
            // in the opener's cache, not here, and nothing here is readable.
            if storage.id_key().is_none() && crate::keys::is_encrypted(&*storage)? {
                return Err(Error::NoPassword {
                    repo: storage.describe("").trim_end_matches('/').to_string(),
                    why: "it must be unlocked with its password first (UnlockedRepository; through the C ABI, options {\"password\", \"cache_dir\"})".into(),
                });
            }
            // Packs without an index: a repository that lost its index.
            return Err(Error::IndexDamaged {
                path: path.join(INDEX_FILE),
                reason: "the index is missing; the packs are still there".into(),
            });
        }
        if !path.is_dir() || !is_repository(path) {
            return Err(Error::NotARepository {
                path: path.to_path_buf(),
            });
        }
        // A repository this process cannot write is read as it is: no lock
        // file can be made there, and no writer can run meanwhile.
        let read_only_place = read_only && is_read_only_place(path);
        let lock = match mode {
            Some(_) if read_only_place => None,
            Some(m) => Some(RepoLock::acquire(path, m, default_wait())?),
            None => None,
        };
        let access = match (read_only, mode) {
            (false, _) => crate::index::Access::ReadWrite,
            (true, _) if read_only_place => crate::index::Access::ReadOnlyPlace,
            (true, None) => crate::index::Access::ReadOnly,
            (true, Some(_)) => crate::index::Access::Untouched,
        };
        let (index, config) = Index::open_as(&path.join(INDEX_FILE), path, access)?;
        // The index remembers that the repository is encrypted: a config
        // object altered to say otherwise does not make this client write
        // plain objects.
        if !config.encryption.is_empty() && storage.id_key().is_none() {
            return Err(Error::Damaged {
                path: storage.describe(crate::objects::CONFIG_FILE).into(),
                reason: "this machine's index of the repository says it is encrypted, but it is opened without its key: was the config altered to say otherwise?".into(),
            });
        }
        let tree_reader = ChunkReader::new(storage.clone());
        let repo = Repository {
            root: path.to_path_buf(),
            ids: Ids::with_key(storage.id_key()),
            storage,
            index,
            config,
            _lock: lock,
            tree_writer: Mutex::new(None),
            tree_reader,
            tree_frames: TreeFrames::default(),
            held: None,
            remote: false,
        };
        if mode == Some(LockMode::Exclusive) && !read_only {
            repo.apply_pending_changes()?;
            // Under the exclusive lock no create is capturing: what is in
            // tmp/ was left by one killed mid-capture, and holds a source
            // database's rows in the clear.
            repo.remove_stale_images();
        }
        Ok(repo)
    }

    /// Create a repository in `storage` (an empty bucket prefix) that
    /// several clients may share; this client's index goes in its cache
    /// directory under `cache_base`, which is returned.
    pub fn init_remote(
        storage: Arc<dyn Storage>,
        cache_base: &Path,
        config: &RepoConfig,
    ) -> Result<PathBuf> {
        let mut config = config.clone();
        if config.id.is_empty() {
            config.id = RepoConfig::new_id();
        }
        let cache = cache_base.join(&config.id);
        create_private_dir(cache_base)?;
        if cache.join(INDEX_FILE).exists() {
            // A cache left by a repository of the same id: not this one.
            fs::remove_file(cache.join(INDEX_FILE)).at(&cache)?;
        }
        Self::init_on(storage, &cache, &config)?;
        Ok(cache)
    }

    /// Where a client keeps its index of the repository in `storage`:
    /// `cache_base/<repository id>` (from the config object).
    pub fn cache_dir(storage: &dyn Storage, cache_base: &Path) -> Result<PathBuf> {
        let Some(config) = crate::objects::read_config_if_exists(storage)? else {
            return Err(Error::NotARepository {
                path: storage.describe("").into(),
            });
        };
        check_sealing(&config, storage)?;
        if storage.id_key().is_some() {
            crate::objects::check_config(storage, &config)?;
        }
        let id = if config.id.is_empty() {
            // Made before repositories had ids: named by where it is.
            blake3::hash(storage.describe("").as_bytes()).to_hex()[..32].to_string()
        } else {
            config.id
        };
        Ok(cache_base.join(id))
    }

    /// Opened by `open_remote`: other clients may write to the storage.
    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// Run as a library inside the process that owns the databases being
    /// snapshotted: SQLite files in the sources are never opened by snap's
    /// SQLite and their descriptors are kept in `held`, never closed (see
    /// crate::held). Share one `held` between every repository opened in
    /// the process, and drop it only once the app closed its databases.
    pub fn with_held_files(mut self, held: Arc<HeldFiles>) -> Repository {
        self.held = Some(held);
        self
    }

    pub fn held_files(&self) -> Option<&Arc<HeldFiles>> {
        self.held.as_ref()
    }

    /// The local directory: index, lock, scratch space.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every local directory that holds this repository's files: its index
    /// directory (the repository itself, or a remote one's cache) and,
    /// for a repository on this machine's filesystem, the directory of its
    /// objects whatever seals them. A create never reads them and a
    /// restore never deletes them or what is above them.
    pub fn places(&self) -> Vec<PathBuf> {
        let mut out = vec![self.root.clone()];
        if let Some(d) = self.storage.local_dir()
            && d != self.root
        {
            out.push(d.to_path_buf());
        }
        out
    }

    /// Device and inode of each of [`Self::places`]: what a walk compares
    /// a directory with to know it is the repository, whatever its path.
    pub fn place_keys(&self) -> Result<Vec<(u64, u64)>> {
        use std::os::unix::fs::MetadataExt;
        self.places()
            .iter()
            .map(|p| fs::metadata(p).at(p).map(|m| (m.dev(), m.ino())))
            .collect()
    }

    /// Remove the SQLite images (and claim spills) a killed create left
    /// in `tmp/`. Only under the exclusive lock: a running create's are
    /// the same files.
    pub fn remove_stale_images(&self) {
        self.local_dir().remove_stale_images()
    }

    /// The repository's local directory (index, lock, tmp/).
    pub fn local_dir(&self) -> LocalDir {
        LocalDir::new(&self.root)
    }

    /// How this repository computes chunk and tree ids.
    pub fn ids(&self) -> Ids {
        self.ids
    }

    /// Where the repository's objects are.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn index_path(&self) -> PathBuf {
        self.local_dir().index_path()
    }

    /// Scratch space for SQLite images being captured (see
    /// [`LocalDir::tmp_dir`]).
    pub fn tmp_dir(&self) -> PathBuf {
        self.local_dir().tmp_dir()
    }

    /// Every pack object by id, with its size.
    pub fn pack_objects(&self) -> Result<Vec<(PackId, u64)>> {
        list_packs(&*self.storage)
    }

    /// A reader of one pack.
    pub fn open_pack(&self, id: &PackId) -> Result<PackReader> {
        PackReader::open(&*self.storage, id)
    }

    /// Open a second, read-only connection (for worker threads).
    pub fn reader_index(&self) -> Result<Index> {
        Ok(Index::open(&self.index_path(), &self.root, true)?.0)
    }

    // ---- trees ----

    /// Whether the index keeps a copy of each tree (see `crate::tree_store`):
    /// on a bucket, and in formats that compress trees one by one.
    pub fn keeps_tree_copies(&self) -> bool {
        self.config
            .index_keeps_tree_copies(self.storage.is_remote())
    }

    /// Store a tree: a blob in a tree pack (the repository's own record of
    /// it, from which `repair index` rebuilds the index), and a copy in the
    /// index where it keeps them. Call inside the transaction that commits
    /// the snapshot, and `flush_trees` before the commit.
    pub(crate) fn store_tree(&self, tree: &Tree) -> Result<TreeId> {
        let enc = tree.encode();
        let id = self.ids.tree(&enc);
        // The tree compressed alone: the index's copy, and the blob too
        // when the blob is not grouped (compressed once for both).
        let mut alone = None;
        if self.keeps_tree_copies() {
            if self.index.has_tree(&id)? {
                return Ok(id);
            }
            let (codec, data) = compress_tree(&enc);
            self.index.insert_tree(&id, codec, &data)?;
            alone = Some((codec, data));
        }
        let mut slot = self.tree_writer.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|w| w.has(&id)) || self.index.has_chunk(&ChunkId(id.0))? {
            return Ok(id);
        }
        let writer = slot.get_or_insert_with(|| {
            TreeWriter::new(self.storage.clone(), self.config.pack_target_bytes)
        });
        writer.add(id, &enc, alone)?;
        Ok(id)
    }

    /// Make the trees stored so far durable in tree packs and index them.
    pub(crate) fn flush_trees(&self) -> Result<()> {
        let slot = self
            .tree_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(writer) = slot {
            for f in writer.finish()? {
                self.index.insert_pack(&f)?;
            }
        }
        Ok(())
    }

    /// Forget trees stored by a create that did not commit.
    pub(crate) fn discard_trees(&self) {
        self.tree_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Load and verify a tree.
    pub fn load_tree(&self, id: &TreeId) -> Result<Tree> {
        TreeSource {
            index: &self.index,
            index_path: &self.index_path(),
            reader: &self.tree_reader,
            frames: &self.tree_frames,
            ids: self.ids,
        }
        .load(id)
    }

    // ---- snapshots ----

    /// Every snapshot, oldest first, as the index says, with any change
    /// records an interrupted command left unapplied taken into account
    /// (so a reader sees what the next writer will commit).
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let all = self.index.snapshots()?;
        let pending = self.pending_changes()?;
        if pending.is_empty() {
            return Ok(all);
        }
        Ok(all
            .into_iter()
            .filter_map(|s| {
                let mine: Vec<_> = pending
                    .iter()
                    .filter(|(id, _)| *id == s.id)
                    .map(|(_, c)| c.clone())
                    .collect();
                crate::objects::apply_changes(s, &mine)
            })
            .collect())
    }

    /// Resolve what a user typed for a snapshot (see [`crate::spec`]):
    /// `latest`, `tag:NAME`, an id or unique prefix, each with `~N`.
    pub fn find_snapshot(&self, spec: &str) -> Result<Snapshot> {
        crate::spec::resolve(&self.snapshots()?, spec, None)
    }

    /// Like `find_snapshot`, with `latest` and `tag:` meaning the newest of
    /// the snapshots of `source`.
    pub fn find_snapshot_of(&self, spec: &str, source: &Path) -> Result<Snapshot> {
        crate::spec::resolve(&self.snapshots()?, spec, Some(source))
    }

    pub fn snapshot_by_id(&self, id: &SnapshotId) -> Result<Option<Snapshot>> {
        Ok(self.snapshots()?.into_iter().find(|s| s.id == *id))
    }

    /// Change a snapshot's pin: recorded in the repository's files first,
    /// then in the index. False when there is no such snapshot.
    pub fn set_pinned(&self, id: &SnapshotId, pinned: bool) -> Result<bool> {
        let change = crate::objects::Change {
            pinned: Some(pinned),
            ..Default::default()
        };
        self.change(id, change)
    }

    /// Replace a snapshot's tags, recorded the same way.
    pub fn set_tags(&self, id: &SnapshotId, tags: &[String]) -> Result<bool> {
        for t in tags {
            crate::snapshot::check_tag(t)?;
        }
        let change = crate::objects::Change {
            tags: Some(tags.to_vec()),
            ..Default::default()
        };
        self.change(id, change)
    }

    fn change(&self, id: &SnapshotId, change: crate::objects::Change) -> Result<bool> {
        if self.snapshot_by_id(id)?.is_none() {
            return Ok(false);
        }
        let name = crate::objects::record_change(&*self.storage, id, change.clone())?;
        let session = self.write()?;
        apply_to_index(session.index(), id, &change)?;
        session.index().mark_applied(&name)?;
        session.commit()?;
        Ok(true)
    }

    /// Change records the index has not applied yet, in time order.
    fn pending_changes(&self) -> Result<Vec<(SnapshotId, crate::objects::Change)>> {
        let applied = self.index.applied_changes()?;
        let (changes, _) = crate::objects::read_changes(&*self.storage, |n| !applied.contains(n))?;
        let mut pending: Vec<_> = changes
            .into_iter()
            .flat_map(|(id, cs)| cs.into_iter().map(move |c| (id, c)))
            .collect();
        pending.sort_by_key(|(_, c)| c.time_ns);
        Ok(pending)
    }

    /// Record that snapshots are forgotten (before the index drops them);
    /// the caller marks the returned records applied in that transaction.
    pub(crate) fn record_forgotten(&self, ids: &[SnapshotId]) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for id in ids {
            let change = crate::objects::Change {
                forgotten: true,
                ..Default::default()
            };
            names.push(crate::objects::record_change(&*self.storage, id, change)?);
        }
        Ok(names)
    }

    /// Roll the index forward over change records it has not applied (a
    /// command that crashed between recording a change and committing it).
    fn apply_pending_changes(&self) -> Result<()> {
        let pending = self.pending_changes()?;
        if pending.is_empty() {
            return Ok(());
        }
        let session = self.write()?;
        for (id, c) in &pending {
            apply_to_index(session.index(), id, c)?;
            session.index().mark_applied(&c.name)?;
        }
        session.commit()
    }

    pub fn latest_snapshot_of(&self, source: &Path) -> Result<Option<Snapshot>> {
        self.index.latest_snapshot_of(source)
    }

    /// The index, for operations in this crate and its tests.
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    pub fn chunk_location(&self, id: &ChunkId) -> Result<Option<ChunkLocation>> {
        self.index.chunk_location(id)
    }

    /// Where a chunk a tree names is; its absence from the index is an error.
    pub fn require_chunk_location(&self, id: &ChunkId) -> Result<ChunkLocation> {
        self.chunk_location(id)?.ok_or_else(|| Error::MissingChunk {
            id: id.short(),
            context: "missing from the index".into(),
        })
    }
}

/// An encrypted repository is opened only through its key (a
/// [`crate::storage::SealedStorage`]), a plain one only without.
fn check_sealing(config: &RepoConfig, storage: &dyn Storage) -> Result<()> {
    if config.encryption.is_empty() {
        crate::keys::refuse_plain_with_keys(storage)?;
    }
    match (config.encryption.is_empty(), storage.id_key().is_some()) {
        (false, false) => Err(Error::NoPassword {
            repo: storage.describe("").trim_end_matches('/').to_string(),
            why: "it must be opened with its key".into(),
        }),
        (true, true) => Err(Error::usage(format!(
            "{}: the repository is not encrypted, but a key was given",
            storage.describe("").trim_end_matches('/')
        ))),
        _ => Ok(()),
    }
}

/// Every pack object in `storage` by id, with its size.
pub fn list_packs(storage: &dyn Storage) -> Result<Vec<(PackId, u64)>> {
    Ok(storage
        .list(crate::storage::PACKS_PREFIX)?
        .into_iter()
        .filter_map(|o| crate::storage::pack_of_key(&o.key).map(|id| (id, o.size)))
        .collect())
}

pub(crate) fn apply_to_index(
    index: &Index,
    id: &SnapshotId,
    c: &crate::objects::Change,
) -> Result<()> {
    if c.forgotten {
        index.delete_snapshot(id)?;
        return Ok(());
    }
    if let Some(t) = &c.tags {
        index.set_tags(id, t)?;
    }
    if let Some(p) = c.pinned {
        index.set_pinned(id, p)?;
    }
    Ok(())
}

/// Reads chunks from packs, keeping recently used packs open. Clones
/// share the open packs (and, on object storage, the windows each pack
/// reader has fetched), so parallel workers cloned from one reader open
/// and fetch each pack once. A delta is read through its base (see
/// `crate::delta`); recently read bases are kept, shared by the clones.
#[derive(Clone)]
pub struct ChunkReader {
    storage: Arc<dyn Storage>,
    open: Arc<Mutex<HashMap<PackId, Arc<PackReader>>>>,
    bases: Arc<Mutex<HashMap<ChunkId, RawChunk>>>,
    /// Pack sizes known from the index: a pack among them opens without
    /// asking the storage its size (on a bucket, a HEAD per pack).
    sizes: Arc<HashMap<PackId, u64>>,
}

/// A chunk's raw bytes and its delta chain depth (0: not a delta).
pub type RawChunk = (Arc<Vec<u8>>, u32);

/// Bases kept by a reader (pages of 4 to 64 KiB: at most a few MiB).
const BASES_KEPT: usize = 128;

impl ChunkReader {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        ChunkReader {
            storage,
            open: Arc::new(Mutex::new(HashMap::new())),
            bases: Arc::new(Mutex::new(HashMap::new())),
            sizes: Arc::default(),
        }
    }

    /// A reader of a repository on remote storage that takes the packs'
    /// sizes from its index instead of asking for each (a HEAD per pack
    /// on a bucket); a local one has no such cost and asks.
    pub fn of_repository(repo: &Repository) -> Result<Self> {
        let mut reader = ChunkReader::new(repo.storage().clone());
        if repo.storage().is_remote() {
            let sizes = repo.index.packs()?.into_iter().map(|p| (p.id, p.size));
            reader.sizes = Arc::new(sizes.collect());
        }
        Ok(reader)
    }

    pub fn pack(&mut self, id: &PackId) -> Result<Arc<PackReader>> {
        if let Some(r) = self.open.lock().expect("pack cache").get(id) {
            return Ok(r.clone());
        }
        // Opened outside the lock (on object storage it is a request); two
        // workers opening one pack at once keep the later reader.
        let r = Arc::new(match self.sizes.get(id) {
            Some(&size) => PackReader::open_sized(&*self.storage, id, size)?,
            None => PackReader::open(&*self.storage, id)?,
        });
        let mut open = self.open.lock().expect("pack cache");
        if open.len() >= 64 {
            open.clear();
        }
        open.insert(*id, r.clone());
        Ok(r)
    }

    /// Read and verify one chunk; a delta's bases are found through `bases`.
    pub fn read(
        &mut self,
        id: &ChunkId,
        loc: &ChunkLocation,
        bases: &dyn Locate,
    ) -> Result<Vec<u8>> {
        let base = self.base_of(id, loc, bases)?;
        let pack = self.pack(&loc.pack)?;
        pack.read_chunk(&loc.entry(id), base.as_ref().map(|(b, _)| b.as_slice()))
    }

    /// The raw bytes of `chunks` that are not deltas, read by runs of
    /// chunks close together in one pack (one read each: on a bucket, one
    /// ranged GET, not a window per chunk). A chunk that cannot be read or
    /// does not verify is left out.
    pub fn read_by_runs(
        &mut self,
        chunks: &[(ChunkId, ChunkLocation)],
    ) -> HashMap<ChunkId, Arc<Vec<u8>>> {
        const GAP: u64 = 64 << 10;
        const RUN_MAX: u64 = 8 << 20;
        let mut sorted: Vec<&(ChunkId, ChunkLocation)> =
            chunks.iter().filter(|(_, l)| l.base.is_none()).collect();
        sorted.sort_unstable_by_key(|(_, l)| (l.pack, l.offset));
        sorted.dedup_by_key(|(id, _)| *id);
        let mut out = HashMap::with_capacity(sorted.len());
        let mut i = 0;
        while i < sorted.len() {
            let first = sorted[i].1;
            let (start, mut end) = (first.offset as u64, first.offset as u64);
            let mut j = i;
            while let Some((_, l)) = sorted.get(j) {
                let (s, e) = (l.offset as u64, l.offset as u64 + l.stored_len as u64);
                if l.pack != first.pack || s > end + GAP || e.max(end) - start > RUN_MAX {
                    break;
                }
                end = end.max(e);
                j += 1;
            }
            let run = &sorted[i..j.max(i + 1)];
            i = j.max(i + 1);
            let Ok(pack) = self.pack(&first.pack) else {
                continue;
            };
            let Ok(bytes) = pack.read_run(start, (end - start) as u32) else {
                continue;
            };
            for (id, l) in run {
                let at = (l.offset as u64 - start) as usize;
                let Some(stored) = bytes.get(at..at + l.stored_len as usize) else {
                    continue;
                };
                let decoded =
                    crate::pack::decode_chunk(pack.ids(), pack.id(), &l.entry(id), stored, None);
                if let Ok(data) = decoded {
                    out.insert(*id, Arc::new(data));
                }
            }
        }
        out
    }

    /// A chunk's raw bytes and its chain depth (0: not a delta), kept
    /// among the recent bases: what create stores a delta against.
    pub fn read_with_depth(
        &mut self,
        id: &ChunkId,
        loc: &ChunkLocation,
        bases: &dyn Locate,
    ) -> Result<RawChunk> {
        if let Some(hit) = self.bases.lock().expect("base cache").get(id) {
            return Ok(hit.clone());
        }
        self.raw_at(id, loc, id, bases, 0)
    }

    /// The raw bytes of the base of `id` (at `loc`) and the base's own
    /// chain depth; `None` when it is not a delta.
    pub fn base_of(
        &mut self,
        id: &ChunkId,
        loc: &ChunkLocation,
        bases: &dyn Locate,
    ) -> Result<Option<RawChunk>> {
        match loc.base {
            None => Ok(None),
            Some(base) => self.raw(&base, id, &loc.pack, bases, 1).map(Some),
        }
    }

    /// A chunk's raw bytes and its depth, `hops` deltas away from the
    /// chunk first asked for (`of`, in `pack`).
    fn raw(
        &mut self,
        id: &ChunkId,
        of: &ChunkId,
        pack: &PackId,
        bases: &dyn Locate,
        hops: u32,
    ) -> Result<RawChunk> {
        if let Some(hit) = self.bases.lock().expect("base cache").get(id) {
            return Ok(hit.clone());
        }
        let damaged = |why: String| crate::pack::damaged(pack, why);
        if hops > crate::delta::MAX_DEPTH {
            return Err(damaged(format!(
                "chunk {} is a chain of more than {} deltas",
                of.short(),
                crate::delta::MAX_DEPTH
            )));
        }
        let loc = bases.locate(id)?.ok_or_else(|| {
            damaged(format!(
                "delta chunk {}: its base {} is in no pack",
                of.short(),
                id.short()
            ))
        })?;
        self.raw_at(id, &loc, of, bases, hops)
    }

    /// `raw` of a chunk already located and not among the kept bases.
    fn raw_at(
        &mut self,
        id: &ChunkId,
        loc: &ChunkLocation,
        of: &ChunkId,
        bases: &dyn Locate,
        hops: u32,
    ) -> Result<RawChunk> {
        let (base, depth) = match loc.base {
            Some(b) => {
                let (bytes, d) = self.raw(&b, of, &loc.pack, bases, hops + 1)?;
                (Some(bytes), d + 1)
            }
            None => (None, 0),
        };
        let data = self
            .pack(&loc.pack)?
            .read_chunk(&loc.entry(id), base.as_ref().map(|b| b.as_slice()))?;
        let hit = (Arc::new(data), depth);
        let mut cache = self.bases.lock().expect("base cache");
        if cache.len() >= BASES_KEPT {
            cache.clear();
        }
        cache.insert(*id, hit.clone());
        Ok(hit)
    }
}

impl Locate for Repository {
    fn locate(&self, id: &ChunkId) -> Result<Option<ChunkLocation>> {
        self.chunk_location(id)
    }
}
