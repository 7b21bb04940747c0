//! The repository's own record of its snapshots, apart from `index.db`:
//!
//! ```text
//! <repo>/config                       the repository config (JSON), written by init
//! <repo>/snapshots/<id>               one immutable object per snapshot: its whole record (JSON)
//! <repo>/changes/<id>-<time>-<rand>   one immutable record per later change: tags, pin, forget
//! <repo>/condemned/<time>-<rand>      packs a gc on shared storage will delete after a grace period
//! ```
//!
//! Every object is written once, atomically and durably (the storage
//! layer's put), before the index commit that reflects it, and only
//! `snap repair index`, `snap check` and readers of pending changes read them.
//! Changes are separate small objects rather than rewrites, so that nothing
//! is ever modified in place (which object storage and several writers need).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::RepoConfig;
use crate::error::{Error, Result};
use crate::id::{SnapshotId, TreeId};
use crate::snapshot::{RootMeta, Snapshot, SnapshotStats, SourceRoot};
use crate::storage::Storage;

pub use crate::storage::CONFIG_FILE;
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const CHANGES_DIR: &str = "changes";
pub const CONDEMNED_DIR: &str = "condemned";

#[derive(Serialize, Deserialize)]
struct ConfigFile {
    format_version: u32,
    chunk_min_bytes: u32,
    chunk_avg_bytes: u32,
    chunk_max_bytes: u32,
    zstd_level: i32,
    pack_target_bytes: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    encryption: String,
}

pub fn write_config(storage: &dyn Storage, c: &RepoConfig) -> Result<()> {
    let f = ConfigFile {
        format_version: c.format_version,
        chunk_min_bytes: c.chunk_min_bytes,
        chunk_avg_bytes: c.chunk_avg_bytes,
        chunk_max_bytes: c.chunk_max_bytes,
        zstd_level: c.zstd_level,
        pack_target_bytes: c.pack_target_bytes,
        id: c.id.clone(),
        encryption: c.encryption.clone(),
    };
    let json = serde_json::to_vec_pretty(&f).expect("plain data serializes");
    if storage.id_key().is_some() {
        // Encrypted: a sealed copy authenticates the plain one, which a
        // client must read before it has the key (see `check_config`).
        storage.put(SEALED_CONFIG_FILE, &json)?;
    }
    storage.put(CONFIG_FILE, &json)
}

/// The sealed copy of an encrypted repository's config.
pub const SEALED_CONFIG_FILE: &str = "config.sealed";

/// In an encrypted repository (`storage` sealed with its key), the plain
/// config must be exactly its sealed copy: the plain one is readable and
/// writable by anyone who can write the storage, the sealed one only with
/// the key. An altered chunker, format or id is damage, never obeyed.
pub fn check_config(storage: &dyn Storage, plain: &RepoConfig) -> Result<()> {
    let altered = |why: String| Error::Damaged {
        path: storage.describe(CONFIG_FILE).into(),
        reason: why,
    };
    let bytes = storage.read_if_exists(SEALED_CONFIG_FILE)?.ok_or_else(|| {
        altered("the encrypted repository has no sealed copy of its config: the plain one cannot be trusted".into())
    })?;
    let sealed = parse_config(storage, &bytes)?;
    if &sealed != plain {
        return Err(altered(
            "the config differs from its sealed copy: it was altered; snap keeps to neither".into(),
        ));
    }
    Ok(())
}

pub fn read_config(storage: &dyn Storage) -> Result<RepoConfig> {
    parse_config(storage, &storage.read(CONFIG_FILE)?)
}

/// The config object, or `None` when there is none (not a repository).
pub fn read_config_if_exists(storage: &dyn Storage) -> Result<Option<RepoConfig>> {
    match storage.read_if_exists(CONFIG_FILE)? {
        Some(bytes) => parse_config(storage, &bytes).map(Some),
        None => Ok(None),
    }
}

/// Whether `storage` holds something of a snap repository: a config that
/// reads as snap's, key objects or packs. A directory whose only `config`
/// is some other program's file is no repository (not a damaged one).
pub fn holds_a_repository(storage: &dyn Storage) -> bool {
    matches!(read_config_if_exists(storage), Ok(Some(_)))
        || storage.list("keys/").is_ok_and(|l| !l.is_empty())
        || storage
            .list(crate::storage::PACKS_PREFIX)
            .is_ok_and(|l| !l.is_empty())
}

