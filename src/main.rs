//! The `snap` binary: parse arguments, call the library, print results,
//! map the outcome to an exit code (see README, "Exit codes").

mod cli;
mod cmd;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use serde_json::json;

use cli::{Cli, Command, TermProgress, count, human_bytes};
use snap::lock::LockMode;
use snap::ops::check::{CheckOptions, check};
use snap::ops::create::{CreateOptions, create};
use snap::ops::gc::{GcOptions, forget, gc, set_pinned};
use snap::ops::ls::{lookup, mode_string, walk};
use snap::ops::restore::{RestoreOptions, Step, restore};
use snap::progress::Progress;
use snap::retention::{Policy, parse_duration};
use snap::snapshot::{Snapshot, format_time_local};
use snap::tree::{Kind, Payload};
use snap::user_config::{self, UserConfig};
use snap::{Error, Repository};

use snap::exit;

/// A flag the first SIGINT or SIGTERM sets (the operation stops at its next
/// safe point); a second one ends the process at once.
fn interrupt_flag() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(
            sig,
            exit::INTERRUPTED as i32,
            flag.clone(),
        )?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(flag)
}

/// What the environment asks of the library (it reads none itself).
fn apply_environment() {
    if let Some(wait) = std::env::var("SNAP_LOCK_WAIT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
    {
        snap::lock::set_default_wait(std::time::Duration::from_secs_f64(wait));
    }
    #[cfg(feature = "fault-injection")]
    {
        if let Some(n) = std::env::var("SNAP_FAULT_AFTER")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            snap::fault::crash_after(n);
        }
        if let (Ok(at), Some(file)) = (
            std::env::var("SNAP_PAUSE_AT"),
            std::env::var_os("SNAP_PAUSE_FILE"),
        ) {
            snap::fault::pause_at(&at, Path::new(&file));
        }
    }
}

/// `SNAP_WORKERS`: how many files create reads at once.
pub(crate) fn workers_from_env() -> Option<usize> {
    std::env::var("SNAP_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    apply_environment();
    let result = run(cli);
    #[cfg(feature = "fault-injection")]
    if std::env::var_os("SNAP_FAULT_REPORT").is_some() {
        eprintln!("snap: fault points passed: {}", snap::fault::passed());
    }
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("snap: error: {err:#}");
            if err
                .downcast_ref::<Error>()
                .is_some_and(|e| e.is_index_damage())
            {
                eprintln!(
                    "snap: the index is damaged; `snap repair index` rebuilds it from the repository's files"
                );
            }
            let code = match err.downcast_ref::<Error>() {
                Some(e) => exit::of(e),
                None => exit::FAILURE,
            };
            ExitCode::from(code)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The default repository: `$XDG_DATA_HOME/snap/repo` (or the platform's
/// equivalent).
fn default_repo() -> anyhow::Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "snap").context(
        "cannot find a home directory for the default repository; pass --repo or set SNAP_REPO",
    )?;
    Ok(dirs.data_dir().join("repo"))
}

fn open_repo_read_only(
    cli_repo: &Option<PathBuf>,
    mode: Option<LockMode>,
) -> anyhow::Result<Repository> {
    let path = match cli_repo {
        Some(p) => p.clone(),
        None => {
            // Create the default repository on first use, then open it read-only.
            drop(open_repo(cli_repo, None)?);
            default_repo()?
        }
    };
    Ok(Repository::open_read_only(&path, mode)?)
}

/// Open the repository, creating the default one on first use.
fn open_repo(cli_repo: &Option<PathBuf>, mode: Option<LockMode>) -> anyhow::Result<Repository> {
    let path = match cli_repo {
        Some(p) => p.clone(),
        None => {
            let p = default_repo()?;
            if !snap::repo::is_repository(&p) {
                Repository::init(&p, &Default::default())?;
                eprintln!("created repository {}", p.display());
            }
            p
        }
    };
    Ok(Repository::open(&path, mode)?)
}

/// The config file in effect (if any), and the repository it implies when
/// `--repo` is not given.
fn resolve_config(cli: &Cli) -> anyhow::Result<(Option<PathBuf>, Option<UserConfig>)> {
    let cfg = match &cli.config {
        Some(p) => Some(UserConfig::load(p)?),
        None => {
            let repo_dir = cli.repo.clone().or_else(|| default_repo().ok());
            user_config::find(None, repo_dir.as_deref())?
        }
    };
    let repo = cli
        .repo
        .clone()
        .or_else(|| cfg.as_ref().and_then(|c| c.repository.clone()));
    Ok((repo, cfg))
}

/// CreateOptions for `create` and `guard`: the selected sources, the
/// config's labels and the command line's.
fn snapshot_options(
    cfg: Option<&UserConfig>,
    picks: &[PathBuf],
    what: &cli::SnapshotArgs,
) -> anyhow::Result<CreateOptions> {
    let mut excludes = what.excludes.clone();
    for f in &what.exclude_files {
        excludes.extend(read_exclude_file(f)?);
    }
    let sel = user_config::select(cfg, picks, &excludes)?;
    let mut labels = cfg.map(|c| c.labels.clone()).unwrap_or_default();
    labels.extend(what.labels.iter().cloned());
    Ok(CreateOptions {
        source: sel.key,
        exclude: sel.exclude,
        sources: sel.sources,
        labels,
        sqlite_check: what.sqlite_check,
        one_file_system: what.one_file_system,
        workers: workers_from_env(),
        ..Default::default()
    })
}

/// Exclude patterns from a file: one per line; blank lines and lines
/// starting with `#` are skipped, trailing spaces are trimmed.
fn read_exclude_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the exclude file", path.display()))?;
    let patterns: Vec<String> = text
        .lines()
        .map(|l| l.trim_end())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if let Err(e) = snap::exclude::Excludes::new(&patterns) {
        anyhow::bail!("{}: {e}", path.display());
    }
    Ok(patterns)
}

