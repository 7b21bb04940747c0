//! Deterministic crash injection for tests.
//!
//! Each step of snap's write order (a pack made durable, a rename, a commit,
//! a file replaced by restore, an unlink by gc) passes a fault point. Armed
//! with [`crash_after`]`(N)`, the process aborts at the N-th point, as
//! abruptly as `kill -9`: no destructor runs, temporaries stay. A pause
//! point ([`pause_at`]) holds the process still so a test can change the
//! world at a known moment. The binary arms both from `SNAP_FAULT_AFTER`,
//! `SNAP_PAUSE_AT` and `SNAP_PAUSE_FILE`; the library reads no environment.
//!
//! All of it is compiled only into builds with debug assertions (the
//! tests' builds) or with the cargo feature `fault-injection`: a release
//! binary has no fault point and ignores those variables; there every
//! point is an empty inline function.

#[cfg(any(feature = "fault-injection", debug_assertions))]
mod armed {
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static PASSED: AtomicU64 = AtomicU64::new(0);
    /// 0: never crash.
    static CRASH_AFTER: AtomicU64 = AtomicU64::new(0);
    static PAUSE: OnceLock<(String, PathBuf)> = OnceLock::new();

    pub fn crash_after(n: u64) {
        CRASH_AFTER.store(n, Ordering::Relaxed);
    }

    pub fn pause_at(name: &str, file: &Path) {
        let _ = PAUSE.set((name.to_string(), file.to_path_buf()));
    }

    pub fn point(name: &str) {
        let n = PASSED.fetch_add(1, Ordering::Relaxed) + 1;
        if CRASH_AFTER.load(Ordering::Relaxed) == n {
            eprintln!("snap: injected crash at fault point {n} ({name})");
            std::process::abort();
        }
    }

    pub fn pause(name: &str) {
        let Some((at, file)) = PAUSE.get() else {
            return;
        };
        if at != name || std::fs::write(file, std::process::id().to_string()).is_err() {
            return;
        }
        let start = std::time::Instant::now();
        while file.exists() && start.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn passed() -> u64 {
        PASSED.load(Ordering::Relaxed)
    }
}

#[cfg(any(feature = "fault-injection", debug_assertions))]
pub use armed::{crash_after, passed, pause, pause_at, point};

/// A step of the write order has just completed.
#[cfg(not(any(feature = "fault-injection", debug_assertions)))]
#[inline(always)]
pub fn point(_name: &str) {}

/// A place where a test may hold the process still.
#[cfg(not(any(feature = "fault-injection", debug_assertions)))]
#[inline(always)]
pub fn pause(_name: &str) {}
