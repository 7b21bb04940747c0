//! `snap find PATTERN... [--snapshot ID]... [--json]`

use std::io::Write;

use serde_json::json;

use crate::cli::FindArgs;
use snap::ops::find::find;

pub fn run(
    repo: &Option<std::path::PathBuf>,
    args: FindArgs,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let repo = crate::open_repo_read_only(repo, None)?;
    let snapshots = if args.snapshots.is_empty() {
        repo.snapshots()?
    } else {
        args.snapshots
            .iter()
            .map(|s| repo.find_snapshot(s))
            .collect::<snap::Result<Vec<_>>>()?
    };
    let found = find(&repo, &snapshots, &args.patterns)?;
    if args.json {
        let v: Vec<_> = found
            .iter()
            .map(|f| {
                crate::with_raw_path(
                    json!({
                        "snapshot": f.snapshot.id.to_hex(),
                        "path": super::lossy(&f.path),
                        "kind": format!("{:?}", f.entry.kind).to_lowercase(),
                        "size": f.entry.size,
                        "mtime": snap::snapshot::format_time_ns(f.entry.mtime_ns),
                    }),
                    &f.path,
                )
            })
            .collect();
        serde_json::to_writer(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(0);
    }
    for f in &found {
        let slash = if f.entry.kind == snap::tree::Kind::Dir {
            "/"
        } else {
            ""
        };
        writeln!(
            out,
            "{}  {}  {:>10}  {}{slash}",
            f.snapshot.id.short(),
            snap::snapshot::format_time_ns(f.entry.mtime_ns),
            f.entry.size,
            crate::escape_path(&f.path)
        )?;
    }
    if found.is_empty() {
        eprintln!("no path matches in {} snapshot(s)", snapshots.len());
    }
    Ok(0)
}
