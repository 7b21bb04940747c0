//! The `snap` binary: parse arguments, call the library, print results,
//! map the outcome to an exit code (see README, "Exit codes").

mod cli;
mod cmd;
mod known_sources;
mod ui;
mod user_config;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use serde_json::json;

use crate::user_config::UserConfig;
use cli::{Cli, Command, TermProgress, count, human_bytes};
use snap::error::Remedy;
use snap::lock::LockMode;
use snap::ops::create::{CreateOptions, create};
use snap::ops::gc::{forget, set_pinned};
use snap::ops::ls::{lookup, mode_string, walk};
use snap::ops::restore::{RestoreOptions, Step, restore};
use snap::progress::Progress;
use snap::snapshot::{Snapshot, format_time_local};
use snap::tree::{Kind, Payload};
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
    #[cfg(any(feature = "fault-injection", debug_assertions))]
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

/// Large buffers (packs on their way to a bucket, read runs, chunk data)
/// are often freed by another thread than the one that made them. glibc's
/// dynamic mmap threshold then rises to their size and later ones come
/// from per-thread heaps it keeps, so peak memory grew with the size of a
/// backup: 366 MB for a first backup of 1.3 GB to a bucket, 107 MB to a
/// local repository. With a fixed 1 MiB threshold every large buffer is
/// its own mapping, returned when freed: 243 MB and 72 MB, at the same
/// speed (docs/benchmarks.md, "Memory: a fixed mmap threshold"). Set by
/// the binary only: a library must not change its host's allocator.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc parameter; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    fix_mmap_threshold();
    let cli = Cli::parse();
    apply_environment();
    let result = run(cli);
    #[cfg(any(feature = "fault-injection", debug_assertions))]
    if std::env::var_os("SNAP_FAULT_REPORT").is_some() {
        eprintln!("snap: fault points passed: {}", snap::fault::passed());
    }
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("snap: error: {}", error_text(&err));
            match err.downcast_ref::<Error>().and_then(Error::remedy) {
                Some(Remedy::RepairIndex) => eprintln!(
                    "snap: the index is damaged; `snap repair index` rebuilds it from the repository's files"
                ),
                Some(Remedy::ReportBug) => eprintln!(
                    "snap: this is a bug in snap; please report it with the command that failed"
                ),
                Some(Remedy::EndMigration) => {
                    if let Some(Error::UnfinishedMigration { snapshot, .. }) =
                        err.downcast_ref::<Error>()
                    {
                        let id = &snapshot[..8.min(snapshot.len())];
                        eprintln!(
                            "snap: roll it back with `snap restore {id}` then `snap unpin {id}`, or keep it as it is with `snap unpin {id}`"
                        );
                    }
                }
                None => {}
            }
            let code = match err.downcast_ref::<Error>() {
                Some(e) => exit::of(e),
                None => exit::FAILURE,
            };
            ExitCode::from(code)
        }
    }
}

/// The error and its causes, each once: a cause whose text the message
/// already holds (an io error inside `path: cause`) is not repeated.
fn error_text(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
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

/// This client's own state (the record of the sources it snapshotted):
/// `$XDG_STATE_HOME/snap`, never inside a repository.
pub(crate) fn state_dir() -> anyhow::Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "snap")
        .context("cannot find a home directory for snap's state; set XDG_STATE_HOME")?;
    Ok(dirs
        .state_dir()
        .unwrap_or_else(|| dirs.data_local_dir())
        .to_path_buf())
}

/// Remember the directories a create is about to snapshot, as this
/// client's own: an in-place restore goes only to those (and the config
/// file's sources). Recorded before the snapshot, so a create or guard
/// that dies after its commit leaves a snapshot this client can restore.
pub(crate) fn record_sources(repo: &Repository, opts: &CreateOptions) {
    let paths: Vec<PathBuf> = if opts.sources.is_empty() {
        vec![opts.source.clone()]
    } else {
        opts.sources.iter().map(|s| s.path.clone()).collect()
    };
    let paths = paths
        .into_iter()
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p));
    let r = state_dir().and_then(|d| {
        let mut known = crate::known_sources::KnownSources::load(&d, repo)?;
        known.add(paths)?;
        Ok(())
    });
    if let Err(e) = r {
        eprintln!(
            "snap: warning: cannot record the snapshot's sources for in-place restores ({e:#}); restore it with --target"
        );
    }
}

