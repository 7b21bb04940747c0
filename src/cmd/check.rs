//! `snap check`: the repository against its own files, and the report.

use crate::*;
use snap::ops::check::{CheckOptions, check};

pub fn check_command(
    cli_repo: &Option<PathBuf>,
    read_data: bool,
    json: bool,
    progress: &TermProgress,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let repo = open_repo_read_only(cli_repo, Some(LockMode::Shared))?;
    let report = check(&repo, &CheckOptions { read_data }, progress)?;
    progress.finish();
    if json {
        serde_json::to_writer_pretty(&mut *out, &with_requests(&repo, json!(report)))?;
        writeln!(out)?;
    } else {
        for p in &report.problems {
            match &p.pack {
                Some(pack) => writeln!(out, "damaged: pack {pack}: {}", p.what)?,
                None => writeln!(out, "damaged: {}", p.what)?,
            }
            for s in &p.snapshots {
                writeln!(out, "  affects snapshot {s}")?;
            }
            for path in &p.paths {
                writeln!(out, "  affects {path}")?;
            }
            if p.more_paths > 0 {
                writeln!(out, "  ... and {} more paths", p.more_paths)?;
            }
        }
        writeln!(
            out,
            "{}: {}, {}, {} referenced, {}{}{}",
            if report.is_sound() { "ok" } else { "DAMAGED" },
            count(report.snapshots, "snapshot"),
            count(report.trees, "tree"),
            count(report.chunks_referenced, "chunk"),
            count(report.packs, "pack"),
            if read_data {
                format!(
                    ", read {} ({})",
                    count(report.chunks_read, "chunk"),
                    human_bytes(report.read_bytes)
                )
            } else {
                String::new()
            },
            if report.unreferenced_packs > 0 {
                format!(
                    "; {} unreferenced pack files (snap gc removes them)",
                    report.unreferenced_packs
                )
            } else {
                String::new()
            }
        )?;
    }
    Ok(if report.is_sound() { 0 } else { exit::DAMAGED })
}
