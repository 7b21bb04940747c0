//! `snap repair index`: rebuild `index.db` from the repository's own files.
//!
//! The index is a cache of what the files say (docs/format.md): the config
//! file, the pack footers (every chunk and tree blob, by pack), the snapshot
//! objects and their change records. Repair reads them into a new index
//! beside the old one, loads every tree the snapshots reach from the tree
//! packs, and only then replaces `index.db` (rename): a crash at any point
//! leaves the old index (or none) and a temporary that the next run removes.
//! A snapshot whose trees or chunks are missing is kept and named, never
//! silently dropped.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{ChunkId, TreeId};
use crate::index::Index;
use crate::local_dir::LocalDir;
use crate::lock::{LockMode, RepoLock, default_wait};
use crate::pack::{
    Blob, FinishedPack, PackKind, PackReader, PackWriter, decode_blob, for_each_footer,
};
use crate::progress::Progress;
use crate::repo::{ChunkReader, list_packs};
use crate::storage::{LocalStorage, Storage, pack_key};
use crate::tree::{Kind, Tree};
use crate::tree_store::compress_tree;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairStats {
    pub packs: u64,
    pub chunks: u64,
    pub trees: u64,
    pub snapshots: u64,
    /// Snapshots whose change records say they were forgotten.
    pub forgotten_snapshots: u64,
    /// Files that could not be used, and why (a damaged pack, an object
    /// that does not decode).
    pub unusable_files: Vec<(String, String)>,
    /// Packs whose footer failed its checks: the blobs proven by their ids
    /// were rewritten into a new pack (named in the reason), and the
    /// damaged file is left for `gc` to remove.
    pub salvaged_packs: Vec<(String, String)>,
    /// Snapshots kept in the index although some of their data is missing,
    /// with what is missing (`snap check` names the paths).
    pub damaged_snapshots: Vec<(String, String)>,
    pub duration_ms: u64,
}

impl RepairStats {
    pub fn is_clean(&self) -> bool {
        self.unusable_files.is_empty()
            && self.damaged_snapshots.is_empty()
            && self.salvaged_packs.is_empty()
    }
}

const TMP_INDEX: &str = ".index.db.repair";

/// Rebuild the index of the repository in the directory `root`.
pub fn repair_index(root: &Path, progress: &dyn Progress) -> Result<RepairStats> {
    repair_index_on(Arc::new(LocalStorage::new(root)), root, progress)
}

/// Rebuild the index in `root` from the objects in `storage`.
pub fn repair_index_on(
    storage: Arc<dyn Storage>,
    root: &Path,
    progress: &dyn Progress,
) -> Result<RepairStats> {
    let started = std::time::Instant::now();
    if !root.is_dir() || storage.size(crate::objects::CONFIG_FILE)?.is_none() {
        return Err(Error::NotARepository {
            path: root.to_path_buf(),
        });
    }
    let _lock = RepoLock::acquire(root, LockMode::Exclusive, default_wait())?;
    let config = crate::objects::read_config(&*storage)?;
    let local = LocalDir::new(root);
    let tmp = local.staged_index(TMP_INDEX);
    let mut stats = RepairStats::default();
    {
        let index = Index::create(&tmp, &config)?;
        index.tune_for_create()?;
        index.begin()?;
        // The snapshot objects first, the packs after: a writer makes its
        // packs durable before its snapshot object, so every snapshot read
        // here has its packs in the listing that follows, even while other
        // clients write (read the other way round, a snapshot committed in
        // between would come without its trees).
        let records = crate::objects::read_records(&*storage)?;
        progress.phase("repair: packs", None);
        add_packs(&index, &*storage, &mut stats, progress)?;
        condemn_recorded(&index, &*storage)?;
        progress.phase("repair: snapshots", None);
        let copies = config.index_keeps_tree_copies(storage.is_remote());
        add_snapshots(&index, &storage, copies, records, &mut stats, progress)?;
        index.commit()?;
    }
    crate::fault::point("repaired index written");
    local.install_index(&tmp)?;
    crate::fault::point("repaired index in place");
    stats.duration_ms = started.elapsed().as_millis() as u64;
    Ok(stats)
}

