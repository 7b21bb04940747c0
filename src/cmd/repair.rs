//! `snap repair index`: the report of a rebuild.

use crate::*;

pub fn repair_report(
    st: &snap::ops::repair::RepairStats,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    if json {
        serde_json::to_writer_pretty(&mut *out, st)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "rebuilt index.db: {}, {}, {} in {} ({} left out) in {:.2} s",
            count(st.snapshots, "snapshot"),
            count(st.trees, "tree"),
            count(st.chunks, "blob"),
            count(st.packs, "pack"),
            count(st.forgotten_snapshots, "forgotten snapshot"),
            st.duration_ms as f64 / 1000.0
        )?;
    }
    for (f, why) in &st.unusable_files {
        eprintln!("snap: {f}: not used: {why}");
    }
    for (f, why) in &st.salvaged_packs {
        eprintln!("snap: {f}: salvaged: {why}");
    }
    for (id, why) in &st.damaged_snapshots {
        eprintln!("snap: snapshot {}: kept, but damaged: {why}", &id[..8]);
    }
    Ok(if st.is_clean() { 0 } else { exit::DAMAGED })
}
