//! The SQLite index: config, packs, chunk locations, trees and snapshots.
//! The only module that sees rusqlite; its types never leave it.

mod condemned;
mod schema;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::compress::Codec;
use crate::config::{FORMAT_VERSION, RepoConfig};
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId, SnapshotId, TreeId};
use crate::pack::{FinishedPack, PackEntry, PackKind};
use crate::snapshot::{RootRecord, Snapshot, SnapshotStats};

pub use schema::SCHEMA_VERSION;

pub use crate::pack::ChunkLocation;

impl crate::delta::Locate for Index {
    fn locate(&self, id: &ChunkId) -> Result<Option<ChunkLocation>> {
        self.chunk_location(id)
    }
}

#[derive(Debug, Clone)]
pub struct PackRow {
    pub rowid: i64,
    pub id: PackId,
    pub size: u64,
    pub chunk_count: u64,
    pub kind: PackKind,
    /// Delta base records in its footer.
    pub bases: u64,
}

impl PackRow {
    /// Bytes of its frames: what is not header, footer or trailer.
    pub fn payload(&self) -> u64 {
        let framing = crate::pack::HEADER_LEN
            + crate::pack::ENTRY_LEN * self.chunk_count
            + crate::pack::BASE_LEN * self.bases
            + crate::pack::TRAILER_LEN;
        self.size.saturating_sub(framing)
    }
}

/// An index (SQLite) error: the library's error type carries no
/// rusqlite type, only what it said and whether the file is damaged.
pub(crate) fn sql_error(path: impl Into<PathBuf>, e: rusqlite::Error) -> Error {
    // SQLite's own verdict on the file, or a row whose values are not
    // what snap wrote (a wrong type, out of range, not UTF-8): damage.
    let corrupt = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    ) || matches!(
        e,
        rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..)
    );
    Error::Index {
        path: path.into(),
        message: e.to_string(),
        corrupt,
    }
}

pub struct Index {
    conn: Connection,
    path: PathBuf,
}

/// The query for a chunk's location in `table`. The pack's id comes from
/// a subquery, not a join: SQLite re-prepared the join form at every step
/// (its parser was a fifth of a restore's time), the subquery form it
/// prepares once, which made a lookup 4x faster.
fn location_sql(table: &str) -> String {
    format!(
        "SELECT (SELECT hash FROM packs WHERE id = c.pack), c.offset, c.stored_len, c.raw_len,
                c.codec, c.base, c.inner_offset
         FROM {table} c WHERE c.hash = ?1 LIMIT 1"
    )
}

/// A codec stored as an integer column.
fn codec_col(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Codec> {
    let c: u8 = r.get(i)?;
    Codec::from_u8(c).ok_or(rusqlite::Error::IntegralValueOutOfRange(i, c as i64))
}

/// A delta's base column: NULL, or a chunk id (a delta has one; nothing
/// else has).
fn base_col(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Option<ChunkId>> {
    let base = r
        .get::<_, Option<Vec<u8>>>(i)?
        .map(|v| blob_id(v, ChunkId::from_slice))
        .transpose()?;
    let codec = codec_col(r, 4)?;
    if (codec == Codec::Delta) != base.is_some() {
        return Err(rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Blob,
            "a delta without a base, or a base without a delta".into(),
        ));
    }
    Ok(base)
}

fn blob_id<T>(v: Vec<u8>, f: fn(&[u8]) -> Option<T>) -> rusqlite::Result<T> {
    f(&v).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "bad id length".into(),
        )
    })
}

/// How a command opens the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    /// Read-only; SQLite may still create its `-wal`/`-shm` companions.
    ReadOnly,
    /// Read-only and the repository's bytes left exactly as they are (no
    /// `-wal`/`-shm` created): only under the repository lock, which keeps
    /// every writer (and so every checkpoint) out while the index is open.
    Untouched,
    /// The repository's directory cannot be written (a read-only mount,
    /// someone else's directory): read as it is, creating nothing, and no
    /// writer can run meanwhile. A log left in `-wal` is read through
    /// SQLite's read-only WAL support.
    ReadOnlyPlace,
}

