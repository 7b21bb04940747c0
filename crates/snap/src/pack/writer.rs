//! Writes packs through the storage layer. [`Packer`] is the one place the
//! write order of packs lives: blobs appended, a full pack sealed (footer
//! written) on the caller's thread, then committed (durable under its
//! name) on a finisher thread, and reported in order.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded};

use super::{
    Blob, HEADER_LEN, MAX_PACK_BLOBS, PackEntry, PackKind, encode_footer, encode_header, footer_id,
};
use crate::compress::Codec;
use crate::error::{Error, Result};
use crate::id::PackId;
use crate::storage::{ObjectWriter, Storage, pack_key};

/// A pack being written. Dropping it without `seal` discards it.
pub struct PackWriter {
    out: Box<dyn ObjectWriter>,
    entries: Vec<PackEntry>,
    len: u64,
    kind: PackKind,
}

/// A pack that is durable under its key.
#[derive(Debug, Clone)]
pub struct FinishedPack {
    pub id: PackId,
    pub kind: PackKind,
    pub size: u64,
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    /// A new pack of `kind` in `storage`'s packs/.
    pub fn create(storage: &dyn Storage, kind: PackKind) -> Result<Self> {
        let mut w = PackWriter {
            out: storage.create("packs")?,
            entries: Vec::new(),
            len: 0,
            kind,
        };
        w.write(&encode_header(kind))?;
        debug_assert_eq!(w.len, HEADER_LEN);
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Append one blob; a [`Codec::Delta`] one names its base, which only
    /// only a data pack can record.
    pub fn add(&mut self, blob: Blob, stored: &[u8]) -> Result<()> {
        self.add_frame(std::slice::from_ref(&blob), stored)
    }

    /// Append stored bytes once with the blobs they hold: one blob, or
    /// the members of a group frame.
    pub fn add_frame(&mut self, blobs: &[Blob], stored: &[u8]) -> Result<()> {
        for blob in blobs {
            self.check(blob, blobs.len())?;
        }
        let offset = u32::try_from(self.len)
            .map_err(|_| Error::internal("pack writing", "pack larger than 4 GiB"))?;
        self.write(stored)?;
        self.entries.extend(blobs.iter().map(|blob| PackEntry {
            id: blob.id,
            offset,
            stored_len: stored.len() as u32,
            raw_len: blob.raw_len,
            codec: blob.codec,
            base: blob.base,
            inner: blob.inner,
        }));
        Ok(())
    }

    /// A blob this pack can record, in a frame of `members` blobs.
    fn check(&self, blob: &Blob, members: usize) -> Result<()> {
        let delta_ok = self.kind == PackKind::Data;
        let bad = |why: &str| {
            Err(Error::internal(
                "pack writing",
                format!("chunk {}: {why}", blob.id.short()),
            ))
        };
        if (blob.codec == Codec::Delta) != blob.base.is_some()
            || (blob.base.is_some() && (!delta_ok || blob.base == Some(blob.id)))
        {
            return bad("a delta needs a base, and a pack holding data");
        }
        let grouped = blob.codec == Codec::Grouped;
        if grouped && blob.inner as usize + blob.raw_len as usize > crate::compress::GROUP_RAW_MAX {
            return bad("a grouped blob must lie within a bounded group");
        }
        if !grouped && (members > 1 || blob.inner != 0) {
            return bad("only grouped chunks share a frame or start inside one");
        }
        Ok(())
    }

    /// Bytes written so far (header and frames).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Write the footer: the pack is complete but not yet durable nor
    /// visible under its name.
    pub fn seal(mut self) -> Result<SealedPack> {
        let footer = encode_footer(&self.entries);
        self.write(&footer)?;
        // The id is the footer's hash (stored in the trailer): the footer
        // names every chunk by its BLAKE3 with its offset and lengths, so it
        // identifies the content without hashing the data a second time.
        let id = footer_id(&footer);
        crate::fault::point("pack written");
        Ok(SealedPack {
            out: self.out,
            pack: FinishedPack {
                id,
                kind: self.kind,
                size: self.len,
                entries: self.entries,
            },
        })
    }

    /// Seal and commit on this thread.
    pub fn finish(self) -> Result<FinishedPack> {
        self.seal()?.publish()
    }
}

impl FinishedPack {
    /// Delta base records in its footer.
    pub fn bases(&self) -> usize {
        self.entries.iter().filter(|e| e.base.is_some()).count()
    }
}

/// A complete pack not yet committed.
pub struct SealedPack {
    out: Box<dyn ObjectWriter>,
    pack: FinishedPack,
}

impl SealedPack {
    /// Make it durable under `packs/<2 hex>/<id>.pack`.
    pub fn publish(self) -> Result<FinishedPack> {
        self.out.commit(&pack_key(&self.pack.id))?;
        Ok(self.pack)
    }
}

/// Packs of one kind: appends blobs, seals a pack when it reaches the
/// target size, and commits it on a finisher thread so the caller never
/// waits for the disk. Every committed pack (or the first error) is sent
/// on `done`, in order; after an error nothing more is committed.
pub struct Packer {
    storage: Arc<dyn Storage>,
    kind: PackKind,
    target: u64,
    current: Option<PackWriter>,
    sealed: Option<Sender<SealedPack>>,
    finisher: Option<JoinHandle<()>>,
}

impl Packer {
    pub fn new(
        storage: Arc<dyn Storage>,
        kind: PackKind,
        target: u64,
        done: Sender<Result<FinishedPack>>,
    ) -> Packer {
        // PUBLISHING packs are committed at once (an upload to object
        // storage is mostly waiting). On local storage a sealed pack is a
        // file, and two more may wait; on remote storage it is the whole
        // pack in memory until its PUT ends, so none waits in the channel:
        // at most PUBLISHING + 2 packs (one being handed over, one being
        // filled) are held.
        let queue = if storage.is_remote() { 0 } else { 2 };
        let (tx, rx) = bounded::<SealedPack>(queue);
        let finisher = std::thread::Builder::new()
            .name("snap-pack-finisher".into())
            .spawn(move || finish_in_order(rx, done))
            .expect("spawn the pack finisher");
        Packer {
            storage,
            kind,
            target,
            current: None,
            sealed: Some(tx),
            finisher: Some(finisher),
        }
    }

