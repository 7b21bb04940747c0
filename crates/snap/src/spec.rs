//! Naming a snapshot: what a user types where a snapshot id goes.
//!
//! ```text
//! SPEC   = BASE [ "~" N ]
//! BASE   = "latest"            the newest snapshot that is not a safety snapshot
//!        | "tag:" NAME         the newest snapshot with that tag (safety snapshots too)
//!        | HEX                 a full id or a unique prefix of one
//! ~N     = the N-th snapshot before BASE's, among those of the same source
//!          (safety snapshots skipped)
//! ```
//!
//! A *safety snapshot* is the one a restore takes of what it is about to
//! change (tagged `pre-restore`). It is never what `latest` means: after
//! `snap restore latest`, a second `snap restore latest` must restore the
//! same snapshot again, not undo the first. `tag:pre-restore` names it.
//! When the command is about one source (a `create --parent`, a `diff`
//! against the source), `latest` is the newest of that source.

use std::path::Path;

use crate::error::{Error, Result};
use crate::snapshot::Snapshot;

/// The tag of the snapshots restore takes before it changes anything.
pub const SAFETY_TAG: &str = "pre-restore";

pub fn is_safety(s: &Snapshot) -> bool {
    s.tags.iter().any(|t| t == SAFETY_TAG)
}

/// Resolve `spec` among `all` (oldest first), within `source` when given.
pub fn resolve(all: &[Snapshot], spec: &str, source: Option<&Path>) -> Result<Snapshot> {
    let no = || Error::NoSuchSnapshot(spec.to_string());
    let (base, back) = match spec.rsplit_once('~') {
        Some((b, n)) => (b, n.parse::<usize>().map_err(|_| no())?),
        None => (spec, 0),
    };
    let in_scope = |s: &&Snapshot| source.is_none_or(|p| s.source == p);
    let found: &Snapshot = if base == "latest" {
        all.iter()
            .filter(in_scope)
            .rfind(|s| !is_safety(s))
            .ok_or_else(no)?
    } else if let Some(tag) = base.strip_prefix("tag:") {
        all.iter()
            .filter(in_scope)
            .rfind(|s| s.tags.iter().any(|t| t == tag))
            .ok_or_else(no)?
    } else {
        by_prefix(all, base).map_err(|e| match e {
            Error::NoSuchSnapshot(_) => no(),
            e => e,
        })?
    };
    if back == 0 {
        return Ok(found.clone());
    }
    // Walk back among the same source's snapshots, safety ones skipped.
    let line: Vec<&Snapshot> = all
        .iter()
        .filter(|s| s.source == found.source && (!is_safety(s) || s.id == found.id))
        .collect();
    let at = line.iter().position(|s| s.id == found.id).ok_or_else(no)?;
    let want = at.checked_sub(back).ok_or_else(|| {
        Error::usage(format!(
            "{spec}: snapshot {} has only {at} snapshot{} of {} before it",
            found.id.short(),
            if at == 1 { "" } else { "s" },
            found.source.display()
        ))
    })?;
    Ok(line[want].clone())
}

/// A full id or a unique hex prefix.
fn by_prefix<'a>(all: &'a [Snapshot], spec: &str) -> Result<&'a Snapshot> {
    let want = spec.to_ascii_lowercase();
    if want.is_empty() || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::NoSuchSnapshot(spec.to_string()));
    }
    let hits: Vec<&Snapshot> = all
        .iter()
        .filter(|s| s.id.to_hex().starts_with(&want))
        .collect();
    match hits.as_slice() {
        [] => Err(Error::NoSuchSnapshot(spec.to_string())),
        [one] => Ok(one),
        many => Err(Error::AmbiguousSnapshot {
            prefix: spec.to_string(),
            count: many.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{SnapshotId, TreeId};

    fn snap(n: u8, source: &str, tags: &[&str]) -> Snapshot {
        let mut id = [0u8; 32];
        id[0] = n;
        id[1] = 0xab;
        Snapshot {
            id: SnapshotId(id),
            time_ns: n as i64,
            host: "h".into(),
            source: source.into(),
            root: TreeId([0; 32]),
            parent: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            labels: Default::default(),
            complete: true,
            pinned: false,
            unreadable: vec![],
            stats: Default::default(),
            root_meta: Default::default(),
            sources: vec![],
        }
    }

    fn id_of(all: &[Snapshot], spec: &str, source: Option<&str>) -> Option<u8> {
        resolve(all, spec, source.map(Path::new))
            .ok()
            .map(|s| s.id.0[0])
    }

    #[test]
    fn latest_skips_safety_snapshots_and_walks_back_per_source() {
        let all = vec![
            snap(1, "/a", &[]),
            snap(2, "/b", &[]),
            snap(3, "/a", &["pre-migration"]),
            snap(4, "/a", &[SAFETY_TAG]),
            snap(5, "/b", &[]),
            snap(6, "/a", &[SAFETY_TAG]),
        ];
        assert_eq!(id_of(&all, "latest", None), Some(5));
        assert_eq!(id_of(&all, "latest", Some("/a")), Some(3));
        assert_eq!(id_of(&all, "latest~1", None), Some(2));
        assert_eq!(id_of(&all, "latest~2", None), None);
        assert_eq!(id_of(&all, "latest~1", Some("/a")), Some(1));
        assert_eq!(id_of(&all, "tag:pre-restore", None), Some(6));
        assert_eq!(id_of(&all, "tag:pre-migration", None), Some(3));
        assert_eq!(id_of(&all, "tag:pre-migration~1", None), Some(1));
        assert_eq!(id_of(&all, "tag:nothing", None), None);
        // A safety snapshot named by id walks back over its own source.
        let six = all[5].id.to_hex();
        assert_eq!(id_of(&all, &format!("{}~1", &six[..4]), None), Some(3));
        assert_eq!(id_of(&all, &six, None), Some(6));
        // Prefixes: ambiguous, unknown, not hex.
        assert!(matches!(
            resolve(&all, "0", None),
            Err(Error::AmbiguousSnapshot { count: 6, .. })
        ));
        assert_eq!(id_of(&all, "ff", None), None);
        assert_eq!(id_of(&all, "latest~x", None), None);
        assert_eq!(id_of(&all, "", None), None);
        let err = resolve(&all, "latest~9", None).unwrap_err().to_string();
        assert!(err.contains("has only 1 snapshot of /b before it"), "{err}");
    }
}