/// A repository whose index is a per-machine cache: one in a bucket
/// (`s3://BUCKET/PREFIX`, endpoint and credentials from the AWS_*
/// variables), or an encrypted one in a local directory (a plain index
/// beside its objects would hold every file name). `storage` is still
/// locked; `unlocked` asks for the password when it is encrypted.
pub(crate) struct Remote {
    pub storage: std::sync::Arc<dyn snap::storage::Storage>,
    /// Where this machine keeps its caches (`$XDG_CACHE_HOME/snap`).
    pub cache_base: PathBuf,
}

impl Remote {
    /// The same, opened with the repository's key when it is encrypted.
    pub fn unlocked(self) -> snap::Result<Remote> {
        self.unlocked_with(cmd::password::current)
    }

    /// `unlocked`, the password (asked only when needed) from `password`.
    pub fn unlocked_with(
        self,
        password: impl FnOnce(&str) -> snap::Result<zeroize::Zeroizing<String>>,
    ) -> snap::Result<Remote> {
        let repo = self.storage.describe("").trim_end_matches('/').to_string();
        Ok(Remote {
            storage: snap::keys::unlocked(self.storage, || password(&repo))?,
            cache_base: self.cache_base,
        })
    }
}

/// `--cache-dir`, when given (set once, before any command runs).
static CACHE_DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

pub(crate) fn cache_base() -> anyhow::Result<PathBuf> {
    if let Some(Some(dir)) = CACHE_DIR.get() {
        return Ok(dir.clone());
    }
    let dirs = directories::ProjectDirs::from("", "", "snap")
        .context("cannot find a home directory for the cache of a remote repository")?;
    Ok(dirs.cache_dir().to_path_buf())
}

/// The storage of an `s3://` path; `None` for another path.
pub(crate) fn s3_storage(
    path: &Path,
) -> anyhow::Result<Option<std::sync::Arc<dyn snap::storage::Storage>>> {
    let Some(parsed) = path.to_str().and_then(snap::storage::S3Url::parse) else {
        return Ok(None);
    };
    #[cfg(feature = "s3")]
    {
        let url = parsed?;
        let opts = snap::storage::S3Options::from_env();
        Ok(Some(std::sync::Arc::new(snap::storage::S3Storage::new(
            &url, &opts,
        )?)))
    }
    #[cfg(not(feature = "s3"))]
    {
        let _ = parsed;
        anyhow::bail!("{}: this snap was built without S3 support", path.display())
    }
}

/// `Some` when `path` names a repository whose index is a cache.
pub(crate) fn remote_of(path: &Path) -> anyhow::Result<Option<Remote>> {
    if let Some(storage) = s3_storage(path)? {
        return Ok(Some(Remote {
            storage,
            cache_base: cache_base()?,
        }));
    }
    if path.join(snap::objects::CONFIG_FILE).is_file()
        && !path.join(snap::repo::INDEX_FILE).exists()
    {
        let local = std::sync::Arc::new(snap::storage::LocalStorage::new(path));
        if snap::objects::holds_a_repository(&*local) && snap::keys::is_encrypted(&*local)? {
            return Ok(Some(Remote {
                storage: local,
                cache_base: cache_base()?,
            }));
        }
    }
    Ok(None)
}

/// Open a remote repository, its cache brought up to date first.
fn open_remote(r: Remote, mode: Option<LockMode>, read_only: bool) -> anyhow::Result<Repository> {
    open_unlocked_remote(r.unlocked()?, mode, read_only)
}

