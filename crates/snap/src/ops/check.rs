//! `snap check [--read-data]`: prove the repository is sound, or name what
//! is not: by pack id, with the snapshots and file paths it affects.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId, SnapshotId, TreeId};
use crate::index::ChunkLocation;
use crate::ops::bounds::{EXPANSION, FLOOR};
use crate::ops::restore::{MAX_DEPTH, entry_budget};
use crate::pack::{HEADER_LEN, TRAILER_LEN, decode_chunk};
use crate::progress::Progress;
use crate::repo::{ChunkReader, Repository};
use crate::snapshot::Snapshot;
use crate::tree::Kind;

/// Where the index's record of a snapshot and its files disagree.
fn differs(index: &Snapshot, files: &Snapshot) -> Option<String> {
    let mut what = Vec::new();
    if index.root != files.root {
        what.push("root tree");
    }
    if index.tags != files.tags {
        what.push("tags");
    }
    if index.pinned != files.pinned {
        what.push("pin");
    }
    if index.labels != files.labels {
        what.push("labels");
    }
    if index.source != files.source || index.time_ns != files.time_ns {
        what.push("source or time");
    }
    (!what.is_empty()).then(|| {
        format!(
            "the index and the snapshot files disagree on its {} (`snap repair index` trusts the files)",
            what.join(", ")
        )
    })
}

struct TreeShape {
    entries: u64,
    subdirs: Vec<TreeId>,
}

/// How many entries the tree graph under `root` expands to, and how deep
/// it nests, from each tree's shape (memoized, so shared subtrees cost one
/// visit however often they are referenced), and how many entries its
/// distinct trees hold. Missing trees count zero.
fn expansion(shapes: &HashMap<TreeId, TreeShape>, root: TreeId) -> (u64, u64, u64) {
    let mut done: HashMap<TreeId, (u64, u64)> = HashMap::new();
    let mut stack = vec![(root, false)];
    while let Some((t, children_done)) = stack.pop() {
        if done.contains_key(&t) {
            continue;
        }
        let Some(shape) = shapes.get(&t) else {
            done.insert(t, (0, 1));
            continue;
        };
        if !children_done {
            stack.push((t, true));
            stack.extend(shape.subdirs.iter().map(|c| (*c, false)));
            continue;
        }
        let (mut n, mut d) = (shape.entries, 0u64);
        for c in &shape.subdirs {
            let (cn, cd) = done.get(c).copied().unwrap_or((0, 0));
            n = n.saturating_add(cn);
            d = d.max(cd);
        }
        done.insert(t, (n, d + 1));
    }
    let distinct = done
        .keys()
        .filter_map(|t| shapes.get(t))
        .map(|s| s.entries)
        .sum();
    let (n, d) = done.get(&root).copied().unwrap_or((0, 0));
    (n, d, distinct)
}

#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub read_data: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The pack at fault, when there is one.
    pub pack: Option<String>,
    pub what: String,
    /// Snapshots with files that depend on the damaged data.
    pub snapshots: Vec<String>,
    /// Affected paths, as `<snapshot prefix>:<path>` (at most 20 listed).
    pub paths: Vec<String>,
    pub more_paths: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: u64,
    pub trees: u64,
    pub chunks_referenced: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub chunks_read: u64,
    pub read_bytes: u64,
    /// Pack files no index row references (removed by `snap gc`); not damage.
    pub unreferenced_packs: u64,
    /// Snapshot objects of creates that crashed before their commit
    /// (removed by `snap gc`); not damage.
    pub uncommitted_snapshot_objects: u64,
    /// Change records (tags, pins, forgets) of interrupted commands, which
    /// the next writing command applies; not damage.
    pub pending_changes: u64,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What went wrong, before it is tied to snapshots and paths.
enum Fault {
    Pack(PackId, String),
    Chunk(Option<PackId>, ChunkId, String),
    Tree(TreeId, String),
    Index(String),
    Snapshot(Box<Snapshot>, String),
}

pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let index = repo.index();
    let mut report = CheckReport::default();
    let mut faults: Vec<Fault> = Vec::new();
    for row in index.integrity_check()? {
        faults.push(Fault::Index(format!("index.db: {row}")));
    }
    let in_footer = check_packs(repo, opts, &mut report, &mut faults, progress)?;

    // Snapshots: every tree decodes and every chunk has a row.
    progress.phase("check: snapshots", None);
    let snapshots = repo.snapshots()?;
    report.snapshots = snapshots.len() as u64;
    let walked = index.in_read_transaction(|| {
        walk_snapshots(repo, &snapshots, &in_footer, &mut faults, progress)
    })?;
    let Walked {
        seen_trees,
        shapes,
        chunks_seen,
    } = walked;
    check_expansion(&snapshots, &shapes, &mut faults);
    check_records(repo, &snapshots, &mut report, &mut faults, progress)?;
    for t in &seen_trees {
        if !index.chunk_known(&ChunkId(t.0))? {
            faults.push(Fault::Tree(
                *t,
                "has no blob in any tree pack (`snap repair index` could not rebuild it)".into(),
            ));
        }
    }
    report.trees = seen_trees.len() as u64;
    report.chunks_referenced = chunks_seen;
    if !faults.is_empty() {
        report.problems = attribute(repo, &snapshots, faults)?;
    }
    Ok(report)
}

/// Packs: every row's file exists and holds every chunk row's bytes; with
/// `--read-data`, every chunk decodes to its id. Returns, with
/// `--read-data`, the chunks a pack's footer lists that its rows lack.
fn check_packs(
    repo: &Repository,
    opts: &CheckOptions,
    report: &mut CheckReport,
    faults: &mut Vec<Fault>,
    progress: &dyn Progress,
) -> Result<HashMap<ChunkId, PackId>> {
    let index = repo.index();
    let packs = index.packs()?;
    let to_read = opts.read_data.then(|| packs.iter().map(|p| p.size).sum());
    progress.phase("check: packs", to_read);
    report.packs = packs.len() as u64;
    let mut bad_packs: HashSet<PackId> = HashSet::new();
    // With --read-data: which pack footer lists a chunk that its pack's
    // rows lack, to name the pack of a chunk whose index row is gone.
    // Nothing here grows with the number of chunks: whether a chunk has a
    // row is asked of the index.
    let mut in_footer: HashMap<ChunkId, PackId> = HashMap::new();
    let mut reader = ChunkReader::new(repo.storage().clone());
    for p in &packs {
        if progress.cancelled() {
            return Err(Error::Interrupted);
        }
        let rows = index.chunks_in_pack(p.rowid)?;
        // Every delta's base must be located too.
        for r in &rows {
            if let Some(base) = r.base
                && !index.chunk_known(&base)?
            {
                faults.push(Fault::Chunk(
                    Some(p.id),
                    r.id,
                    format!("delta's base {} has no index row", base.short()),
                ));
            }
        }
        let key = crate::storage::pack_key(&p.id);
        let size = match repo.storage().size(&key) {
            Ok(Some(n)) => n,
            Ok(None) => {
                let at = repo.storage().describe(&key);
                faults.push(Fault::Pack(p.id, format!("pack is missing ({at})")));
                bad_packs.insert(p.id);
                continue;
            }
            Err(e) => {
                faults.push(Fault::Pack(p.id, e.to_string()));
                bad_packs.insert(p.id);
                continue;
            }
        };
        if size != p.size {
            faults.push(Fault::Pack(
                p.id,
                format!("pack is {size} bytes, the index says {}", p.size),
            ));
            bad_packs.insert(p.id);
        }
        let needed = rows
            .iter()
            .map(|r| r.offset as u64 + r.stored_len as u64)
            .max()
            .unwrap_or(HEADER_LEN);
        if needed + TRAILER_LEN > size && !bad_packs.contains(&p.id) {
            faults.push(Fault::Pack(
                p.id,
                format!("pack is {size} bytes, too short for its chunks"),
            ));
            bad_packs.insert(p.id);
        }
        if opts.read_data && !bad_packs.contains(&p.id) {
            let data = PackData {
                repo,
                id: &p.id,
                rows: &rows,
                reader: &mut reader,
            };
            let unrowed = check_pack_data(data, report, faults, progress);
            in_footer.extend(unrowed.into_iter().map(|c| (c, p.id)));
        }
    }
    let referenced: HashSet<PackId> = packs.iter().map(|p| p.id).collect();
    report.unreferenced_packs = repo
        .pack_objects()?
        .iter()
        .filter(|(id, _)| !referenced.contains(id))
        .count() as u64;

    Ok(in_footer)
}

