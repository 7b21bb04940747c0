//! `snap guard -- MIGRATION`: a migration session around a subprocess.
//!
//! The session itself (pinned `pre-migration` snapshot, rollback or keep)
//! is the library's (`snap::ops::migration`); what is the binary's is the
//! subprocess and the signals. The migration runs with snap's stdin, stdout
//! and stderr. SIGTERM and SIGHUP sent to snap are forwarded to it; so is
//! SIGINT sent with `kill` (a Ctrl-C at the terminal already reaches the
//! whole process group, so it is not sent twice). snap itself does not die
//! from them while the migration runs: it must stay to roll back.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use serde::Serialize;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;

use crate::cli::{GuardArgs, count};
use snap::ops::create::CreateOptions;
use snap::ops::migration::{
    LABEL_RUN, Outcome, begin_migration, finish_migration, snapshot_migrated,
};
use snap::ops::restore::RestoreStats;
use snap::progress::Progress;
use snap::{Error, Repository};

/// What `snap guard --json` prints.
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
    /// Older kept sessions' snapshots forgotten because of `keep`.
    pub forgotten: Vec<String>,
    /// With `--snapshot-after`: the snapshot of the migrated state.
    pub migrated_snapshot: Option<String>,
    /// The id every snapshot of this run carries as its `migration:run` label.
    pub run: Option<String>,
    pub duration_ms: u64,
}

pub fn run(
    repo: &Repository,
    what: CreateOptions,
    args: &GuardArgs,
    progress: &dyn Progress,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let started = Instant::now();
    let Some((program, rest)) = args.command.split_first() else {
        anyhow::bail!("no migration command given");
    };
    crate::record_sources(repo, &what);
    let snap = begin_migration(repo, &what, progress)?;
    progress.finish();
    let id = snap.id.to_hex();
    // From before the spawn: no termination signal is lost in between.
    let signals = Forwarder::start().map_err(|e| anyhow::anyhow!("cannot watch signals: {e}"))?;
    let mut cmd = Command::new(program);
    cmd.args(rest).env("SNAP_GUARD_SNAPSHOT", &id);
    let status = match signals.run(cmd) {
        Ok(st) => st,
        Err(e) => {
            // Nothing ran, so nothing changed: the snapshot stays, unpinned.
            let _ = repo.set_pinned(&snap.id, false);
            return Err(Error::usage(format!(
                "cannot run {}: {e}; nothing was changed (snapshot {} kept)",
                program.to_string_lossy(),
                snap.id.short()
            ))
            .into());
        }
    };
    let mut failure = describe("the migration", &status);
    let mut check_exit_code = None;
    if failure.is_none()
        && let Some(check) = &args.check
    {
        let mut c = Command::new("sh");
        c.arg("-c").arg(check).env("SNAP_GUARD_SNAPSHOT", &id);
        match signals.run(c) {
            Ok(st) => {
                check_exit_code = st.code();
                failure = describe("the check", &st);
            }
            Err(e) => failure = Some(format!("the check could not run: {e}")),
        }
    }
    if let Some(why) = &failure {
        progress.warn(&snap::progress::Warning::general(format!(
            "{why}; rolling back to snapshot {}",
            snap.id.short()
        )));
    }
    let end = finish_migration(repo, &snap.id, failure.is_none(), args.keep, progress)?;
    let migrated_snapshot = match end.outcome {
        Outcome::Migrated if args.snapshot_after => Some(
            snapshot_migrated(repo, &snap.id, &what, progress)?
                .id
                .to_hex(),
        ),
        _ => None,
    };
    progress.finish();
    let report = GuardReport {
        outcome: end.outcome,
        snapshot: id,
        exit_code: status.code(),
        signal: status.signal(),
        check_exit_code,
        failure,
        restore: end.restore,
        rolled_back: end.rolled_back,
        rolled_back_more: end.rolled_back_more,
        forgotten: end.forgotten.iter().map(|i| i.to_hex()).collect(),
        migrated_snapshot,
        run: snap.labels.get(LABEL_RUN).cloned(),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    print(out, &report, args.json)?;
    Ok(match report.outcome {
        Outcome::Migrated => 0,
        Outcome::RolledBack => crate::exit::ROLLED_BACK,
        Outcome::RollbackIncomplete => crate::exit::ROLLBACK_INCOMPLETE,
    })
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

fn print(out: &mut impl Write, r: &GuardReport, json: bool) -> anyhow::Result<()> {
    if json {
        // One line, the last of stdout (the migration shares stdout).
        serde_json::to_writer(&mut *out, r)?;
        writeln!(out)?;
        return Ok(());
    }
    let short = &r.snapshot[..8];
    match r.outcome {
        Outcome::Migrated => {
            writeln!(
                out,
                "migration succeeded; snapshot {short} holds the state before it (tagged pre-migration,migration-kept; `snap restore {short}` goes back)"
            )?;
            if let Some(after) = &r.migrated_snapshot {
                writeln!(
                    out,
                    "snapshot {} holds the migrated state (tagged migrated)",
                    &after[..8]
                )?;
            }
            for id in &r.forgotten {
                writeln!(out, "forgot older guard snapshot {}", &id[..8])?;
            }
        }
        Outcome::RolledBack | Outcome::RollbackIncomplete => {
            let st = r.restore.as_ref();
            writeln!(
                out,
                "{}; rolled back to snapshot {short}: wrote {}, deleted {}, fixed metadata of {}",
                r.failure.as_deref().unwrap_or("the migration failed"),
                count(st.map_or(0, |s| s.written_files), "file"),
                count(st.map_or(0, |s| s.deleted_entries), "entry"),
                count(st.map_or(0, |s| s.fixed_metadata), "entry"),
            )?;
            const SHOWN: usize = 20;
            for line in r.rolled_back.iter().take(SHOWN) {
                writeln!(out, "  {line}")?;
            }
            let more = r.rolled_back.len().saturating_sub(SHOWN) + r.rolled_back_more;
            if more > 0 {
                writeln!(out, "  ... and {more} more")?;
            }
            if let Some(id) = st.and_then(|s| s.safety_snapshot.as_ref()) {
                writeln!(
                    out,
                    "the state the migration left is snapshot {} (`snap restore {}` brings it back)",
                    &id[..8],
                    &id[..8]
                )?;
            }
            for (p, why) in st.map_or(&[][..], |s| s.failed.as_slice()) {
                eprintln!("snap: {p}: not rolled back: {why}");
            }
        }
    }
    Ok(())
}