/// `open_remote` of a repository already unlocked.
pub(crate) fn open_unlocked_remote(
    r: Remote,
    mode: Option<LockMode>,
    read_only: bool,
) -> anyhow::Result<Repository> {
    let (repo, st) =
        Repository::open_remote(r.storage, &r.cache_base, mode, read_only, &snap::NoProgress)?;
    if let Some(rebuilt) = &st.rebuilt {
        eprintln!(
            "snap: built this machine's index of the repository: {} snapshots, {} packs",
            rebuilt.snapshots, rebuilt.packs
        );
    }
    for (what, why) in &st.skipped {
        eprintln!("snap: warning: {what}: not used yet: {why}");
    }
    Ok(repo)
}

fn open_repo_read_only(
    cli_repo: &Option<PathBuf>,
    mode: Option<LockMode>,
) -> anyhow::Result<Repository> {
    if let Some(p) = cli_repo
        && let Some(r) = remote_of(p)?
    {
        return open_remote(r, mode, true);
    }
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
    if let Some(p) = cli_repo
        && let Some(r) = remote_of(p)?
    {
        return open_remote(r, mode, false);
    }
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
        pseudo_filesystems: what.pseudo_filesystems,
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

/// What every command gets: the repository (from --repo, SNAP_REPO or the
/// config), the config, the progress display and stdout.
struct Ctx<'a> {
    repo: Option<PathBuf>,
    cfg: Option<UserConfig>,
    progress: TermProgress,
    out: std::io::StdoutLock<'a>,
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    cmd::password::set_file(cli.password_file.clone());
    let _ = CACHE_DIR.set(cli.cache_dir.clone());
    let progress = TermProgress::new(cli.quiet);
    snap::lock::set_wait_notice(|m| eprintln!("snap: {m}"));
    let out = std::io::stdout().lock();
    let (repo_path, cfg) = resolve_config(&cli)?;
    // A repository snap.toml names is created on first use, like the default.
    if cli.repo.is_none()
        && let Some(p) = &repo_path
        && !matches!(cli.command, Command::Init { .. })
        && remote_of(p)?.is_none()
        && !snap::repo::is_repository(p)
        && snap::local_dir::is_empty_dir(p).unwrap_or(true)
    {
        Repository::init(p, &Default::default())?;
        eprintln!("created repository {}", p.display());
    }
    let mut ctx = Ctx {
        repo: repo_path,
        cfg,
        progress,
        out,
    };
    dispatch(&mut ctx, cli.command)
}

/// Run one command with its context.
fn dispatch(ctx: &mut Ctx, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Diff(args) => cmd::diff::run(&ctx.repo, args, &mut ctx.out),
        Command::Find(args) => cmd::find::run(&ctx.repo, args, &mut ctx.out),
        Command::Stats { id, json } => cmd::stats::run(&ctx.repo, id, json, &mut ctx.out),
        Command::Dump { id, path } => cmd::dump::run(&ctx.repo, &id, &path, &mut ctx.out),
        Command::Tag(args) => cmd::tag::run(&ctx.repo, args, &mut ctx.out),
        Command::Ui(args) => ui::run(ctx, args),
        Command::Copy(args) => cmd::copy::run(&ctx.repo, args, &ctx.progress, &mut ctx.out),
        Command::Completions { shell } => cmd::docs::completions(shell, &mut ctx.out),
        Command::Man { command, dir } => {
            cmd::docs::man(command.as_deref(), dir.as_deref(), &mut ctx.out)
        }
        Command::Init {
            path,
            pack_size,
            zstd_level,
            encrypt,
            no_encrypt,
        } => {
            let encrypt = match (encrypt, no_encrypt) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let config = snap::config::RepoConfig {
                pack_target_bytes: pack_size.saturating_mul(1024 * 1024),
                zstd_level,
                ..Default::default()
            };
            cmd::init::run(ctx, path, config, encrypt)
        }
        Command::Key(what) => cmd::key::run(&ctx.repo, what, &mut ctx.out),
        Command::Create(args) => cmd::create::run(ctx, args),
        Command::Guard(args) => {
            let repo = open_repo(&ctx.repo, Some(LockMode::Exclusive))?;
            let picks: Vec<PathBuf> = args.sources.iter().map(PathBuf::from).collect();
            let what = snapshot_options(ctx.cfg.as_ref(), &picks, &args.what)?;
            cmd::guard::run(&repo, what, &args, &ctx.progress, &mut ctx.out)
        }
        Command::Forget { ids } => cmd::pin::forget_command(ctx, ids),
        Command::Pin { id } => cmd::pin::pin_command(ctx, id),
        Command::Unpin { id } => cmd::pin::unpin_command(ctx, id),
        Command::Gc(args) => cmd::gc::gc_command(
            &ctx.repo,
            ctx.cfg.as_ref(),
            args,
            &ctx.progress,
            &mut ctx.out,
        ),
        Command::Check { read_data, json } => {
            cmd::check::check_command(&ctx.repo, read_data, json, &ctx.progress, &mut ctx.out)
        }
        Command::Repair(cli::RepairWhat::Index { json }) => repair_index(ctx, json),
        Command::List { json } => cmd::list::run(ctx, json),
        Command::Ls {
            id,
            path,
            recursive,
            json,
        } => cmd::ls::run(ctx, id, path, recursive, json),
        Command::Restore(args) => cmd::restore::run(ctx, args),
    }
}

