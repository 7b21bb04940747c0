//! Writes one pack to a temporary file and publishes it atomically.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::{HEADER_LEN, PackEntry, PackKind, encode_footer, encode_header, footer_id};
use crate::compress::Codec;
use crate::error::{Error, IoContext, Result};
use crate::id::{ChunkId, PackId};

/// A pack being written. Dropping it without `finish` removes the temp file.
pub struct PackWriter {
    tmp_path: PathBuf,
    file: BufWriter<NamedTempFile>,
    entries: Vec<PackEntry>,
    len: u64,
    kind: PackKind,
}

/// A pack that is durable under its final name.
#[derive(Debug, Clone)]
pub struct FinishedPack {
    pub id: PackId,
    pub kind: PackKind,
    pub size: u64,
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    /// Start a pack in `tmp_dir`, which must be on the same filesystem as
    /// its final place so that the rename is atomic.
    pub fn create(tmp_dir: &Path, kind: PackKind) -> Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-pack-")
            .suffix(".tmp")
            .tempfile_in(tmp_dir)
            .at(tmp_dir)?;
        let tmp_path = tmp.path().to_path_buf();
        let mut w = PackWriter {
            tmp_path,
            file: BufWriter::with_capacity(1 << 20, tmp),
            entries: Vec::new(),
            len: 0,
            kind,
        };
        w.write(&encode_header(kind))?;
        debug_assert_eq!(w.len, HEADER_LEN);
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).at(&self.tmp_path)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn add(&mut self, id: ChunkId, codec: Codec, raw_len: u32, stored: &[u8]) -> Result<()> {
        let offset =
            u32::try_from(self.len).map_err(|_| Error::Invalid("pack larger than 4 GiB".into()))?;
        self.write(stored)?;
        self.entries.push(PackEntry {
            id,
            offset,
            stored_len: stored.len() as u32,
            raw_len,
            codec,
        });
        Ok(())
    }

    /// Bytes written so far (header and frames).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Write the footer, fsync, and rename to `<dir>/<2 hex>/<id>.pack`,
    /// fsyncing the directories so the name is durable too.
    pub fn finish(self, packs_dir: &Path) -> Result<FinishedPack> {
        self.seal()?.publish(packs_dir)
    }

    /// Write the footer and flush; the pack is complete but not yet durable
    /// nor visible under its name. `publish` can run on another thread, so
    /// the next pack is written while this one is fsynced.
    pub fn seal(mut self) -> Result<SealedPack> {
        let footer = encode_footer(&self.entries);
        self.write(&footer)?;
        // The id is the footer's hash (stored in the trailer): the footer
        // names every chunk by its BLAKE3 with its offset and lengths, so it
        // identifies the content without hashing the data a second time.
        let id = footer_id(&footer);
        let tmp = self
            .file
            .into_inner()
            .map_err(|e| Error::io(&self.tmp_path, e.into_error()))?;
        crate::fault::point("pack written");
        Ok(SealedPack {
            tmp,
            tmp_path: self.tmp_path,
            pack: FinishedPack {
                id,
                kind: self.kind,
                size: self.len,
                entries: self.entries,
            },
        })
    }
}

/// A complete pack in its temporary file.
pub struct SealedPack {
    tmp: NamedTempFile,
    tmp_path: PathBuf,
    pack: FinishedPack,
}

impl SealedPack {
    /// fsync, rename to `<dir>/<2 hex>/<id>.pack`, fsync the directory.
    pub fn publish(self, packs_dir: &Path) -> Result<FinishedPack> {
        self.tmp.as_file().sync_all().at(&self.tmp_path)?;
        crate::fault::point("pack fsynced");
        let final_path = pack_path(packs_dir, &self.pack.id);
        let sub = final_path.parent().expect("pack path has a parent");
        if !sub.exists() {
            crate::repo::create_private_dir(sub)?;
            sync_dir(packs_dir)?;
        }
        self.tmp
            .persist(&final_path)
            .map_err(|e| Error::io(&final_path, e.error))?;
        crate::fault::point("pack renamed");
        sync_dir(sub)?;
        crate::fault::point("pack directory fsynced");
        Ok(self.pack)
    }
}

pub fn pack_path(packs_dir: &Path, id: &PackId) -> PathBuf {
    let hex = id.to_hex();
    packs_dir.join(&hex[..2]).join(format!("{hex}.pack"))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|f| f.sync_all()).at(dir)
}
