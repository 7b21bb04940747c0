//! `snap gc`: the retention policy from the options or the config, then gc.

use crate::*;
use snap::ops::gc::{GcOptions, gc};
use snap::retention::{Policy, parse_duration};

pub fn gc_command(
    cli_repo: &Option<PathBuf>,
    cfg: Option<&UserConfig>,
    args: cli::GcArgs,
    progress: &TermProgress,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let policy = Policy {
        keep_last: args.keep_last,
        keep_hourly: args.keep_hourly,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_yearly: args.keep_yearly,
        keep_within: args
            .keep_within
            .as_deref()
            .map(parse_duration)
            .transpose()?,
        keep_tags: args.keep_tags,
    };
    // No --keep-* option: the config's default policy, if it has one.
    let policy = match cfg.and_then(|c| c.retention.clone()) {
        Some(default) if policy.is_empty() => default,
        _ => policy,
    };
    let repo = if args.dry_run {
        open_repo_read_only(cli_repo, Some(LockMode::Shared))?
    } else {
        open_repo(cli_repo, Some(LockMode::Exclusive))?
    };
    let stats = gc(
        &repo,
        &GcOptions {
            policy,
            dry_run: args.dry_run,
            repack_dead_share: (args.repack_threshold / 100.0).clamp(0.0, 1.0),
            grace: grace(&args.grace, args.no_other_writers)?,
            ..GcOptions::default()
        },
        progress,
    )?;
    progress.finish();
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &with_requests(&repo, json!(stats)))?;
        writeln!(out)?;
    } else {
        report_text(&stats, &args.grace, out)?;
    }
    Ok(if stats.did_nothing() {
        exit::NOTHING_TO_DO
    } else {
        0
    })
}

/// The shortest `--grace` taken without `--no-other-writers`: longer than
/// a create on another client runs between its first pack and its commit.
const GRACE_FLOOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// `--grace`: a duration of at least [`GRACE_FLOOR`], or of at least zero
/// when the user confirms that nobody else writes the bucket.
fn grace(s: &str, no_other_writers: bool) -> anyhow::Result<std::time::Duration> {
    let d = parse_duration(s)?;
    let d = std::time::Duration::try_from(d)
        .map_err(|_| anyhow::anyhow!("--grace {s}: must not be negative"))?;
    if d < GRACE_FLOOR && !no_other_writers {
        anyhow::bail!(
            "--grace {s}: shorter than 1h; a create running on another client could lose its snapshot. Add --no-other-writers if no other client writes the repository now"
        );
    }
    Ok(d)
}

/// What gc did (or would do), as text.
fn report_text(
    stats: &snap::ops::gc::GcStats,
    grace: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let verb = if stats.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for id in &stats.snapshots_removed {
        writeln!(out, "{verb} snapshot {id}")?;
    }
    writeln!(
        out,
        "{}{} {} (kept {}), {} {}, {} {}, {} {}; {} {}",
        if stats.dry_run { "dry run: " } else { "" },
        verb,
        count(stats.snapshots_removed.len() as u64, "snapshot"),
        stats.snapshots_kept,
        if stats.dry_run {
            "would delete"
        } else {
            "deleted"
        },
        count(stats.packs_deleted, "pack"),
        if stats.dry_run {
            "would repack"
        } else {
            "repacked"
        },
        stats.packs_repacked,
        if stats.dry_run {
            "would remove"
        } else {
            "removed"
        },
        count(stats.orphan_packs_deleted, "orphaned pack"),
        human_bytes(stats.reclaimed_bytes),
        if stats.dry_run {
            "would be reclaimed"
        } else {
            "reclaimed"
        }
    )?;

    if stats.packs_condemned + stats.packs_rescued > 0 {
        writeln!(
            out,
            "condemned {} (deleted by a gc after the grace period, {}), kept {} a newer snapshot uses",
            count(stats.packs_condemned, "pack"),
            grace,
            count(stats.packs_rescued, "condemned pack"),
        )?;
    }
    Ok(())
}
