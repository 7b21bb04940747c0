//! `snap restore`: plan, or plan and execute, and report.

use crate::*;
use snap::ops::restore::{Plan, RestoreStats, execute_restore, plan_restore};

pub fn run(ctx: &mut Ctx, args: cli::RestoreArgs) -> anyhow::Result<u8> {
    let mode = if args.dry_run {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    };
    // A dry run, or a restore into a target from a repository this process
    // cannot write (a read-only mount), reads the repository only.
    let repo = if args.dry_run || (args.target.is_some() && repo_place_is_read_only(&ctx.repo)) {
        open_repo_read_only(&ctx.repo, Some(LockMode::Shared))?
    } else {
        open_repo(&ctx.repo, Some(mode))?
    };
    let known = match &args.target {
        Some(_) => None,
        None => Some(known_sources(ctx, &repo)?),
    };
    let snap = match &known {
        // `latest` and `tag:` of an in-place restore: the newest snapshot
        // of a source this client knows, not whatever the repository adds.
        Some(known) if !is_id_prefix(&args.id) => {
            let mine: Vec<Snapshot> = repo
                .snapshots()?
                .into_iter()
                .filter(|s| s.source_paths().iter().all(|p| known.contains(p)))
                .collect();
            snap::spec::resolve(&mine, &args.id, None)?
        }
        _ => repo.find_snapshot(&args.id)?,
    };
    let opts = RestoreOptions {
        target: args.target.clone(),
        subpath: args.path.clone(),
        dry_run: args.dry_run,
        verify: args.verify,
        safety_snapshot: !args.no_safety_snapshot,
        force: args.force,
        known_sources: known,
        safety_labels: Default::default(),
    };
    let (plan, stats) = if asks_first(&args) {
        // The plan that is shown is the plan that runs.
        let plan = plan_restore(&repo, &snap, &opts)?;
        if !confirmed(&snap, &plan, &opts)? {
            eprintln!("snap: nothing was changed");
            return Ok(exit::NOTHING_TO_DO);
        }
        let stats = execute_restore(&repo, &snap, &plan, &opts, &ctx.progress)?;
        (plan, Some(stats))
    } else {
        restore(&repo, &snap, &opts, &ctx.progress)?
    };
    ctx.progress.finish();
    match stats {
        None => report_plan(ctx, &plan, args.json),
        Some(st) => report_restore(ctx, &repo, &snap, &plan, &st, &args),
    }
}

/// A restore into a `--target` asks before it deletes what the snapshot
/// lacks when a person is at a terminal (stdin and stderr), unless
/// `--yes`: the summary of the plan, then `y` to go on. Without a terminal,
/// in place, or for a dry run it goes on without asking.
fn asks_first(args: &cli::RestoreArgs) -> bool {
    use std::io::IsTerminal;
    args.target.is_some()
        && !args.dry_run
        && !args.yes
        && std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal()
}

