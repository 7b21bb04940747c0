//! The chunks a `create` has claimed: new in this run, and stored (or on
//! their way into a pack) by the reader that saw them first. The index
//! cannot answer for them: their rows are written in the run's one
//! transaction, which the readers' own connections do not see before the
//! commit.
//!
//! Memory stays bounded whatever the number of new chunks. Up to
//! [`IN_MEMORY`] ids are held in a hash set; when it is full they move,
//! sorted, into a temporary SQLite database in the repository's `tmp/`
//! (writable wherever snap runs, unlike a system temporary directory on a
//! phone), which a lookup consults after the set. A million new
//! chunks held in a set took 69 MB (and twice that while it grew); held
//! this way they take at most about 9 MB of set plus the database's cache.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{Connection, params};
use tempfile::TempPath;

use crate::error::{Error, Result};
use crate::id::ChunkId;

/// Ids held in memory before they move to disk: just under 7/8 of 2^18,
/// so the set never grows past 2^18 buckets (about 9 MB).
pub const IN_MEMORY: usize = 229_000;

/// Page cache of the spilled ids' database.
const SPILL_CACHE_KIB: i64 = 8192;

pub struct Claims {
    inner: Mutex<Inner>,
    limit: usize,
}

struct Inner {
    recent: HashSet<ChunkId>,
    /// Where the database goes, named with `prefix`.
    dir: PathBuf,
    prefix: &'static str,
    /// The ids moved out of `recent`, once there were too many; the file
    /// is removed when this is dropped (and, after a crash, by the next
    /// run's cleanup of `tmp/`).
    spilled: Option<(Connection, TempPath)>,
}

impl Claims {
    /// A set whose overflow goes to a file in `dir` named with `prefix`.
    pub fn new(dir: PathBuf, prefix: &'static str) -> Claims {
        Claims::with_limit(dir, prefix, IN_MEMORY)
    }

    /// At most `limit` ids in memory (tests use a small one).
    pub fn with_limit(dir: PathBuf, prefix: &'static str, limit: usize) -> Claims {
        Claims {
            inner: Mutex::new(Inner {
                recent: HashSet::new(),
                dir,
                prefix,
                spilled: None,
            }),
            limit: limit.max(1),
        }
    }

    /// The indices of `ids` this call claims: those nobody claimed before
    /// and that `stored` (the index as committed) does not know, each id
    /// once even when `ids` repeats it. One lock for the whole batch, so
    /// two readers never both claim a chunk.
    pub fn claim(
        &self,
        ids: &[ChunkId],
        mut stored: impl FnMut(&ChunkId) -> Result<bool>,
    ) -> Result<Vec<usize>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if inner.holds(id)? || stored(id)? {
                continue;
            }
            inner.recent.insert(*id);
            fresh.push(i);
            if inner.recent.len() >= self.limit {
                inner.spill()?;
            }
        }
        Ok(fresh)
    }

    /// Ids claimed so far.
    #[cfg(test)]
    pub fn len(&self) -> Result<u64> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let on_disk = match &inner.spilled {
            Some((db, _)) => db
                .query_row("SELECT count(*) FROM claimed", [], |r| r.get::<_, i64>(0))
                .map_err(spill_error)? as u64,
            None => 0,
        };
        Ok(inner.recent.len() as u64 + on_disk)
    }

    /// Whether some ids live on disk.
    #[cfg(test)]
    pub fn spilled(&self) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.spilled.is_some()
    }
}

impl Inner {
    fn holds(&self, id: &ChunkId) -> Result<bool> {
        if self.recent.contains(id) {
            return Ok(true);
        }
        let Some((db, _)) = &self.spilled else {
            return Ok(false);
        };
        let mut st = db
            .prepare_cached("SELECT 1 FROM claimed WHERE id = ?1")
            .map_err(spill_error)?;
        st.exists(params![id.as_bytes()]).map_err(spill_error)
    }

    /// Move every id of `recent` to the database, in key order (appends
    /// to the B-tree's pages instead of touching random ones).
    fn spill(&mut self) -> Result<()> {
        if self.spilled.is_none() {
            self.spilled = Some(open_spill(&self.dir, self.prefix)?);
        }
        let (db, _) = self.spilled.as_mut().expect("opened above");
        let mut ids: Vec<ChunkId> = self.recent.drain().collect();
        ids.sort_unstable();
        let tx = db.transaction().map_err(spill_error)?;
        {
            let mut st = tx
                .prepare_cached("INSERT OR IGNORE INTO claimed(id) VALUES (?1)")
                .map_err(spill_error)?;
            for id in &ids {
                st.execute(params![id.as_bytes()]).map_err(spill_error)?;
            }
        }
        tx.commit().map_err(spill_error)
    }
}

/// A new database file in `dir`. Nothing in it needs to survive a crash:
/// no journal, no syncs.
fn open_spill(dir: &std::path::Path, prefix: &str) -> Result<(Connection, TempPath)> {
    let path = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".claims")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?
        .into_temp_path();
    let open = || -> rusqlite::Result<Connection> {
        let db = Connection::open(&path)?;
        db.pragma_update(None, "journal_mode", "OFF")?;
        db.pragma_update(None, "synchronous", "OFF")?;
        db.pragma_update(None, "cache_size", -SPILL_CACHE_KIB)?;
        db.execute_batch("CREATE TABLE claimed (id BLOB PRIMARY KEY) WITHOUT ROWID")?;
        Ok(db)
    };
    let db = open().map_err(|e| {
        Error::internal(
            "create",
            format!(
                "{}: the temporary set of chunks new in this run: {e}",
                path.display()
            ),
        )
    })?;
    Ok((db, path))
}

fn spill_error(e: rusqlite::Error) -> Error {
    Error::internal(
        "create",
        format!("the temporary set of chunks new in this run failed: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ChunkId {
        ChunkId(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    #[test]
    fn each_id_is_claimed_once_across_a_spill() {
        let dir = tempfile::tempdir().unwrap();
        let claims = Claims::with_limit(dir.path().into(), ".tmp-", 5);
        let first: Vec<ChunkId> = (0..12).map(id).collect();
        assert_eq!(
            claims.claim(&first, |_| Ok(false)).unwrap(),
            (0..12).collect::<Vec<_>>()
        );
        assert!(
            claims.spilled(),
            "12 ids over a limit of 5 must reach the disk"
        );
        assert_eq!(claims.len().unwrap(), 12);
        // Old ids (on disk and in memory) are not claimed again, new ones
        // are, and a repeat inside one batch counts once.
        let again: Vec<ChunkId> = [0, 11, 12, 3, 12, 13].into_iter().map(id).collect();
        assert_eq!(claims.claim(&again, |_| Ok(false)).unwrap(), vec![2, 5]);
        assert_eq!(claims.len().unwrap(), 14);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(claims);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the spilled ids' file outlived the set"
        );
    }

    #[test]
    fn stored_ids_are_not_claimed_and_errors_pass_through() {
        let dir = tempfile::tempdir().unwrap();
        let claims = Claims::with_limit(dir.path().into(), ".tmp-", 2);
        let ids: Vec<ChunkId> = (0..4).map(id).collect();
        let stored = id(1);
        assert_eq!(
            claims.claim(&ids, |c| Ok(*c == stored)).unwrap(),
            vec![0, 2, 3]
        );
        let err = claims
            .claim(&[id(9)], |_| Err(Error::usage("index gone")))
            .unwrap_err();
        assert!(err.to_string().contains("index gone"), "{err}");
        assert_eq!(claims.len().unwrap(), 3);
    }
}