    /// Append one blob's stored bytes.
    pub fn add(&mut self, blob: Blob, stored: &[u8]) -> Result<()> {
        self.add_frame(std::slice::from_ref(&blob), stored)
    }

    /// Append a frame and the blobs it holds (see [`PackWriter::add_frame`]).
    pub fn add_frame(&mut self, blobs: &[Blob], stored: &[u8]) -> Result<()> {
        // A group that would take the pack past its blob bound starts the next one.
        if let Some(w) = &self.current
            && w.entries.len() + blobs.len() > MAX_PACK_BLOBS
            && !w.is_empty()
        {
            let w = self.current.take().expect("present");
            self.send(w)?;
        }
        if self.current.is_none() {
            self.current = Some(PackWriter::create(&*self.storage, self.kind)?);
        }
        let w = self.current.as_mut().expect("just created");
        w.add_frame(blobs, stored)?;
        if w.len() >= self.target || w.entries.len() >= MAX_PACK_BLOBS {
            let w = self.current.take().expect("present");
            self.send(w)?;
        }
        Ok(())
    }

    fn send(&mut self, w: PackWriter) -> Result<()> {
        let sealed = w.seal()?;
        self.sealed
            .as_ref()
            .expect("open until finish")
            .send(sealed)
            .map_err(|_| {
                Error::internal("pack writing", "the pack finisher stopped after an error")
            })
    }

    /// Seal the last pack and wait until every pack is committed (their
    /// results are on `done`).
    pub fn finish(mut self) -> Result<()> {
        let r = match self.current.take() {
            Some(w) if !w.is_empty() => self.send(w),
            _ => Ok(()),
        };
        self.stop();
        r
    }

    fn stop(&mut self) {
        self.sealed = None;
        if let Some(f) = self.finisher.take() {
            let _ = f.join();
        }
    }
}

/// Packs committed at once by the finisher.
const PUBLISHING: usize = 3;

/// Commit sealed packs, up to PUBLISHING at a time, and report each (or
/// the first error) on `done` in the order they were sealed. After an
/// error no new commit starts; the ones under way finish (a committed
/// pack nothing refers to is an orphan gc removes).
fn finish_in_order(
    rx: crossbeam_channel::Receiver<SealedPack>,
    done: Sender<Result<FinishedPack>>,
) {
    let mut under_way = std::collections::VecDeque::new();
    let mut failed = false;
    let report = |h: JoinHandle<Result<FinishedPack>>, failed: &mut bool| {
        let r = h
            .join()
            .unwrap_or_else(|_| Err(Error::internal("pack writing", "a pack commit panicked")));
        if !*failed {
            *failed = r.is_err();
            let _ = done.send(r);
        }
    };
    loop {
        // Wait for a commit slot before taking the next pack, so that a
        // pack is never held here while every slot is busy.
        if under_way.len() == PUBLISHING {
            report(under_way.pop_front().expect("full"), &mut failed);
        }
        if failed {
            break;
        }
        let Ok(sealed) = rx.recv() else { break };
        let h = std::thread::Builder::new()
            .name("snap-pack-commit".into())
            .spawn(move || sealed.publish())
            .expect("spawn a pack commit");
        under_way.push_back(h);
    }
    while let Some(h) = under_way.pop_front() {
        report(h, &mut failed);
    }
}

impl Drop for Packer {
    /// Dropped without `finish` (an error): sealed packs still commit (an
    /// unreferenced pack is an orphan gc removes), the open one is discarded.
    fn drop(&mut self) {
        self.current = None;
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::PackReader;
    use crate::storage::MemoryStorage;

    #[test]
    fn a_pack_of_tiny_blobs_is_sealed_at_the_blob_bound() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let (tx, rx) = crossbeam_channel::unbounded();
        // A target no tiny blob reaches: only the count seals a pack.
        let mut packer = Packer::new(storage.clone(), PackKind::Data, 1 << 30, tx);
        let n = MAX_PACK_BLOBS + 10;
        for i in 0..n as u32 {
            let data = i.to_le_bytes();
            let blob = Blob::whole(crate::id::ChunkId::of(&data), Codec::Raw, 4);
            packer.add(blob, &data).unwrap();
        }
        packer.finish().unwrap();
        let packs: Vec<FinishedPack> = rx.iter().map(|r| r.unwrap()).collect();
        let counts: Vec<usize> = packs.iter().map(|p| p.entries.len()).collect();
        assert_eq!(counts, vec![MAX_PACK_BLOBS, 10]);
        // Each reads back with every blob in its footer.
        for p in &packs {
            let footer = PackReader::open(&*storage, &p.id)
                .unwrap()
                .footer()
                .unwrap();
            assert_eq!(footer.entries, p.entries);
        }
    }
}
