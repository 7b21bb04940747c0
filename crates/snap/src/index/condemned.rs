//! Packs condemned by a gc on shared storage: their chunk rows move to
//! `condemned_chunks` (no create dedups against them; restores still find
//! them) until a later gc deletes the pack or rescues it.

use rusqlite::OptionalExtension;

use super::Index;
use crate::error::Result;
use crate::id::PackId;

/// An indexed pack that is condemned, and by which record.
#[derive(Debug, Clone)]
pub struct CondemnedPack {
    pub rowid: i64,
    pub id: PackId,
    pub record: String,
}

impl Index {
    /// Whether the index has the condemned tables (read-only opens of
    /// indexes made before they existed do not).
    pub(crate) fn has_condemned_tables(&self) -> rusqlite::Result<bool> {
        self.conn
            .prepare_cached(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'condemned_chunks'",
            )?
            .exists([])
    }

    /// Move a pack's chunk rows out of `chunks` and note the record that
    /// condemned it. Idempotent.
    pub fn condemn_pack(&self, pack_rowid: i64, record: &str) -> Result<()> {
        let f = || -> rusqlite::Result<()> {
            self.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO condemned_chunks(pack, hash, offset, stored_len, raw_len, codec, base, inner_offset)
                     SELECT pack, hash, offset, stored_len, raw_len, codec, base, inner_offset FROM chunks WHERE pack = ?1",
                )?
                .execute([pack_rowid])?;
            self.conn
                .prepare_cached("DELETE FROM chunks WHERE pack = ?1")?
                .execute([pack_rowid])?;
            self.conn
                .prepare_cached("INSERT OR REPLACE INTO condemned(pack, record) VALUES (?1, ?2)")?
                .execute(rusqlite::params![pack_rowid, record])?;
            Ok(())
        };
        f().map_err(|e| self.err(e))
    }

    /// Give a condemned pack its rows back (a chunk that another pack
    /// holds meanwhile keeps that location).
    pub fn rescue_pack(&self, pack_rowid: i64) -> Result<()> {
        let f = || -> rusqlite::Result<()> {
            self.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO chunks(hash, pack, offset, stored_len, raw_len, codec, base, inner_offset)
                     SELECT hash, pack, offset, stored_len, raw_len, codec, base, inner_offset FROM condemned_chunks WHERE pack = ?1",
                )?
                .execute([pack_rowid])?;
            self.drop_condemned_rows(pack_rowid)
        };
        f().map_err(|e| self.err(e))
    }

    /// Remove a pack's condemned chunk rows and its condemned mark (a
    /// rescue put the rows back, or the pack is deleted).
    pub(super) fn drop_condemned_rows(&self, pack_rowid: i64) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("DELETE FROM condemned_chunks WHERE pack = ?1")?
            .execute([pack_rowid])?;
        self.conn
            .prepare_cached("DELETE FROM condemned WHERE pack = ?1")?
            .execute([pack_rowid])?;
        Ok(())
    }

    pub fn condemned_packs(&self) -> Result<Vec<CondemnedPack>> {
        let f = || -> rusqlite::Result<Vec<CondemnedPack>> {
            if !self.has_condemned_tables()? {
                return Ok(Vec::new());
            }
            let mut st = self.conn.prepare(
                "SELECT p.id, p.hash, c.record FROM condemned c JOIN packs p ON p.id = c.pack ORDER BY p.id",
            )?;
            st.query_map([], |r| {
                Ok(CondemnedPack {
                    rowid: r.get(0)?,
                    id: super::blob_id(r.get(1)?, PackId::from_slice)?,
                    record: r.get(2)?,
                })
            })?
            .collect()
        };
        f().map_err(|e| self.err(e))
    }

    /// The chunk rows of a condemned pack, set apart from the dedup table
    /// (still where those chunks are, until a gc deletes or rescues it).
    pub fn condemned_chunks_in_pack(&self, pack_rowid: i64) -> Result<Vec<crate::pack::PackEntry>> {
        if !self.has_condemned_tables().map_err(|e| self.err(e))? {
            return Ok(Vec::new());
        }
        self.pack_entries(
                            "SELECT hash, offset, stored_len, raw_len, codec, base, inner_offset FROM condemned_chunks WHERE pack = ?1 ORDER BY offset",
            pack_rowid,
        )
    }

    /// Is the chunk in some indexed pack, condemned or not?
    pub fn chunk_known(&self, id: &crate::id::ChunkId) -> Result<bool> {
        if self.has_chunk(id)? {
            return Ok(true);
        }
        let f = || -> rusqlite::Result<bool> {
            Ok(self.has_condemned_tables()?
                && self
                    .conn
                    .prepare_cached("SELECT 1 FROM condemned_chunks WHERE hash = ?1")?
                    .exists([id.as_bytes()])?)
        };
        f().map_err(|e| self.err(e))
    }

    /// The row id of an indexed pack.
    pub fn pack_rowid(&self, id: &PackId) -> Result<Option<i64>> {
        self.conn
            .prepare_cached("SELECT id FROM packs WHERE hash = ?1")
            .and_then(|mut st| st.query_row([id.as_bytes()], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// Does any chunk of this pack (condemned or not) appear in the live
    /// set?
    pub fn pack_has_live(&self, pack_rowid: i64) -> Result<bool> {
        let f = || -> rusqlite::Result<bool> {
            let in_chunks = self
                .conn
                .prepare_cached(
                    "SELECT 1 FROM chunks c JOIN temp.live l ON l.hash = c.hash WHERE c.pack = ?1 LIMIT 1",
                )?
                .exists([pack_rowid])?;
            Ok(in_chunks
                || self
                    .conn
                    .prepare_cached(
                        "SELECT 1 FROM condemned_chunks c JOIN temp.live l ON l.hash = c.hash WHERE c.pack = ?1 LIMIT 1",
                    )?
                    .exists([pack_rowid])?)
        };
        f().map_err(|e| self.err(e))
    }

    /// Forget that a change record or a condemned record was applied.
    pub fn unmark_applied(&self, name: &str) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM applied_changes WHERE name = ?1")
            .and_then(|mut st| st.execute([name]))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}
