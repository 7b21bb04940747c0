//! `snap create`: options from the command line and the config, then the snapshot.

use crate::*;

pub fn run(ctx: &mut Ctx, args: cli::CreateArgs) -> anyhow::Result<u8> {
    let repo = open_repo(&ctx.repo, Some(LockMode::Exclusive))?;
    let parent = match &args.parent {
        Some(p) => Some(repo.find_snapshot(p)?.id),
        None => None,
    };
    let picks: Vec<PathBuf> = args.path.iter().cloned().collect();
    let opts = CreateOptions {
        tags: args.tags.clone(),
        parent,
        force: args.force,
        ..snapshot_options(ctx.cfg.as_ref(), &picks, &args.what)?
    };
    let cancel = interrupt_flag()?;
    let opts = CreateOptions {
        cancel: Some(cancel),
        ..opts
    };
    record_sources(&repo, &opts);
    let snap = match create(&repo, &opts, &ctx.progress) {
        Err(Error::Interrupted) => {
            ctx.progress.finish();
            eprintln!(
                "snap: interrupted; no snapshot was committed. The packs written so far are not referenced: `snap gc` removes them."
            );
            return Ok(exit::INTERRUPTED);
        }
        r => r?,
    };
    if args.json {
        serde_json::to_writer(&mut ctx.out, &with_requests(&repo, snapshot_json(&snap)))?;
        writeln!(ctx.out)?;
    } else {
        let s = &snap.stats;
        writeln!(ctx.out, "snapshot {}", snap.id)?;
        writeln!(
            ctx.out,
            "  {}, {}, {}, {}, {} in total; read {}, stored {} new ({}{}, {}) in {:.2} s",
            count(s.files, "file"),
            count(s.dirs, "dir"),
            count(s.symlinks, "symlink"),
            count(s.others, "special file"),
            human_bytes(s.total_bytes),
            human_bytes(s.read_bytes),
            human_bytes(s.new_stored_bytes),
            count(s.new_chunks, "chunk"),
            match s.new_delta_chunks {
                0 => String::new(),
                n => format!(", {n} as deltas"),
            },
            count(s.new_packs, "pack"),
            s.duration_ms as f64 / 1000.0
        )?;
    }
    if !snap.complete {
        eprintln!(
            "snap: {} path(s) could not be read; the snapshot is marked incomplete:",
            snap.unreadable.len()
        );
        for (p, why) in &snap.unreadable {
            eprintln!("  {p}: {why}");
        }
        return Ok(exit::PARTIAL);
    }
    let bad = failed_checks(&snap);
    for (p, why) in &bad {
        eprintln!("snap: {p}: PRAGMA quick_check failed: {why}");
    }
    Ok(if bad.is_empty() { 0 } else { exit::PARTIAL })
}
