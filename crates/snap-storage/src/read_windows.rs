//! A cache of aligned read windows shared by every reader of one remote
//! storage: each window is fetched once however many workers want it
//! (the second waits for the first's fetch), the next window is fetched
//! ahead while the current one is used, and memory is bounded by a number
//! of windows for the whole storage, not per open object.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;

/// One window: fetched, or being fetched.
pub struct Window {
    data: Mutex<Option<Result<Bytes, String>>>,
    ready: Condvar,
}

impl Window {
    fn new() -> Arc<Window> {
        Arc::new(Window {
            data: Mutex::new(None),
            ready: Condvar::new(),
        })
    }

    /// Called once by whoever fetched it.
    pub fn fill(&self, r: Result<Bytes, String>) {
        *self.data.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        self.ready.notify_all();
    }

    /// Its bytes, once fetched.
    pub fn wait(&self) -> Result<Bytes, String> {
        let mut g = self.data.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = &*g {
                return r.clone();
            }
            g = self.ready.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The windows, least recently used first.
pub struct ReadWindows {
    slots: Mutex<VecDeque<(String, u64, Arc<Window>)>>,
    budget: usize,
}

impl ReadWindows {
    pub fn new(budget: usize) -> ReadWindows {
        ReadWindows {
            slots: Mutex::new(VecDeque::new()),
            budget,
        }
    }

    /// The window of `key` at `start`, and whether the caller must fetch
    /// it (it was not there: it is now, empty, for others to wait on).
    /// A failed fetch is forgotten, so the next read tries again.
    pub fn get(&self, key: &str, start: u64) -> (Arc<Window>, bool) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = slots.iter().position(|(k, s, _)| *s == start && k == key) {
            let failed = matches!(
                &*slots[i].2.data.lock().unwrap_or_else(|e| e.into_inner()),
                Some(Err(_))
            );
            let slot = slots.remove(i).expect("found");
            if !failed {
                let w = slot.2.clone();
                slots.push_back(slot);
                return (w, false);
            }
        }
        if slots.len() >= self.budget {
            slots.pop_front();
        }
        let w = Window::new();
        slots.push_back((key.to_string(), start, w.clone()));
        (w, true)
    }

    /// Is the window of `key` at `start` held (fetched or on its way)?
    pub fn holds(&self, key: &str, start: u64) -> bool {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.iter().any(|(k, s, _)| *s == start && k == key)
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Windows held (fetched or being fetched).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_fetched_once_and_the_budget_evicts_the_least_recent() {
        let w = ReadWindows::new(2);
        let (a, fetch) = w.get("k", 0);
        assert!(fetch);
        let (a2, fetch2) = w.get("k", 0);
        assert!(!fetch2, "the second reader waits for the first's fetch");
        a.fill(Ok(Bytes::from_static(b"abc")));
        assert_eq!(a2.wait().unwrap(), Bytes::from_static(b"abc"));
        let (b, _) = w.get("k", 4);
        b.fill(Ok(Bytes::new()));
        let _ = w.get("k", 0); // now the most recent
        let (_, fetch_c) = w.get("other", 0);
        assert!(fetch_c);
        assert_eq!(w.len(), 2);
        assert!(!w.get("k", 0).1, "kept: used more recently than k@4");
        assert!(w.get("k", 4).1, "evicted");
    }

    #[test]
    fn a_failed_fetch_is_tried_again() {
        let w = ReadWindows::new(4);
        let (a, _) = w.get("k", 0);
        a.fill(Err("boom".into()));
        assert!(a.wait().is_err());
        assert!(w.get("k", 0).1);
    }
}