fn parse_config(storage: &dyn Storage, bytes: &[u8]) -> Result<RepoConfig> {
    let f: ConfigFile = serde_json::from_slice(bytes).map_err(|e| Error::Damaged {
        path: storage.describe(CONFIG_FILE).into(),
        reason: format!("not a repository config: {e}"),
    })?;
    let c = RepoConfig {
        format_version: f.format_version,
        chunk_min_bytes: f.chunk_min_bytes,
        chunk_avg_bytes: f.chunk_avg_bytes,
        chunk_max_bytes: f.chunk_max_bytes,
        zstd_level: f.zstd_level,
        pack_target_bytes: f.pack_target_bytes,
        id: f.id,
        encryption: f.encryption,
    };
    c.validate()?;
    Ok(c)
}

/// A snapshot object: the whole record, plus the nonce that went into its
/// id, so that a reader can check the id against the fields.
#[derive(Serialize, Deserialize)]
struct SnapshotObject {
    format: u32,
    id: String,
    nonce: u64,
    time_ns: i64,
    host: String,
    /// The source path's exact bytes, in hex (paths need not be UTF-8).
    source_hex: String,
    root: String,
    parent: Option<String>,
    tags: Vec<String>,
    labels: BTreeMap<String, String>,
    complete: bool,
    pinned: bool,
    unreadable: Vec<(String, String)>,
    stats: SnapshotStats,
    root_meta: RootMeta,
    sources: Vec<SourceRoot>,
}

/// Bytes as lower-case hex, two digits each.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of [`hex`]; `None` for anything else.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The bytes of a snapshot's object (canonical: serde_json in field order).
pub fn encode_snapshot(s: &Snapshot, nonce: u64) -> Vec<u8> {
    let o = SnapshotObject {
        format: 2,
        id: s.id.to_hex(),
        nonce,
        time_ns: s.time_ns,
        host: s.host.clone(),
        source_hex: hex(s.source.as_os_str().as_bytes()),
        root: s.root.to_hex(),
        parent: s.parent.map(|p| p.to_hex()),
        tags: s.tags.clone(),
        labels: s.labels.clone(),
        complete: s.complete,
        pinned: s.pinned,
        unreadable: s.unreadable.clone(),
        stats: s.stats.clone(),
        root_meta: s.root_meta,
        sources: s.sources.clone(),
    };
    serde_json::to_vec_pretty(&o).expect("plain data serializes")
}

/// Decode a snapshot object and check its id against its fields.
pub fn decode_snapshot(bytes: &[u8]) -> std::result::Result<Snapshot, String> {
    decode_snapshot_with_nonce(bytes).map(|(s, _)| s)
}

/// [`decode_snapshot`], with the nonce that went into the id (what a copy
/// of the snapshot needs to keep its id).
pub fn decode_snapshot_with_nonce(bytes: &[u8]) -> std::result::Result<(Snapshot, u64), String> {
    let o: SnapshotObject = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if o.format != 2 {
        return Err(format!("unknown snapshot object format {}", o.format));
    }
    let id = SnapshotId::from_hex(&o.id).ok_or("bad id")?;
    let root = TreeId::from_hex(&o.root).ok_or("bad root tree id")?;
    let parent = match &o.parent {
        Some(p) => Some(SnapshotId::from_hex(p).ok_or("bad parent id")?),
        None => None,
    };
    let source = unhex(&o.source_hex).ok_or("bad source path")?;
    let want = Snapshot::compute_id(o.time_ns, &o.host, &source, &root, parent.as_ref(), o.nonce);
    if want != id {
        return Err("the id does not match the record (altered?)".into());
    }
    let nonce = o.nonce;
    Ok((
        Snapshot {
            id,
            time_ns: o.time_ns,
            host: o.host,
            source: PathBuf::from(std::ffi::OsString::from_vec(source)),
            root,
            parent,
            tags: o.tags,
            labels: o.labels,
            complete: o.complete,
            pinned: o.pinned,
            unreadable: o.unreadable,
            stats: o.stats,
            root_meta: o.root_meta,
            sources: o.sources,
        },
        nonce,
    ))
}

/// The nonce in the id of snapshot `id`, from its object.
pub fn read_snapshot_nonce(storage: &dyn Storage, id: &SnapshotId) -> Result<u64> {
    let key = snapshot_key(id);
    let bytes = storage.read(&key)?;
    let (s, nonce) = decode_snapshot_with_nonce(&bytes).map_err(|reason| Error::Damaged {
        path: storage.describe(&key).into(),
        reason,
    })?;
    if s.id != *id {
        return Err(Error::Damaged {
            path: storage.describe(&key).into(),
            reason: format!(
                "the object holds snapshot {}, not {}",
                s.id.short(),
                id.short()
            ),
        });
    }
    Ok(nonce)
}

/// Write a new snapshot's object (before the index commit).
pub fn write_snapshot(storage: &dyn Storage, s: &Snapshot, nonce: u64) -> Result<()> {
    storage.put(&snapshot_key(&s.id), &encode_snapshot(s, nonce))?;
    crate::fault::point("snapshot object written");
    Ok(())
}

