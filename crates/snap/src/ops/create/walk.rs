//! The walk of one source: directories in order, the parent snapshot's
//! entries reused where a file is unchanged, jobs for the readers, and
//! trees stored bottom-up as their entries resolve.

use super::*;

/// A directory to visit: absolute path, path relative to the source, the
/// parent snapshot's tree for it, and where its tree id goes.
pub(super) type DirVisit = (PathBuf, PathBuf, Option<TreeId>, Option<(usize, usize)>);

/// The walk's ends of the channels: jobs to the readers, their results,
/// the packs the writer finished.
pub(super) type WalkChannels = (
    Sender<FileJob>,
    Receiver<FileResult>,
    Receiver<Result<FinishedPack>>,
);

pub(super) struct Walk<'a> {
    pub(super) repo: &'a Repository,
    /// Where the walk's trees and packs go.
    pub(super) session: &'a WriteSession<'a>,
    pub(super) force: bool,
    pub(super) sqlite_check: bool,
    pub(super) excludes: Option<&'a Excludes>,
    /// With --one-file-system: the source's device; other ones are not entered.
    pub(super) one_fs_dev: Option<u64>,
    /// The source's device: a directory on another is a mount, checked
    /// for a pseudo-filesystem (skipped unless `pseudo_filesystems`).
    pub(super) source_dev: u64,
    pub(super) pseudo_filesystems: bool,
    /// Each SQLite database captured (or reused unchanged), by relative path.
    pub(super) dbs: Vec<(String, DbInfo)>,
    /// The repository's own directories (`Repository::places`): never read.
    pub(super) repo_keys: &'a [(u64, u64)],
    pub(super) start_ns: i64,
    pub(super) progress: &'a dyn Progress,
    pub(super) nodes: HashMap<usize, Node>,
    pub(super) next_node: usize,
    pub(super) root: Option<TreeId>,
    pub(super) stats: SnapshotStats,
    pub(super) unreadable: Vec<(String, String)>,
    pub(super) job_tx: Option<Sender<FileJob>>,
    pub(super) res_rx: Receiver<FileResult>,
    pub(super) pack_rx: Receiver<Result<FinishedPack>>,
    pub(super) cancel: Arc<AtomicBool>,
}

impl<'a> Walk<'a> {
    pub(super) fn new(
        rc: &RunCtx<'a>,
        source: &Path,
        excludes: Option<&'a Excludes>,
        (job_tx, res_rx, pack_rx): WalkChannels,
        cancel: Arc<AtomicBool>,
    ) -> Result<Self> {
        let source_dev = fs::metadata(source).at(source)?.dev();
        Ok(Walk {
            repo: rc.session.repo(),
            session: rc.session,
            force: rc.opts.force,
            sqlite_check: rc.opts.sqlite_check,
            excludes,
            one_fs_dev: rc.opts.one_file_system.then_some(source_dev),
            source_dev,
            pseudo_filesystems: rc.opts.pseudo_filesystems,
            dbs: Vec::new(),
            repo_keys: rc.repo_keys,
            start_ns: rc.start_ns,
            progress: rc.progress,
            nodes: HashMap::new(),
            next_node: 0,
            root: None,
            stats: SnapshotStats::default(),
            unreadable: Vec::new(),
            job_tx: Some(job_tx),
            res_rx,
            pack_rx,
            cancel,
        })
    }

    pub(super) fn run(&mut self, source: &Path, parent_root: Option<TreeId>) -> Result<()> {
        // Stack of directories to visit: (absolute path, relative path,
        // parent snapshot's tree for it, where its tree id goes).
        let mut stack: Vec<DirVisit> =
            vec![(source.to_path_buf(), PathBuf::new(), parent_root, None)];
        while let Some((abs, rel, old_tree, slot)) = stack.pop() {
            self.visit_dir(&abs, &rel, old_tree, slot, &mut stack)?;
        }
        drop(self.job_tx.take());
        while self.root.is_none() {
            self.wait_one()?;
        }
        Ok(())
    }

