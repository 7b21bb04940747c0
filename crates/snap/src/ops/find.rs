//! `snap find`: which snapshots hold paths matching glob patterns.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::ops::ls::walk;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::Entry;

/// One match: the snapshot, the path (relative to its root) and the entry.
pub struct Found {
    pub snapshot: Snapshot,
    pub path: PathBuf,
    pub entry: Entry,
}

/// Every entry of `snapshots` whose path matches one of `patterns` (the
/// rules of excludes: a pattern without `/` matches a name at any depth).
pub fn find(repo: &Repository, snapshots: &[Snapshot], patterns: &[String]) -> Result<Vec<Found>> {
    let m = Excludes::new(patterns).map_err(|e| Error::usage(e.replace("exclude ", "")))?;
    let mut out = Vec::new();
    for s in snapshots {
        walk(repo, &s.root, std::path::Path::new(""), &mut |p, e| {
            if m.excludes(p, e.kind == crate::tree::Kind::Dir) {
                out.push(Found {
                    snapshot: s.clone(),
                    path: p.to_path_buf(),
                    entry: e.clone(),
                });
            }
            Ok(())
        })?;
    }
    Ok(out)
}
