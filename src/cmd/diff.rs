//! `snap diff A [B] [--verify] [--db [--rows N]] [--json]`

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use crate::cli::{DiffArgs, human_bytes};
use snap::lock::LockMode;
use snap::ops::dbdiff::{After, DbDiff, database_candidates, diff_database_at};
use snap::ops::diff::{Change, DiffSummary, Difference, diff_snapshots, diff_source};

pub fn run(
    repo: &Option<std::path::PathBuf>,
    args: DiffArgs,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let repo = crate::open_repo_read_only(repo, Some(LockMode::Shared))?;
    let a = repo.find_snapshot(&args.from)?;
    let b = match &args.to {
        Some(b) => Some(repo.find_snapshot(b)?),
        None => None,
    };
    let mut diffs = match &b {
        Some(b) => diff_snapshots(&repo, &a, b)?,
        None => diff_source(&repo, &a, args.verify)?,
    };
    let mut databases: HashMap<PathBuf, DbDiff> = HashMap::new();
    let mut failed: Vec<(PathBuf, String)> = Vec::new();
    if args.db || args.rows.is_some() {
        let after = b.as_ref().map_or(After::Source, After::Snapshot);
        for path in database_candidates(&diffs) {
            let rows = args.rows.unwrap_or(0);
            let db = match diff_database_at(&repo, &path, &a, after, rows) {
                Ok(db) => db,
                // A damaged database is reported; the other files still are.
                Err(e @ snap::Error::Damaged { .. }) => {
                    eprintln!("snap: warning: cannot compare as a database: {e}");
                    failed.push((path.clone(), e.to_string()));
                    None
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(db) = db {
                if !diffs.iter().any(|d| d.path == path) {
                    // Only its -wal or -journal changed: the database did.
                    diffs.push(Difference {
                        path: path.clone(),
                        change: Change::Modified,
                        kind: snap::tree::Kind::File,
                        size_before: None,
                        size_after: None,
                    });
                }
                databases.insert(path, db);
            }
        }
        diffs.sort_by(|x, y| x.path.cmp(&y.path));
    }
    if args.json {
        let v: Vec<_> = diffs
            .iter()
            .map(|d| {
                let why = failed.iter().find(|(p, _)| *p == d.path);
                entry_json(d, databases.get(&d.path), why.map(|(_, w)| w.as_str()))
            })
            .collect();
        serde_json::to_writer(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(0);
    }
    for d in &diffs {
        let slash = if d.kind == snap::tree::Kind::Dir {
            "/"
        } else {
            ""
        };
        writeln!(
            out,
            "{}  {}{slash}",
            d.change.letter(),
            crate::escape_path(&d.path)
        )?;
        if let Some(db) = databases.get(&d.path) {
            print_database(out, db)?;
        }
    }
    let s = DiffSummary::of(&diffs);
    // The summary goes to stderr: stdout holds one line per changed path.
    eprintln!(
        "{} added, {} removed, {} modified, {} metadata only, {} changed type (+{}, -{})",
        s.added,
        s.removed,
        s.modified,
        s.metadata,
        s.type_changed,
        human_bytes(s.bytes_added),
        human_bytes(s.bytes_removed)
    );
    Ok(0)
}

/// One changed path as `diff --json` prints it (docs/schemas/diff.schema.json),
/// with its database's changes, or why they could not be computed.
pub(crate) fn entry_json(
    d: &Difference,
    db: Option<&DbDiff>,
    db_error: Option<&str>,
) -> serde_json::Value {
    let mut v = json!({
        "path": super::lossy(&d.path),
        "change": d.change,
        "kind": format!("{:?}", d.kind).to_lowercase(),
        "size_before": d.size_before,
        "size_after": d.size_after,
    });
    if let Some(db) = db {
        v["database"] = json!(db);
    }
    if let Some(why) = db_error {
        v["database_error"] = json!(why);
    }
    crate::with_raw_path(v, &d.path)
}

/// A database's changes, indented under its path.
fn print_database(out: &mut impl Write, db: &DbDiff) -> std::io::Result<()> {
    let (a, b) = (&db.before, &db.after);
    let arrow = |x: String, y: String| if x == y { x } else { format!("{x} -> {y}") };
    writeln!(
        out,
        "     SQLite: user_version {}, journal {}, {} pages of {} bytes",
        arrow(a.user_version.to_string(), b.user_version.to_string()),
        arrow(a.journal_mode.clone(), b.journal_mode.clone()),
        arrow(a.pages.to_string(), b.pages.to_string()),
        arrow(a.page_size.to_string(), b.page_size.to_string()),
    )?;
    for c in &db.schema {
        let sign = match c.change {
            "added" => '+',
            "removed" => '-',
            _ => '~',
        };
        let mut line = format!("     {sign} {} {}", c.kind, c.name);
        if let Some(rows) = c.rows {
            line += &format!(" ({rows} rows)");
        }
        for col in &c.columns_added {
            line += &format!(", + column {col}");
        }
        for col in &c.columns_removed {
            line += &format!(", - column {col}");
        }
        writeln!(out, "{line}")?;
    }
    for t in &db.tables {
        writeln!(
            out,
            "     table {}: {} inserted, {} deleted, {} updated (of {} rows, now {}; by {})",
            t.table, t.inserted, t.deleted, t.updated, t.rows_before, t.rows_after, t.key
        )?;
        for r in &t.changed_rows {
            let key: Vec<String> = r.key.iter().map(|k| k.to_string()).collect();
            let cols: Vec<String> = r
                .columns
                .iter()
                .map(|(c, v)| match (r.change, v) {
                    ("updated", serde_json::Value::Array(p)) if p.len() == 2 => {
                        format!("{c}: {} -> {}", p[0], p[1])
                    }
                    _ => format!("{c}: {v}"),
                })
                .collect();
            let sign = match r.change {
                "inserted" => '+',
                "deleted" => '-',
                _ => '~',
            };
            writeln!(
                out,
                "       {sign} [{}] {}",
                key.join(", "),
                cols.join(", ")
            )?;
        }
    }
    if db.is_empty() {
        writeln!(
            out,
            "     SQLite: the same rows and schema (only pages moved)"
        )?;
    }
    Ok(())
}
