//! `snap ls`: the entries of a snapshot.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::TreeId;
use crate::ops::bounds::Bounds;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Entry, Kind, Tree};

/// Find the entry at `rel`, a path inside the snapshot: relative to its
/// root, or starting with `/`, which is the snapshot's root (`/` and `.`
/// name the root itself). `None` for the root.
pub fn lookup(repo: &Repository, snap: &Snapshot, rel: &Path) -> Result<Option<(Entry, PathBuf)>> {
    let mut tree_id: TreeId = snap.root;
    let mut found: Option<Entry> = None;
    let mut walked = PathBuf::new();
    for comp in rel.components() {
        let name = match comp {
            Component::Normal(n) => n.as_bytes(),
            Component::CurDir | Component::RootDir => continue,
            _ => {
                return Err(Error::usage(format!(
                    "{}: a path inside a snapshot has no `..`",
                    rel.display()
                )));
            }
        };
        if let Some(e) = &found {
            tree_id = e.subtree().ok_or_else(|| Error::NotInSnapshot {
                path: rel.to_path_buf(),
                snapshot: snap.id.short(),
            })?;
        }
        let tree = repo.load_tree(&tree_id)?;
        let e = tree
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotInSnapshot {
                path: rel.to_path_buf(),
                snapshot: snap.id.short(),
            })?;
        walked.push(comp);
        found = Some(e);
    }
    Ok(found.map(|e| (e, walked)))
}

/// Visit every entry under `tree` depth-first, parents before children,
/// with paths relative to the snapshot root.
pub fn walk(
    repo: &Repository,
    tree: &TreeId,
    prefix: &Path,
    f: &mut dyn FnMut(&Path, &Entry) -> Result<()>,
) -> Result<()> {
    // Iterative, bounded by what is read (crate::ops::bounds): a deep or
    // expanding tree graph is damage, never a stack overflow or a hang.
    let mut bounds = Bounds::new(tree.short());
    let t: Tree = repo.load_tree(tree)?;
    bounds.enter(repo, tree, t.entries.len(), 0)?;
    let mut stack = vec![(t.entries.into_iter(), prefix.to_path_buf())];
    while let Some((entries, dir)) = stack.last_mut() {
        let Some(e) = entries.next() else {
            stack.pop();
            continue;
        };
        let p = dir.join(std::ffi::OsStr::from_bytes(&e.name));
        f(&p, &e)?;
        if let (Kind::Dir, Some(sub)) = (e.kind, e.subtree()) {
            let t = repo.load_tree(&sub)?;
            bounds.enter(repo, &sub, t.entries.len(), stack.len())?;
            stack.push((t.entries.into_iter(), p));
        }
    }
    Ok(())
}

/// `ls -l` style mode string.
pub fn mode_string(kind: Kind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(kind.letter());
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        let set = mode & bit != 0;
        s.push(match (special, set, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings() {
        assert_eq!(mode_string(Kind::File, 0o644), "-rw-r--r--");
        assert_eq!(mode_string(Kind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(Kind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(Kind::File, 0o2600), "-rw---S---");
    }
}
