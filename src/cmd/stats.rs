//! `snap stats [ID] [--json]`

use std::io::Write;

use crate::cli::human_bytes;
use snap::ops::stats::{repo_stats, snapshot_size};

pub fn run(
    repo: &Option<std::path::PathBuf>,
    id: Option<String>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let repo = crate::open_repo_read_only(repo, None)?;
    if let Some(id) = id {
        let st = snapshot_size(&repo.find_snapshot(&id)?);
        if json {
            serde_json::to_writer(&mut *out, &st)?;
            writeln!(out)?;
        } else {
            writeln!(out, "snapshot {}", st.id)?;
            writeln!(
                out,
                "  {} files, {} dirs, {} symlinks, {} other",
                st.files, st.dirs, st.symlinks, st.others
            )?;
            writeln!(
                out,
                "  size:  {} (what a restore writes)",
                human_bytes(st.total_bytes)
            )?;
            writeln!(
                out,
                "  added: {} in {} new chunks, {} stored",
                human_bytes(st.added_raw_bytes),
                st.added_chunks,
                human_bytes(st.added_stored_bytes)
            )?;
        }
        return Ok(0);
    }
    let st = repo_stats(&repo)?;
    if json {
        serde_json::to_writer(&mut *out, &st)?;
        writeln!(out)?;
        return Ok(0);
    }
    writeln!(out, "snapshots:          {}", st.snapshots)?;
    writeln!(
        out,
        "logical size:       {} (all snapshots' files)",
        human_bytes(st.logical_bytes)
    )?;
    writeln!(
        out,
        "unique data:        {} in {} chunks",
        human_bytes(st.unique_bytes),
        st.unique_chunks
    )?;
    writeln!(
        out,
        "compressed:         {}",
        human_bytes(st.compressed_bytes)
    )?;
    writeln!(
        out,
        "stored:             {} ({} packs, index {})",
        human_bytes(st.stored_bytes),
        st.packs,
        human_bytes(st.index_bytes)
    )?;
    writeln!(out, "dedup ratio:        {:.2}x", st.dedup_ratio)?;
    writeln!(out, "compression ratio:  {:.2}x", st.compression_ratio)?;
    writeln!(out, "logical / stored:   {:.2}x", st.space_saving_ratio)?;
    Ok(0)
}