/// A change to a snapshot after it was written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    /// The record's file name (not stored in it).
    #[serde(skip)]
    pub name: String,
    pub snapshot: String,
    pub time_ns: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forgotten: bool,
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// Record a change (before the index reflects it); returns its name.
pub fn record_change(storage: &dyn Storage, id: &SnapshotId, mut change: Change) -> Result<String> {
    change.snapshot = id.to_hex();
    change.time_ns = now_ns();
    let name = format!(
        "{}-{:020}-{:016x}",
        id.to_hex(),
        change.time_ns,
        rand::random::<u64>()
    );
    let json = serde_json::to_vec(&change).expect("plain data serializes");
    storage.put(&format!("{CHANGES_DIR}/{name}"), &json)?;
    crate::fault::point("change recorded");
    Ok(name)
}

/// The packs a gc on shared storage condemned, and when.
#[derive(Serialize, Deserialize)]
struct CondemnedRecord {
    time_ns: i64,
    packs: Vec<String>,
}

/// Record packs as condemned; returns the record's name (`condemned/NAME`).
pub fn write_condemned(storage: &dyn Storage, packs: &[crate::id::PackId]) -> Result<String> {
    let time_ns = now_ns();
    let name = format!("{time_ns:020}-{:016x}", rand::random::<u64>());
    let rec = CondemnedRecord {
        time_ns,
        packs: packs.iter().map(|p| p.to_hex()).collect(),
    };
    let json = serde_json::to_vec(&rec).expect("plain data serializes");
    storage.put(&format!("{CONDEMNED_DIR}/{name}"), &json)?;
    crate::fault::point("packs condemned");
    Ok(name)
}

/// The names of the condemned records, oldest first, with the time in
/// each name (the condemning client's clock).
pub fn condemned_records(storage: &dyn Storage) -> Result<Vec<(String, i64)>> {
    Ok(names_in(storage, CONDEMNED_DIR)?
        .into_iter()
        .filter_map(|n| {
            let t = n.get(..20)?.parse().ok()?;
            Some((n, t))
        })
        .collect())
}