/// Each snapshot's tree graph must expand no more than the distinct trees
/// read allow, than the snapshot records, and no deeper than restore goes.
fn check_expansion(
    snapshots: &[Snapshot],
    shapes: &HashMap<TreeId, TreeShape>,
    faults: &mut Vec<Fault>,
) {
    for s in snapshots {
        let (entries, depth, distinct) = expansion(shapes, s.root);
        let budget = entry_budget(s);
        let graph_allows = distinct.saturating_mul(EXPANSION).max(FLOOR);
        if entries > graph_allows {
            let why = format!(
                "its trees name the same subtrees over and over: {distinct} distinct entries expand to {entries} (a graph built to expand, not a directory)"
            );
            faults.push(Fault::Snapshot(Box::new(s.clone()), why));
        } else if entries > budget {
            let why = format!(
                "its trees expand to {entries} entries, more than the {budget} it records (a crafted or damaged tree graph)"
            );
            faults.push(Fault::Snapshot(Box::new(s.clone()), why));
        } else if depth > MAX_DEPTH as u64 {
            let why = format!(
                "its directories nest {depth} deep, more than restore follows ({MAX_DEPTH})"
            );
            faults.push(Fault::Snapshot(Box::new(s.clone()), why));
        }
    }
}

/// The repository's files must say what the index says; snapshots a
/// shared repository's sync held back are damage.
fn check_records(
    repo: &Repository,
    snapshots: &[Snapshot],
    report: &mut CheckReport,
    faults: &mut Vec<Fault>,
    progress: &dyn Progress,
) -> Result<()> {
    let index = repo.index();
    progress.phase("check: snapshot files", None);
    let records = crate::objects::read_records(&**repo.storage())?;
    for (at, why) in &records.bad {
        faults.push(Fault::Index(format!("{at}: {why}")));
    }
    let applied = repo.index().applied_changes()?;
    report.pending_changes = records
        .changes
        .values()
        .flatten()
        .filter(|c| !applied.contains(&c.name))
        .count() as u64;
    let on_file: HashMap<SnapshotId, &Snapshot> =
        records.snapshots.iter().map(|s| (s.id, s)).collect();
    for s in snapshots {
        let why = match on_file.get(&s.id) {
            None => Some(
                "no snapshot object records it (`snap repair index` could not rebuild it)"
                    .to_string(),
            ),
            Some(obj) => {
                // `snapshots` already includes changes an interrupted
                // command recorded but did not apply (the next writer
                // applies them), so compare with every change.
                let changes = records.changes.get(&s.id).map_or(&[][..], |c| c.as_slice());
                match crate::objects::apply_changes((*obj).clone(), changes) {
                    None => Some("its change records say it was forgotten".to_string()),
                    Some(f) => differs(s, &f),
                }
            }
        };
        if let Some(why) = why {
            faults.push(Fault::Snapshot(Box::new(s.clone()), why));
        }
    }
    // Snapshots of a shared repository this client's sync could not index
    // (their data is missing): damage, not "not used yet", on every client.
    for (id, why) in index.held_back()? {
        if on_file.contains_key(&id) {
            faults.push(Fault::Index(format!(
                "snapshot {}: its data is missing ({why}); this client's index leaves it out",
                id.short()
            )));
        }
    }
    let listed: HashSet<SnapshotId> = snapshots.iter().map(|s| s.id).collect();
    report.uncommitted_snapshot_objects = records
        .snapshots
        .iter()
        .filter(|s| !listed.contains(&s.id))
        .count() as u64;
    Ok(())
}