/// Packs that condemned records name lose their chunk rows to the
/// condemned tables (see crate::index::condemned), as on every client.
fn condemn_recorded(index: &Index, storage: &dyn Storage) -> Result<()> {
    for (name, _) in crate::objects::condemned_records(storage)? {
        let Some(packs) = crate::objects::read_condemned(storage, &name)? else {
            continue;
        };
        for p in packs {
            if let Some(rowid) = index.pack_rowid(&p)? {
                index.condemn_pack(rowid, &name)?;
            }
        }
        index.mark_applied(&crate::ops::sync::record_mark(&name))?;
    }
    Ok(())
}

/// Every pack whose footer is sound: a pack row and its blobs' rows.
fn add_packs(
    index: &Index,
    storage: &dyn Storage,
    stats: &mut RepairStats,
    progress: &dyn Progress,
) -> Result<()> {
    for_each_footer(storage, &list_packs(storage)?, |&id, footer| {
        let footer = match footer {
            Ok(f) => f,
            Err(e) => return salvage_pack(index, storage, &id, &e.to_string(), stats),
        };
        if footer.id != id {
            let why = format!(
                "its footer hashes to {}, not to its name",
                footer.id.short()
            );
            return salvage_pack(index, storage, &id, &why, stats);
        }
        stats.packs += 1;
        stats.chunks += footer.entries.len() as u64;
        index.insert_pack(&FinishedPack {
            id,
            kind: footer.kind,
            size: footer.size,
            entries: footer.entries,
        })?;
        progress.entries(1);
        Ok(())
    })
}

/// A pack whose footer failed (`why`): keep what can be proven. Every
/// blob that decodes to its id is written into a new pack, which is
/// indexed; what cannot be proven is named. One flipped bit in a footer
/// must not lose a pack of intact chunks.
fn salvage_pack(
    index: &Index,
    storage: &dyn Storage,
    id: &crate::id::PackId,
    why: &str,
    stats: &mut RepairStats,
) -> Result<()> {
    let at = storage.describe(&pack_key(id));
    let salvaged = match PackReader::open(storage, id).and_then(|r| r.salvage()) {
        Ok(s) if !s.frames.is_empty() => s,
        Ok(s) => {
            let lost = s.lost;
            stats.unusable_files.push((
                at,
                format!("{why}; none of its {lost} entries could be proven"),
            ));
            return Ok(());
        }
        Err(e) => {
            stats.unusable_files.push((at, format!("{why}; {e}")));
            return Ok(());
        }
    };
    let mut w = PackWriter::create(storage, salvaged.kind)?;
    let mut kept = 0u64;
    for (stored, entries) in &salvaged.frames {
        let blobs: Vec<Blob> = entries.iter().map(Blob::from).collect();
        w.add_frame(&blobs, stored)?;
        kept += entries.len() as u64;
    }
    let pack = w.finish()?;
    storage.flush()?;
    index.insert_pack(&pack)?;
    stats.packs += 1;
    stats.chunks += kept;
    stats.salvaged_packs.push((
        at,
        format!(
            "{why}; {kept} blobs proven by their ids were rewritten into pack {}, {} could not be proven",
            pack.id.short(),
            salvaged.lost
        ),
    ));
    Ok(())
}

/// Every snapshot object with its changes applied, and every tree it
/// reaches, loaded from the blobs the pack rows now locate.
fn add_snapshots(
    index: &Index,
    storage: &Arc<dyn Storage>,
    tree_copies: bool,
    records: crate::objects::Records,
    stats: &mut RepairStats,
    progress: &dyn Progress,
) -> Result<()> {
    stats.unusable_files.extend(records.bad.iter().cloned());
    let mut loader = TreeLoader::new(index, storage.clone(), tree_copies);
    for s in records.snapshots {
        let changes = records.changes.get(&s.id).map_or(&[][..], |c| c.as_slice());
        for c in changes {
            index.mark_applied(&c.name)?;
        }
        let Some(s) = crate::objects::apply_changes(s, changes) else {
            stats.forgotten_snapshots += 1;
            continue;
        };
        index.insert_snapshot(&s)?;
        stats.snapshots += 1;
        let missing = loader.load_all(s.root, crate::ops::restore::entry_budget(&s))?;
        if !missing.is_empty() {
            stats
                .damaged_snapshots
                .push((s.id.to_hex(), missing.join("; ")));
        }
        progress.entries(1);
    }
    stats.trees = loader.done.len() as u64;
    Ok(())
}