    pub(super) fn new_node(&mut self, node: Node) -> usize {
        let id = self.next_node;
        self.next_node += 1;
        self.nodes.insert(id, node);
        id
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn visit_dir(
        &mut self,
        abs: &Path,
        rel: &Path,
        old_tree: Option<TreeId>,
        slot: Option<(usize, usize)>,
        stack: &mut Vec<DirVisit>,
    ) -> Result<()> {
        if self.progress.cancelled() {
            self.cancel.store(true, Ordering::Relaxed);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let Some(names) = self.list_dir(abs, rel, slot)? else {
            return Ok(());
        };
        let old: Option<(TreeId, Tree)> = match old_tree {
            Some(t) if !self.force => self.repo.load_tree(&t).ok().map(|tree| (t, tree)),
            _ => None,
        };
        let node_id = self.new_node(Node {
            entries: Vec::with_capacity(names.len()),
            dropped: Vec::new(),
            pending: 0,
            walked: false,
            parent: slot,
            old: None,
        });
        self.stats.dirs += 1;
        let dir_fd = File::open(abs).at(abs)?;
        for name in names {
            let path = abs.join(std::ffi::OsStr::from_bytes(&name));
            let child_rel = rel.join(std::ffi::OsStr::from_bytes(&name));
            let Some(st) = self.stat_child(&dir_fd, &name, &path, &child_rel) else {
                continue;
            };
            if self.leaves_out(&path, &child_rel, &st) {
                continue;
            }
            self.progress.entries(1);
            let mut entry = entry_from_stat(name.clone(), &st);
            if entry.kind != Kind::File {
                // Files get theirs from the open file, in the reader.
                entry.xattrs = self.xattrs_of(&path);
            }
            let old_entry = old.as_ref().and_then(|(_, t)| t.get(&name));
            let at = (node_id, self.nodes[&node_id].entries.len());
            match entry.kind {
                Kind::Dir if self.one_fs_dev.is_some_and(|d| d != st.dev) => {
                    self.progress.warn(&Warning::new(
                        WarningKind::Skipped,
                        &path,
                        format!(
                            "{}: on another filesystem; stored as an empty directory (--one-file-system)",
                            path.display()
                        ),
                    ));
                    entry.payload = Payload::Subtree(self.session.store_tree(&Tree::default())?);
                    self.stats.dirs += 1;
                }
                Kind::Dir => {
                    let old_sub = old_entry
                        .filter(|o| o.kind == Kind::Dir)
                        .and_then(|o| o.subtree());
                    stack.push((path, child_rel, old_sub, Some(at)));
                    self.nodes.get_mut(&node_id).unwrap().pending += 1;
                }
                Kind::File => self.add_file(at, path, child_rel, st.ino, &mut entry, old_entry)?,
                Kind::Symlink => match fs::read_link(&path) {
                    Ok(t) => {
                        let t = t.as_os_str().as_bytes().to_vec();
                        entry.size = t.len() as u64;
                        entry.payload = Payload::Target(t);
                    }
                    Err(e) => {
                        self.record_unreadable(&child_rel, &e.to_string());
                        continue;
                    }
                },
                _ => {}
            }
            self.nodes.get_mut(&node_id).unwrap().entries.push(entry);
        }
        let node = self.nodes.get_mut(&node_id).unwrap();
        node.walked = true;
        node.old = old;
        self.resolve(node_id)
    }

    /// A directory's names, sorted, without the sidecars of its SQLite
    /// databases (their images hold the sidecars' committed content:
    /// docs/format.md). `None` when it cannot be listed: recorded as
    /// unreadable, stored empty (the source itself is an error).
    pub(super) fn list_dir(
        &mut self,
        abs: &Path,
        rel: &Path,
        slot: Option<(usize, usize)>,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        let listing = fs::read_dir(abs).and_then(|rd| {
            for de in rd {
                names.push(de?.file_name().as_bytes().to_vec());
            }
            Ok(())
        });
        if let Err(e) = listing {
            let Some((pn, pe)) = slot else {
                return Err(Error::io(abs, e));
            };
            self.record_unreadable(rel, &e.to_string());
            let empty = self.session.store_tree(&Tree::default())?;
            let parent = self.nodes.get_mut(&pn).expect("parent node");
            parent.entries[pe].flags |= flags::UNREADABLE;
            parent.entries[pe].payload = Payload::Subtree(empty);
            parent.pending -= 1;
            self.resolve(pn)?;
            return Ok(None);
        }
        names.sort();
        let held = self.repo.held_files().map(|h| &**h);
        let sidecars: HashSet<Vec<u8>> = names
            .iter()
            .filter(|n| {
                sqlite::sidecar_base(n).is_some_and(|base| {
                    names.binary_search_by(|x| x.as_slice().cmp(base)).is_ok()
                        && sqlite::is_database_file(
                            &abs.join(std::ffi::OsStr::from_bytes(base)),
                            held,
                        )
                })
            })
            .cloned()
            .collect();
        names.retain(|n| !sidecars.contains(n));
        Ok(Some(names))
    }

    /// A child's metadata; `None` (with a warning, or recorded as
    /// unreadable) when it vanished or cannot be read.
    pub(super) fn stat_child(
        &mut self,
        dir_fd: &File,
        name: &[u8],
        path: &Path,
        child_rel: &Path,
    ) -> Option<Stat> {
        match lstat_at(dir_fd, name) {
            Ok(st) => Some(st),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.progress.warn(&Warning::new(
                    WarningKind::Vanished,
                    path,
                    format!(
                        "{}: vanished during the walk; not in the snapshot",
                        path.display()
                    ),
                ));
                None
            }
            Err(e) => {
                self.record_unreadable(child_rel, &e.to_string());
                None
            }
        }
    }

    /// Whether the walk leaves a child out: excluded, a pseudo-filesystem
    /// (unless asked for), or one of the repository's own directories.
    pub(super) fn leaves_out(&self, path: &Path, child_rel: &Path, st: &Stat) -> bool {
        let is_dir = st.kind() == Kind::Dir;
        if self
            .excludes
            .is_some_and(|ex| ex.excludes(child_rel, is_dir))
        {
            return true;
        }
        if is_dir
            && st.dev != self.source_dev
            && !self.pseudo_filesystems
            && let Some(kind) = pseudo_filesystem(path)
        {
            self.progress.warn(&Warning::new(
                WarningKind::Skipped,
                path,
                format!(
                    "{}: a {kind} filesystem (made up as it is read); skipped (--pseudo-filesystems takes it)",
                    path.display()
                ),
            ));
            return true;
        }
        if is_dir && self.repo_keys.contains(&(st.dev, st.ino)) {
            self.progress.warn(&Warning::new(
                WarningKind::Skipped,
                path,
                format!("{}: is the repository; excluded", path.display()),
            ));
            return true;
        }
        false
    }

    /// A regular file: its parent snapshot's entry reused when unchanged
    /// (a database image only when nothing can be pending outside the
    /// main file), else a job for the readers.
    pub(super) fn add_file(
        &mut self,
        (node, slot): (usize, usize),
        path: PathBuf,
        rel: PathBuf,
        ino: u64,
        entry: &mut Entry,
        old_entry: Option<&Entry>,
    ) -> Result<()> {
        let reusable = |o: &&Entry| {
            unchanged(o, entry)
                && (!o.has_flag(flags::SQLITE_IMAGE)
                    || (!self.sqlite_check && !sqlite::has_pending_sidecar(&path)))
        };
        let Some(o) = old_entry.filter(reusable) else {
            let base_pages = old_entry
                .filter(|o| o.kind == Kind::File && o.has_flag(flags::SQLITE_IMAGE))
                .map(|o| o.chunks().to_vec());
            self.submit(FileJob {
                node,
                slot,
                path,
                rel,
                ino,
                base_pages,
            })?;
            self.nodes.get_mut(&node).unwrap().pending += 1;
            return Ok(());
        };
        if o.has_flag(flags::SQLITE_IMAGE) {
            entry.flags |= flags::SQLITE_IMAGE;
            if let Some(v) = sqlite::read_header(&path, self.repo.held_files().map(|h| &**h))
                .and_then(|h| sqlite::user_version(&h))
            {
                self.dbs.push((
                    rel.to_string_lossy().into_owned(),
                    DbInfo {
                        user_version: v,
                        quick_check: None,
                    },
                ));
            }
        }
        entry.payload = o.payload.clone();
        // Same ctime: the attributes did not change either.
        entry.xattrs = o.xattrs.clone();
        entry.flags |= self.racy_flag(entry);
        self.stats.reused_files += 1;
        self.progress.bytes(entry.size);
        Ok(())
    }

    pub(super) fn xattrs_of(&self, path: &Path) -> crate::xattr::Xattrs {
        crate::xattr::read(crate::xattr::At::Path(path)).unwrap_or_else(|e| {
            self.progress.warn(&Warning::new(
                WarningKind::Unreadable,
                path,
                format!("{}: extended attributes not read: {e}", path.display()),
            ));
            Vec::new()
        })
    }

    pub(super) fn racy_flag(&self, e: &Entry) -> u8 {
        if e.mtime_ns > self.start_ns - RACY_WINDOW_NS {
            flags::RACY
        } else {
            0
        }
    }

    pub(super) fn record_unreadable(&mut self, rel: &Path, reason: &str) {
        let shown = if rel.as_os_str().is_empty() {
            ".".to_string()
        } else {
            rel.to_string_lossy().into_owned()
        };
        self.progress.warn(&Warning::new(
            WarningKind::Unreadable,
            rel,
            format!("{shown}: could not be read: {reason}"),
        ));
        self.unreadable.push((shown, reason.to_string()));
    }

    /// Send a job to the readers, handling results while the queue is full.
    pub(super) fn submit(&mut self, job: FileJob) -> Result<()> {
        let mut job = Some(job);
        while let Some(j) = job.take() {
            let tx = self.job_tx.clone().expect("job queue open during the walk");
            let mut sel = Select::new();
            let s = sel.send(&tx);
            let r = sel.recv(&self.res_rx);
            let p = sel.recv(&self.pack_rx);
            let op = sel.select();
            match op.index() {
                i if i == s => op
                    .send(&tx, j)
                    .map_err(|_| Error::internal("create", "file readers stopped"))?,
                i if i == r => {
                    job = Some(j);
                    let res = op
                        .recv(&self.res_rx)
                        .map_err(|_| Error::internal("create", "file readers stopped"))?;
                    self.handle(res)?;
                }
                i if i == p => {
                    job = Some(j);
                    if let Ok(pack) = op.recv(&self.pack_rx) {
                        self.record_pack(pack?)?;
                    }
                }
                _ => unreachable!(),
            }
        }
        Ok(())
    }

    /// Wait for one file result or finished pack.
    pub(super) fn wait_one(&mut self) -> Result<()> {
        let mut sel = Select::new();
        let r = sel.recv(&self.res_rx);
        let p = sel.recv(&self.pack_rx);
        let op = sel.select();
        if op.index() == r {
            let res = op.recv(&self.res_rx).map_err(|_| {
                Error::internal("create", "file readers stopped before the walk finished")
            })?;
            self.handle(res)
        } else {
            debug_assert_eq!(op.index(), p);
            match op.recv(&self.pack_rx) {
                Ok(pack) => self.record_pack(pack?),
                // The writer ends only after the readers: keep waiting for them.
                Err(_) => {
                    let res = self.res_rx.recv().map_err(|_| {
                        Error::internal("create", "file readers stopped before the walk finished")
                    })?;
                    self.handle(res)
                }
            }
        }
    }

    pub(super) fn drain_packs(&mut self) -> Result<()> {
        while let Ok(pack) = self.pack_rx.recv() {
            self.record_pack(pack?)?;
        }
        Ok(())
    }

    pub(super) fn record_pack(&mut self, pack: FinishedPack) -> Result<()> {
        self.session.add_pack(&pack)?;
        self.stats.new_packs += 1;
        self.stats.new_chunks += pack.entries.len() as u64;
        for e in &pack.entries {
            self.stats.new_raw_bytes += e.raw_len as u64;
            // A group frame's bytes count once, with its first member.
            if e.codec != Codec::Grouped || e.inner == 0 {
                self.stats.new_stored_bytes += e.stored_len as u64;
            }
            self.stats.new_delta_chunks += e.base.is_some() as u64;
        }
        Ok(())
    }

    pub(super) fn handle(&mut self, res: FileResult) -> Result<()> {
        let node = self
            .nodes
            .get_mut(&res.node)
            .expect("node of a pending file");
        match res.outcome {
            FileOutcome::Stored {
                chunks,
                meta,
                read_bytes,
                changed,
                db,
            } => {
                if let Some(info) = db {
                    self.dbs
                        .push((res.rel.to_string_lossy().into_owned(), info));
                }
                let node = self.nodes.get_mut(&res.node).expect("node");
                let e = &mut node.entries[res.slot];
                let name = std::mem::take(&mut e.name);
                *e = meta;
                e.name = name;
                e.payload = Payload::Chunks(chunks);
                if changed {
                    e.flags |= flags::CHANGED_DURING_READ;
                    self.progress.warn(&Warning::new(
                        WarningKind::Changed,
                        &res.rel,
                        format!(
                            "{}: changed while it was read, even after {READ_ATTEMPTS} attempts; stored as read and flagged",
                            res.rel.display()
                        ),
                    ));
                }
                let racy = self.racy_flag(&self.nodes[&res.node].entries[res.slot]);
                self.nodes.get_mut(&res.node).unwrap().entries[res.slot].flags |= racy;
                self.stats.read_bytes += read_bytes;
            }
            FileOutcome::Vanished => {
                node.dropped.push(res.slot);
                self.progress.warn(&Warning::new(
                    WarningKind::Vanished,
                    &res.rel,
                    format!(
                        "{}: vanished before it could be read; not in the snapshot",
                        res.rel.display()
                    ),
                ));
            }
            FileOutcome::Unreadable(reason) => {
                let e = &mut node.entries[res.slot];
                e.flags |= flags::UNREADABLE;
                e.payload = Payload::Chunks(Vec::new());
                self.record_unreadable(&res.rel, &reason);
            }
            FileOutcome::Fatal(e) => return Err(e),
        }
        let node = self.nodes.get_mut(&res.node).unwrap();
        node.pending -= 1;
        self.resolve(res.node)
    }

    /// Store the trees of finished directories, bottom-up.
    pub(super) fn resolve(&mut self, mut node_id: usize) -> Result<()> {
        loop {
            let node = &self.nodes[&node_id];
            if !node.walked || node.pending > 0 {
                return Ok(());
            }
            let mut node = self.nodes.remove(&node_id).unwrap();
            node.dropped.sort_unstable();
            let mut entries = std::mem::take(&mut node.entries);
            for slot in node.dropped.iter().rev() {
                entries.remove(*slot);
            }
            for e in &entries {
                match e.kind {
                    Kind::File => {
                        self.stats.files += 1;
                        self.stats.total_bytes += e.size;
                    }
                    Kind::Dir => {}
                    Kind::Symlink => self.stats.symlinks += 1,
                    _ => self.stats.others += 1,
                }
            }
            let tree = Tree::new(entries);
            let id = match &node.old {
                Some((old_id, old_tree)) if *old_tree == tree => *old_id,
                _ => self.session.store_tree(&tree)?,
            };
            match node.parent {
                None => {
                    self.root = Some(id);
                    return Ok(());
                }
                Some((pn, pe)) => {
                    let parent = self.nodes.get_mut(&pn).expect("parent node");
                    parent.entries[pe].payload = Payload::Subtree(id);
                    parent.pending -= 1;
                    node_id = pn;
                }
            }
        }
    }
}
