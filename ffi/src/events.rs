//! Progress and warnings as JSON events for the C callback.

use std::ffi::{CString, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use snap::{Progress, Warning};

use crate::SnapEventFn;

/// At most this often a `progress` event (phases and warnings always).
const INTERVAL: Duration = Duration::from_millis(100);
const UNKNOWN: u64 = u64::MAX;

/// The app's `user_data`: snap only passes it back.
struct UserData(*mut c_void);
// SAFETY: snap never dereferences it; the header tells the app that the
// callback runs on snap's threads, so what it points to must allow that.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

pub struct EventSink<'a> {
    callback: SnapEventFn,
    user_data: UserData,
    cancel: &'a AtomicBool,
    phase: Mutex<String>,
    total_bytes: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
    last: Mutex<Instant>,
}

impl<'a> EventSink<'a> {
    pub fn new(callback: SnapEventFn, user_data: *mut c_void, cancel: &'a AtomicBool) -> Self {
        EventSink {
            callback,
            user_data: UserData(user_data),
            cancel,
            phase: Mutex::new(String::new()),
            total_bytes: AtomicU64::new(UNKNOWN),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    fn emit(&self, event: Value) {
        let Some(cb) = self.callback else { return };
        let Ok(text) = CString::new(event.to_string()) else {
            return;
        };
        // SAFETY: the app gave this callback for this call. The string
        // becomes the app's (it frees it with snap_free), so a callback
        // that reads it later, on another thread (Dart's
        // NativeCallable.listener), reads valid memory.
        unsafe { cb(text.into_raw(), self.user_data.0) };
    }

    fn progress_event(&self) -> Value {
        let total = self.total_bytes.load(Ordering::Relaxed);
        json!({
            "event": "progress",
            "phase": *self.phase.lock().unwrap_or_else(|e| e.into_inner()),
            "entries": self.entries.load(Ordering::Relaxed),
            "bytes": self.bytes.load(Ordering::Relaxed),
            "total_bytes": (total != UNKNOWN).then_some(total),
        })
    }

    fn maybe_progress(&self) {
        if self.callback.is_none() {
            return;
        }
        // Whoever holds the clock reports; the others go on working.
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.elapsed() >= INTERVAL {
            *last = Instant::now();
            drop(last);
            self.emit(self.progress_event());
        }
    }

    /// The call is over: one last progress event with the final counts.
    pub fn finish(&self) {
        if self.callback.is_some()
            && !self
                .phase
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        {
            self.emit(self.progress_event());
        }
    }
}

impl Progress for EventSink<'_> {
    fn phase(&self, name: &str, total_bytes: Option<u64>) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = name.to_string();
        self.total_bytes
            .store(total_bytes.unwrap_or(UNKNOWN), Ordering::Relaxed);
        self.entries.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.emit(json!({"event": "phase", "name": name, "total_bytes": total_bytes}));
    }

    fn entries(&self, n: u64) {
        self.entries.fetch_add(n, Ordering::Relaxed);
        self.maybe_progress();
    }

    fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.maybe_progress();
    }

    fn warn(&self, w: &Warning) {
        self.emit(json!({
            "event": "warning",
            "kind": w.kind,
            "path": w.path.as_ref().map(|p| p.to_string_lossy()),
            "message": w.message,
        }));
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}