/// Reads the trees of snapshots from their blobs in tree packs, checking
/// that they and their chunks are there; copies them into the index where
/// it keeps copies (`Repository::keeps_tree_copies`).
pub(crate) struct TreeLoader<'a> {
    index: &'a Index,
    packs: ChunkReader,
    copies: bool,
    done: HashSet<TreeId>,
    /// Trees the last `load_all` inserted.
    loaded: Vec<TreeId>,
}

impl<'a> TreeLoader<'a> {
    pub(crate) fn new(index: &'a Index, storage: Arc<dyn Storage>, copies: bool) -> Self {
        TreeLoader {
            index,
            packs: ChunkReader::new(storage),
            copies,
            done: HashSet::new(),
            loaded: Vec::new(),
        }
    }

    /// Take back the rows the last `load_all` inserted (a sync that leaves
    /// a snapshot with missing trees for later must not keep its upper
    /// trees, which would say that everything under them is there).
    pub(crate) fn unload_last(&mut self) -> Result<()> {
        for t in self.loaded.drain(..) {
            self.index.delete_tree(&t)?;
            self.done.remove(&t);
        }
        Ok(())
    }

    /// Load the trees under `root` into the index; what is missing, as
    /// messages (at most a few). Visits each tree once, and at most
    /// `budget` of them for this snapshot (a crafted graph cannot loop).
    pub(crate) fn load_all(&mut self, root: TreeId, budget: u64) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        self.loaded.clear();
        let mut stack = vec![root];
        let mut visited = 0u64;
        while let Some(t) = stack.pop() {
            // A tree the index holds came with all the trees under it (they
            // are inserted in one transaction): a sync stops there.
            if self.done.contains(&t) || self.index.has_tree(&t)? {
                continue;
            }
            visited += 1;
            if visited > budget {
                missing.push("its trees expand beyond what it records".to_string());
                break;
            }
            let tree = match self.load(&t) {
                Ok(tree) => {
                    self.loaded.push(t);
                    tree
                }
                Err(why) => {
                    if missing.len() < 5 {
                        missing.push(format!("tree {}: {why}", t.short()));
                    }
                    continue;
                }
            };
            for e in &tree.entries {
                match e.kind {
                    Kind::Dir => stack.extend(e.subtree()),
                    Kind::File => {
                        for c in e.chunks() {
                            if !self.index.chunk_known(c)? && missing.len() < 5 {
                                missing.push(format!(
                                    "chunk {} of {} is in no pack",
                                    c.short(),
                                    e.name_os().to_string_lossy()
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            }
            self.done.insert(t);
        }
        Ok(missing)
    }

    fn load(&mut self, t: &TreeId) -> std::result::Result<Tree, String> {
        let blob = ChunkId(t.0);
        let loc = self
            .index
            .chunk_location(&blob)
            .map_err(|e| e.to_string())?
            .ok_or("its blob is in no pack")?;
        let pack = self.packs.pack(&loc.pack).map_err(|e| e.to_string())?;
        let max = PackKind::Tree.blob_max();
        let stored = pack
            .read_stored_max(loc.offset as u64, loc.stored_len, max)
            .map_err(|e| e.to_string())?;
        let enc = decode_blob(pack.ids(), &loc.pack, &loc.entry(&blob), &stored, max, None)
            .map_err(|e| e.to_string())?;
        let tree = Tree::decode(&enc).map_err(|e| e.to_string())?;
        if self.copies {
            let (codec, data) = compress_tree(&enc);
            self.index
                .insert_tree(t, codec, &data)
                .map_err(|e| e.to_string())?;
        }
        Ok(tree)
    }
}