/// What the walk of every snapshot's trees found.
struct Walked {
    seen_trees: HashSet<TreeId>,
    /// Each tree's entry count and subdirectories, to bound what a snapshot
    /// expands to without expanding it.
    shapes: HashMap<TreeId, TreeShape>,
    chunks_seen: u64,
}

/// Walk every snapshot's trees once per distinct tree: every tree decodes
/// and every chunk has an index row. Memory grows with the trees, not the
/// chunks: the set of chunks seen is in SQLite's temp store.
fn walk_snapshots(
    repo: &Repository,
    snapshots: &[Snapshot],
    in_footer: &HashMap<ChunkId, PackId>,
    faults: &mut Vec<Fault>,
    progress: &dyn Progress,
) -> Result<Walked> {
    let index = repo.index();
    let mut seen_trees: HashSet<TreeId> = HashSet::new();
    // Chunks seen: SQLite's temp store (the set gc marks with), not RAM.
    index.live_reset()?;
    index.tune_for_walk()?;
    let mut chunks_seen = 0u64;
    // Inserted sorted, in batches: fewer pages of the set touched per id.
    const SEEN_BATCH: usize = 1 << 16;
    let mut pending: Vec<ChunkId> = Vec::with_capacity(SEEN_BATCH);
    let mut shapes: HashMap<TreeId, TreeShape> = HashMap::new();
    for s in snapshots {
        let mut stack = vec![s.root];
        while let Some(t) = stack.pop() {
            if !seen_trees.insert(t) {
                continue;
            }
            let tree = match repo.load_tree(&t) {
                Ok(tree) => tree,
                Err(e) => {
                    faults.push(Fault::Tree(t, e.to_string()));
                    continue;
                }
            };
            shapes.insert(
                t,
                TreeShape {
                    entries: tree.entries.len() as u64,
                    subdirs: tree.entries.iter().filter_map(|e| e.subtree()).collect(),
                },
            );
            for e in &tree.entries {
                match e.kind {
                    Kind::Dir => stack.extend(e.subtree()),
                    Kind::File => {
                        pending.extend_from_slice(e.chunks());
                        if pending.len() >= SEEN_BATCH {
                            chunks_seen += add_seen(index, &mut pending)?;
                        }
                    }
                    _ => {}
                }
            }
            progress.entries(1);
        }
    }
    chunks_seen += add_seen(index, &mut pending)?;
    // A condemned pack still holds its chunks; one a kept snapshot uses (a
    // gc stopped between condemning and repacking) is rescued by the next
    // gc, so it is a location, not damage.
    for c in index.live_without_rows()? {
        let pack = in_footer.get(&c).copied();
        let what = match pack {
            Some(_) => "chunk has no index row (its pack's footer lists it)",
            None => "chunk has no index row",
        };
        faults.push(Fault::Chunk(pack, c, what.into()));
    }
    Ok(Walked {
        seen_trees,
        shapes,
        chunks_seen,
    })
}

/// Add a batch of chunk ids to the set seen; how many were new.
fn add_seen(index: &crate::index::Index, batch: &mut Vec<ChunkId>) -> Result<u64> {
    batch.sort_unstable();
    batch.dedup();
    let mut new = 0;
    for c in batch.drain(..) {
        new += index.live_insert(&c)? as u64;
    }
    Ok(new)
}

