//! Where trees are kept, and how they are read back.
//!
//! A tree's blob in a tree pack is the repository's own record of it (what
//! `repair index` rebuilds from). In format 5 the trees of one create are
//! compressed in groups (docs/format.md, "Grouped chunks"), and a
//! repository on the local filesystem keeps nothing else: a tree is read
//! from its pack, through a small cache of decoded groups. The index also
//! keeps a copy of each tree where reading a pack is slow (a bucket: the
//! index is in the local cache) or the trees were compressed one by one
//! (formats 2 to 4, as before).

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crossbeam_channel::Receiver;

use crate::compress::{Codec, GROUP_MEMBER_MAX, decompress, decompress_group};
use crate::error::{Error, Result};
use crate::grouping::Group;
use crate::id::{ChunkId, Ids, PackId, TreeId};
use crate::index::{ChunkLocation, Index};
use crate::pack::{Blob, FinishedPack, PackKind, Packer, decode_blob};
use crate::repo::ChunkReader;
use crate::storage::Storage;
use crate::tree::Tree;

/// Trees are grouped until a group holds this much: a random read (one
/// `ls` path) decodes one group, and trees compress as well in 128 KiB
/// groups as in 512 KiB (2.28 MB for the registry tree's 5.46 MB of
/// trees either way, against 3.83 MB one by one).
pub const TREE_GROUP_TARGET: usize = 128 << 10;

/// zstd level for trees (the chunks' default).
const TREE_LEVEL: i32 = 3;

/// Trees shorter than this are stored raw when stored alone.
const TREE_RAW_BELOW: usize = 128;

/// Largest encoded tree accepted: bounds decompression of a damaged row.
const TREE_MAX_BYTES: usize = 1 << 30;

/// Trees are compressed with zstd when that helps. Even small ones do:
/// names and metadata fields repeat from entry to entry (the trees of a
/// source tree, median 223 bytes, shrank 1.38x; the hashes do not).
/// Below [`TREE_RAW_BELOW`] bytes a frame's overhead is not worth it.
pub fn compress_tree(enc: &[u8]) -> (Codec, Vec<u8>) {
    if enc.len() < TREE_RAW_BELOW {
        return (Codec::Raw, enc.to_vec());
    }
    match zstd::bulk::compress(enc, TREE_LEVEL) {
        Ok(c) if c.len() < enc.len() => (Codec::Zstd, c),
        _ => (Codec::Raw, enc.to_vec()),
    }
}

/// The trees a create stores, on their way into tree packs.
pub(crate) struct TreeWriter {
    packer: Packer,
    done: Receiver<Result<FinishedPack>>,
    /// Small trees waiting to be compressed together.
    group: Group,
    /// Trees added so far: a tree stored twice in one create (two equal
    /// directories) is packed once.
    added: HashSet<TreeId>,
}

impl TreeWriter {
    pub fn new(storage: Arc<dyn Storage>, target: u64) -> Self {
        let (tx, done) = crossbeam_channel::unbounded();
        TreeWriter {
            packer: Packer::new(storage, PackKind::Tree, target, tx),
            done,
            group: Group::with_target(TREE_GROUP_TARGET),
            added: HashSet::new(),
        }
    }

    /// Whether this writer already has the tree.
    pub fn has(&self, id: &TreeId) -> bool {
        self.added.contains(id)
    }

    /// Add a tree's blob (`enc`: its encoding, `id` its hash; `alone`: it
    /// compressed by `compress_tree`, when the caller has that already).
    pub fn add(&mut self, id: TreeId, enc: &[u8], alone: Option<(Codec, Vec<u8>)>) -> Result<()> {
        if !self.added.insert(id) {
            return Ok(());
        }
        let blob = ChunkId(id.0);
        if enc.len() <= GROUP_MEMBER_MAX {
            self.group.push(blob, enc);
            if self.group.is_full() {
                let full =
                    std::mem::replace(&mut self.group, Group::with_target(TREE_GROUP_TARGET));
                self.add_group(full)?;
            }
        } else {
            let (codec, data) = alone.unwrap_or_else(|| compress_tree(enc));
            self.packer
                .add(Blob::whole(blob, codec, enc.len() as u32), &data)?;
        }
        Ok(())
    }

    fn add_group(&mut self, group: Group) -> Result<()> {
        let frame = group.into_frame(TREE_LEVEL).map_err(|e| {
            Error::internal("compression", format!("compression of trees failed: {e}"))
        })?;
        for (blobs, data) in frame.parts() {
            self.packer.add_frame(blobs, data)?;
        }
        Ok(())
    }

    /// Write what is left and wait for every pack to be durable.
    pub fn finish(mut self) -> Result<Vec<FinishedPack>> {
        let group = std::mem::take(&mut self.group);
        if !group.is_empty() {
            self.add_group(group)?;
        }
        self.packer.finish()?;
        self.done.try_iter().collect()
    }
}