/// Databases whose `PRAGMA quick_check` did not say "ok", from the labels.
fn failed_checks(snap: &Snapshot) -> Vec<(&str, &str)> {
    snap.labels
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("quick_check:")?, v.as_str())))
        .filter(|(_, v)| *v != "ok")
        .collect()
}

fn run(mut cli: Cli) -> anyhow::Result<u8> {
    let progress = TermProgress::new(cli.quiet);
    snap::lock::set_wait_notice(|m| eprintln!("snap: {m}"));
    let mut out = std::io::stdout().lock();
    let (repo_path, cfg) = resolve_config(&cli)?;
    // A repository snap.toml names is created on first use, like the default.
    if cli.repo.is_none()
        && let Some(p) = &repo_path
        && !matches!(cli.command, Command::Init { .. })
        && !snap::repo::is_repository(p)
        && std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none())
    {
        Repository::init(p, &Default::default())?;
        eprintln!("created repository {}", p.display());
    }
    cli.repo = repo_path;
    match cli.command {
        Command::Diff(args) => cmd::diff::run(&cli.repo, args, &mut out),
        Command::Find(args) => cmd::find::run(&cli.repo, args, &mut out),
        Command::Stats { id, json } => cmd::stats::run(&cli.repo, id, json, &mut out),
        Command::Dump { id, path } => cmd::dump::run(&cli.repo, &id, &path, &mut out),
        Command::Tag(args) => cmd::tag::run(&cli.repo, args, &mut out),
        Command::Completions { shell } => cmd::docs::completions(shell, &mut out),
        Command::Man { command } => cmd::docs::man(command.as_deref(), &mut out),
        Command::Init {
            path,
            pack_size,
            zstd_level,
        } => {
            let path = match path.or(cli.repo) {
                Some(p) => p,
                None => default_repo()?,
            };
            let config = snap::config::RepoConfig {
                pack_target_bytes: pack_size.saturating_mul(1024 * 1024),
                zstd_level,
                ..Default::default()
            };
            Repository::init(&path, &config)?;
            writeln!(out, "created repository {}", path.display())?;
            Ok(0)
        }
        Command::Create(args) => {
            let repo = open_repo(&cli.repo, Some(LockMode::Exclusive))?;
            let parent = match &args.parent {
                Some(p) => Some(repo.find_snapshot(p)?.id),
                None => None,
            };
            let picks: Vec<PathBuf> = args.path.iter().cloned().collect();
            let opts = CreateOptions {
                tags: args.tags.clone(),
                parent,
                force: args.force,
                ..snapshot_options(cfg.as_ref(), &picks, &args.what)?
            };
            let cancel = interrupt_flag()?;
            let opts = CreateOptions {
                cancel: Some(cancel),
                ..opts
            };
            let snap = match create(&repo, &opts, &progress) {
                Err(Error::Interrupted) => {
                    progress.finish();
                    eprintln!(
                        "snap: interrupted; no snapshot was committed. The packs written so far are not referenced: `snap gc` removes them."
                    );
                    return Ok(exit::INTERRUPTED);
                }
                r => r?,
            };
            if args.json {
                serde_json::to_writer(&mut out, &snapshot_json(&snap))?;
                writeln!(out)?;
            } else {
                let s = &snap.stats;
                writeln!(out, "snapshot {}", snap.id)?;
                writeln!(
                    out,
                    "  {}, {}, {}, {}, {} in total; read {}, stored {} new ({}, {}) in {:.2} s",
                    count(s.files, "file"),
                    count(s.dirs, "dir"),
                    count(s.symlinks, "symlink"),
                    count(s.others, "special file"),
                    human_bytes(s.total_bytes),
                    human_bytes(s.read_bytes),
                    human_bytes(s.new_stored_bytes),
                    count(s.new_chunks, "chunk"),
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
        Command::Guard(args) => {
            let repo = open_repo(&cli.repo, Some(LockMode::Exclusive))?;
            let picks: Vec<PathBuf> = args.sources.iter().map(PathBuf::from).collect();
            let what = snapshot_options(cfg.as_ref(), &picks, &args.what)?;
            cmd::guard::run(&repo, what, &args, &progress, &mut out)
        }
        Command::Forget { ids } => {
            let repo = open_repo(&cli.repo, Some(LockMode::Exclusive))?;
            let mut resolved = Vec::new();
            for id in &ids {
                resolved.push(repo.find_snapshot(id)?.id);
            }
            forget(&repo, &resolved)?;
            for id in &resolved {
                writeln!(out, "forgot snapshot {id}")?;
            }
            Ok(0)
        }
        Command::Pin { id } => {
            let repo = open_repo(&cli.repo, Some(LockMode::Exclusive))?;
            let s = repo.find_snapshot(&id)?;
            set_pinned(&repo, &s.id, true)?;
            writeln!(out, "pinned snapshot {}", s.id)?;
            Ok(0)
        }
        Command::Unpin { id } => {
            let repo = open_repo(&cli.repo, Some(LockMode::Exclusive))?;
            let s = repo.find_snapshot(&id)?;
            set_pinned(&repo, &s.id, false)?;
            writeln!(out, "unpinned snapshot {}", s.id)?;
            Ok(0)
        }
        Command::Gc(args) => gc_command(&cli.repo, cfg.as_ref(), args, &progress, &mut out),
        Command::Check { read_data, json } => {
            check_command(&cli.repo, read_data, json, &progress, &mut out)
        }
        Command::Repair(cli::RepairWhat::Index { json }) => {
            let path = match &cli.repo {
                Some(p) => p.clone(),
                None => default_repo()?,
            };
            let st = snap::ops::repair::repair_index(&path, &progress)?;
            progress.finish();
            repair_report(&st, json, &mut out)
        }
        Command::List { json } => {
            let repo = open_repo_read_only(&cli.repo, None)?;
            let snaps = repo.snapshots()?;
            if json {
                let v: Vec<_> = snaps.iter().map(snapshot_json).collect();
                serde_json::to_writer_pretty(&mut out, &v)?;
                writeln!(out)?;
            } else {
                let tags_of = |s: &Snapshot| {
                    let mut t = s.tags.clone();
                    if s.pinned {
                        t.push("pinned".into());
                    }
                    if !s.complete {
                        t.push("incomplete".into());
                    }
                    t.join(",")
                };
                let width = snaps
                    .iter()
                    .map(|s| tags_of(s).len())
                    .max()
                    .unwrap_or(0)
                    .max(4);
                writeln!(
                    out,
                    "{:<10} {:<19} {:>8} {:>10}  {:<width$}  SOURCE",
                    "ID", "TIME", "FILES", "SIZE", "TAGS"
                )?;
                for s in &snaps {
                    writeln!(
                        out,
                        "{:<10} {:<19} {:>8} {:>10}  {:<width$}  {}",
                        s.id.short(),
                        format_time_local(s.time_ns),
                        s.stats.files,
                        human_bytes(s.stats.total_bytes),
                        tags_of(s),
                        source_text(s)
                    )?;
                    if !s.labels.is_empty() {
                        writeln!(out, "{:<10} labels: {}", "", labels_line(s))?;
                    }
                }
            }
            Ok(0)
        }
        Command::Ls {
            id,
            path,
            recursive,
            json,
        } => {
            let repo = open_repo(&cli.repo, None)?;
            let snap = repo.find_snapshot(&id)?;
            let rel = path.unwrap_or_default();
            let rel = rel.strip_prefix("/").unwrap_or(&rel).to_path_buf();
            let mut entries: Vec<(PathBuf, snap::tree::Entry)> = Vec::new();
            match lookup(&repo, &snap, &rel)? {
                Some((e, p)) if e.kind != Kind::Dir => entries.push((p, e)),
                found => {
                    let tree = match found {
                        None => snap.root,
                        Some((e, _)) => e.subtree().expect("dir has a tree"),
                    };
                    if recursive {
                        walk(&repo, &tree, &rel, &mut |p, e| {
                            entries.push((p.to_path_buf(), e.clone()));
                            Ok(())
                        })?;
                    } else {
                        for e in repo.load_tree(&tree)?.entries {
                            entries.push((PathBuf::from(e.name_os()), e));
                        }
                    }
                }
            }
            if json {
                let list: Vec<_> = entries.iter().map(|(p, e)| entry_json(p, e)).collect();
                let v = json!({ "snapshot": snapshot_json(&snap), "entries": list });
                serde_json::to_writer_pretty(&mut out, &v)?;
                writeln!(out)?;
            } else {
                // The snapshot's labels head a listing of its root, on
                // stderr: stdout holds one line per entry, for scripts.
                if rel.as_os_str().is_empty() && !snap.labels.is_empty() && !cli.quiet {
                    eprintln!("labels: {}", labels_line(&snap));
                }
                for (p, e) in &entries {
                    print_entry(&mut out, p, e)?;
                }
            }
            Ok(0)
        }
        Command::Restore(args) => {
            let mode = if args.dry_run {
                LockMode::Shared
            } else {
                LockMode::Exclusive
            };
            let repo = open_repo(&cli.repo, Some(mode))?;
            let snap = repo.find_snapshot(&args.id)?;
            let opts = RestoreOptions {
                target: args.target.clone(),
                subpath: args.path.clone(),
                dry_run: args.dry_run,
                verify: args.verify,
                safety_snapshot: !args.no_safety_snapshot,
                force: args.force,
            };
            let (plan, stats) = restore(&repo, &snap, &opts, &progress)?;
            progress.finish();
            match stats {
                None => {
                    if args.json {
                        serde_json::to_writer_pretty(&mut out, &plan)?;
                        writeln!(out)?;
                    } else {
                        for step in &plan.steps {
                            let Some(verb) = step.verb() else { continue };
                            let detail = match step {
                                Step::Delete { dir: true, .. } => "/".to_string(),
                                Step::Write { bytes, .. } => format!(" ({})", human_bytes(*bytes)),
                                Step::Link { to, .. } => format!(" -> {}", to.display()),
                                _ => String::new(),
                            };
                            let line = format!("{verb:<8} {}{detail}", step.path().display());
                            writeln!(out, "{line}")?;
                        }
                        let s = &plan.summary;
                        writeln!(
                            out,
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
                Some(st) => {
                    if args.json {
                        let mut v = serde_json::to_value(&st)?;
                        v["snapshot"] = json!(snap.id.to_hex());
                        v["target"] = json!(plan.target.to_string_lossy());
                        serde_json::to_writer_pretty(&mut out, &v)?;
                        writeln!(out)?;
                    } else {
                        if let Some(id) = &st.safety_snapshot {
                            writeln!(
                                out,
                                "safety snapshot {id} (undo this restore with `snap restore {}`)",
                                &id[..8]
                            )?;
                        }
                        writeln!(
                            out,
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
            }
        }
    }
}

fn repair_report(
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
    for (id, why) in &st.damaged_snapshots {
        eprintln!("snap: snapshot {}: kept, but damaged: {why}", &id[..8]);
    }
    Ok(if st.is_clean() { 0 } else { exit::DAMAGED })
}

fn gc_command(
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
            ..GcOptions::default()
        },
        progress,
    )?;
    progress.finish();
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &stats)?;
        writeln!(out)?;
    } else {
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
    }
    Ok(if stats.did_nothing() {
        exit::NOTHING_TO_DO
    } else {
        0
    })
}

fn check_command(
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
        serde_json::to_writer_pretty(&mut *out, &report)?;
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

fn snapshot_json(s: &Snapshot) -> serde_json::Value {
    s.to_json()
}

/// The source column: the directory, or the config file and the names.
fn source_text(s: &Snapshot) -> String {
    if s.is_multi_source() {
        let names: Vec<&str> = s.sources.iter().map(|x| x.name.as_str()).collect();
        format!("{} ({})", s.source.display(), names.join(", "))
    } else {
        s.source.display().to_string()
    }
}

fn targets_text(targets: &[PathBuf]) -> String {
    targets
        .iter()
        .map(|t| t.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn labels_line(s: &Snapshot) -> String {
    s.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn entry_json(path: &Path, e: &snap::tree::Entry) -> serde_json::Value {
    json!({
        "path": path.to_string_lossy(),
        "kind": format!("{:?}", e.kind).to_lowercase(),
        "mode": format!("{:o}", e.mode),
        "uid": e.uid,
        "gid": e.gid,
        "size": e.size,
        "mtime": snap::snapshot::format_time_ns(e.mtime_ns),
        "target": match &e.payload {
            Payload::Target(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        },
        "sqlite_image": e.has_flag(snap::tree::flags::SQLITE_IMAGE),
    })
}

fn print_entry(out: &mut impl Write, path: &Path, e: &snap::tree::Entry) -> std::io::Result<()> {
    let size = match e.kind {
        Kind::CharDev | Kind::BlockDev => match e.payload {
            Payload::Device(r) => format!("{},{}", libc_major(r), libc_minor(r)),
            _ => String::new(),
        },
        _ => e.size.to_string(),
    };
    let mut line = format!(
        "{} {:>5} {:>5} {:>12} {} {}",
        mode_string(e.kind, e.mode),
        e.uid,
        e.gid,
        size,
        format_time_local(e.mtime_ns),
        escape(path.as_os_str().as_encoded_bytes())
    );
    if let Payload::Target(t) = &e.payload {
        line.push_str(&format!(" -> {}", escape(t)));
    }
    writeln!(out, "{line}")
}

/// Printable names as they are; control characters and bytes that are not
/// UTF-8 as escapes (like `ls -b`), so one entry is always one line.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.extend(c.escape_default()),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}
