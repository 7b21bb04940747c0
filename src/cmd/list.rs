//! `snap list`: the snapshots, oldest first.

use crate::*;

pub fn run(ctx: &mut Ctx, json: bool) -> anyhow::Result<u8> {
    let repo = open_repo_read_only(&ctx.repo, None)?;
    let snaps = repo.snapshots()?;
    if json {
        let v: Vec<_> = snaps.iter().map(snapshot_json).collect();
        serde_json::to_writer_pretty(&mut ctx.out, &v)?;
        writeln!(ctx.out)?;
    } else {
        let tags_of = |s: &Snapshot| {
            let mut t = s.tags.clone();
            if s.pinned {
                t.push("pinned".into());
            }
            if !s.complete {
                t.push("incomplete".into());
            }
            crate::escape(t.join(",").as_bytes())
        };
        let width = snaps
            .iter()
            .map(|s| tags_of(s).len())
            .max()
            .unwrap_or(0)
            .max(4);
        writeln!(
            ctx.out,
            "{:<10} {:<19} {:>8} {:>10}  {:<width$}  SOURCE",
            "ID", "TIME", "FILES", "SIZE", "TAGS"
        )?;
        for s in &snaps {
            writeln!(
                ctx.out,
                "{:<10} {:<19} {:>8} {:>10}  {:<width$}  {}",
                s.id.short(),
                format_time_local(s.time_ns),
                s.stats.files,
                human_bytes(s.stats.total_bytes),
                tags_of(s),
                source_text(s)
            )?;
            if !s.labels.is_empty() {
                writeln!(ctx.out, "{:<10} labels: {}", "", labels_line(s))?;
            }
        }
    }
    Ok(0)
}
