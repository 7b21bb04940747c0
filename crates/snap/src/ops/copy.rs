//! Copy snapshots to another repository (`snap copy`): a device's
//! repository to a bucket, a laptop's to a NAS.
//!
//! A copy holds the same snapshot: its files, their metadata, its time,
//! host, source, tags, labels and pin. What it is made of depends on how
//! the two repositories name content ([`Ids`]):
//!
//! - named alike (both plain, or sharing a key): every chunk, tree and
//!   snapshot keeps its id, and a chunk the destination holds is neither
//!   read nor sent;
//! - named differently (one encrypted, or two keys): each chunk is read,
//!   named with the destination's function, and sent unless the
//!   destination holds it; trees are renamed with it, so the snapshot's
//!   id changes. The id is a function of the copy's fields, so copying the
//!   same snapshot again gives the same id (a rerun finds it there), and a
//!   copy back into a repository that names content as the first does
//!   gets the first id back. `parent` is kept as it was: it names the
//!   snapshot the original was made from, where it was made.
//!
//! Every chunk read is verified against its id before it is sent, so a
//! copy never spreads damage. Stored bytes are sent as they are where the
//! chunk is stored alone (no recompression); chunks of a group or stored
//! as deltas are regrouped or stored whole.
//!
//! Order and crashes: each data pack is indexed in the destination in its
//! own commit as soon as it is durable, and a snapshot commits (trees,
//! snapshot object, index) only after all of its packs; so after a kill
//! a rerun finds every pack that was durable and sends none of it again,
//! and no snapshot is ever visible in the destination before its data.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use crossbeam_channel::{Receiver, unbounded};
use rayon::prelude::*;
use serde::Serialize;

use crate::compress::{Codec, compress_with, decompress_group};
use crate::error::{Error, Result};
use crate::grouping::{Frame, Group, groupable};
use crate::id::{ChunkId, Ids, SnapshotId, TreeId};
use crate::pack::{Blob, ChunkLocation, FinishedPack, PackKind, Packer, decode_chunk};
use crate::progress::Progress;
use crate::repo::{ChunkReader, Repository};
use crate::snapshot::Snapshot;
use crate::tree::{Payload, Tree};

