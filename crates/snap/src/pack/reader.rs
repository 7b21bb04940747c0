//! Reads pack footers and chunks through the storage layer, verifying
//! every byte it hands out. Errors name the pack by id.

use std::cell::RefCell;
use std::sync::Arc;

use super::{
    BASE_LEN, ENTRY_LEN, HEADER_LEN, HEADER_MAGIC, PACK_VERSION, PackEntry, PackKind, TRAILER_LEN,
    TRAILER_MAGIC,
};
use crate::compress::{Codec, GROUP_RAW_MAX, decompress, decompress_group, delta_decompress};
use crate::config::CHUNK_MAX_LIMIT;
use crate::error::{Error, Result};
use crate::id::{ChunkId, Ids, PackId};
use crate::storage::{ObjectReader, Storage, pack_key};

pub fn damaged(pack: &PackId, reason: impl Into<String>) -> Error {
    Error::PackDamaged {
        pack: *pack,
        reason: reason.into(),
    }
}

/// Footers read at once from remote storage, where each read waits on
/// the network; also how many a caller holds at a time.
const FOOTERS_IN_FLIGHT: usize = 16;

/// The footers of `packs` (ids with the sizes a listing gave), handed to
/// `each` in order. On remote storage several are read at once (a new
/// client rebuilding its index reads every pack's footer; one after
/// another that was a few round trips per pack); at most
/// [`FOOTERS_IN_FLIGHT`] footers are held.
pub fn for_each_footer(
    storage: &dyn Storage,
    packs: &[(PackId, u64)],
    mut each: impl FnMut(&PackId, Result<Footer>) -> Result<()>,
) -> Result<()> {
    let read = |&(id, size): &(PackId, u64)| {
        // A listing reports a size no sealed object has as 0: opening it
        // the usual way says why.
        let pack = if size == 0 {
            PackReader::open(storage, &id)
        } else {
            PackReader::open_sized(storage, &id, size)
        };
        pack.and_then(|p| p.footer())
    };
    if !storage.is_remote() {
        for p in packs {
            each(&p.0, read(p))?;
        }
        return Ok(());
    }
    for group in packs.chunks(FOOTERS_IN_FLIGHT) {
        let footers: Vec<Result<Footer>> = std::thread::scope(|s| {
            let handles: Vec<_> = group.iter().map(|p| s.spawn(move || read(p))).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("footer reader panicked"))
                .collect()
        });
        for (p, f) in group.iter().zip(footers) {
            each(&p.0, f)?;
        }
    }
    Ok(())
}

/// What a pack's header and footer say.
#[derive(Debug, Clone)]
pub struct Footer {
    pub entries: Vec<PackEntry>,
    /// The id the footer implies (BLAKE3 of its entries); a pack whose
    /// name says otherwise is damaged or misnamed.
    pub id: PackId,
    pub kind: PackKind,
    pub size: u64,
}

/// Random access to the blobs of one pack.
pub struct PackReader {
    id: PackId,
    obj: Box<dyn ObjectReader>,
    ids: Ids,
    /// Each read waits on a network: read the footer in one round trip.
    remote: bool,
}

/// The bytes a footer read takes from a remote pack's end at once: the
/// footer of a 16 MiB pack of 4 KiB pages is about 200 KiB.
const REMOTE_TAIL: u64 = 256 << 10;

impl PackReader {
    pub fn open(storage: &dyn Storage, id: &PackId) -> Result<Self> {
        Self::open_with(storage, id, None)
    }

    /// Open a pack whose size a listing gave (on a bucket: no HEAD).
    pub fn open_sized(storage: &dyn Storage, id: &PackId, size: u64) -> Result<Self> {
        Self::open_with(storage, id, Some(size))
    }

    fn open_with(storage: &dyn Storage, id: &PackId, size: Option<u64>) -> Result<Self> {
        let key = pack_key(id);
        let obj = match size {
            Some(size) => storage.open_sized(&key, size),
            None => storage.open(&key),
        };
        // A pack the index names but that is gone is damage, not a user error.
        let obj = obj.map_err(|e| {
            if e.is_not_found() {
                damaged(id, "pack is missing")
            } else {
                e
            }
        })?;
        Ok(PackReader {
            id: *id,
            obj,
            ids: Ids::with_key(storage.id_key()),
            remote: storage.is_remote(),
        })
    }

    pub fn id(&self) -> &PackId {
        &self.id
    }

    /// How the repository it belongs to names content.
    pub fn ids(&self) -> Ids {
        self.ids
    }

