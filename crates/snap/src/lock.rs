//! The repository lock: `flock` on `<repo>/lock`.
//!
//! Writers (create, restore with a safety snapshot, gc, forget, pin) hold it
//! exclusively; readers that open pack files (restore, check) hold it shared,
//! so gc never deletes a pack under them. A process that waits gives up after
//! a bounded time and names the holder, whose description the exclusive
//! holder writes into the file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

pub struct RepoLock {
    file: File,
    mode: LockMode,
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        // Clear the holder's description before the lock goes with the file.
        if self.mode == LockMode::Exclusive {
            let _ = self.file.set_len(0);
        }
    }
}

/// Milliseconds to wait for a busy lock (the binary sets it from
/// `SNAP_LOCK_WAIT`).
static WAIT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(30_000);

/// How long opening a repository waits for a busy lock, for this process:
/// 30 s unless set.
pub fn set_default_wait(wait: Duration) {
    WAIT_MS.store(
        wait.as_millis().min(u64::MAX as u128) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}

pub fn default_wait() -> Duration {
    Duration::from_millis(WAIT_MS.load(std::sync::atomic::Ordering::Relaxed))
}

static WAIT_NOTICE: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

/// Who to tell, once per wait, that a lock is busy and who holds it (the
/// binary prints it; the library never does).
pub fn set_wait_notice(f: fn(&str)) {
    let _ = WAIT_NOTICE.set(f);
}

fn read_holder(file: &mut File) -> String {
    let mut holder = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut holder);
    let holder = holder.trim();
    if holder.is_empty() {
        "a reader: restore or check".to_string()
    } else {
        holder.to_string()
    }
}

impl RepoLock {
    pub fn acquire(repo: &Path, mode: LockMode, wait: Duration) -> Result<RepoLock> {
        let path: PathBuf = repo.join("lock");
        // Never through a symlink (a planted `lock -> /etc/passwd` would be
        // truncated); readable by the owner only (it names the command).
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    Error::Damaged {
                        path: path.clone(),
                        reason: "the lock file is a symlink; snap never writes through one".into(),
                    }
                } else {
                    Error::io(&path, e)
                }
            })?;
        let start = Instant::now();
        let mut told = false;
        loop {
            let got = match mode {
                LockMode::Shared => file.try_lock_shared(),
                LockMode::Exclusive => file.try_lock(),
            };
            match got {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    if start.elapsed() >= wait {
                        return Err(Error::Locked {
                            path: repo.to_path_buf(),
                            holder: read_holder(&mut file),
                            waited_secs: wait.as_secs(),
                        });
                    }
                    if !told && let Some(tell) = WAIT_NOTICE.get() {
                        told = true;
                        tell(&format!(
                            "waiting up to {} s for the repository lock, held by {}",
                            wait.as_secs(),
                            read_holder(&mut file)
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
        if mode == LockMode::Exclusive {
            let who = format!(
                "pid {} on {}, `{}`, since {}",
                std::process::id(),
                crate::hostname(),
                std::env::args().collect::<Vec<_>>().join(" "),
                jiff::Timestamp::now()
                    .round(jiff::Unit::Second)
                    .unwrap_or(jiff::Timestamp::now()),
            );
            file.set_len(0).at(&path)?;
            file.seek(SeekFrom::Start(0)).at(&path)?;
            file.write_all(who.as_bytes()).at(&path)?;
        }
        Ok(RepoLock { file, mode })
    }
}
