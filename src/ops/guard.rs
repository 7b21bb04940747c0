//! `snap guard -- MIGRATION`: snapshot, run the migration, roll back on
//! failure.
//!
//! 1. A snapshot of the sources, tagged `pre-migration` and pinned (no
//!    retention policy can remove it while the migration runs).
//! 2. The migration runs with snap's stdin, stdout and stderr. SIGTERM and
//!    SIGHUP sent to snap are forwarded to it; so is SIGINT sent with
//!    `kill` (a Ctrl-C at the terminal already reaches the whole process
//!    group, so it is not sent twice). snap itself does not die from them:
//!    it must stay to roll back.
//! 3. If the migration exits non-zero or dies from a signal, or `--check`
//!    fails afterwards, the sources are restored in place to the snapshot
//!    (itself undoable: the restore takes its `pre-restore` snapshot of the
//!    failed state), and the snapshot is unpinned and tagged `rolled-back`.
//! 4. On success the snapshot is unpinned and tagged `migrated`; with
//!    `keep`, only the newest N `migrated` snapshots of these sources stay.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use serde::Serialize;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;

use crate::error::{Error, Result};
use crate::ops::create::{CreateOptions, create};
use crate::ops::restore::{RestoreOptions, RestoreStats, restore};
use crate::progress::Progress;
use crate::repo::Repository;

pub const TAG_PRE: &str = "pre-migration";
pub const TAG_MIGRATED: &str = "migrated";
pub const TAG_ROLLED_BACK: &str = "rolled-back";

#[derive(Debug, Clone, Default)]
pub struct GuardOptions {
    /// What to snapshot (sources, labels, ...); tags and pinning are set here.
    pub snapshot: CreateOptions,
    /// The migration: program and arguments.
    pub command: Vec<OsString>,
    /// A shell command (`sh -c`) that must succeed after the migration.
    pub check: Option<String>,
    /// Keep only the newest N `migrated` snapshots of these sources.
    pub keep: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The migration (and the check) succeeded; the changes stay.
    Migrated,
    /// The migration failed; the sources are exactly the snapshot again.
    RolledBack,
    /// The migration failed and some entries could not be rolled back
    /// (listed in `restore.failed`).
    RollbackIncomplete,
}

#[derive(Debug, Clone, Serialize)]
pub struct GuardReport {
    pub outcome: Outcome,
    /// The pre-migration snapshot.
    pub snapshot: String,
    /// The migration's exit code, or the signal that killed it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The check's exit code, when it ran.
    pub check_exit_code: Option<i32>,
    /// Why the migration counts as failed.
    pub failure: Option<String>,
    /// The rollback, when there was one.
    pub restore: Option<RestoreStats>,
    /// What the rollback changed back: `"<verb> <path>"`, at most 100.
    pub rolled_back: Vec<String>,
    pub rolled_back_more: usize,
    /// Older `migrated` snapshots forgotten because of `keep`.
    pub forgotten: Vec<String>,
    pub duration_ms: u64,
}

fn describe(what: &str, st: &ExitStatus) -> Option<String> {
    match (st.code(), st.signal()) {
        (Some(0), _) => None,
        (Some(c), _) => Some(format!("{what} exited with status {c}")),
        (None, Some(s)) => Some(format!(
            "{what} was killed by signal {s} ({})",
            signal_hook::low_level::signal_name(s).unwrap_or("?")
        )),
        (None, None) => Some(format!("{what} ended abnormally")),
    }
}