/// `snap repair index`: the local index, or this machine's cache of a
/// remote repository, rebuilt from the repository's objects.
fn repair_index(ctx: &mut Ctx, json: bool) -> anyhow::Result<u8> {
    let path = match &ctx.repo {
        Some(p) => p.clone(),
        None => default_repo()?,
    };
    let st = match remote_of(&path)? {
        Some(r) => {
            let r = r.unlocked()?;
            // This machine's index of it is rebuilt in its cache.
            let cache = Repository::cache_dir(&*r.storage, &r.cache_base)?;
            snap::repo::create_private_dir(&cache)?;
            snap::ops::repair::repair_index_on(r.storage, &cache, &ctx.progress)?
        }
        None => snap::ops::repair::repair_index(&path, &ctx.progress)?,
    };
    ctx.progress.finish();
    cmd::repair::repair_report(&st, json, &mut ctx.out)
}

/// `--json` statistics of a command on a remote repository carry the
/// requests it sent (by kind) and the bytes moved.
fn with_requests(repo: &Repository, mut v: serde_json::Value) -> serde_json::Value {
    if let Some(c) = repo.storage().request_counts()
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert("requests".into(), json!(c));
    }
    v
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

/// A path's bytes in hex beside its lossy text, under `path_hex`, when
/// the path is not UTF-8: JSON readers get the exact name.
pub(crate) fn with_raw_path(mut v: serde_json::Value, p: &Path) -> serde_json::Value {
    use std::os::unix::ffi::OsStrExt;
    if p.to_str().is_none()
        && let Some(obj) = v.as_object_mut()
    {
        let hex = snap::objects::hex(p.as_os_str().as_bytes());
        obj.insert("path_hex".into(), json!(hex));
    }
    v
}

fn entry_json(path: &Path, e: &snap::tree::Entry) -> serde_json::Value {
    with_raw_path(entry_fields(path, e), path)
}

fn entry_fields(path: &Path, e: &snap::tree::Entry) -> serde_json::Value {
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

/// A path as a shell word: as it is when it holds only characters no shell
/// reads specially, else in single quotes (a quote inside as `'\''`).
/// Control characters and bytes that are not UTF-8 are escaped as
/// [`escape`] does, so the command is still one line (and then names the
/// path only for a reader, not for a shell).
pub(crate) fn shell_quote(p: &Path) -> String {
    let text = escape_path(p);
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text;
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// A path for text output, through [`escape`]: one path, one line.
pub(crate) fn escape_path(p: &Path) -> String {
    escape(p.as_os_str().as_encoded_bytes())
}

/// Printable names as they are; control characters and bytes that are not
/// UTF-8 as escapes (like `ls -b`), so one entry is always one line. Every
/// path and tag printed as text goes through it.
pub(crate) fn escape(bytes: &[u8]) -> String {
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
