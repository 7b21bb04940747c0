//! A write to a repository, and the one order it commits in.
//!
//! Every operation that changes a repository (create, gc, forget, tag, pin,
//! label, applying change records, restore's safety snapshot through
//! create) opens a [`WriteSession`] and never begins or commits the index
//! itself. The session owns the commit order that makes a crash at any
//! point safe (docs/design.md, "Crash safety"):
//!
//! 1. packs durable: data packs as they fill (the caller indexes each with
//!    [`WriteSession::add_pack`]), then the tree packs ([`flush`]);
//! 2. the snapshot objects, each durable in storage;
//! 3. the index commit, which makes all of it visible at once.
//!
//! Dropped without a commit, the session rolls the index back and forgets
//! the trees it stored: packs already durable are orphans that the next gc
//! removes, never data a snapshot names.
//!
//! [`flush`]: crate::repo::Repository::flush_trees

use crate::error::Result;
use crate::id::TreeId;
use crate::index::Index;
use crate::pack::FinishedPack;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::Tree;

/// An open write: the index transaction (one writer at a time: `BEGIN
/// IMMEDIATE`) and the trees stored in it.
pub struct WriteSession<'r> {
    repo: &'r Repository,
    open: bool,
}

impl Repository {
    /// Begin a write to this repository.
    pub(crate) fn write(&self) -> Result<WriteSession<'_>> {
        self.index().begin()?;
        Ok(WriteSession {
            repo: self,
            open: true,
        })
    }
}

impl<'r> WriteSession<'r> {
    /// The repository written to.
    pub(crate) fn repo(&self) -> &'r Repository {
        self.repo
    }

    /// The index, for the rows this write adds or changes.
    pub(crate) fn index(&self) -> &'r Index {
        self.repo.index()
    }

    /// Store a tree (in a tree pack at commit, and in the index where it
    /// keeps copies).
    pub(crate) fn store_tree(&self, tree: &Tree) -> Result<TreeId> {
        self.repo.store_tree(tree)
    }

    /// Index a data pack that is durable.
    pub(crate) fn add_pack(&self, pack: &FinishedPack) -> Result<()> {
        self.index().insert_pack(pack).map(|_| ())
    }

    /// Commit in the write order: the tree packs durable and indexed, then
    /// each snapshot object written (with the nonce in its id) and its row
    /// added, then the index commit.
    pub(crate) fn commit_snapshots(mut self, snapshots: &[(&Snapshot, u64)]) -> Result<()> {
        self.repo.flush_trees()?;
        for (snapshot, nonce) in snapshots {
            crate::objects::write_snapshot(&**self.repo.storage(), snapshot, *nonce)?;
            self.index().insert_snapshot(snapshot)?;
        }
        self.index().commit()?;
        self.open = false;
        Ok(())
    }

    /// Commit a write that adds no snapshot.
    pub(crate) fn commit(self) -> Result<()> {
        self.commit_snapshots(&[])
    }
}

impl Drop for WriteSession<'_> {
    fn drop(&mut self) {
        if self.open {
            self.repo.discard_trees();
            let _ = self.index().rollback();
        }
    }
}
