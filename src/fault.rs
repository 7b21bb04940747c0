//! Deterministic crash injection for tests.
//!
//! Each step of snap's write order (a pack made durable, a rename, a commit,
//! a file replaced by restore, an unlink by gc) passes a fault point. With
//! `SNAP_FAULT_AFTER=N` in the environment the process aborts at the N-th
//! point, as abruptly as `kill -9`: no destructor runs, temporaries stay.
//! With `SNAP_FAULT_REPORT=1` the binary prints how many points it passed.
//! Without either variable a fault point is one relaxed atomic increment.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static PASSED: AtomicU64 = AtomicU64::new(0);

fn limit() -> Option<u64> {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("SNAP_FAULT_AFTER")
            .ok()
            .and_then(|s| s.parse().ok())
    })
}

/// A step of the write order has just completed.
pub fn point(name: &str) {
    let n = PASSED.fetch_add(1, Ordering::Relaxed) + 1;
    if limit() == Some(n) {
        eprintln!("snap: injected crash at fault point {n} ({name})");
        std::process::abort();
    }
}

/// A place where a test may hold the process still: with
/// `SNAP_PAUSE_AT=NAME` and `SNAP_PAUSE_FILE=PATH`, the pause named NAME
/// creates PATH and waits (at most a minute) until the test removes it,
/// so that a test can change the world at a known moment.
pub fn pause(name: &str) {
    if std::env::var_os("SNAP_PAUSE_AT").is_none_or(|v| v != name) {
        return;
    }
    let Some(file) = std::env::var_os("SNAP_PAUSE_FILE") else {
        return;
    };
    if std::fs::write(&file, std::process::id().to_string()).is_err() {
        return;
    }
    let start = std::time::Instant::now();
    while std::path::Path::new(&file).exists() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// How many fault points this process has passed.
pub fn passed() -> u64 {
    PASSED.load(Ordering::Relaxed)
}