/// Termination signals for the whole of a guard run: while a child runs
/// they are forwarded to it; at any other moment they act as they would
/// have on snap (it dies, and the pinned snapshot tells the next guard).
struct Forwarder {
    child: Arc<AtomicI32>,
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start() -> std::io::Result<Forwarder> {
        let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])?;
        let handle = signals.handle();
        let child = Arc::new(AtomicI32::new(0));
        let pid = child.clone();
        let thread = std::thread::spawn(move || {
            for sig in signals.forever() {
                let pid = pid.load(Ordering::SeqCst);
                if pid == 0 {
                    // No child: what the signal would have done to snap.
                    let _ = signal_hook::low_level::emulate_default_handler(sig.signal);
                    continue;
                }
                // A terminal's Ctrl-C (or Ctrl-\) has no sending process and
                // already reached the child, which shares our process group.
                let from_tty = matches!(sig.signal, SIGINT | SIGQUIT) && sig.process.is_none();
                if !from_tty {
                    unsafe { libc::kill(pid, sig.signal) };
                }
            }
        });
        Ok(Forwarder {
            child,
            handle,
            thread: Some(thread),
        })
    }

    /// Run `cmd`, forwarding termination signals to it, and wait for it.
    fn run(&self, mut cmd: Command) -> std::io::Result<ExitStatus> {
        let mut child = cmd.spawn()?;
        self.child.store(child.id() as i32, Ordering::SeqCst);
        let status = child.wait();
        self.child.store(0, Ordering::SeqCst);
        status
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A migration that replaced a source directory with a symlink: the
/// snapshot was taken of a real directory moments ago, so the rollback
/// removes the symlink (never what it points to) and restores the directory.
fn replace_source_symlinks(
    snap: &crate::snapshot::Snapshot,
    progress: &dyn Progress,
) -> Result<()> {
    let paths: Vec<PathBuf> = if snap.is_multi_source() {
        snap.sources
            .iter()
            .map(|s| PathBuf::from(&s.path))
            .collect()
    } else {
        vec![snap.source.clone()]
    };
    for p in paths {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            progress.warn(&format!(
                "{}: the migration replaced the directory with a symlink; removing the symlink (not what it points to) to restore the directory",
                p.display()
            ));
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// Refuse to start while an earlier guard of the same sources never
/// finished (snap was killed): its snapshot is still pinned and tagged only
/// `pre-migration`, and the directory may be half-migrated. A new guard would
/// take that state as "before".
fn unfinished_guard(repo: &Repository, what: &CreateOptions) -> Result<()> {
    // The source as recorded, whether or not a migration has since turned
    // it into a symlink (canonicalizing would follow that symlink away).
    let keys: Vec<PathBuf> = if what.sources.is_empty() {
        let as_named = what
            .source
            .parent()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .zip(what.source.file_name())
            .map(|(p, n)| p.join(n));
        let resolved = std::fs::canonicalize(&what.source).ok();
        [as_named, resolved, Some(what.source.clone())]
            .into_iter()
            .flatten()
            .collect()
    } else {
        vec![what.source.clone()]
    };
    let key = keys[0].clone();
    let stuck = repo.snapshots()?.into_iter().find(|s| {
        keys.contains(&s.source)
            && s.pinned
            && s.tags.iter().any(|t| t == TAG_PRE)
            && !s
                .tags
                .iter()
                .any(|t| t == TAG_MIGRATED || t == TAG_ROLLED_BACK)
    });
    match stuck {
        None => Ok(()),
        Some(s) => Err(Error::Invalid(format!(
            "{}: an earlier `snap guard` did not finish (snapshot {} from {}, still pinned); the directory may be half-migrated. Roll it back with `snap restore {id}` then `snap unpin {id}`, or keep it as it is with `snap unpin {id}`",
            key.display(),
            s.id.short(),
            s.time_string(),
            id = s.id.short()
        ))),
    }
}

pub fn guard(
    repo: &Repository,
    opts: &GuardOptions,
    progress: &dyn Progress,
) -> Result<GuardReport> {
    let started = Instant::now();
    let Some((program, args)) = opts.command.split_first() else {
        return Err(Error::Invalid("no migration command given".into()));
    };
    unfinished_guard(repo, &opts.snapshot)?;
    let mut co = opts.snapshot.clone();
    co.tags.retain(|t| t != TAG_PRE);
    co.tags.push(TAG_PRE.to_string());
    co.pinned = true;
    let snap = create(repo, &co, progress)?;
    if !snap.complete {
        repo.set_pinned(&snap.id, false)?;
        return Err(Error::Invalid(format!(
            "the pre-migration snapshot {} is incomplete ({} path(s) unreadable: {}); a rollback could not restore them, so the migration was not run",
            snap.id.short(),
            snap.unreadable.len(),
            snap.unreadable
                .iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    progress.finish();

    // From before the spawn: no termination signal is lost in between.
    let signals =
        Forwarder::start().map_err(|e| Error::Invalid(format!("cannot watch signals: {e}")))?;
    let mut cmd = Command::new(program);
    cmd.args(args).env("SNAP_GUARD_SNAPSHOT", snap.id.to_hex());
    let status = signals.run(cmd).map_err(|e| {
        let _ = repo.set_pinned(&snap.id, false);
        Error::Invalid(format!(
            "cannot run {}: {e}; nothing was changed (snapshot {} kept)",
            program.to_string_lossy(),
            snap.id.short()
        ))
    })?;
    let mut failure = describe("the migration", &status);
    let mut check_exit_code = None;
    if failure.is_none()
        && let Some(check) = &opts.check
    {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(check)
            .env("SNAP_GUARD_SNAPSHOT", snap.id.to_hex());
        match signals.run(c) {
            Ok(st) => {
                check_exit_code = st.code();
                failure = describe("the check", &st);
            }
            Err(e) => failure = Some(format!("the check could not run: {e}")),
        }
    }
    let mut report = GuardReport {
        outcome: Outcome::Migrated,
        snapshot: snap.id.to_hex(),
        exit_code: status.code(),
        signal: status.signal(),
        check_exit_code,
        failure: failure.clone(),
        restore: None,
        rolled_back: Vec::new(),
        rolled_back_more: 0,
        forgotten: Vec::new(),
        duration_ms: 0,
    };
    let mut tags: Vec<String> = snap
        .tags
        .iter()
        .filter(|t| *t != TAG_PRE)
        .cloned()
        .collect();
    if let Some(why) = failure {
        progress.warn(&format!(
            "{why}; rolling back to snapshot {}",
            snap.id.short()
        ));
        replace_source_symlinks(&snap, progress)?;
        let (plan, stats) = restore(
            repo,
            &snap,
            &RestoreOptions {
                safety_snapshot: true,
                // The rollback is the point: what the failed migration left
                // unreadable is named by the warning, not a reason to stop.
                force: true,
                ..RestoreOptions::default()
            },
            progress,
        )?;
        let stats = stats.expect("not a dry run");
        let changes: Vec<String> = plan
            .steps
            .iter()
            .filter_map(|st| Some(format!("{} {}", st.verb()?, st.path().display())))
            .collect();
        report.rolled_back_more = changes.len().saturating_sub(100);
        report.rolled_back = changes.into_iter().take(100).collect();
        report.outcome = if stats.failed.is_empty() {
            Outcome::RolledBack
        } else {
            Outcome::RollbackIncomplete
        };
        report.restore = Some(stats);
        tags.push(TAG_PRE.to_string());
        tags.push(TAG_ROLLED_BACK.to_string());
    } else {
        tags.push(TAG_MIGRATED.to_string());
    }
    repo.set_tags(&snap.id, &tags)?;
    repo.set_pinned(&snap.id, false)?;
    if report.outcome == Outcome::Migrated
        && let Some(keep) = opts.keep
    {
        let mut old: Vec<_> = repo
            .snapshots()?
            .into_iter()
            .filter(|s| s.source == snap.source && s.tags.iter().any(|t| t == TAG_MIGRATED))
            .filter(|s| !s.pinned)
            .collect();
        old.sort_by_key(|s| std::cmp::Reverse(s.time_ns));
        let gone: Vec<_> = old.into_iter().skip(keep).map(|s| s.id).collect();
        if !gone.is_empty() {
            crate::ops::gc::forget(repo, &gone)?;
            report.forgotten = gone.iter().map(|i| i.to_hex()).collect();
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}