/// `path` percent-encoded for an SQLite `file:` URI.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Index {
    fn err(&self, source: rusqlite::Error) -> Error {
        sql_error(&self.path, source)
    }

    fn connect(path: &Path, flags: OpenFlags) -> Result<Connection> {
        let conn =
            Connection::open_with_flags(path, flags).map_err(|source| sql_error(path, source))?;
        conn.busy_timeout(Duration::from_secs(30))
            .and_then(|_| conn.pragma_update(None, "foreign_keys", "ON"))
            // Small by default: create runs one connection per reader thread,
            // and peak memory must stay well under 100 MB.
            .and_then(|_| conn.pragma_update(None, "cache_size", -4096))
            .map_err(|source| sql_error(path, source))?;
        Ok(conn)
    }

    /// Create a new index with `config`.
    pub fn create(path: &Path, config: &RepoConfig) -> Result<Index> {
        let conn = Self::connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        let idx = Index {
            conn,
            path: path.to_path_buf(),
        };
        idx.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| idx.err(e))?;
        let tx = || -> rusqlite::Result<()> {
            idx.conn.execute_batch("BEGIN IMMEDIATE")?;
            idx.conn.execute_batch(schema::CREATE)?;
            idx.conn.execute_batch(schema::CONDEMNED)?;
            let rows: [(&str, String); 8] = [
                ("format_version", config.format_version.to_string()),
                ("chunk_min_bytes", config.chunk_min_bytes.to_string()),
                ("chunk_avg_bytes", config.chunk_avg_bytes.to_string()),
                ("chunk_max_bytes", config.chunk_max_bytes.to_string()),
                ("zstd_level", config.zstd_level.to_string()),
                ("pack_target_bytes", config.pack_target_bytes.to_string()),
                ("repository_id", config.id.clone()),
                ("encryption", config.encryption.clone()),
            ];
            for (k, v) in rows {
                idx.conn.execute(
                    "INSERT INTO config(key, value) VALUES (?1, ?2)",
                    params![k, v],
                )?;
            }
            idx.conn
                .pragma_update(None, "user_version", SCHEMA_VERSION)?;
            idx.conn.execute_batch("COMMIT")
        };
        tx().map_err(|e| idx.err(e))?;
        Ok(idx)
    }

    /// Open an existing index, checking its versions. `repo` names the
    /// repository in messages.
    pub fn open(path: &Path, repo: &Path, read_only: bool) -> Result<(Index, RepoConfig)> {
        Self::open_as(
            path,
            repo,
            if read_only {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            },
        )
    }

    /// Open with `access`; see [`Access::Untouched`].
    pub fn open_as(path: &Path, repo: &Path, access: Access) -> Result<(Index, RepoConfig)> {
        let idx = Index {
            conn: Self::connect_as(path, access)?,
            path: path.to_path_buf(),
        };
        idx.check_schema(repo)?;
        let config = idx.read_config(repo)?;
        if access == Access::ReadWrite {
            // The one schema change on open: tables added since schema 4
            // was first written (docs/format.md, "Versions").
            idx.conn
                .execute_batch(schema::CONDEMNED)
                .map_err(|e| idx.err(e))?;
        }
        Ok((idx, config))
    }

    /// The connection `access` asks for.
    fn connect_as(path: &Path, access: Access) -> Result<Connection> {
        let sidecar = |s: &str| {
            let mut p = path.as_os_str().to_owned();
            p.push(s);
            std::path::PathBuf::from(p)
        };
        let immutable = || {
            let uri = format!("file:{}?immutable=1", uri_path(path));
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
            Self::connect(Path::new(&uri), flags)
        };
        match access {
            Access::ReadWrite => Self::connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE),
            // Nothing in a log: read the file as it is, creating nothing.
            Access::Untouched if !sidecar("-wal").exists() && !sidecar("-shm").exists() => {
                immutable()
            }
            Access::ReadOnlyPlace
                if std::fs::metadata(sidecar("-wal")).map_or(true, |m| m.len() == 0) =>
            {
                immutable()
            }
            _ => Self::connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY),
        }
    }

    fn not_db(&self, e: rusqlite::Error) -> Error {
        Error::IndexDamaged {
            path: self.path.clone(),
            reason: format!("not a readable snap index ({e})"),
        }
    }

    /// The schema version is this snap's (`repo` names the repository).
    fn check_schema(&self, repo: &Path) -> Result<()> {
        let version: u32 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.not_db(e))?;
        match version {
            0 => Err(Error::IndexDamaged {
                path: self.path.clone(),
                reason: "not a snap index (schema version 0)".into(),
            }),
            v if v > SCHEMA_VERSION => Err(Error::NewerFormat {
                path: repo.to_path_buf(),
                found: v,
                supported: SCHEMA_VERSION,
            }),
            v if v < SCHEMA_VERSION => Err(Error::OldFormat {
                path: repo.to_path_buf(),
                found: v,
            }),
            _ => Ok(()),
        }
    }

    /// The repository config the index holds, checked.
    fn read_config(&self, repo: &Path) -> Result<RepoConfig> {
        let map: BTreeMap<String, String> = self
            .conn
            .prepare("SELECT key, value FROM config")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .and_then(|rows| rows.collect())
            })
            .map_err(|e| self.not_db(e))?;
        let get = |k: &str| -> Result<&str> {
            map.get(k)
                .map(|s| s.as_str())
                .ok_or_else(|| Error::BadConfig(format!("missing key {k}")))
        };
        let num = |k: &str| -> Result<i64> {
            get(k)?
                .parse()
                .map_err(|_| Error::BadConfig(format!("{k} is not a number")))
        };
        let format_version = num("format_version")? as u32;
        if format_version < FORMAT_VERSION {
            return Err(Error::OldFormat {
                path: repo.to_path_buf(),
                found: format_version,
            });
        }
        if format_version > FORMAT_VERSION {
            return Err(Error::NewerFormat {
                path: repo.to_path_buf(),
                found: format_version,
                supported: FORMAT_VERSION,
            });
        }
        let config = RepoConfig {
            format_version,
            chunk_min_bytes: num("chunk_min_bytes")? as u32,
            chunk_avg_bytes: num("chunk_avg_bytes")? as u32,
            chunk_max_bytes: num("chunk_max_bytes")? as u32,
            zstd_level: num("zstd_level")? as i32,
            pack_target_bytes: num("pack_target_bytes")? as u64,
            id: get("repository_id").map(str::to_string).unwrap_or_default(),
            encryption: get("encryption").map(str::to_string).unwrap_or_default(),
        };
        config.validate()?;
        Ok(config)
    }

    /// For the one connection that walks and writes during create: a larger
    /// page cache for inserts, and reads through a memory map so that a tree
    /// lookup costs no syscall.
    pub fn tune_for_create(&self) -> Result<()> {
        self.conn
            .pragma_update(None, "cache_size", -32768)
            .and_then(|_| self.conn.pragma_update(None, "mmap_size", 64i64 << 20))
            .map_err(|e| self.err(e))
    }

    /// For a walk that asks about every chunk (check): page caches of 16
    /// MiB for the index and for the temp store holding the set of chunks
    /// seen, so that a million lookups stay in memory without the set
    /// growing in RAM past that.
    pub fn tune_for_walk(&self) -> Result<()> {
        self.conn
            .pragma_update(Some("main"), "cache_size", -16384)
            .and_then(|_| self.conn.pragma_update(Some("temp"), "cache_size", -16384))
            .map_err(|e| self.err(e))
    }

    pub fn begin(&self) -> Result<()> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))
    }

    pub fn commit(&self) -> Result<()> {
        crate::fault::point("before index commit");
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))?;
        crate::fault::point("index committed");
        Ok(())
    }

    /// Run `f` in one transaction: committed if it succeeds, rolled back
    /// (and its error returned) if not.
    pub fn in_transaction<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.begin()?;
        match f() {
            Ok(v) => {
                self.commit()?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.rollback();
                Err(e)
            }
        }
    }

    /// Run `f` in one read transaction (writes go to the temp store only):
    /// one consistent view of the index, and one commit of the temp store
    /// instead of one per statement (each of which scans its page cache).
    pub fn in_read_transaction<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.conn
            .execute_batch("BEGIN DEFERRED")
            .map_err(|e| self.err(e))?;
        let r = f();
        let end = self.conn.execute_batch("COMMIT");
        let v = r?;
        end.map_err(|e| self.err(e))?;
        Ok(v)
    }

    pub fn rollback(&self) -> Result<()> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.conn.execute_batch("ROLLBACK").map_err(|e| self.err(e))
    }

    // ---- packs and chunks ----

    /// Record a finished pack and its chunks. Chunks already indexed keep
    /// their first location.
    /// Replace the snapshots a sync could not index, with why.
    pub fn set_held_back(&self, held: &[(SnapshotId, String)]) -> Result<()> {
        let f = || -> rusqlite::Result<()> {
            self.conn.execute("DELETE FROM held_back", [])?;
            let mut st = self
                .conn
                .prepare_cached("INSERT OR REPLACE INTO held_back(hash, reason) VALUES (?1, ?2)")?;
            for (id, why) in held {
                st.execute(params![id.as_bytes(), why])?;
            }
            Ok(())
        };
        f().map_err(|e| self.err(e))
    }

    /// The snapshots the last sync could not index (none in an index that
    /// has no such table yet).
    pub fn held_back(&self) -> Result<Vec<(SnapshotId, String)>> {
        let f = || -> rusqlite::Result<Vec<(SnapshotId, String)>> {
            let exists: bool = self.conn.query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'held_back'",
                [],
                |r| r.get(0),
            )?;
            if !exists {
                return Ok(Vec::new());
            }
            let mut st = self.conn.prepare("SELECT hash, reason FROM held_back")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (hash, why) = row?;
                if let Some(id) = SnapshotId::from_slice(&hash) {
                    out.push((id, why));
                }
            }
            Ok(out)
        };
        f().map_err(|e| self.err(e))
    }

    /// A pack and its chunks' rows. A pack already indexed under the same
    /// id is the same pack (its id is the hash of its footer, which names
    /// every blob): two sources of one create holding the same new data
    /// write the same pack twice, to the same name.
    pub fn insert_pack(&self, pack: &FinishedPack) -> Result<i64> {
        let f = || -> rusqlite::Result<i64> {
            let (rowid, new) = self.pack_row(pack)?;
            if !new {
                return Ok(rowid);
            }
            let mut st = self.conn.prepare_cached(
                "INSERT OR IGNORE INTO chunks(hash, pack, offset, stored_len, raw_len, codec, base, inner_offset)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for e in &pack.entries {
                st.execute(params![
                    e.id.as_bytes(),
                    rowid,
                    e.offset,
                    e.stored_len,
                    e.raw_len,
                    e.codec as u8,
                    e.base.as_ref().map(|b| b.as_bytes().as_slice()),
                    e.inner
                ])?;
            }
            Ok(rowid)
        };
        f().map_err(|e| self.err(e))
    }

    /// A pack row without chunk rows (gc points moved chunks at it). A
    /// repack can write exactly the pack (and so the name) an earlier,
    /// interrupted gc uploaded, which a sync may have indexed since: that
    /// row is the same pack, and is reused.
    pub fn insert_pack_row(&self, pack: &FinishedPack) -> Result<i64> {
        self.pack_row(pack)
            .map(|(rowid, _)| rowid)
            .map_err(|e| self.err(e))
    }

    /// The row of `pack`: inserted (`true`), or the one already there
    /// (the same pack, as its id is its content's hash).
    fn pack_row(&self, pack: &FinishedPack) -> rusqlite::Result<(i64, bool)> {
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO packs(hash, size, chunk_count, kind, bases) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(hash) DO NOTHING",
            )?
            .execute(params![
                pack.id.as_bytes(),
                pack.size as i64,
                pack.entries.len() as i64,
                pack.kind as u8,
                pack.bases() as i64
            ])?;
        if inserted == 1 {
            return Ok((self.conn.last_insert_rowid(), true));
        }
        let rowid = self
            .conn
            .prepare_cached("SELECT id FROM packs WHERE hash = ?1")?
            .query_row([pack.id.as_bytes()], |r| r.get(0))?;
        Ok((rowid, false))
    }

    // ---- liveness (gc) ----

    /// A fresh temporary set of live chunk ids (lives in SQLite's temp
    /// store, not in index.db, and not in RAM).
    pub fn live_reset(&self) -> Result<()> {
        self.conn
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS live(hash BLOB PRIMARY KEY) WITHOUT ROWID;
                 DELETE FROM temp.live;",
            )
            .map_err(|e| self.err(e))
    }

    pub fn live_add(&self, ids: &[ChunkId]) -> Result<()> {
        let f = || -> rusqlite::Result<()> {
            let mut st = self
                .conn
                .prepare_cached("INSERT OR IGNORE INTO temp.live(hash) VALUES (?1)")?;
            for id in ids {
                st.execute([id.as_bytes()])?;
            }
            Ok(())
        };
        f().map_err(|e| self.err(e))
    }

    /// Add the base of every live delta to the live set, and their bases in
    /// turn (a chain is at most `delta::MAX_DEPTH` long; a longer one, only
    /// possible in a damaged index, stops growing there). Returns how many
    /// bases were added.
    pub fn live_add_bases(&self) -> Result<u64> {
        let condemned = self.has_condemned_tables().map_err(|e| self.err(e))?;
        let sql = if condemned {
            "INSERT OR IGNORE INTO temp.live(hash)
             SELECT c.base FROM chunks c JOIN temp.live l ON l.hash = c.hash WHERE c.base IS NOT NULL
             UNION SELECT c.base FROM condemned_chunks c JOIN temp.live l ON l.hash = c.hash
                   WHERE c.base IS NOT NULL"
        } else {
            "INSERT OR IGNORE INTO temp.live(hash)
             SELECT c.base FROM chunks c JOIN temp.live l ON l.hash = c.hash WHERE c.base IS NOT NULL"
        };
        let mut added = 0;
        for _ in 0..=crate::delta::MAX_DEPTH {
            let n = self
                .conn
                .prepare_cached(sql)
                .and_then(|mut st| st.execute([]))
                .map_err(|e| self.err(e))?;
            if n == 0 {
                break;
            }
            added += n as u64;
        }
        Ok(added)
    }

    /// Add one id to the live set; whether it was new there (check's set
    /// of chunks seen: on disk, not in RAM, whatever their number).
    pub fn live_insert(&self, id: &ChunkId) -> Result<bool> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO temp.live(hash) VALUES (?1)")
            .and_then(|mut st| st.execute([id.as_bytes()]))
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// Ids in the live set that no chunk row (condemned or not) has, found
    /// in one pass in hash order: probes into `chunks` then follow its
    /// key order instead of jumping around the file.
    pub fn live_without_rows(&self) -> Result<Vec<ChunkId>> {
        let condemned = self.has_condemned_tables().map_err(|e| self.err(e))?;
        let sql = if condemned {
            "SELECT l.hash FROM temp.live l
             WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.hash = l.hash)
               AND NOT EXISTS (SELECT 1 FROM condemned_chunks c WHERE c.hash = l.hash)
             ORDER BY l.hash"
        } else {
            "SELECT l.hash FROM temp.live l
             WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.hash = l.hash) ORDER BY l.hash"
        };
        let f = || -> rusqlite::Result<Vec<ChunkId>> {
            let mut st = self.conn.prepare(sql)?;
            st.query_map([], |r| blob_id(r.get(0)?, ChunkId::from_slice))?
                .collect()
        };
        f().map_err(|e| self.err(e))
    }

    /// Per pack: (rowid, live chunk count, live stored bytes). A group
    /// frame's bytes count once, whole, when any member is live (a repack
    /// copies it whole).
    pub fn pack_liveness(&self) -> Result<HashMap<i64, (u64, u64)>> {
        let f = || -> rusqlite::Result<HashMap<i64, (u64, u64)>> {
            let mut st = self.conn.prepare(
                "SELECT pack, sum(n), sum(stored_len) FROM (
                   SELECT c.pack, count(*) AS n, max(c.stored_len) AS stored_len FROM chunks c
                   JOIN temp.live l ON l.hash = c.hash GROUP BY c.pack, c.offset)
                 GROUP BY pack",
            )?;
            st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64),
                ))
            })?
            .collect()
        };
        f().map_err(|e| self.err(e))
    }

    /// The live chunks of one pack, in pack order.
    pub fn live_chunks_in_pack(&self, pack_rowid: i64) -> Result<Vec<PackEntry>> {
        self.pack_entries(
                            "SELECT c.hash, c.offset, c.stored_len, c.raw_len, c.codec, c.base, c.inner_offset
                 FROM chunks c JOIN temp.live l ON l.hash = c.hash WHERE c.pack = ?1 ORDER BY c.offset",
            pack_rowid,
        )
    }

    /// Remove chunk rows no live snapshot references; returns how many.
    pub fn delete_dead_chunks(&self) -> Result<u64> {
        self.conn
            .execute(
                "DELETE FROM chunks WHERE hash NOT IN (SELECT hash FROM temp.live)",
                [],
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Dead chunk rows and their stored bytes (for reports; a group
    /// frame's bytes once per frame).
    pub fn dead_chunk_stats(&self) -> Result<(u64, u64)> {
        self.conn
            .query_row(
                "SELECT coalesce(sum(n), 0), coalesce(sum(stored_len), 0) FROM (
                   SELECT count(*) AS n, max(stored_len) AS stored_len FROM chunks
                   WHERE hash NOT IN (SELECT hash FROM temp.live) GROUP BY pack, offset)",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| self.err(e))
    }

    /// Tree blobs outside `temp.live` (see `dead_chunk_stats`): the trees
    /// no kept snapshot reaches, whether or not the index copies them.
    pub fn dead_tree_blobs(&self) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM chunks c JOIN packs p ON c.pack = p.id
                 WHERE p.kind = ?1 AND c.hash NOT IN (SELECT hash FROM temp.live)",
                [crate::pack::PackKind::Tree as i64],
                |r| r.get::<_, i64>(0).map(|v| v as u64),
            )
            .map_err(|e| self.err(e))
    }

    /// Blobs in packs of `kind`: how many, their raw and their stored
    /// bytes (a group frame's once).
    pub fn blob_totals(&self, kind: crate::pack::PackKind) -> Result<(u64, u64, u64)> {
        self.conn
            .query_row(
                "SELECT coalesce(sum(n), 0), coalesce(sum(raw), 0), coalesce(sum(stored_len), 0) FROM (
                   SELECT count(*) AS n, sum(c.raw_len) AS raw, max(c.stored_len) AS stored_len
                   FROM chunks c JOIN packs p ON c.pack = p.id WHERE p.kind = ?1
                   GROUP BY c.pack, c.offset)",
                [kind as i64],
                |r| {
                    let g = |i| r.get::<_, i64>(i).map(|v| v as u64);
                    Ok((g(0)?, g(1)?, g(2)?))
                },
            )
            .map_err(|e| self.err(e))
    }

    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT 1 FROM chunks WHERE hash = ?1")
            .and_then(|mut st| st.exists([id.as_bytes()]))
            .map_err(|e| self.err(e))
    }

    /// Where a chunk is when a create may use it (dedup, or a delta's
    /// base): its row in `chunks`, never one of a condemned pack.
    pub fn dedup_location(&self, id: &ChunkId) -> Result<Option<ChunkLocation>> {
        self.located(&location_sql("chunks"), id)
    }

    /// Where a chunk is: its row, else (on shared storage) its row in a
    /// condemned pack, still readable until a gc deletes the pack.
    pub fn chunk_location(&self, id: &ChunkId) -> Result<Option<ChunkLocation>> {
        match self.located(&location_sql("chunks"), id)? {
            Some(l) => Ok(Some(l)),
            None if self.has_condemned_tables().map_err(|e| self.err(e))? => {
                self.located(&location_sql("condemned_chunks"), id)
            }
            None => Ok(None),
        }
    }

    fn located(&self, sql: &str, id: &ChunkId) -> Result<Option<ChunkLocation>> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut st| {
                st.query_row([id.as_bytes()], |r| {
                    // A row whose pack is not listed is no location (as
                    // with a join).
                    let Some(pack) = r.get::<_, Option<Vec<u8>>>(0)? else {
                        return Ok(None);
                    };
                    Ok(Some(ChunkLocation {
                        pack: blob_id(pack, PackId::from_slice)?,
                        offset: r.get(1)?,
                        stored_len: r.get(2)?,
                        raw_len: r.get(3)?,
                        codec: codec_col(r, 4)?,
                        base: base_col(r, 5)?,
                        inner: r.get(6)?,
                    }))
                })
                .optional()
                .map(Option::flatten)
            })
            .map_err(|e| self.err(e))
    }

    pub fn packs(&self) -> Result<Vec<PackRow>> {
        let f = || -> rusqlite::Result<Vec<PackRow>> {
            let mut st = self.conn.prepare(
                "SELECT id, hash, size, chunk_count, kind, bases FROM packs ORDER BY id",
            )?;
            st.query_map([], |r| {
                Ok(PackRow {
                    rowid: r.get(0)?,
                    id: blob_id(r.get(1)?, PackId::from_slice)?,
                    size: r.get::<_, i64>(2)? as u64,
                    chunk_count: r.get::<_, i64>(3)? as u64,
                    kind: PackKind::from_u32(r.get::<_, u32>(4)?).ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(
                            4,
                            rusqlite::types::Type::Integer,
                            "unknown pack kind".into(),
                        )
                    })?,
                    bases: r.get::<_, i64>(5)? as u64,
                })
            })?
            .collect()
        };
        f().map_err(|e| self.err(e))
    }

    /// The chunk rows that point into one pack.
    pub fn chunks_in_pack(&self, pack_rowid: i64) -> Result<Vec<PackEntry>> {
        self.pack_entries(
                            "SELECT hash, offset, stored_len, raw_len, codec, base, inner_offset FROM chunks WHERE pack = ?1 ORDER BY offset",
            pack_rowid,
        )
    }

    /// Run a query whose rows are (hash, offset, stored_len, raw_len, codec, base, inner).
    fn pack_entries(&self, sql: &str, pack_rowid: i64) -> Result<Vec<PackEntry>> {
        let f = || -> rusqlite::Result<Vec<PackEntry>> {
            let mut st = self.conn.prepare_cached(sql)?;
            st.query_map([pack_rowid], |r| {
                Ok(PackEntry {
                    id: blob_id(r.get(0)?, ChunkId::from_slice)?,
                    offset: r.get(1)?,
                    stored_len: r.get(2)?,
                    raw_len: r.get(3)?,
                    codec: codec_col(r, 4)?,
                    base: base_col(r, 5)?,
                    inner: r.get(6)?,
                })
            })?
            .collect()
        };
        f().map_err(|e| self.err(e))
    }

    pub fn delete_pack(&self, pack_rowid: i64) -> Result<()> {
        let f = || -> rusqlite::Result<()> {
            self.conn
                .prepare_cached("DELETE FROM chunks WHERE pack = ?1")?
                .execute([pack_rowid])?;
            if self.has_condemned_tables()? {
                self.drop_condemned_rows(pack_rowid)?;
            }
            self.conn
                .prepare_cached("DELETE FROM packs WHERE id = ?1")?
                .execute([pack_rowid])?;
            Ok(())
        };
        f().map_err(|e| self.err(e))
    }

    pub fn delete_chunk(&self, id: &ChunkId) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM chunks WHERE hash = ?1")
            .and_then(|mut st| st.execute([id.as_bytes()]))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Point a chunk at a new location (gc repacking).
    pub fn move_chunk(&self, id: &ChunkId, pack_rowid: i64, e: &PackEntry) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO chunks(hash, pack, offset, stored_len, raw_len, codec, base, inner_offset)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id.as_bytes(),
                    pack_rowid,
                    e.offset,
                    e.stored_len,
                    e.raw_len,
                    e.codec as u8,
                    e.base.as_ref().map(|b| b.as_bytes().as_slice()),
                    e.inner
                ])
            })
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    // ---- trees ----

    /// Store an encoded tree (compressed with zstd when that helps).
    pub fn insert_tree(&self, id: &TreeId, codec: Codec, data: &[u8]) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO trees(hash, codec, data) VALUES (?1, ?2, ?3)")
            .and_then(|mut st| st.execute(params![id.as_bytes(), codec as u8, data]))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn has_tree(&self, id: &TreeId) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT 1 FROM trees WHERE hash = ?1")
            .and_then(|mut st| st.exists([id.as_bytes()]))
            .map_err(|e| self.err(e))
    }

    /// The stored bytes of a tree and their codec.
    pub fn tree_data(&self, id: &TreeId) -> Result<Option<(Codec, Vec<u8>)>> {
        self.conn
            .prepare_cached("SELECT codec, data FROM trees WHERE hash = ?1")
            .and_then(|mut st| {
                st.query_row([id.as_bytes()], |r| Ok((codec_col(r, 0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    pub fn tree_ids(&self) -> Result<Vec<TreeId>> {
        let f = || -> rusqlite::Result<Vec<TreeId>> {
            let mut st = self.conn.prepare("SELECT hash FROM trees")?;
            st.query_map([], |r| blob_id(r.get(0)?, TreeId::from_slice))?
                .collect()
        };
        f().map_err(|e| self.err(e))
    }

    pub fn delete_tree(&self, id: &TreeId) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM trees WHERE hash = ?1")
            .and_then(|mut st| st.execute([id.as_bytes()]))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    // ---- snapshots ----

    pub fn insert_snapshot(&self, s: &Snapshot) -> Result<()> {
        let json = |v: &dyn erased::Json| v.to_json();
        self.conn
            .execute(
                "INSERT INTO snapshots(hash, time_ns, host, source, root, parent, tags, labels,
                                       complete, pinned, unreadable, stats, root_meta)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    s.id.as_bytes(),
                    s.time_ns,
                    s.host,
                    s.source.as_os_str().as_bytes(),
                    s.root.as_bytes(),
                    s.parent.as_ref().map(|p| p.as_bytes().to_vec()),
                    json(&s.tags),
                    json(&s.labels),
                    s.complete,
                    s.pinned,
                    json(&s.unreadable),
                    json(&s.stats),
                    json(&RootRecord {
                        meta: s.root_meta,
                        sources: s.sources.clone(),
                    }),
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        self.query_snapshots("SELECT hash, time_ns, host, source, root, parent, tags, labels, complete, pinned, unreadable, stats, root_meta FROM snapshots ORDER BY time_ns, id", [])
    }

    /// The newest snapshot of `source`, the parent for change detection.
    pub fn latest_snapshot_of(&self, source: &Path) -> Result<Option<Snapshot>> {
        Ok(self
            .query_snapshots(
                "SELECT hash, time_ns, host, source, root, parent, tags, labels, complete, pinned, unreadable, stats, root_meta
                 FROM snapshots WHERE source = ?1 ORDER BY time_ns DESC, id DESC LIMIT 1",
                [source.as_os_str().as_bytes()],
            )?
            .pop())
    }

    fn query_snapshots<P: rusqlite::Params>(&self, sql: &str, p: P) -> Result<Vec<Snapshot>> {
        let f = || -> rusqlite::Result<Vec<Snapshot>> {
            let mut st = self.conn.prepare_cached(sql)?;
            let rows = st.query_map(p, |r| {
                let parse = |i: usize, s: String| {
                    rusqlite::Error::FromSqlConversionFailure(
                        i,
                        rusqlite::types::Type::Text,
                        s.into(),
                    )
                };
                let tags: String = r.get(6)?;
                let labels: String = r.get(7)?;
                let unreadable: String = r.get(10)?;
                let stats: String = r.get(11)?;
                let root_meta: String = r.get(12)?;
                let source: Vec<u8> = r.get(3)?;
                let parent: Option<Vec<u8>> = r.get(5)?;
                let record: RootRecord =
                    serde_json::from_str(&root_meta).map_err(|e| parse(12, e.to_string()))?;
                Ok(Snapshot {
                    id: blob_id(r.get(0)?, SnapshotId::from_slice)?,
                    time_ns: r.get(1)?,
                    host: r.get(2)?,
                    source: PathBuf::from(std::ffi::OsStr::from_bytes(&source)),
                    root: blob_id(r.get(4)?, TreeId::from_slice)?,
                    parent: match parent {
                        Some(p) => Some(blob_id(p, SnapshotId::from_slice)?),
                        None => None,
                    },
                    tags: serde_json::from_str(&tags).map_err(|e| parse(6, e.to_string()))?,
                    labels: serde_json::from_str(&labels).map_err(|e| parse(7, e.to_string()))?,
                    complete: r.get(8)?,
                    pinned: r.get(9)?,
                    unreadable: serde_json::from_str(&unreadable)
                        .map_err(|e| parse(10, e.to_string()))?,
                    stats: serde_json::from_str::<SnapshotStats>(&stats)
                        .map_err(|e| parse(11, e.to_string()))?,
                    root_meta: record.meta,
                    sources: record.sources,
                })
            })?;
            rows.collect()
        };
        f().map_err(|e| self.err(e))
    }

    pub fn delete_snapshot(&self, id: &SnapshotId) -> Result<bool> {
        self.conn
            .execute("DELETE FROM snapshots WHERE hash = ?1", [id.as_bytes()])
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    pub fn set_tags(&self, id: &SnapshotId, tags: &[String]) -> Result<bool> {
        self.conn
            .execute(
                "UPDATE snapshots SET tags = ?2 WHERE hash = ?1",
                params![
                    id.as_bytes(),
                    serde_json::to_string(tags).expect("strings serialize")
                ],
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    pub fn set_pinned(&self, id: &SnapshotId, pinned: bool) -> Result<bool> {
        self.conn
            .execute(
                "UPDATE snapshots SET pinned = ?2 WHERE hash = ?1",
                params![id.as_bytes(), pinned],
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// Note that the change record `name` (under changes/) is reflected.
    pub fn mark_applied(&self, name: &str) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO applied_changes(name) VALUES (?1)")
            .and_then(|mut st| st.execute([name]))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn applied_changes(&self) -> Result<std::collections::HashSet<String>> {
        let f = || -> rusqlite::Result<std::collections::HashSet<String>> {
            let mut st = self.conn.prepare("SELECT name FROM applied_changes")?;
            st.query_map([], |r| r.get(0))?.collect()
        };
        f().map_err(|e| self.err(e))
    }

    /// Run a full integrity check of the SQLite file itself.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let f = || -> rusqlite::Result<Vec<String>> {
            let mut st = self.conn.prepare("PRAGMA integrity_check")?;
            st.query_map([], |r| r.get::<_, String>(0))?.collect()
        };
        let rows = f().map_err(|e| self.err(e))?;
        Ok(if rows == ["ok"] { Vec::new() } else { rows })
    }
}

mod erased {
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).expect("plain data serializes")
        }
    }
}