/// What a copy did, snapshot by snapshot and in total.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub snapshots: Vec<CopiedSnapshot>,
    pub stats: CopyStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct CopiedSnapshot {
    /// The snapshot in the source repository.
    pub source: SnapshotId,
    /// Its copy in the destination (the same id when the two name content alike).
    pub copy: SnapshotId,
    /// The destination held it already (its tags and pin were brought up
    /// to date with the source's).
    pub already_there: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyStats {
    pub snapshots_copied: u64,
    pub snapshots_already_there: u64,
    /// Whether chunk, tree and snapshot ids are the same in both.
    pub ids_kept: bool,
    /// Chunks read from the source (verified against their ids).
    pub chunks_read: u64,
    /// Chunks sent to the destination, and their raw and stored sizes.
    pub chunks_sent: u64,
    pub raw_bytes_sent: u64,
    pub stored_bytes_sent: u64,
    /// Chunks the destination held already.
    pub chunks_already_there: u64,
    pub packs_sent: u64,
    /// Data packs an interrupted copy (or create) left in the destination
    /// unindexed, indexed before anything is sent: their chunks are not sent again.
    pub packs_adopted: u64,
    pub duration_ms: u64,
}

/// Copy `snapshots` of `src` into `dst`, oldest first (see the module doc).
pub fn copy(
    src: &Repository,
    dst: &Repository,
    snapshots: &[Snapshot],
    progress: &dyn Progress,
) -> Result<CopyReport> {
    refuse_same_repository(src, dst)?;
    let start = Instant::now();
    let mut order: Vec<&Snapshot> = snapshots.iter().collect();
    order.sort_by_key(|s| (s.time_ns, s.id));
    order.dedup_by_key(|s| s.id);
    let mut copier = Copier {
        src,
        dst,
        same_ids: src.ids() == dst.ids(),
        dst_ids: dst.ids(),
        reader: ChunkReader::of_repository(src)?,
        chunks: HashMap::new(),
        trees: HashMap::new(),
        stats: CopyStats::default(),
        progress,
    };
    copier.stats.ids_kept = copier.same_ids;
    copier.stats.packs_adopted = adopt_orphan_packs(dst)?;
    progress.phase("copy", None);
    let mut copied = Vec::with_capacity(order.len());
    for s in order {
        if progress.cancelled() {
            return Err(Error::Interrupted);
        }
        copied.push(copier.copy_snapshot(s)?);
    }
    progress.finish();
    let mut stats = copier.stats;
    stats.duration_ms = start.elapsed().as_millis() as u64;
    Ok(CopyReport {
        snapshots: copied,
        stats,
    })
}

/// Index the data packs of a local destination that its index lacks: what
/// a copy killed between a pack's rename and its commit left (a bucket's
/// are indexed by the sync that opened it). A pack file is complete once
/// it has its name (written aside, then renamed), and every chunk read
/// from it is verified, so its footer is trusted as a sync trusts it.
fn adopt_orphan_packs(dst: &Repository) -> Result<u64> {
    if dst.is_remote() {
        return Ok(0);
    }
    let indexed: HashSet<crate::id::PackId> =
        dst.index().packs()?.into_iter().map(|p| p.id).collect();
    let orphans: Vec<_> = crate::repo::list_packs(&**dst.storage())?
        .into_iter()
        .filter(|(id, _)| !indexed.contains(id))
        .collect();
    if orphans.is_empty() {
        return Ok(0);
    }
    let write = dst.write()?;
    let mut adopted = 0;
    crate::pack::for_each_footer(&**dst.storage(), &orphans, |id, footer| {
        if let Ok(f) = footer
            && f.id == *id
            && f.kind == PackKind::Data
        {
            write.add_pack(&FinishedPack {
                id: *id,
                kind: f.kind,
                size: f.size,
                entries: f.entries,
            })?;
            adopted += 1;
        }
        Ok(())
    })?;
    write.commit()?;
    Ok(adopted)
}

/// A copy into the repository copied from would only add duplicates.
fn refuse_same_repository(src: &Repository, dst: &Repository) -> Result<()> {
    let (a, b) = (&src.config().id, &dst.config().id);
    let same_place = src.storage().describe("") == dst.storage().describe("");
    if same_place || (!a.is_empty() && a == b) {
        return Err(Error::usage(format!(
            "{}: the destination is the repository copied from",
            dst.storage().describe("").trim_end_matches('/')
        )));
    }
    Ok(())
}

struct Copier<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    same_ids: bool,
    dst_ids: Ids,
    reader: ChunkReader,
    /// Source chunk id → destination chunk id, for chunks the destination
    /// holds (or that a pack of the snapshot being copied will hold).
    chunks: HashMap<ChunkId, ChunkId>,
    /// Source tree id → destination tree id, for trees committed there.
    trees: HashMap<TreeId, TreeId>,
    stats: CopyStats,
    progress: &'a dyn Progress,
}