    pub fn size(&self) -> u64 {
        self.obj.size()
    }

    /// Exactly `len` bytes at `offset`; too few is damage, whatever the
    /// storage says.
    fn read_exact(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.read_exact_with(offset, len, false)
    }

    fn read_exact_with(&self, offset: u64, len: u64, planned: bool) -> Result<Vec<u8>> {
        let size = self.obj.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(damaged(
                &self.id,
                format!("pack is {size} bytes, too short for {len} bytes at offset {offset}"),
            ));
        }
        let bytes = if planned {
            self.obj.read_planned(offset, len)?
        } else {
            self.obj.read_at(offset, len)?
        };
        if bytes.len() as u64 != len {
            return Err(damaged(
                &self.id,
                format!(
                    "read {} bytes at offset {offset} where {len} were asked for",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    /// The whole pack, in one read.
    pub fn read_all(&self) -> Result<Vec<u8>> {
        self.read_exact(0, self.obj.size())
    }

    /// Header and footer, every field checked.
    pub fn footer(&self) -> Result<Footer> {
        let size = self.obj.size();
        let bad = |why: String| damaged(&self.id, why);
        if size < HEADER_LEN + TRAILER_LEN {
            return Err(bad(format!("pack is only {size} bytes long")));
        }
        let (header, tail, tail_start) = self.header_and_tail(size)?;
        if &header[..8] != HEADER_MAGIC {
            return Err(bad("bad pack header magic".into()));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().unwrap());
        if version != PACK_VERSION {
            return Err(bad(format!("unknown pack version {version}")));
        }
        let kind = PackKind::from_u32(u32::from_le_bytes(header[12..16].try_into().unwrap()))
            .ok_or_else(|| bad("unknown pack kind".into()))?;
        let trailer = &tail[tail.len() - TRAILER_LEN as usize..];
        if &trailer[40..48] != TRAILER_MAGIC {
            return Err(bad("bad pack trailer magic (truncated?)".into()));
        }
        let count = u32::from_le_bytes(trailer[..4].try_into().unwrap()) as u64;
        let bases = u32::from_le_bytes(trailer[4..8].try_into().unwrap()) as u64;
        let footer_len = count * ENTRY_LEN + bases * BASE_LEN;
        if HEADER_LEN + footer_len + TRAILER_LEN > size {
            return Err(bad(format!("footer claims {count} chunks, more than fit")));
        }
        let footer_start = size - TRAILER_LEN - footer_len;
        let footer = if footer_start >= tail_start {
            let from = (footer_start - tail_start) as usize;
            tail[from..from + footer_len as usize].to_vec()
        } else {
            self.read_exact(footer_start, footer_len)?
        };
        let hash = blake3::hash(&footer);
        if hash.as_bytes() != &trailer[8..40] {
            return Err(bad("footer checksum mismatch".into()));
        }
        let (entry_bytes, base_bytes) = footer.split_at((count * ENTRY_LEN) as usize);
        let mut base_ids = base_bytes.chunks_exact(BASE_LEN as usize);
        let mut entries = Vec::with_capacity(count as usize);
        for raw in entry_bytes.chunks_exact(ENTRY_LEN as usize) {
            let mut e =
                PackEntry::decode(raw).ok_or_else(|| bad("malformed footer entry".into()))?;
            let end = e.offset as u64 + e.stored_len as u64;
            if (e.offset as u64) < HEADER_LEN || end > footer_start || e.raw_len > kind.blob_max() {
                return Err(bad(format!(
                    "footer entry for chunk {} is out of bounds",
                    e.id.short()
                )));
            }
            if e.codec == Codec::Grouped && e.inner as usize + e.raw_len as usize > GROUP_RAW_MAX {
                return Err(bad(format!(
                    "grouped chunk {} out of place or out of bounds",
                    e.id.short()
                )));
            }
            if e.codec == Codec::Delta {
                let base = base_ids
                    .next()
                    .and_then(ChunkId::from_slice)
                    .ok_or_else(|| bad(format!("delta chunk {} has no base", e.id.short())))?;
                if base == e.id || kind != PackKind::Data {
                    return Err(bad(format!("delta chunk {} has a bad base", e.id.short())));
                }
                e.base = Some(base);
            }
            entries.push(e);
        }
        if base_ids.next().is_some() {
            return Err(bad("more delta bases than delta chunks".into()));
        }
        Ok(Footer {
            entries,
            id: PackId(*hash.as_bytes()),
            kind,
            size,
        })
    }

    /// What a pack whose footer fails its checks still holds that can be
    /// proven: its footer entries read without the checksum, each blob
    /// (raw, compressed, or a member of a group frame) kept only where it
    /// decodes to bytes whose hash is its id. Deltas cannot be proven
    /// without their bases and are not kept. Returns the pack's kind, the frames kept (stored bytes with the entries they
    /// hold) and how many entries could not be proven.
    pub fn salvage(&self) -> Result<Salvaged> {
        let size = self.obj.size();
        let bad = |why: String| damaged(&self.id, why);
        if size < HEADER_LEN + TRAILER_LEN {
            return Err(bad(format!("pack is only {size} bytes long")));
        }
        let all = self.read_all()?;
        if &all[..8] != HEADER_MAGIC {
            return Err(bad("bad pack header magic: nothing can be salvaged".into()));
        }
        let version = u32::from_le_bytes(all[8..12].try_into().unwrap());
        let kind = PackKind::from_u32(u32::from_le_bytes(all[12..16].try_into().unwrap()))
            .ok_or_else(|| bad("unknown pack kind".into()))?;
        if version != PACK_VERSION {
            return Err(bad(format!("unknown pack version {version}")));
        }
        let trailer = &all[all.len() - TRAILER_LEN as usize..];
        let count = u32::from_le_bytes(trailer[..4].try_into().unwrap()) as u64;
        let bases = u32::from_le_bytes(trailer[4..8].try_into().unwrap()) as u64;
        let footer_len = count
            .checked_mul(ENTRY_LEN)
            .and_then(|n| n.checked_add(bases.checked_mul(BASE_LEN)?))
            .filter(|n| HEADER_LEN + n + TRAILER_LEN <= size)
            .ok_or_else(
                || bad("its trailer's counts do not fit: nothing can be salvaged".into()),
            )?;
        let footer_start = (size - TRAILER_LEN - footer_len) as usize;
        let entry_bytes = &all[footer_start..footer_start + (count * ENTRY_LEN) as usize];
        let max = kind.blob_max();
        // Frames by offset: the entries each holds that prove themselves.
        let mut frames: std::collections::BTreeMap<(u32, u32), Vec<PackEntry>> = Default::default();
        let mut lost = 0u64;
        for raw in entry_bytes.chunks_exact(ENTRY_LEN as usize) {
            let Some(e) = PackEntry::decode(raw) else {
                lost += 1;
                continue;
            };
            let end = e.offset as u64 + e.stored_len as u64;
            let fits = e.offset as u64 >= HEADER_LEN && end <= footer_start as u64;
            let stored = &all[e.offset as usize..end.min(all.len() as u64) as usize];
            let proven = fits
                && e.codec != Codec::Delta
                && decode_blob(self.ids, &self.id, &e, stored, max, None).is_ok();
            if proven {
                frames.entry((e.offset, e.stored_len)).or_default().push(e);
            } else {
                lost += 1;
            }
        }
        let frames = frames
            .into_iter()
            .map(|((offset, len), entries)| {
                let stored = all[offset as usize..offset as usize + len as usize].to_vec();
                (stored, entries)
            })
            .collect();
        Ok(Salvaged { kind, frames, lost })
    }

    /// The header, and the pack's last bytes from the returned offset on.
    /// Locally: the trailer alone. Remotely: both read at once, the tail
    /// long enough to hold most footers, so a new client's index rebuild
    /// costs one round trip per pack instead of three.
    fn header_and_tail(&self, size: u64) -> Result<(Vec<u8>, Vec<u8>, u64)> {
        if !self.remote {
            let tail_start = size - TRAILER_LEN;
            let header = self.read_exact(0, HEADER_LEN)?;
            return Ok((
                header,
                self.read_exact(tail_start, TRAILER_LEN)?,
                tail_start,
            ));
        }
        let tail_start = size - REMOTE_TAIL.min(size - HEADER_LEN);
        std::thread::scope(|s| {
            let header = s.spawn(|| self.read_exact(0, HEADER_LEN));
            let tail = self.read_exact(tail_start, size - tail_start);
            let header = header.join().expect("pack header read panicked");
            Ok((header?, tail?, tail_start))
        })
    }

    /// Read `len` stored bytes at `offset` (at most a chunk's worth).
    pub fn read_stored(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.read_stored_max(offset, len, CHUNK_MAX_LIMIT)
    }

    /// Read `len` stored bytes at `offset`, refusing more than `max`
    /// (plus compression overhead): a damaged length never allocates more.
    pub fn read_stored_max(&self, offset: u64, len: u32, max: u32) -> Result<Vec<u8>> {
        if len as u64 > max as u64 + 1024 + max as u64 / 128 {
            return Err(damaged(&self.id, "stored chunk length out of bounds"));
        }
        self.read_exact(offset, len as u64)
    }

    /// `len` stored bytes at `offset` that the caller reads once (a
    /// restore's planned run of chunks): not kept by a remote storage.
    pub fn read_run(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.read_exact_with(offset, len as u64, true)
    }

    /// Read, decompress and verify one chunk (a delta with its base's
    /// raw bytes).
    pub fn read_chunk(&self, e: &PackEntry, base: Option<&[u8]>) -> Result<Vec<u8>> {
        let stored = self.read_stored(e.offset as u64, e.stored_len)?;
        decode_chunk(self.ids, &self.id, e, &stored, base)
    }
}

/// What [`PackReader::salvage`] proved of a damaged pack.
pub struct Salvaged {
    pub kind: PackKind,
    /// Stored bytes of a frame, with the entries it holds.
    pub frames: Vec<(Vec<u8>, Vec<PackEntry>)>,
    /// Entries that could not be proven (named lost).
    pub lost: u64,
}

/// Decompress stored bytes (`e`'s frame) and check them against the chunk
/// id. A delta needs its base's raw bytes (`base`); without them it is an
/// error.
pub fn decode_chunk(
    ids: Ids,
    pack: &PackId,
    e: &PackEntry,
    stored: &[u8],
    base: Option<&[u8]>,
) -> Result<Vec<u8>> {
    decode_blob(ids, pack, e, stored, CHUNK_MAX_LIMIT, base)
}

/// Like `decode_chunk`, for a blob of a pack kind with its own bound
/// (trees are never deltas: their `base` is `None`).
pub fn decode_blob(
    ids: Ids,
    pack: &PackId,
    e: &PackEntry,
    stored: &[u8],
    max: u32,
    base: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let (id, raw_len) = (&e.id, e.raw_len);
    if raw_len > max {
        return Err(damaged(
            pack,
            format!("chunk {} claims {raw_len} bytes", id.short()),
        ));
    }
    let data = match (e.codec, base) {
        (Codec::Delta, Some(base)) => delta_decompress(stored, base, raw_len as usize),
        (Codec::Grouped, _) => return group_member(ids, pack, e, stored),
        _ => decompress(e.codec, stored, raw_len as usize),
    }
    .map_err(|err| {
        damaged(
            pack,
            format!("chunk {} does not decompress: {err}", id.short()),
        )
    })?;
    verify(ids, pack, id, data)
}

/// A group frame's content, by pack and place.
type DecodedGroup = ((PackId, u32, u32), Arc<Vec<u8>>);

thread_local! {
    /// The last group frame this thread decoded: readers take a group's
    /// members one after another (restore, check and repack go in pack
    /// order), and each would otherwise decode the whole frame again.
    /// A stale entry cannot pass a wrong chunk: every member is checked
    /// against its id.
    static LAST_GROUP: RefCell<Option<DecodedGroup>> = const { RefCell::new(None) };
}

/// A grouped chunk: its bytes in its frame's content, verified.
fn group_member(ids: Ids, pack: &PackId, e: &PackEntry, stored: &[u8]) -> Result<Vec<u8>> {
    let key = (*pack, e.offset, e.stored_len);
    let cached = LAST_GROUP.with(|c| {
        c.borrow()
            .as_ref()
            .and_then(|(k, v)| (*k == key).then(|| v.clone()))
    });
    let content = match cached {
        Some(c) => c,
        None => {
            let c = Arc::new(decompress_group(stored).map_err(|err| {
                damaged(
                    pack,
                    format!(
                        "the group of chunk {} does not decompress: {err}",
                        e.id.short()
                    ),
                )
            })?);
            LAST_GROUP.with(|slot| *slot.borrow_mut() = Some((key, c.clone())));
            c
        }
    };
    let (start, end) = (e.inner as usize, e.inner as usize + e.raw_len as usize);
    let bytes = content.get(start..end).ok_or_else(|| {
        damaged(
            pack,
            format!("chunk {} lies outside its group", e.id.short()),
        )
    })?;
    verify(ids, pack, &e.id, bytes.to_vec())
}

fn verify(ids: Ids, pack: &PackId, id: &ChunkId, data: Vec<u8>) -> Result<Vec<u8>> {
    if ids.chunk(&data) != *id {
        return Err(damaged(
            pack,
            format!("chunk {} fails its BLAKE3 check", id.short()),
        ));
    }
    Ok(data)
}
