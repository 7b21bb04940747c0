//! How far a walk of a snapshot's trees may go, from what was read.
//!
//! Trees are content-addressed, so a snapshot's trees form a graph, not a
//! tree: one subtree may be named many times. A hostile repository uses
//! that to make a 10 KB graph of 41 trees, each naming the next twice,
//! expand to 2^40 entries, and a snapshot record can claim any count it
//! likes. So the work of every walk (ls, find, dump, diff, check, restore)
//! is bounded by the trees themselves: the entries expanded may be at most
//! [`EXPANSION`] times the distinct entries read (a real directory repeats
//! a subtree a few times, never thousands of times on average), past a
//! floor of [`FLOOR`]; and no walk goes deeper than [`MAX_DEPTH`].

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::id::TreeId;
use crate::repo::Repository;

/// Directory levels a walk enters at most (as restore and check allow).
pub const MAX_DEPTH: usize = 1024;
/// Expanded entries per distinct entry read, on average, at most.
pub const EXPANSION: u64 = 4096;
/// Entries any snapshot may expand to, whatever its graph.
pub const FLOOR: u64 = 1 << 20;

/// What a walk has read so far.
pub struct Bounds {
    snapshot: String,
    distinct: HashSet<TreeId>,
    distinct_entries: u64,
    expanded: u64,
}

impl Bounds {
    /// For a walk of snapshot `snapshot` (short id, for messages).
    pub fn new(snapshot: impl Into<String>) -> Bounds {
        Bounds {
            snapshot: snapshot.into(),
            distinct: HashSet::new(),
            distinct_entries: 0,
            expanded: 0,
        }
    }

    /// Tree `id`, of `entries` entries, is entered `depth` levels down.
    pub fn enter(
        &mut self,
        repo: &Repository,
        id: &TreeId,
        entries: usize,
        depth: usize,
    ) -> Result<()> {
        let damaged = |reason: String| Error::Damaged {
            path: repo.index_path(),
            reason,
        };
        if depth >= MAX_DEPTH {
            return Err(damaged(format!(
                "snapshot {} nests directories deeper than {MAX_DEPTH} levels",
                self.snapshot
            )));
        }
        if self.distinct.insert(*id) {
            self.distinct_entries += entries as u64;
        }
        self.expanded += entries as u64;
        let allowed = self.distinct_entries.saturating_mul(EXPANSION).max(FLOOR);
        if self.expanded > allowed {
            return Err(damaged(format!(
                "the trees of snapshot {} name the same subtrees over and over: {} distinct entries expand past {} (a graph built to expand, not a directory)",
                self.snapshot, self.distinct_entries, self.expanded
            )));
        }
        Ok(())
    }
}