impl Copier<'_> {
    fn copy_snapshot(&mut self, s: &Snapshot) -> Result<CopiedSnapshot> {
        let nonce = crate::objects::read_snapshot_nonce(&**self.src.storage(), &s.id)?;
        if self.same_ids
            && let Some(there) = self.dst.snapshot_by_id(&s.id)?
        {
            return self.already_there(s, &there);
        }
        let trees = self.load_new_trees(&s.root)?;
        let wanted: Vec<ChunkId> = {
            let mut seen = HashSet::new();
            trees
                .iter()
                .flat_map(|(_, t)| t.entries.iter().flat_map(|e| e.chunks()))
                .filter(|c| !self.chunks.contains_key(c) && seen.insert(**c))
                .copied()
                .collect()
        };
        self.send_chunks(&wanted, s)?;
        self.commit_snapshot(s, nonce, trees)
    }

    /// The destination holds the snapshot: bring its tags and pin up to
    /// date with the source's (the only fields that change after a create).
    fn already_there(&mut self, s: &Snapshot, there: &Snapshot) -> Result<CopiedSnapshot> {
        let mut want_tags = s.tags.clone();
        let mut have_tags = there.tags.clone();
        want_tags.sort();
        have_tags.sort();
        if want_tags != have_tags {
            self.dst.set_tags(&there.id, &s.tags)?;
        }
        if s.pinned != there.pinned {
            self.dst.set_pinned(&there.id, s.pinned)?;
        }
        self.stats.snapshots_already_there += 1;
        Ok(CopiedSnapshot {
            source: s.id,
            copy: there.id,
            already_there: true,
        })
    }

    /// The trees under `root` not copied yet in this run, each after its
    /// subtrees (the order they are stored in).
    fn load_new_trees(&self, root: &TreeId) -> Result<Vec<(TreeId, Tree)>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        // (tree, its subtrees already pushed): a tree is emitted on its second visit.
        let mut stack = vec![(*root, None::<Tree>)];
        while let Some((id, loaded)) = stack.pop() {
            match loaded {
                Some(tree) => out.push((id, tree)),
                None => {
                    if self.trees.contains_key(&id) || !seen.insert(id) {
                        continue;
                    }
                    let tree = self.src.load_tree(&id)?;
                    let subtrees: Vec<TreeId> =
                        tree.entries.iter().filter_map(|e| e.subtree()).collect();
                    stack.push((id, Some(tree)));
                    stack.extend(subtrees.into_iter().map(|t| (t, None)));
                }
            }
        }
        Ok(out)
    }

    /// Make every chunk of `wanted` present in the destination: the ones
    /// it lacks are read (verified) and packed, each pack indexed there in
    /// its own commit once durable.
    fn send_chunks(&mut self, wanted: &[ChunkId], s: &Snapshot) -> Result<()> {
        let mut located = Vec::with_capacity(wanted.len());
        for id in wanted {
            if self.same_ids && self.dst.chunk_location(id)?.is_some() {
                self.chunks.insert(*id, *id);
                self.stats.chunks_already_there += 1;
                continue;
            }
            let loc = self
                .src
                .chunk_location(id)?
                .ok_or_else(|| Error::MissingChunk {
                    id: id.to_hex(),
                    context: format!(
                        "snapshot {} of the repository copied from (run `snap check` there)",
                        s.id.short()
                    ),
                })?;
            located.push((*id, loc));
        }
        if located.is_empty() {
            return Ok(());
        }
        located.sort_unstable_by_key(|(_, l)| (l.pack, l.offset));
        let (done_tx, done_rx) = unbounded();
        let mut out = Outgoing {
            packer: Some(Packer::new(
                self.dst.storage().clone(),
                PackKind::Data,
                self.dst.config().pack_target_bytes,
                done_tx,
            )),
            group: Group::default(),
            level: self.dst.config().zstd_level,
            done: done_rx,
        };
        // Runs are read and verified in parallel, a batch at a time, and
        // sent in order (the packer writes on its own threads).
        let all = runs(&located);
        let mut at = 0;
        while at < all.len() {
            if self.progress.cancelled() {
                return Err(Error::Interrupted);
            }
            let mut end = at;
            let mut bytes = 0u64;
            while end < all.len() && (end == at || bytes < BATCH_BYTES) {
                bytes += run_bytes(all[end]);
                end += 1;
            }
            let (src_ids, dst_ids) = (self.src.ids(), self.dst_ids);
            let decoded: Vec<Vec<Piece>> = all[at..end]
                .par_iter()
                .map_init(
                    || self.reader.clone(),
                    |reader, run| decode_run(reader, src_ids, dst_ids, run),
                )
                .collect::<Result<_>>()?;
            for piece in decoded.into_iter().flatten() {
                self.send(piece, &mut out)?;
            }
            at = end;
        }
        out.flush_group(&mut self.stats)?;
        out.packer.take().expect("open").finish()?;
        // Every pack is reported once finish returns; the channel is closed.
        for pack in out.done.iter() {
            self.commit_pack(pack?)?;
        }
        Ok(())
    }

    /// Send what the destination lacks of one verified piece.
    fn send(&mut self, piece: Piece, out: &mut Outgoing) -> Result<()> {
        match piece {
            Piece::Whole {
                src,
                dst,
                codec,
                raw_len,
                stored,
            } => {
                self.note_read(raw_len);
                if self.is_there(&src, &dst)? {
                    return Ok(());
                }
                self.note_sent(raw_len, stored.len());
                out.add(Frame::single(Blob::whole(dst, codec, raw_len), stored))?;
            }
            Piece::Group {
                stored,
                content,
                members,
            } => {
                let mut needed = Vec::with_capacity(members.len());
                for m in &members {
                    self.note_read(m.raw_len);
                    if !self.is_there(&m.src, &m.dst)? {
                        needed.push(m);
                    }
                }
                let needed_bytes: usize = needed.iter().map(|m| m.raw_len as usize).sum();
                if needed.len() == members.len() && needed_bytes == content.len() {
                    // The whole frame is wanted: sent as it is stored.
                    let blobs: Vec<Blob> = needed
                        .iter()
                        .map(|m| Blob::grouped(m.dst, m.raw_len, m.inner))
                        .collect();
                    needed.iter().for_each(|m| self.note_sent(m.raw_len, 0));
                    self.stats.stored_bytes_sent += stored.len() as u64;
                    out.add(Frame {
                        blobs,
                        data: stored,
                    })?;
                } else {
                    for m in needed {
                        let raw = &content[m.inner as usize..(m.inner + m.raw_len) as usize];
                        self.note_sent(m.raw_len, 0);
                        out.push_raw(m.dst, raw, &mut self.stats)?;
                    }
                }
            }
            Piece::Delta(id, loc) => {
                let raw = self.reader.read(&id, &loc, self.src)?;
                self.note_read(loc.raw_len);
                let dst = if self.same_ids {
                    id
                } else {
                    self.dst_ids.chunk(&raw)
                };
                if !self.is_there(&id, &dst)? {
                    self.note_sent(loc.raw_len, 0);
                    out.push_raw(dst, &raw, &mut self.stats)?;
                }
            }
        }
        while let Ok(pack) = out.done.try_recv() {
            self.commit_pack(pack?)?;
        }
        Ok(())
    }

    /// Whether the destination holds chunk `dst` (the copy of `src`);
    /// either way `src` is mapped to it. Named alike, presence was asked
    /// before reading.
    fn is_there(&mut self, src: &ChunkId, dst: &ChunkId) -> Result<bool> {
        self.chunks.insert(*src, *dst);
        if !self.same_ids && self.dst.chunk_location(dst)?.is_some() {
            self.stats.chunks_already_there += 1;
            return Ok(true);
        }
        Ok(false)
    }

    fn note_read(&mut self, raw_len: u32) {
        self.stats.chunks_read += 1;
        self.progress.bytes(raw_len as u64);
    }

    fn note_sent(&mut self, raw_len: u32, stored_len: usize) {
        self.stats.chunks_sent += 1;
        self.stats.raw_bytes_sent += raw_len as u64;
        self.stats.stored_bytes_sent += stored_len as u64;
    }

    /// Index one durable pack in the destination, in a commit of its own:
    /// what a rerun after a kill finds there and does not send again.
    fn commit_pack(&mut self, pack: FinishedPack) -> Result<()> {
        let write = self.dst.write()?;
        write.add_pack(&pack)?;
        write.commit()?;
        self.stats.packs_sent += 1;
        Ok(())
    }

    /// Store the snapshot's new trees, renamed where the ids differ, then
    /// its object and row, in one commit.
    fn commit_snapshot(
        &mut self,
        s: &Snapshot,
        nonce: u64,
        trees: Vec<(TreeId, Tree)>,
    ) -> Result<CopiedSnapshot> {
        let write = self.dst.write()?;
        let mut stored: HashMap<TreeId, TreeId> = HashMap::with_capacity(trees.len());
        for (id, mut tree) in trees {
            for e in &mut tree.entries {
                match &mut e.payload {
                    Payload::Chunks(list) => {
                        for c in list.iter_mut() {
                            *c = *self.chunks.get(c).ok_or_else(|| {
                                Error::internal(
                                    "copy",
                                    format!("chunk {} was not copied", c.short()),
                                )
                            })?;
                        }
                    }
                    Payload::Subtree(t) => {
                        *t = *stored.get(t).or_else(|| self.trees.get(t)).ok_or_else(|| {
                            Error::internal("copy", format!("tree {} was not copied", t.short()))
                        })?;
                    }
                    _ => {}
                }
            }
            stored.insert(id, write.store_tree(&tree)?);
        }
        let root = *stored
            .get(&s.root)
            .or_else(|| self.trees.get(&s.root))
            .expect("the root was stored or copied before");
        let mut copy = s.clone();
        copy.root = root;
        copy.id = Snapshot::compute_id(
            s.time_ns,
            &s.host,
            s.source.as_os_str().as_bytes(),
            &root,
            s.parent.as_ref(),
            nonce,
        );
        if !self.same_ids
            && let Some(there) = self.dst.snapshot_by_id(&copy.id)?
        {
            drop(write);
            self.trees.extend(stored);
            return self.already_there(s, &there);
        }
        write.commit_snapshots(&[(&copy, nonce)])?;
        self.trees.extend(stored);
        self.stats.snapshots_copied += 1;
        Ok(CopiedSnapshot {
            source: s.id,
            copy: copy.id,
            already_there: false,
        })
    }
}