/// Whether to carry out `plan`: yes when it deletes nothing, else the
/// answer to the question.
fn confirmed(snap: &Snapshot, plan: &Plan, opts: &RestoreOptions) -> anyhow::Result<bool> {
    let deletes = plan.summary.delete_entries;
    let Some(target) = opts.target.as_deref().filter(|_| deletes > 0) else {
        return Ok(true);
    };
    eprint!(
        "restore {} into {} deletes {} the snapshot lacks (a safety snapshot of it is taken first: the undo); go on? [y/N] ",
        snap.id.short(),
        crate::escape_path(target),
        count(deletes, "entry"),
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Whether the repository is a local directory this process cannot write.
fn repo_place_is_read_only(cli_repo: &Option<PathBuf>) -> bool {
    cli_repo
        .as_deref()
        .is_some_and(|p| p.is_dir() && snap::repo::is_read_only_place(p))
}

/// Whether a snapshot spec names a snapshot by its id (`latest` and
/// `tag:` pick among snapshots).
fn is_id_prefix(spec: &str) -> bool {
    let base = spec.rsplit_once('~').map_or(spec, |(b, _)| b);
    base != "latest" && !base.starts_with("tag:")
}

/// The directories an in-place restore may write: the config file's
/// sources and those this client recorded snapshotting into `repo`.
pub(crate) fn known_sources(ctx: &Ctx, repo: &Repository) -> anyhow::Result<Vec<PathBuf>> {
    let mut known: Vec<PathBuf> = crate::known_sources::KnownSources::load(&state_dir()?, repo)?
        .paths()
        .cloned()
        .collect();
    if let Some(cfg) = &ctx.cfg
        && config_is_the_users(&cfg.path)
    {
        for s in &cfg.sources {
            known.push(std::fs::canonicalize(&s.path).unwrap_or_else(|_| s.path.clone()));
        }
    }
    Ok(known)
}

/// A config file speaks for the user only when it is theirs (or root's)
/// and nobody else may write it: a `snap.toml` that another writer of a
/// shared repository directory put there names no source of the user's.
fn config_is_the_users(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let euid = rustix::process::geteuid().as_raw();
    std::fs::metadata(path)
        .is_ok_and(|m| (m.uid() == euid || m.uid() == 0) && m.mode() & 0o022 == 0)
}

/// A dry run: the plan, as steps or as JSON; the exit code says whether it
/// changes anything.
fn report_plan(ctx: &mut Ctx, plan: &Plan, json: bool) -> anyhow::Result<u8> {
    if json {
        serde_json::to_writer_pretty(&mut ctx.out, plan)?;
        writeln!(ctx.out)?;
    } else {
        for step in &plan.steps {
            let Some(verb) = step.verb() else { continue };
            let detail = match step {
                Step::Delete { dir: true, .. } => "/".to_string(),
                Step::Write { bytes, .. } => format!(" ({})", human_bytes(*bytes)),
                Step::Link { to, .. } => format!(" -> {}", escape_path(to)),
                _ => String::new(),
            };
            let line = format!("{verb:<8} {}{detail}", escape_path(step.path()));
            writeln!(ctx.out, "{line}")?;
        }
        let s = &plan.summary;
        writeln!(
            ctx.out,
            "plan for {}: write {} ({}), delete {}, create {}, {}, {}, {}, fix metadata of {}, leave {} ({}) alone",
            targets_text(&plan.targets),
            count(s.write_files, "file"),
            human_bytes(s.write_bytes),
            count(s.delete_entries, "entry"),
            count(s.create_dirs, "dir"),
            count(s.links, "link"),
            count(s.symlinks, "symlink"),
            count(s.specials, "special file"),
            count(s.fix_metadata, "entry"),
            count(s.unchanged_files, "file"),
            human_bytes(s.unchanged_bytes)
        )?;
    }
    for (p, why) in &plan.damaged {
        eprintln!("snap: {}: cannot be restored: {why}", p.display());
    }
    Ok(if !plan.damaged.is_empty() {
        exit::DAMAGED
    } else if plan.changes_anything() {
        0
    } else {
        exit::NOTHING_TO_DO
    })
}

/// The command that puts back what a restore replaced: the safety
/// snapshot, restored where this restore wrote (the same `--target`, as
/// an absolute path, and `--path`).
fn undo_command(safety: &str, args: &cli::RestoreArgs) -> String {
    let mut cmd = format!("snap restore {safety}");
    if let Some(t) = &args.target {
        let abs = std::path::absolute(t).unwrap_or_else(|_| t.clone());
        cmd.push_str(&format!(" --target {}", crate::shell_quote(&abs)));
    }
    if let Some(p) = &args.path {
        cmd.push_str(&format!(" --path {}", crate::shell_quote(p)));
    }
    cmd
}

/// What a restore did, as text or JSON, then what it could not do.
fn report_restore(
    ctx: &mut Ctx,
    repo: &Repository,
    snap: &Snapshot,
    plan: &Plan,
    st: &RestoreStats,
    args: &cli::RestoreArgs,
) -> anyhow::Result<u8> {
    if args.json {
        let mut v = serde_json::to_value(st)?;
        v["snapshot"] = json!(snap.id.to_hex());
        v["target"] = json!(plan.target.to_string_lossy());
        let v = with_requests(repo, v);
        serde_json::to_writer_pretty(&mut ctx.out, &v)?;
        writeln!(ctx.out)?;
    } else {
        if let Some(id) = &st.safety_snapshot {
            writeln!(
                ctx.out,
                "safety snapshot {id} (undo this restore with `{}`)",
                undo_command(&id[..8], args)
            )?;
        }
        writeln!(
            ctx.out,
            "restored {} to {}: wrote {} ({}), deleted {}, created {}, {}, {}, {}, fixed metadata of {}, left {} alone, in {:.2} s",
            snap.id.short(),
            targets_text(&plan.targets),
            count(st.written_files, "file"),
            human_bytes(st.written_bytes),
            count(st.deleted_entries, "entry"),
            count(st.created_dirs, "dir"),
            count(st.links, "link"),
            count(st.symlinks, "symlink"),
            count(st.specials, "special file"),
            count(st.fixed_metadata, "entry"),
            count(st.unchanged_files, "file"),
            st.duration_ms as f64 / 1000.0
        )?;
    }
    for p in &plan.not_in_snapshot {
        eprintln!(
            "snap: {}: was unreadable when the snapshot was taken; left as it is",
            p.display()
        );
    }
    if !st.failed.is_empty() {
        eprintln!("snap: {} entries could not be restored:", st.failed.len());
        for (p, why) in &st.failed {
            eprintln!("  {p}: {why}");
        }
        return Ok(if st.damaged {
            exit::DAMAGED
        } else {
            exit::PARTIAL
        });
    }
    Ok(if plan.changes_anything() {
        0
    } else {
        exit::NOTHING_TO_DO
    })
}
