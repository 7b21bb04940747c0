//! Reads pack footers and chunks, verifying every byte it hands out.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{
    ENTRY_LEN, HEADER_LEN, HEADER_MAGIC, PACK_VERSION, PackEntry, PackKind, TRAILER_LEN,
    TRAILER_MAGIC,
};
use crate::compress::{Codec, decompress};
use crate::config::CHUNK_MAX_LIMIT;
use crate::error::{Error, IoContext, Result};
use crate::id::{ChunkId, PackId};

fn damaged(path: &Path, reason: impl Into<String>) -> Error {
    Error::Damaged {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Decode and check a pack's footer from the file alone.
pub fn read_footer(path: &Path) -> Result<Vec<PackEntry>> {
    Ok(read_footer_full(path)?.entries)
}

/// The footer and the pack id it implies (BLAKE3 of the footer entries).
pub fn read_footer_and_id(path: &Path) -> Result<(Vec<PackEntry>, PackId)> {
    let f = read_footer_full(path)?;
    Ok((f.entries, f.id))
}

/// What a pack's header and footer say.
#[derive(Debug, Clone)]
pub struct Footer {
    pub entries: Vec<PackEntry>,
    pub id: PackId,
    pub kind: PackKind,
    pub size: u64,
}

/// Header and footer of a pack, every field checked.
pub fn read_footer_full(path: &Path) -> Result<Footer> {
    let file = File::open(path).at(path)?;
    let size = file.metadata().at(path)?.len();
    if size < HEADER_LEN + TRAILER_LEN {
        return Err(damaged(path, format!("pack is only {size} bytes long")));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0).at(path)?;
    if &header[..8] != HEADER_MAGIC {
        return Err(damaged(path, "bad pack header magic"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap());
    if version != PACK_VERSION {
        return Err(damaged(path, format!("unknown pack version {version}")));
    }
    let kind = PackKind::from_u32(u32::from_le_bytes(header[12..16].try_into().unwrap()))
        .ok_or_else(|| damaged(path, "unknown pack kind"))?;
    let mut trailer = [0u8; TRAILER_LEN as usize];
    file.read_exact_at(&mut trailer, size - TRAILER_LEN)
        .at(path)?;
    if &trailer[40..48] != TRAILER_MAGIC {
        return Err(damaged(path, "bad pack trailer magic (truncated?)"));
    }
    let count = u32::from_le_bytes(trailer[..4].try_into().unwrap()) as u64;
    let footer_len = count * ENTRY_LEN;
    if HEADER_LEN + footer_len + TRAILER_LEN > size {
        return Err(damaged(
            path,
            format!("footer claims {count} chunks, more than fit"),
        ));
    }
    let footer_start = size - TRAILER_LEN - footer_len;
    let mut footer = vec![0u8; footer_len as usize];
    file.read_exact_at(&mut footer, footer_start).at(path)?;
    let hash = blake3::hash(&footer);
    if hash.as_bytes() != &trailer[8..40] {
        return Err(damaged(path, "footer checksum mismatch"));
    }
    let mut entries = Vec::with_capacity(count as usize);
    for raw in footer.chunks_exact(ENTRY_LEN as usize) {
        let e = PackEntry::decode(raw).ok_or_else(|| damaged(path, "malformed footer entry"))?;
        let end = e.offset as u64 + e.stored_len as u64;
        if (e.offset as u64) < HEADER_LEN || end > footer_start || e.raw_len > kind.blob_max() {
            return Err(damaged(
                path,
                format!("footer entry for chunk {} is out of bounds", e.id.short()),
            ));
        }
        entries.push(e);
    }
    Ok(Footer {
        entries,
        id: PackId(*hash.as_bytes()),
        kind,
        size,
    })
}

/// Random access to the chunks of one pack.
pub struct PackReader {
    path: PathBuf,
    file: File,
}

impl PackReader {
    pub fn open(path: &Path) -> Result<Self> {
        // A pack the index names but that is gone is damage, not a user error.
        let file = match File::open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(damaged(path, "pack file is missing"));
            }
            r => r.at(path)?,
        };
        Ok(PackReader {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read `len` stored bytes at `offset` (at most a chunk's worth).
    pub fn read_stored(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.read_stored_max(offset, len, CHUNK_MAX_LIMIT)
    }

    /// Read `len` stored bytes at `offset`, refusing more than `max`
    /// (plus compression overhead): a damaged length never allocates more.
    pub fn read_stored_max(&self, offset: u64, len: u32, max: u32) -> Result<Vec<u8>> {
        if len as u64 > max as u64 + 1024 + max as u64 / 128 {
            return Err(damaged(&self.path, "stored chunk length out of bounds"));
        }
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                damaged(
                    &self.path,
                    format!("pack too short for a chunk at offset {offset}"),
                )
            } else {
                Error::io(&self.path, e)
            }
        })?;
        Ok(buf)
    }

    /// Read, decompress and verify one chunk.
    pub fn read_chunk(
        &self,
        id: &ChunkId,
        offset: u64,
        stored_len: u32,
        raw_len: u32,
        codec: Codec,
    ) -> Result<Vec<u8>> {
        let stored = self.read_stored(offset, stored_len)?;
        decode_chunk(&self.path, id, codec, &stored, raw_len)
    }
}

/// Decompress stored bytes and check them against the chunk id.
pub fn decode_chunk(
    path: &Path,
    id: &ChunkId,
    codec: Codec,
    stored: &[u8],
    raw_len: u32,
) -> Result<Vec<u8>> {
    decode_blob(path, id, codec, stored, raw_len, CHUNK_MAX_LIMIT)
}

/// Like `decode_chunk`, for a blob of a pack kind with its own bound.
pub fn decode_blob(
    path: &Path,
    id: &ChunkId,
    codec: Codec,
    stored: &[u8],
    raw_len: u32,
    max: u32,
) -> Result<Vec<u8>> {
    if raw_len > max {
        return Err(damaged(
            path,
            format!("chunk {} claims {raw_len} bytes", id.short()),
        ));
    }
    let data = decompress(codec, stored, raw_len as usize).map_err(|e| {
        damaged(
            path,
            format!("chunk {} does not decompress: {e}", id.short()),
        )
    })?;
    if ChunkId::of(&data) != *id {
        return Err(damaged(
            path,
            format!("chunk {} fails its BLAKE3 check", id.short()),
        ));
    }
    Ok(data)
}