/// Where new chunks go: packs of the destination, small ones grouped.
struct Outgoing {
    packer: Option<Packer>,
    group: Group,
    level: i32,
    done: Receiver<Result<FinishedPack>>,
}

impl Outgoing {
    fn add(&mut self, frame: Frame) -> Result<()> {
        let packer = self.packer.as_mut().expect("open until the end");
        frame
            .parts()
            .into_iter()
            .try_for_each(|(blobs, data)| packer.add_frame(blobs, data))
    }

    /// A chunk that is not sent as stored: grouped when small, else
    /// compressed alone.
    fn push_raw(&mut self, id: ChunkId, raw: &[u8], stats: &mut CopyStats) -> Result<()> {
        if groupable(raw) {
            self.group.push(id, raw);
            if self.group.is_full() {
                self.flush_group(stats)?;
            }
            return Ok(());
        }
        let (codec, stored) = compress_with(self.level, raw).map_err(|e| {
            Error::internal("copy", format!("compressing chunk {}: {e}", id.short()))
        })?;
        stats.stored_bytes_sent += stored.len() as u64;
        self.add(Frame::single(
            Blob::whole(id, codec, raw.len() as u32),
            stored,
        ))
    }

    fn flush_group(&mut self, stats: &mut CopyStats) -> Result<()> {
        if self.group.is_empty() {
            return Ok(());
        }
        let group = std::mem::take(&mut self.group);
        let frame = group
            .into_frame(self.level)
            .map_err(|e| Error::internal("copy", format!("compressing a group: {e}")))?;
        stats.stored_bytes_sent += frame.data.len() as u64;
        self.add(frame)
    }
}

