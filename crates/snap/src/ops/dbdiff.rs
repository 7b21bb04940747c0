//! What changed inside a SQLite database between two images (`snap diff
//! --db`): the schema (tables, columns, indexes, views, triggers added,
//! removed or altered; `user_version` and journal mode before and after)
//! and, per table, the rows inserted, deleted and updated, matched by
//! primary key (by rowid where a table declares none).
//!
//! Both images are private copies in a scratch directory (the snapshot's
//! bytes, or the live database read through SQLite's backup API): nothing
//! opens the source or writes to it. They are attached to one connection
//! and compared with SQL: counts by anti-joins and joins on the key, rows
//! compared as row values with `IS NOT` (so NULL equals NULL). A hostile
//! image runs no code of its own: views and triggers are never queried,
//! virtual tables are skipped, and `trusted_schema` is off.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Entry, flags};

/// Files that may be databases whose content changed: modified files,
/// and the main file of every changed `-wal` or `-journal`.
pub fn database_candidates(diffs: &[crate::ops::diff::Difference]) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut out: Vec<PathBuf> = Vec::new();
    for d in diffs {
        if d.kind != crate::tree::Kind::File {
            continue;
        }
        let name = d.path.as_os_str().as_bytes();
        match crate::sqlite::sidecar_base(name) {
            Some(base) => out.push(PathBuf::from(std::ffi::OsStr::from_bytes(base))),
            None if d.change == crate::ops::diff::Change::Modified => out.push(d.path.clone()),
            None => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Where the "after" side of a database comparison comes from.
#[derive(Clone, Copy)]
pub enum After<'a> {
    /// The file in another snapshot.
    Snapshot(&'a Snapshot),
    /// The live file in the source directories of the "before" snapshot,
    /// read through SQLite's backup API (one committed transaction).
    Source,
}

/// What changed inside the file at `rel` (a path in the snapshots) when
/// it is a SQLite database on both sides; `None` when it is not one on
/// either side. Both images are made in a private scratch directory,
/// removed on return.
pub fn diff_database_at(
    repo: &Repository,
    rel: &Path,
    before: &Snapshot,
    after: After<'_>,
    rows: usize,
) -> Result<Option<DbDiff>> {
    let scratch = tempfile::Builder::new()
        .prefix("snap-dbdiff-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let a = scratch.path().join("before.db");
    let b = scratch.path().join("after.db");
    let Some(entry_a) = image_from_snapshot(repo, before, rel, &a, None)? else {
        return Ok(None);
    };
    let changed = match after {
        After::Snapshot(s) => match image_from_snapshot(repo, s, rel, &b, Some((&entry_a, &a)))? {
            None => return Ok(None),
            Some(entry_b) => {
                let header = crate::sqlite::read_header(&a, None).unwrap_or([0; 100]);
                let page = crate::sqlite::page_size(&header).unwrap_or(0);
                match changed_pages(&entry_a, &entry_b, page) {
                    Some(candidates) => Some(differing_pages(&a, &b, page, candidates)?),
                    None => None,
                }
            }
        },
        After::Source if image_from_source(before, rel, &b)? => None,
        After::Source => return Ok(None),
    };
    // The images' scratch names mean nothing to the user: name the file.
    compare_images(&a, &b, rows, changed.as_ref())
        .map(Some)
        .map_err(|e| match e {
            Error::Damaged { path, reason } => Error::Damaged {
                path: rel.to_path_buf(),
                reason: format!(
                    "{} image: {reason}",
                    if path == a { "the older" } else { "the newer" }
                ),
            },
            e => e,
        })
}

/// Write the database at `rel` in `s` to `image` (with its `-wal` when
/// the snapshot holds the file as plain bytes beside one); its entry, or
/// `None` when it is not a SQLite database.
fn image_from_snapshot(
    repo: &Repository,
    s: &Snapshot,
    rel: &Path,
    image: &Path,
    like: Option<(&Entry, &Path)>,
) -> Result<Option<Entry>> {
    let Some((e, _)) = crate::ops::ls::lookup(repo, s, rel)? else {
        return Ok(None);
    };
    if e.kind != crate::tree::Kind::File
        || !crate::sqlite::is_database_header(&crate::ops::dump::read_head(repo, &e, 100)?)
    {
        return Ok(None);
    }
    let write = |e: &crate::tree::Entry, to: &Path| -> Result<()> {
        let mut f = std::fs::File::create(to).at(to)?;
        crate::ops::dump::dump_file(repo, e, &mut f)?;
        Ok(())
    };
    match like {
        // Worth it when most chunks are shared (a copy of the other image
        // costs a pass of its own).
        Some((other, other_image))
            if e.has_flag(flags::SQLITE_IMAGE)
                && other.has_flag(flags::SQLITE_IMAGE)
                && shared_chunks(other, &e) * 2 > e.chunks().len() =>
        {
            patch_image(repo, other, other_image, &e, image)?
        }
        _ => write(&e, image)?,
    }
    if !e.has_flag(flags::SQLITE_IMAGE) {
        let mut wal = rel.as_os_str().to_owned();
        wal.push("-wal");
        if let Some((w, _)) = crate::ops::ls::lookup(repo, s, Path::new(&wal))?
            && w.kind == crate::tree::Kind::File
        {
            let mut to = image.as_os_str().to_owned();
            to.push("-wal");
            write(&w, Path::new(&to))?;
        }
    }
    Ok(Some(e))
}

/// How many chunks of `e` are `other`'s at the same place.
fn shared_chunks(other: &Entry, e: &Entry) -> usize {
    e.chunks()
        .iter()
        .zip(other.chunks())
        .filter(|(x, y)| x == y)
        .count()
}

/// Write the image of `e` as a copy of `other`'s image with the chunks
/// that differ replaced: both are stored in fixed chunks of
/// [`crate::sqlite::IMAGE_CHUNK`] bytes, so a migration that changed a
/// few pages of a large database reads those chunks only.
fn patch_image(
    repo: &Repository,
    other: &Entry,
    other_image: &Path,
    e: &Entry,
    image: &Path,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    std::fs::copy(other_image, image).at(image)?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .at(image)?;
    let mut reader = crate::repo::ChunkReader::new(repo.storage().clone());
    for (i, id) in e.chunks().iter().enumerate() {
        if other.chunks().get(i) == Some(id) {
            continue;
        }
        let loc = repo.require_chunk_location(id)?;
        let data = reader.read(id, &loc, repo)?;
        f.write_all_at(&data, (i * crate::sqlite::IMAGE_CHUNK) as u64)
            .at(image)?;
    }
    f.set_len(e.size).at(image)?;
    Ok(())
}

/// The pages (numbered from 1) that may differ between two images of a
/// database stored as SQLite images (in fixed chunks of
/// [`crate::sqlite::IMAGE_CHUNK`] bytes, whole pages each): those in chunks
/// whose ids differ. `None` when either is not stored that way.
fn changed_pages(a: &Entry, b: &Entry, page_size: usize) -> Option<HashSet<u32>> {
    let image = |e: &Entry| e.has_flag(flags::SQLITE_IMAGE);
    let chunk = crate::sqlite::IMAGE_CHUNK;
    if !image(a) || !image(b) || page_size == 0 || !chunk.is_multiple_of(page_size) {
        return None;
    }
    let per_chunk = (chunk / page_size) as u32;
    let (ca, cb) = (a.chunks(), b.chunks());
    let mut out = HashSet::new();
    for i in 0..ca.len().max(cb.len()) {
        if ca.get(i) != cb.get(i) {
            let first = i as u32 * per_chunk + 1;
            out.extend(first..first + per_chunk);
        }
    }
    Some(out)
}

/// Of the `candidates` (pages in chunks that differ), those whose bytes
/// differ between the two images: a chunk holds 16 pages of 4 KiB, and
/// the first always changes (page 1 counts every commit).
fn differing_pages(
    a: &Path,
    b: &Path,
    page_size: usize,
    candidates: HashSet<u32>,
) -> Result<HashSet<u32>> {
    use std::os::unix::fs::FileExt;
    let open = |p: &Path| std::fs::File::open(p).at(p);
    let (fa, fb) = (open(a)?, open(b)?);
    let (mut pa, mut pb) = (vec![0u8; page_size], vec![0u8; page_size]);
    let mut out = HashSet::new();
    for page in candidates {
        let at = (page as u64 - 1) * page_size as u64;
        let ra = fa.read_exact_at(&mut pa, at).is_ok();
        let rb = fb.read_exact_at(&mut pb, at).is_ok();
        if ra != rb || (ra && pa != pb) {
            out.insert(page);
        }
    }
    Ok(out)
}

/// Capture the live database at `rel` under `s`'s sources into `image`;
/// false when there is no database there now.
fn image_from_source(s: &Snapshot, rel: &Path, image: &Path) -> Result<bool> {
    let live = live_path(s, rel);
    if !crate::sqlite::is_database_file(&live, None) {
        return Ok(false);
    }
    crate::sqlite::capture(&live, image, false, None).map_err(|reason| Error::Damaged {
        path: live.clone(),
        reason: format!("cannot read the database: {reason}"),
    })?;
    Ok(true)
}

/// Where path `rel` of snapshot `s` lives in its source directories.
fn live_path(s: &Snapshot, rel: &Path) -> PathBuf {
    if !s.is_multi_source() {
        return s.source.join(rel);
    }
    let mut parts = rel.components();
    let name = parts
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    match s.sources.iter().find(|r| Some(&r.name) == name.as_ref()) {
        Some(r) => PathBuf::from(&r.path).join(parts.as_path()),
        None => s.source.join(rel),
    }
}

/// A database before and after.
#[derive(Debug, Clone, Serialize)]
pub struct DbDiff {
    pub before: DbFacts,
    pub after: DbFacts,
    /// Schema objects added, removed or altered.
    pub schema: Vec<SchemaChange>,
    /// Tables in both images whose rows differ (tables added or removed
    /// are in `schema`, with their row counts there).
    pub tables: Vec<TableChanges>,
    /// Tables not compared row by row because their pages
    /// are the same pages, unchanged (known between two snapshots of a
    /// database stored as SQLite images).
    pub tables_proven_unchanged: u64,
}

impl DbDiff {
    pub fn is_empty(&self) -> bool {
        self.schema.is_empty()
            && self.tables.is_empty()
            && self.before.user_version == self.after.user_version
            && self.before.journal_mode == self.after.journal_mode
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DbFacts {
    pub user_version: i64,
    /// `wal` or `rollback` (from the header: how the app opened it last).
    pub journal_mode: String,
    pub page_size: i64,
    pub pages: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SchemaChange {
    /// `added`, `removed` or `altered`.
    pub change: &'static str,
    /// `table`, `index`, `view` or `trigger`.
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql_after: Option<String>,
    /// An altered table's columns added and removed (by name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns_added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns_removed: Vec<String>,
    /// The rows of a table added or removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableChanges {
    pub table: String,
    /// How rows are matched: `rowid`, or `primary key (a, b)`.
    pub key: String,
    pub rows_before: i64,
    pub rows_after: i64,
    pub inserted: i64,
    pub deleted: i64,
    pub updated: i64,
    /// Columns compared for updates: those in both images (an altered
    /// table's added or removed columns are not).
    pub compared_columns: Vec<String>,
    /// Up to the `rows` asked for of each change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed_rows: Vec<RowChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RowChange {
    /// `inserted`, `deleted` or `updated`.
    pub change: &'static str,
    /// The key's values.
    pub key: Vec<serde_json::Value>,
    /// Inserted or deleted: every compared column's value. Updated: the
    /// columns that changed, each `[before, after]`.
    pub columns: BTreeMap<String, serde_json::Value>,
}

/// Compare the database images `before` and `after` (private copies the
/// caller owns); list up to `rows` changed rows per table and change.
pub fn diff_databases(before: &Path, after: &Path, rows: usize) -> Result<DbDiff> {
    compare_images(before, after, rows, None)
}

/// `diff_databases`, skipping the tables `changed` (the pages that may
/// differ, when known) proves unchanged: a table whose b-tree (interior,
/// leaf and overflow pages, as `dbstat` lists them) is the same set of
/// pages in both images, none of them changed, holds the same rows.
fn compare_images(
    before: &Path,
    after: &Path,
    rows: usize,
    changed: Option<&HashSet<u32>>,
) -> Result<DbDiff> {
    let conn = Connection::open_in_memory_with_flags(
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_error(before, e))?;
    conn.execute_batch("PRAGMA trusted_schema = OFF")
        .map_err(|e| sql_error(before, e))?;
    for (alias, path) in [("a", before), ("b", after)] {
        conn.execute(
            &format!("ATTACH DATABASE ?1 AS {alias}"),
            [path.to_string_lossy()],
        )
        .map_err(|e| sql_error(path, e))?;
    }
    let facts = |alias: &str, path: &Path| -> Result<DbFacts> {
        let pragma = |name: &str| -> Result<i64> {
            conn.query_row(&format!("PRAGMA {alias}.{name}"), [], |r| r.get(0))
                .map_err(|e| sql_error(path, e))
        };
        let header = crate::sqlite::read_header(path, None).unwrap_or([0; 100]);
        Ok(DbFacts {
            user_version: pragma("user_version")?,
            journal_mode: if header[18] == 2 { "wal" } else { "rollback" }.into(),
            page_size: pragma("page_size")?,
            pages: pragma("page_count")?,
        })
    };
    let mut diff = DbDiff {
        before: facts("a", before)?,
        after: facts("b", after)?,
        schema: Vec::new(),
        tables: Vec::new(),
        tables_proven_unchanged: 0,
    };
    let db = Attached {
        conn: &conn,
        before,
        after,
    };
    let (old, new) = (db.objects("a")?, db.objects("b")?);
    for ((kind, name), sql) in &old {
        match new.get(&(kind.clone(), name.clone())) {
            None => diff.schema.push(SchemaChange {
                rows: (kind == "table").then(|| db.count("a", name)).transpose()?,
                ..schema_change("removed", kind, name, Some(sql), None)
            }),
            Some(after_sql) if after_sql != sql => {
                let mut c = schema_change("altered", kind, name, Some(sql), Some(after_sql));
                if kind == "table" {
                    let (a, b) = (db.columns("a", name)?, db.columns("b", name)?);
                    c.columns_added = b.iter().filter(|n| !a.contains(n)).cloned().collect();
                    c.columns_removed = a.iter().filter(|n| !b.contains(n)).cloned().collect();
                }
                diff.schema.push(c);
            }
            Some(_) => {}
        }
    }
    for ((kind, name), sql) in &new {
        if !old.contains_key(&(kind.clone(), name.clone())) {
            diff.schema.push(SchemaChange {
                rows: (kind == "table").then(|| db.count("b", name)).transpose()?,
                ..schema_change("added", kind, name, None, Some(sql))
            });
        }
    }
    let pages = match changed {
        Some(ch) => Some((db.table_pages("a")?, db.table_pages("b")?, ch)),
        None => None,
    };
    for ((kind, name), sql) in &old {
        let in_both = new.get(&(kind.clone(), name.clone()));
        if kind == "table"
            && let Some((pa, pb, ch)) = &pages
            && let (Some(x), Some(y)) = (pa.get(name), pb.get(name))
            && x == y
            && !x.iter().any(|p| ch.contains(p))
        {
            diff.tables_proven_unchanged += 1;
            continue;
        }
        if kind == "table" && !is_virtual(sql) && in_both.is_some_and(|s| !is_virtual(s)) {
            let t = db.table_changes(name, sql, in_both.expect("in both"), rows)?;
            if t.inserted + t.deleted + t.updated > 0 {
                diff.tables.push(t);
            }
        }
    }
    Ok(diff)
}

fn schema_change(
    change: &'static str,
    kind: &str,
    name: &str,
    before: Option<&String>,
    after: Option<&String>,
) -> SchemaChange {
    SchemaChange {
        change,
        kind: kind.to_string(),
        name: name.to_string(),
        sql_before: before.cloned(),
        sql_after: after.cloned(),
        columns_added: Vec::new(),
        columns_removed: Vec::new(),
        rows: None,
    }
}

fn is_virtual(sql: &str) -> bool {
    sql.trim_start()
        .get(..20)
        .is_some_and(|s| s.eq_ignore_ascii_case("CREATE VIRTUAL TABLE"))
}

fn without_rowid(sql: &str) -> bool {
    let s = sql.to_ascii_uppercase();
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.contains("WITHOUT ROWID")
}

fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::Damaged {
        path: path.to_path_buf(),
        reason: format!("cannot compare the database: {e}"),
    }
}

/// An identifier quoted for SQL.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The two images, attached as `a` (before) and `b` (after).
struct Attached<'c> {
    conn: &'c Connection,
    before: &'c Path,
    after: &'c Path,
}

impl Attached<'_> {
    fn path(&self, alias: &str) -> &Path {
        if alias == "a" {
            self.before
        } else {
            self.after
        }
    }

    fn err(&self, alias: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
        let path = self.path(alias).to_path_buf();
        move |e| sql_error(&path, e)
    }

    /// Schema objects but SQLite's own: (kind, name) → sql.
    fn objects(&self, alias: &str) -> Result<BTreeMap<(String, String), String>> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT type, name, coalesce(sql, '') FROM {alias}.sqlite_master \
                 WHERE name NOT LIKE 'sqlite_%'"
            ))
            .map_err(self.err(alias))?;
        let rows = st
            .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
            .map_err(self.err(alias))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(self.err(alias))
    }

    /// A table's columns, in order, and its declared primary key's.
    fn columns_and_key(&self, alias: &str, table: &str) -> Result<(Vec<String>, Vec<String>)> {
        let mut st = self
            .conn
            .prepare(&format!("PRAGMA {alias}.table_info({})", quote(table)))
            .map_err(self.err(alias))?;
        let rows: Vec<(String, i64)> = st
            .query_map([], |r| Ok((r.get(1)?, r.get(5)?)))
            .map_err(self.err(alias))?
            .collect::<rusqlite::Result<_>>()
            .map_err(self.err(alias))?;
        let mut key: Vec<(i64, String)> = rows
            .iter()
            .filter(|(_, pk)| *pk > 0)
            .map(|(n, pk)| (*pk, n.clone()))
            .collect();
        key.sort();
        Ok((
            rows.into_iter().map(|(n, _)| n).collect(),
            key.into_iter().map(|(_, n)| n).collect(),
        ))
    }

    fn columns(&self, alias: &str, table: &str) -> Result<Vec<String>> {
        Ok(self.columns_and_key(alias, table)?.0)
    }

    /// The pages of each b-tree (table or index), sorted: one pass of
    /// `dbstat` over the image.
    fn table_pages(&self, alias: &str) -> Result<BTreeMap<String, Vec<u32>>> {
        let mut st = self
            .conn
            .prepare("SELECT name, pageno FROM dbstat(?1)")
            .map_err(self.err(alias))?;
        let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let rows = st
            .query_map([alias], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
            })
            .map_err(self.err(alias))?;
        for r in rows {
            let (name, page) = r.map_err(self.err(alias))?;
            out.entry(name).or_default().push(page);
        }
        out.values_mut().for_each(|v| v.sort_unstable());
        Ok(out)
    }

    fn count(&self, alias: &str, table: &str) -> Result<i64> {
        self.conn
            .query_row(
                &format!("SELECT count(*) FROM {alias}.{}", quote(table)),
                [],
                |r| r.get(0),
            )
            .map_err(self.err(alias))
    }

    /// How rows of a table in both images are matched, and which columns
    /// are compared: the declared key when both images declare the same
    /// one, the rowid otherwise (a table WITHOUT ROWID always declares
    /// one); the other columns both images have.
    fn match_columns(
        &self,
        table: &str,
        sql_before: &str,
        sql_after: &str,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let (cols_a, key_a) = self.columns_and_key("a", table)?;
        let (cols_b, key_b) = self.columns_and_key("b", table)?;
        let key: Vec<String> = if !key_a.is_empty() && key_a == key_b {
            key_a
        } else if without_rowid(sql_before) || without_rowid(sql_after) {
            return Err(Error::Damaged {
                path: self.after.to_path_buf(),
                reason: format!(
                    "table {table}: its primary key changed and it has no rowid: rows cannot be matched"
                ),
            });
        } else {
            vec!["rowid".into()]
        };
        let compared = cols_a
            .into_iter()
            .filter(|c| cols_b.contains(c) && !key.contains(c))
            .collect();
        Ok((key, compared))
    }

    /// Rows inserted, deleted and updated in a table of both images.
    fn table_changes(
        &self,
        table: &str,
        sql_before: &str,
        sql_after: &str,
        rows: usize,
    ) -> Result<TableChanges> {
        let (key, compared) = self.match_columns(table, sql_before, sql_after)?;
        let t = quote(table);
        let on = key
            .iter()
            .map(|k| format!("x.{k} IS y.{k}", k = quote_key(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let differs = if compared.is_empty() {
            "0".to_string()
        } else {
            let list = |side: &str| {
                compared
                    .iter()
                    .map(|c| format!("{side}.{}", quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!("({}) IS NOT ({})", list("x"), list("y"))
        };
        let only_in = |this: &str, other: &str| {
            format!(
                "FROM {this}.{t} AS y WHERE NOT EXISTS (SELECT 1 FROM {other}.{t} AS x WHERE {on})"
            )
        };
        let inserted_from = only_in("b", "a");
        let deleted_from = only_in("a", "b");
        let updated_from = format!("FROM a.{t} AS x JOIN b.{t} AS y ON {on} WHERE {differs}");
        let count = |from: &str| -> Result<i64> {
            self.conn
                .query_row(&format!("SELECT count(*) {from}"), [], |r| r.get(0))
                .map_err(self.err("b"))
        };
        let mut out = TableChanges {
            table: table.to_string(),
            key: if key == ["rowid"] {
                "rowid".into()
            } else {
                format!("primary key ({})", key.join(", "))
            },
            rows_before: self.count("a", table)?,
            rows_after: self.count("b", table)?,
            inserted: count(&inserted_from)?,
            deleted: count(&deleted_from)?,
            updated: count(&updated_from)?,
            compared_columns: compared.clone(),
            changed_rows: Vec::new(),
        };
        if rows > 0 {
            let keys = |side: &str| {
                key.iter()
                    .map(|k| format!("{side}.{}", quote_key(k)))
                    .collect::<Vec<_>>()
            };
            let vals = |side: &str| {
                compared
                    .iter()
                    .map(|c| format!("{side}.{}", quote(c)))
                    .collect::<Vec<_>>()
            };
            let mut sel = keys("y");
            sel.extend(vals("y"));
            let q = RowQuery {
                key: &key,
                compared: &compared,
                limit: rows,
            };
            q.list(self, &mut out, "inserted", &sel, &inserted_from)?;
            q.list(self, &mut out, "deleted", &sel, &deleted_from)?;
            let mut sel = keys("x");
            sel.extend(vals("x"));
            sel.extend(vals("y"));
            q.list(self, &mut out, "updated", &sel, &updated_from)?;
        }
        Ok(out)
    }
}

/// How changed rows of one table are listed.
struct RowQuery<'q> {
    key: &'q [String],
    compared: &'q [String],
    limit: usize,
}

impl RowQuery<'_> {
    /// Up to `limit` rows of one change, selected as `sel` from `from`:
    /// the key, then the compared columns (for updates twice: before, after).
    fn list(
        &self,
        db: &Attached<'_>,
        out: &mut TableChanges,
        change: &'static str,
        sel: &[String],
        from: &str,
    ) -> Result<()> {
        let (key, compared) = (self.key, self.compared);
        let mut st = db
            .conn
            .prepare(&format!(
                "SELECT {} {from} LIMIT {}",
                sel.join(", "),
                self.limit
            ))
            .map_err(db.err("b"))?;
        let mut rs = st.query([]).map_err(db.err("b"))?;
        while let Some(r) = rs.next().map_err(db.err("b"))? {
            let v = |i: usize| {
                r.get_ref(i)
                    .map(json_value)
                    .unwrap_or(serde_json::Value::Null)
            };
            let mut row = RowChange {
                change,
                key: (0..key.len()).map(v).collect(),
                columns: BTreeMap::new(),
            };
            for (i, c) in compared.iter().enumerate() {
                let at = key.len() + i;
                if change == "updated" {
                    let (old, new) = (v(at), v(at + compared.len()));
                    if old != new {
                        row.columns.insert(c.clone(), serde_json::json!([old, new]));
                    }
                } else {
                    row.columns.insert(c.clone(), v(at));
                }
            }
            out.changed_rows.push(row);
        }
        Ok(())
    }
}

/// A key column for SQL: `rowid` as itself, a declared column quoted.
fn quote_key(k: &str) -> String {
    if k == "rowid" { k.into() } else { quote(k) }
}

/// A SQLite value as JSON: a blob as `{"blob": HEX}` (its first 64 bytes,
/// and its length).
fn json_value(v: ValueRef<'_>) -> serde_json::Value {
    match v {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => f.into(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => serde_json::json!({
            "blob": crate::objects::hex(&b[..b.len().min(64)]),
            "bytes": b.len(),
        }),
    }
}
