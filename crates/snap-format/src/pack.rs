//! Pack files: immutable containers of compressed chunks (the layout;
//! reading and writing them through a storage is the library's `pack`).
//!
//! Layout (all integers little-endian; docs/format.md is the reference):
//!
//! ```text
//! header   16 bytes   "SNAPPACK" | version u32 (5) | kind u32 (0 data, 1 trees)
//! frames   ...        each chunk's stored bytes, or a group's frame, back to back
//! footer   48 * N     per chunk: id [32] | offset u32 | stored_len u32 | raw_len u32 | codec u8 | inner u24
//!                     (a grouped chunk: where it starts in its frame's content; else 0)
//! bases    32 * D     the base id of each delta entry (codec 2), in entry order
//! trailer  48 bytes   N u32 | D u32 | BLAKE3(footer and bases) [32] | "SNAPEND1"
//! ```
//!
//! A pack's id is the BLAKE3 of its footer entries and bases (the hash the
//! trailer holds): the entries name every chunk by its BLAKE3, offset and
//! lengths, and every delta by its base.
//! The footer alone lists every chunk, so the index can be rebuilt from the
//! packs, and a damaged footer is detected by its hash.

use crate::compress::Codec;
use crate::id::{ChunkId, PackId};

pub const HEADER_MAGIC: &[u8; 8] = b"SNAPPACK";
pub const TRAILER_MAGIC: &[u8; 8] = b"SNAPEND1";
/// The one pack version (format 5): a table of delta bases after the
/// entries, and groups of small chunks or of trees compressed as one frame
/// ([`Codec::Grouped`]) in data and tree packs.
pub const PACK_VERSION: u32 = 5;
/// Length of one base record in a footer.
pub const BASE_LEN: u64 = 32;

/// Where a chunk lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    pub pack: PackId,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: Codec,
    /// A delta's base chunk.
    pub base: Option<ChunkId>,
    /// A grouped chunk's start in its frame's content.
    pub inner: u32,
}

impl ChunkLocation {
    /// The footer entry this location stands for.
    pub fn entry(&self, id: &ChunkId) -> PackEntry {
        PackEntry {
            id: *id,
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
            codec: self.codec,
            base: self.base,
            inner: self.inner,
        }
    }

    /// Where a footer entry of `pack` says its chunk is.
    pub fn of(pack: PackId, e: &PackEntry) -> ChunkLocation {
        ChunkLocation {
            pack,
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
            codec: e.codec,
            base: e.base,
            inner: e.inner,
        }
    }
}

/// What a pack holds. Trees live in packs of their own, so that metadata is
/// read without reading data (repair, check, a future remote cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum PackKind {
    #[default]
    Data = 0,
    Tree = 1,
}

impl PackKind {
    pub fn from_u32(v: u32) -> Option<PackKind> {
        match v {
            0 => Some(PackKind::Data),
            1 => Some(PackKind::Tree),
            _ => None,
        }
    }

    /// Largest blob a pack of this kind holds: a chunk, or a tree (a
    /// directory of a million entries encodes to about 100 MB).
    pub fn blob_max(self) -> u32 {
        match self {
            PackKind::Data => crate::config::CHUNK_MAX_LIMIT,
            PackKind::Tree => 1 << 30,
        }
    }
}
/// Blobs a writer puts in one pack at most, whatever their size: a pack
/// of tiny files' chunks would otherwise hold hundreds of thousands, and
/// their entries are held in memory until it is sealed (a million files
/// of a few bytes made one pack of 700,000 entries: 84 MB of entries and
/// a 35 MB footer). At this bound a footer is at most 1.5 MiB.
pub const MAX_PACK_BLOBS: usize = 32_768;

pub const HEADER_LEN: u64 = 16;
pub const ENTRY_LEN: u64 = 48;
pub const TRAILER_LEN: u64 = 48;

/// Where one chunk sits inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: Codec,
    /// The chunk a [`Codec::Delta`] entry is a difference from; `None`
    /// for every other codec.
    pub base: Option<ChunkId>,
    /// Where a [`Codec::Grouped`] chunk starts in what its frame decodes
    /// to (the frame is `offset`, `stored_len`, shared with the rest of
    /// its group); 0 for every other codec.
    pub inner: u32,
}

impl PackEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.push(self.codec as u8);
        out.extend_from_slice(&self.inner.to_le_bytes()[..3]);
    }

    /// Decode one 48-byte entry (a delta's base comes from the base table);
    /// `None` when a field is impossible. Only a grouped chunk has an
    /// inner offset.
    pub fn decode(b: &[u8]) -> Option<PackEntry> {
        if b.len() != ENTRY_LEN as usize {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let codec = Codec::from_u8(b[44])?;
        let inner = u32::from_le_bytes([b[45], b[46], b[47], 0]);
        if codec != Codec::Grouped && inner != 0 {
            return None;
        }
        Some(PackEntry {
            id: ChunkId::from_slice(&b[..32])?,
            offset: u32_at(32),
            stored_len: u32_at(36),
            raw_len: u32_at(40),
            codec,
            base: None,
            inner,
        })
    }
}

pub fn encode_header(kind: PackKind) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(HEADER_MAGIC);
    h[8..12].copy_from_slice(&PACK_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(kind as u32).to_le_bytes());
    h
}

/// A pack's id, from its encoded footer (entries and trailer).
pub fn footer_id(footer: &[u8]) -> PackId {
    let entries = &footer[..footer.len() - TRAILER_LEN as usize];
    PackId(*blake3::hash(entries).as_bytes())
}

/// Footer entries, the base table and the trailer, as written at the end
/// of a pack. A delta entry always has a base (the writer checks).
pub fn encode_footer(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN as usize + TRAILER_LEN as usize);
    for e in entries {
        e.encode(&mut out);
    }
    let mut bases = 0u32;
    for base in entries.iter().filter_map(|e| e.base.as_ref()) {
        out.extend_from_slice(base.as_bytes());
        bases += 1;
    }
    let hash = blake3::hash(&out);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&bases.to_le_bytes());
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(TRAILER_MAGIC);
    out
}

/// What a pack records of a blob besides its stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    pub id: ChunkId,
    pub codec: Codec,
    pub raw_len: u32,
    pub base: Option<ChunkId>,
    /// A grouped chunk's start in its frame's content (0 otherwise).
    pub inner: u32,
}

impl Blob {
    /// A blob that is not a delta.
    pub fn whole(id: ChunkId, codec: Codec, raw_len: u32) -> Blob {
        Blob {
            id,
            codec,
            raw_len,
            base: None,
            inner: 0,
        }
    }

    /// A chunk of a group frame, starting at `inner` in its content.
    pub fn grouped(id: ChunkId, raw_len: u32, inner: u32) -> Blob {
        Blob {
            id,
            codec: Codec::Grouped,
            raw_len,
            base: None,
            inner,
        }
    }
}

impl From<&PackEntry> for Blob {
    fn from(e: &PackEntry) -> Blob {
        Blob {
            id: e.id,
            codec: e.codec,
            raw_len: e.raw_len,
            base: e.base,
            inner: e.inner,
        }
    }
}