/// Stored bytes read and verified per batch of runs (each thread reads its own).
const BATCH_BYTES: u64 = 8 << 20;

/// A source frame, read and verified.
enum Piece {
    /// A chunk stored alone (raw or zstd): its stored bytes, sent as they are.
    Whole {
        src: ChunkId,
        dst: ChunkId,
        codec: Codec,
        raw_len: u32,
        stored: Vec<u8>,
    },
    /// A group frame: as stored, decoded, and the wanted members in it.
    Group {
        stored: Vec<u8>,
        content: Vec<u8>,
        members: Vec<Member>,
    },
    /// A page delta, read in order (its base is found through the index).
    Delta(ChunkId, ChunkLocation),
}

struct Member {
    src: ChunkId,
    dst: ChunkId,
    raw_len: u32,
    inner: u32,
}

/// Read one run of chunks close together in a source pack (one read) and
/// verify each against its id; name each for the destination.
fn decode_run(
    reader: &mut ChunkReader,
    src_ids: Ids,
    dst_ids: Ids,
    run: &[(ChunkId, ChunkLocation)],
) -> Result<Vec<Piece>> {
    let first = run[0].1;
    let start = first.offset as u64;
    let pack = reader.pack(&first.pack)?;
    let bytes = pack.read_run(start, run_bytes(run) as u32)?;
    let name = |raw: &[u8], id: &ChunkId| {
        if src_ids == dst_ids {
            *id
        } else {
            dst_ids.chunk(raw)
        }
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < run.len() {
        let (id, loc) = &run[i];
        let at = (loc.offset as u64 - start) as usize;
        let stored = &bytes[at..at + loc.stored_len as usize];
        match loc.codec {
            Codec::Delta => out.push(Piece::Delta(*id, *loc)),
            Codec::Grouped => {
                // Members of one frame share its offset, so they are adjacent.
                let same_frame = run[i..]
                    .iter()
                    .take_while(|(_, l)| l.codec == Codec::Grouped && l.offset == loc.offset);
                let members: Vec<&(ChunkId, ChunkLocation)> = same_frame.collect();
                i += members.len() - 1;
                out.push(decode_group(src_ids, pack.id(), stored, &members, &name)?);
            }
            _ => {
                let raw = decode_chunk(src_ids, pack.id(), &loc.entry(id), stored, None)?;
                out.push(Piece::Whole {
                    src: *id,
                    dst: name(&raw, id),
                    codec: loc.codec,
                    raw_len: loc.raw_len,
                    stored: stored.to_vec(),
                });
            }
        }
        i += 1;
    }
    Ok(out)
}

/// A group frame decoded once, each wanted member verified in it.
fn decode_group(
    ids: Ids,
    pack: &crate::id::PackId,
    stored: &[u8],
    members: &[&(ChunkId, ChunkLocation)],
    name: &dyn Fn(&[u8], &ChunkId) -> ChunkId,
) -> Result<Piece> {
    let content = decompress_group(stored).map_err(|e| {
        crate::pack::damaged(
            pack,
            format!(
                "group of chunk {} does not decompress: {e}",
                members[0].0.short()
            ),
        )
    })?;
    let mut out = Vec::with_capacity(members.len());
    for (id, loc) in members {
        let (at, len) = (loc.inner as usize, loc.raw_len as usize);
        let data = content.get(at..at + len).ok_or_else(|| {
            crate::pack::damaged(pack, format!("chunk {} lies outside its group", id.short()))
        })?;
        if ids.chunk(data) != *id {
            return Err(crate::pack::damaged(
                pack,
                format!("chunk {} does not match its id", id.short()),
            ));
        }
        out.push(Member {
            src: *id,
            dst: name(data, id),
            raw_len: loc.raw_len,
            inner: loc.inner,
        });
    }
    Ok(Piece::Group {
        stored: stored.to_vec(),
        content,
        members: out,
    })
}

/// The stored bytes from a run's first chunk to the end of its last.
fn run_bytes(run: &[(ChunkId, ChunkLocation)]) -> u64 {
    let start = run[0].1.offset as u64;
    run.iter()
        .map(|(_, l)| l.offset as u64 + l.stored_len as u64)
        .max()
        .expect("a run is not empty")
        - start
}

/// Chunks sorted by location, cut into runs that one read fetches: in one
/// pack, with gaps under 64 KiB, at most 8 MiB.
fn runs(sorted: &[(ChunkId, ChunkLocation)]) -> Vec<&[(ChunkId, ChunkLocation)]> {
    const GAP: u64 = 64 << 10;
    const RUN_MAX: u64 = 8 << 20;
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let first = sorted[i].1;
        let start = first.offset as u64;
        let mut end = start;
        let mut j = i;
        while let Some((_, l)) = sorted.get(j) {
            let (s, e) = (l.offset as u64, l.offset as u64 + l.stored_len as u64);
            if l.pack != first.pack || s > end + GAP || (e.max(end) - start > RUN_MAX && j > i) {
                break;
            }
            end = end.max(e);
            j += 1;
        }
        out.push(&sorted[i..j]);
        i = j;
    }
    out
}