/// Decoded tree groups, the most recently used last: a walk of a snapshot
/// reads the trees of a few groups in turn (directories are stored
/// bottom-up and read top-down), and each group is decoded once.
#[derive(Default)]
pub(crate) struct TreeFrames(Mutex<VecDeque<(FrameKey, Arc<Vec<u8>>)>>);

type FrameKey = (PackId, u32, u32);

/// Decoded groups kept (at most 8 x 1 MiB, in practice 8 x 192 KiB).
const FRAMES_KEPT: usize = 8;

impl TreeFrames {
    fn get(&self, key: &FrameKey) -> Option<Arc<Vec<u8>>> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let at = kept.iter().position(|(k, _)| k == key)?;
        let hit = kept.remove(at)?;
        let content = hit.1.clone();
        kept.push_back(hit);
        Some(content)
    }

    fn put(&self, key: FrameKey, content: Arc<Vec<u8>>) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= FRAMES_KEPT {
            kept.pop_front();
        }
        kept.push_back((key, content));
    }
}

/// What a tree read needs.
pub(crate) struct TreeSource<'a> {
    pub index: &'a Index,
    pub index_path: &'a Path,
    pub reader: &'a ChunkReader,
    pub frames: &'a TreeFrames,
    pub ids: Ids,
}

impl TreeSource<'_> {
    /// Load and verify a tree: from the index's copy if it has one, else
    /// from its blob.
    pub fn load(&self, id: &TreeId) -> Result<Tree> {
        // Where the bytes came from names the damage: the index's copy
        // (which `repair index` rebuilds) or a tree pack (which it cannot).
        let (enc, pack) = match self.index.tree_data(id)? {
            Some((codec, data)) => (self.decode_copy(id, codec, data)?, None),
            None => {
                let (enc, pack) = self.read_blob(id)?;
                (enc, Some(pack))
            }
        };
        let damaged = |reason: String| match &pack {
            Some(p) => crate::pack::damaged(p, reason),
            None => self.damaged(reason),
        };
        if self.ids.tree(&enc) != *id {
            return Err(damaged(format!(
                "tree {} fails its BLAKE3 check",
                id.short()
            )));
        }
        Tree::decode(&enc).map_err(|e| damaged(format!("tree {}: {e}", id.short())))
    }

    /// Damage of the index's copy of a tree.
    fn damaged(&self, reason: String) -> Error {
        Error::IndexDamaged {
            path: self.index_path.to_path_buf(),
            reason,
        }
    }

    /// A tree's copy in the index.
    fn decode_copy(&self, id: &TreeId, codec: Codec, data: Vec<u8>) -> Result<Vec<u8>> {
        match codec {
            Codec::Delta | Codec::Grouped => {
                Err(self.damaged(format!("tree {} claims a delta or a group", id.short())))
            }
            Codec::Raw => Ok(data),
            Codec::Zstd => {
                // The frame records its content size; refuse absurd ones.
                let size = match zstd::zstd_safe::get_frame_content_size(&data) {
                    Ok(Some(n)) if n <= TREE_MAX_BYTES as u64 => n as usize,
                    _ => {
                        return Err(
                            self.damaged(format!("tree {} has a bad zstd frame", id.short()))
                        );
                    }
                };
                decompress(Codec::Zstd, &data, size).map_err(|e| {
                    self.damaged(format!("tree {} does not decompress: {e}", id.short()))
                })
            }
        }
    }

    /// A tree's encoding from its blob in a tree pack (not yet verified
    /// against the tree id when it comes from a cached group).
    fn read_blob(&self, id: &TreeId) -> Result<(Vec<u8>, PackId)> {
        let blob = ChunkId(id.0);
        let loc = self
            .index
            .chunk_location(&blob)?
            .ok_or_else(|| Error::MissingTree { id: id.to_hex() })?;
        let mut reader = self.reader.clone();
        let pack = reader.pack(&loc.pack)?;
        let max = PackKind::Tree.blob_max();
        if loc.codec != Codec::Grouped {
            let stored = pack.read_stored_max(loc.offset as u64, loc.stored_len, max)?;
            let enc = decode_blob(pack.ids(), &loc.pack, &loc.entry(&blob), &stored, max, None)?;
            return Ok((enc, loc.pack));
        }
        let key = (loc.pack, loc.offset, loc.stored_len);
        let content = match self.frames.get(&key) {
            Some(c) => c,
            None => {
                let stored = pack.read_stored_max(loc.offset as u64, loc.stored_len, max)?;
                let c = Arc::new(decompress_group(&stored).map_err(|e| {
                    pack_damage(
                        &loc,
                        format!("the group of tree {} does not decompress: {e}", id.short()),
                    )
                })?);
                self.frames.put(key, c.clone());
                c
            }
        };
        let (start, end) = (
            loc.inner as usize,
            loc.inner as usize + loc.raw_len as usize,
        );
        content
            .get(start..end)
            .map(|enc| (enc.to_vec(), loc.pack))
            .ok_or_else(|| pack_damage(&loc, format!("tree {} lies outside its group", id.short())))
    }
}

fn pack_damage(loc: &ChunkLocation, reason: String) -> Error {
    crate::pack::damaged(&loc.pack, reason)
}