/// The packs of one record; None when it is gone (a gc finished it).
pub fn read_condemned(storage: &dyn Storage, name: &str) -> Result<Option<Vec<crate::id::PackId>>> {
    let key = format!("{CONDEMNED_DIR}/{name}");
    let bytes = match storage.read(&key) {
        Err(e) if e.is_not_found() => return Ok(None),
        r => r?,
    };
    let rec: CondemnedRecord = serde_json::from_slice(&bytes).map_err(|e| Error::Damaged {
        path: storage.describe(&key).into(),
        reason: format!("not a condemned-packs record: {e}"),
    })?;
    rec.packs
        .iter()
        .map(|h| {
            crate::id::PackId::from_hex(h).ok_or_else(|| Error::Damaged {
                path: storage.describe(&key).into(),
                reason: format!("{h:?} is not a pack id"),
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Apply changes in time order to a snapshot; `None` if it was forgotten.
pub fn apply_changes(mut s: Snapshot, changes: &[Change]) -> Option<Snapshot> {
    for c in changes {
        if c.forgotten {
            return None;
        }
        if let Some(t) = &c.tags {
            s.tags = t.clone();
        }
        if let Some(p) = c.pinned {
            s.pinned = p;
        }
    }
    Some(s)
}

/// What the snapshot objects say: every object that decodes, the ones
/// that do not (where, and why), and the changes per snapshot in time order.
pub struct Records {
    pub snapshots: Vec<Snapshot>,
    pub bad: Vec<(String, String)>,
    pub changes: HashMap<SnapshotId, Vec<Change>>,
}

pub fn snapshot_key(id: &SnapshotId) -> String {
    format!("{SNAPSHOTS_DIR}/{}", id.to_hex())
}

/// The names of the objects in `dir`, sorted.
fn names_in(storage: &dyn Storage, dir: &str) -> Result<Vec<String>> {
    let prefix = format!("{dir}/");
    Ok(storage
        .list(&prefix)?
        .into_iter()
        .filter_map(|o| {
            let name = o.key.strip_prefix(&prefix)?;
            (!name.contains('/')).then(|| name.to_string())
        })
        .collect())
}

/// Change records whose names `wanted` accepts, per snapshot in time
/// order, and the objects that are not change records (where, why).
#[allow(clippy::type_complexity)]
pub fn read_changes(
    storage: &dyn Storage,
    wanted: impl Fn(&str) -> bool,
) -> Result<(HashMap<SnapshotId, Vec<Change>>, Vec<(String, String)>)> {
    let (mut changes, mut bad) = (HashMap::<SnapshotId, Vec<Change>>::new(), Vec::new());
    for name in names_in(storage, CHANGES_DIR)? {
        if !wanted(&name) {
            continue;
        }
        let key = format!("{CHANGES_DIR}/{name}");
        let bytes = match storage.read(&key) {
            // Removed by a gc since the listing: nothing to apply.
            Err(e) if e.is_not_found() => continue,
            Err(e) if e.is_damage() => {
                bad.push((storage.describe(&key), damage_reason(e)));
                continue;
            }
            r => r?,
        };
        let parsed: std::result::Result<Change, _> = serde_json::from_slice(&bytes);
        match parsed.ok().and_then(|mut c| {
            c.name = name;
            Some((SnapshotId::from_hex(&c.snapshot)?, c))
        }) {
            Some((id, c)) => changes.entry(id).or_default().push(c),
            None => bad.push((storage.describe(&key), "not a change record".into())),
        }
    }
    for list in changes.values_mut() {
        list.sort_by_key(|c| c.time_ns);
    }
    Ok((changes, bad))
}

/// What is wrong with a damaged object, without its name again.
fn damage_reason(e: Error) -> String {
    match e {
        Error::Damaged { reason, .. } => reason,
        e => e.to_string(),
    }
}

pub fn read_records(storage: &dyn Storage) -> Result<Records> {
    let mut r = Records {
        snapshots: Vec::new(),
        bad: Vec::new(),
        changes: HashMap::new(),
    };
    for name in names_in(storage, SNAPSHOTS_DIR)? {
        let key = format!("{SNAPSHOTS_DIR}/{name}");
        let bytes = match storage.read(&key) {
            // Sealed and altered: damage to name, not a reason to stop.
            Err(e) if e.is_damage() => {
                r.bad.push((storage.describe(&key), damage_reason(e)));
                continue;
            }
            r => r?,
        };
        match decode_snapshot(&bytes) {
            Ok(s) if s.id.to_hex() == name => r.snapshots.push(s),
            Ok(_) => r
                .bad
                .push((storage.describe(&key), "named for another snapshot".into())),
            Err(why) => r.bad.push((storage.describe(&key), why)),
        }
    }
    let (changes, bad) = read_changes(storage, |_| true)?;
    r.changes = changes;
    r.bad.extend(bad);
    r.snapshots.sort_by_key(|s| (s.time_ns, s.id));
    Ok(r)
}

/// Remove a snapshot's object and its change records (gc, after the index
/// commit that dropped it).
pub fn delete_snapshot_files(storage: &dyn Storage, id: &SnapshotId) -> Result<()> {
    let hex = id.to_hex();
    storage.delete(&snapshot_key(id))?;
    for name in names_in(storage, CHANGES_DIR)? {
        if name.starts_with(&hex) {
            storage.delete(&format!("{CHANGES_DIR}/{name}"))?;
        }
    }
    Ok(())
}

/// Snapshot ids that have change records.
pub fn changed_ids(storage: &dyn Storage) -> Result<Vec<SnapshotId>> {
    let mut ids: Vec<SnapshotId> = names_in(storage, CHANGES_DIR)?
        .into_iter()
        .filter_map(|n| n.get(..64).and_then(SnapshotId::from_hex))
        .collect();
    ids.dedup();
    Ok(ids)
}

/// Snapshot ids that have an object.
pub fn object_ids(storage: &dyn Storage) -> Result<Vec<SnapshotId>> {
    Ok(names_in(storage, SNAPSHOTS_DIR)?
        .into_iter()
        .filter_map(|n| SnapshotId::from_hex(&n))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_object_round_trips_and_an_altered_one_is_refused() {
        let root = TreeId::of(b"root");
        let source = PathBuf::from(std::ffi::OsString::from_vec(b"/data/caf\xe9".to_vec()));
        let id = Snapshot::compute_id(5, "host", source.as_os_str().as_bytes(), &root, None, 9);
        let s = Snapshot {
            id,
            time_ns: 5,
            host: "host".into(),
            source,
            root,
            parent: None,
            tags: vec!["t".into()],
            labels: BTreeMap::from([("k".into(), "v".into())]),
            complete: true,
            pinned: true,
            unreadable: vec![],
            stats: SnapshotStats::default(),
            root_meta: RootMeta::default(),
            sources: vec![],
        };
        let enc = encode_snapshot(&s, 9);
        let back = decode_snapshot(&enc).unwrap();
        assert_eq!(encode_snapshot(&back, 9), enc);
        let altered = String::from_utf8(enc)
            .unwrap()
            .replace("\"time_ns\": 5", "\"time_ns\": 6");
        assert!(serde_json::from_str::<serde_json::Value>(&altered).is_ok());
        assert!(decode_snapshot(altered.as_bytes()).is_err());
    }
}