/// One pack to read, with its index rows.
struct PackData<'a> {
    repo: &'a Repository,
    id: &'a PackId,
    rows: &'a [crate::pack::PackEntry],
    /// Reads the bases of deltas.
    reader: &'a mut ChunkReader,
}

/// Read one pack whole (one read, not one per chunk), each delta through
/// its base; returns the chunk ids its footer lists that its rows lack.
fn check_pack_data(
    data: PackData,
    report: &mut CheckReport,
    faults: &mut Vec<Fault>,
    progress: &dyn Progress,
) -> Vec<ChunkId> {
    let PackData {
        repo,
        id,
        rows,
        reader,
    } = data;
    report.packs_read += 1;
    let pack = match repo.open_pack(id) {
        Ok(p) => p,
        Err(e) => {
            faults.push(Fault::Pack(*id, e.to_string()));
            return Vec::new();
        }
    };
    let mut listed = Vec::new();
    match pack.footer() {
        Ok(footer) => {
            if footer.id != *id {
                faults.push(Fault::Pack(
                    *id,
                    "pack footer does not match the pack's id".into(),
                ));
            }
            // Rows and entries matched by offset and id (no map of a
            // pack's entries: a pack of tiny chunks holds a hundred
            // thousand; a group's members share an offset).
            let mut entries = footer.entries;
            entries.sort_unstable_by_key(|e| (e.offset, e.id));
            let mut matched = vec![false; entries.len()];
            for r in rows {
                match entries.binary_search_by_key(&(r.offset, r.id), |e| (e.offset, e.id)) {
                    Ok(i) if entries[i] == *r => matched[i] = true,
                    _ => faults.push(Fault::Chunk(
                        Some(*id),
                        r.id,
                        "index row does not match the pack footer".into(),
                    )),
                }
            }
            listed = entries
                .iter()
                .zip(&matched)
                .filter(|(_, m)| !**m)
                .map(|(e, _)| e.id)
                .collect();
        }
        Err(e) => faults.push(Fault::Pack(*id, e.to_string())),
    }
    let body = match pack.read_all() {
        Ok(b) => b,
        Err(e) => {
            faults.push(Fault::Pack(*id, e.to_string()));
            return listed;
        }
    };
    report.read_bytes += body.len() as u64;
    progress.bytes(body.len() as u64);
    for r in rows {
        let (start, end) = (r.offset as usize, r.offset as usize + r.stored_len as usize);
        let res = match body.get(start..end) {
            Some(stored) => reader
                .base_of(&r.id, &ChunkLocation::of(*id, r), repo)
                .and_then(|base| {
                    let base = base.as_ref().map(|(b, _)| b.as_slice());
                    decode_chunk(repo.ids(), id, r, stored, base)
                }),
            None => Err(crate::pack::damaged(id, "pack too short for the chunk")),
        };
        report.chunks_read += 1;
        if let Err(e) = res {
            faults.push(Fault::Chunk(Some(*id), r.id, e.to_string()));
        }
    }
    listed
}

/// The problems, one per fault, and which problem each damaged pack,
/// chunk and tree stands for (to attribute snapshots and paths to it).
struct Culprits {
    problems: Vec<Problem>,
    by_pack: HashMap<PackId, usize>,
    by_chunk: HashMap<ChunkId, usize>,
    by_tree: HashMap<TreeId, usize>,
}

