//! `snap diff A [B] [--verify] [--json]`

use std::io::Write;

use serde_json::json;

use crate::cli::{DiffArgs, human_bytes};
use snap::lock::LockMode;
use snap::ops::diff::{DiffSummary, diff_snapshots, diff_source};

pub fn run(
    repo: &Option<std::path::PathBuf>,
    args: DiffArgs,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let repo = crate::open_repo_read_only(repo, Some(LockMode::Shared))?;
    let a = repo.find_snapshot(&args.from)?;
    let diffs = match &args.to {
        Some(b) => diff_snapshots(&repo, &a, &repo.find_snapshot(b)?)?,
        None => diff_source(&repo, &a, args.verify)?,
    };
    if args.json {
        let v: Vec<_> = diffs
            .iter()
            .map(|d| {
                crate::with_raw_path(
                    json!({
                        "path": super::lossy(&d.path),
                        "change": d.change,
                        "kind": format!("{:?}", d.kind).to_lowercase(),
                        "size_before": d.size_before,
                        "size_after": d.size_after,
                    }),
                    &d.path,
                )
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