fn problems_of(faults: Vec<Fault>) -> Culprits {
    let mut problems: Vec<Problem> = Vec::new();
    let mut by_pack: HashMap<PackId, usize> = HashMap::new();
    let mut by_chunk: HashMap<ChunkId, usize> = HashMap::new();
    let mut by_tree: HashMap<TreeId, usize> = HashMap::new();
    for f in faults {
        let (pack, what) = match &f {
            Fault::Pack(p, w) => (Some(p.to_hex()), w.clone()),
            Fault::Chunk(p, c, w) => (p.map(|p| p.to_hex()), format!("chunk {}: {w}", c.short())),
            Fault::Tree(t, w) => (None, format!("tree {}: {w}", t.short())),
            Fault::Index(w) => (None, w.clone()),
            Fault::Snapshot(s, w) => (None, format!("snapshot {}: {w}", s.id.short())),
        };
        let i = problems.len();
        problems.push(Problem {
            pack,
            what,
            snapshots: Vec::new(),
            paths: Vec::new(),
            more_paths: 0,
        });
        match f {
            Fault::Pack(p, _) => {
                by_pack.insert(p, i);
            }
            Fault::Chunk(_, c, _) => {
                by_chunk.insert(c, i);
            }
            Fault::Tree(t, _) => {
                by_tree.insert(t, i);
            }
            Fault::Index(_) => {}
            Fault::Snapshot(s, _) => {
                problems[i].snapshots.push(s.id.to_hex());
            }
        }
    }
    Culprits {
        problems,
        by_pack,
        by_chunk,
        by_tree,
    }
}

/// Tie faults to the snapshots and paths they affect.
fn attribute(
    repo: &Repository,
    snapshots: &[Snapshot],
    faults: Vec<Fault>,
) -> Result<Vec<Problem>> {
    const MAX_PATHS: usize = 20;
    let Culprits {
        mut problems,
        by_pack,
        by_chunk,
        by_tree,
    } = problems_of(faults);
    let mut snaps_of: Vec<BTreeSet<String>> = vec![BTreeSet::new(); problems.len()];
    let mut paths_of: Vec<BTreeMap<String, ()>> = vec![BTreeMap::new(); problems.len()];
    for s in snapshots {
        let mut stack: Vec<(TreeId, PathBuf)> = vec![(s.root, PathBuf::new())];
        // A crafted tree graph can expand without end: walk no more of a
        // snapshot than it records.
        let mut budget = entry_budget(s);
        while let Some((t, dir)) = stack.pop() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let hit = |i: usize,
                       path: &Path,
                       snaps: &mut Vec<BTreeSet<String>>,
                       paths: &mut Vec<BTreeMap<String, ()>>| {
                snaps[i].insert(s.id.to_hex());
                paths[i].insert(format!("{}:{}", s.id.short(), path.display()), ());
            };
            if let Some(&i) = by_tree.get(&t) {
                let shown = if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir.clone()
                };
                hit(i, &shown, &mut snaps_of, &mut paths_of);
                continue;
            }
            let Ok(tree) = repo.load_tree(&t) else {
                continue;
            };
            for e in &tree.entries {
                let p = dir.join(e.name_os());
                match e.kind {
                    Kind::Dir => stack.extend(e.subtree().map(|sub| (sub, p.clone()))),
                    Kind::File => {
                        for c in e.chunks() {
                            // The chunk's pack, asked of the index only when
                            // a pack is at fault.
                            let in_bad_pack = || -> Result<Option<usize>> {
                                if by_pack.is_empty() {
                                    return Ok(None);
                                }
                                Ok(repo
                                    .chunk_location(c)?
                                    .and_then(|l| by_pack.get(&l.pack).copied()))
                            };
                            let i = match by_chunk.get(c) {
                                Some(&i) => Some(i),
                                None => in_bad_pack()?,
                            };
                            if let Some(i) = i {
                                hit(i, &p, &mut snaps_of, &mut paths_of);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    for (i, p) in problems.iter_mut().enumerate() {
        snaps_of[i].extend(p.snapshots.drain(..));
        p.snapshots = snaps_of[i].iter().cloned().collect();
        let all: Vec<String> = paths_of[i].keys().cloned().collect();
        p.more_paths = all.len().saturating_sub(MAX_PATHS) as u64;
        p.paths = all.into_iter().take(MAX_PATHS).collect();
    }
    Ok(problems)
}
