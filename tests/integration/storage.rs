//! The storage conformance suite: every implementation of `Storage` keeps
//! the contract written on the trait (src/storage/mod.rs). Each check runs
//! against the local directory, memory, the fault-injecting wrapper
//! with no fault, the encrypting wrapper over local and over S3, and S3 (a
//! real s3s-fs server, see s3server.rs); the crash checks run the
//! fault-injecting wrapper at every call.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use snap::keys::MasterKey;
use snap::pack::PackReader;
use snap::storage::{
    Fault, FaultyStorage, LocalStorage, MemoryStorage, ObjectInfo, SealedStorage, Storage, pack_key,
};

use crate::common::*;

/// A fresh storage of each kind; the local one lives in `dir`.
fn each_storage(dir: &Path) -> Vec<(&'static str, Arc<dyn Storage>)> {
    let local = dir.join("local");
    std::fs::create_dir_all(&local).unwrap();
    let wrapped = dir.join("wrapped");
    std::fs::create_dir_all(&wrapped).unwrap();
    let mut v: Vec<(&'static str, Arc<dyn Storage>)> = vec![
        ("local", Arc::new(LocalStorage::new(&local))),
        ("memory", Arc::new(MemoryStorage::new())),
        (
            "faulty(local, no fault)",
            Arc::new(FaultyStorage::new(
                Arc::new(LocalStorage::new(&wrapped)),
                Fault::None,
            )),
        ),
    ];
    let sealed_local = dir.join("sealed");
    std::fs::create_dir_all(&sealed_local).unwrap();
    v.push((
        "sealed(local)",
        Arc::new(SealedStorage::new(
            Arc::new(LocalStorage::new(&sealed_local)),
            &MasterKey::random(),
        )),
    ));
    let srv = crate::s3server::server("storage conformance");
    v.push(("s3 (s3s-fs)", Arc::new(srv.fresh_storage())));
    let sealed = SealedStorage::new(Arc::new(srv.fresh_storage()), &MasterKey::random());
    v.push(("sealed(s3)", Arc::new(sealed)));
    v
}

fn keys(list: Vec<ObjectInfo>) -> Vec<String> {
    list.into_iter().map(|o| o.key).collect()
}

#[test]
fn reads_across_read_windows_and_segments_are_exact_in_any_order() {
    // Over 4 MiB read windows (S3) and 64 KiB sealed segments: reads that
    // straddle them, span many, repeat, and come from several threads.
    let dir = tempfile::tempdir().unwrap();
    let w = 4u64 << 20;
    for (name, s) in each_storage(dir.path()) {
        let data = noise(9, (3 * w + 12345) as usize);
        s.put("packs/ee/w.pack", &data).unwrap();
        let r: Arc<dyn snap::storage::ObjectReader> = s.open("packs/ee/w.pack").unwrap().into();
        let ranges = [
            (w - 10, 20),
            (2 * w - 1, 2),
            (3 * w, 12345),
            (0, 3 * w + 12345),
            (w / 2, 2 * w),
            (w - 10, 20),
            (65_530, 100),
        ];
        std::thread::scope(|t| {
            for part in 0..3 {
                let (r, data) = (r.clone(), &data);
                t.spawn(move || {
                    for (o, l) in ranges.iter().cycle().skip(part).take(ranges.len()) {
                        let got = r.read_at(*o, *l).unwrap();
                        assert!(
                            got == data[*o as usize..(o + l) as usize],
                            "{name}: {o}+{l}"
                        );
                    }
                });
            }
        });
    }
}

#[test]
fn puts_are_whole_and_range_reads_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    for (name, s) in each_storage(dir.path()) {
        let big = noise(1, 3 << 20);
        s.put("snapshots/aa", b"first").unwrap();
        s.put("packs/ab/x.pack", &big).unwrap();
        assert_eq!(s.read("snapshots/aa").unwrap(), b"first", "{name}");
        assert_eq!(s.size("packs/ab/x.pack").unwrap(), Some(big.len() as u64));
        let r = s.open("packs/ab/x.pack").unwrap();
        assert_eq!(r.size(), big.len() as u64, "{name}");
        assert_eq!(r.read_at(1000, 4096).unwrap(), &big[1000..5096], "{name}");
        assert_eq!(r.read_at(big.len() as u64, 0).unwrap(), b"", "{name}");
        // Past the end is an error, never a short answer.
        assert!(r.read_at(big.len() as u64 - 10, 11).is_err(), "{name}");
        assert!(r.read_at(u64::MAX, 2).is_err(), "{name}");
        // A put over an existing key replaces it whole (the config at init).
        s.put("snapshots/aa", b"second, longer").unwrap();
        assert_eq!(s.read("snapshots/aa").unwrap(), b"second, longer");
        // A streamed object is invisible until committed, under a name
        // chosen at the end, in a directory created on demand.
        let mut w = s.create("packs").unwrap();
        w.write(b"abc").unwrap();
        w.write(b"def").unwrap();
        assert_eq!(w.len(), 6);
        assert!(
            !keys(s.list("packs/").unwrap())
                .iter()
                .any(|k| k.contains("cd"))
        );
        w.commit("packs/cd/y.pack").unwrap();
        assert_eq!(s.read("packs/cd/y.pack").unwrap(), b"abcdef", "{name}");
    }
}

#[test]
fn listings_are_sorted_by_prefix_and_hold_only_committed_objects() {
    let dir = tempfile::tempdir().unwrap();
    for (name, s) in each_storage(dir.path()) {
        for k in [
            "changes/b-2",
            "changes/a-1",
            "snapshots/z",
            "packs/01/p.pack",
            "config",
        ] {
            s.put(k, k.as_bytes()).unwrap();
        }
        let pending = {
            let mut w = s.create("changes").unwrap();
            w.write(b"not yet").unwrap();
            w
        };
        let got = s.list("changes/").unwrap();
        assert_eq!(keys(got.clone()), ["changes/a-1", "changes/b-2"], "{name}");
        assert_eq!(got[0].size, "changes/a-1".len() as u64);
        // A prefix is a string prefix, not only a directory.
        assert_eq!(keys(s.list("snap").unwrap()), ["snapshots/z"], "{name}");
        assert_eq!(keys(s.list("packs/01/").unwrap()), ["packs/01/p.pack"]);
        assert!(s.list("nothing/").unwrap().is_empty(), "{name}");
        let all = keys(s.list("").unwrap());
        assert_eq!(all.len(), 5, "{name}: {all:?}");
        assert!(all.windows(2).all(|w| w[0] < w[1]), "{name}: {all:?}");
        // Dropped without commit: gone, and nothing left to clean.
        drop(pending);
        assert_eq!(s.list("changes/").unwrap().len(), 2, "{name}");
        assert_eq!(s.remove_partial().unwrap(), 0, "{name}");
    }
}

#[test]
fn deletes_are_idempotent_and_missing_objects_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    for (name, s) in each_storage(dir.path()) {
        s.put("snapshots/a", b"x").unwrap();
        s.delete("snapshots/a").unwrap();
        s.delete("snapshots/a").unwrap();
        s.delete("snapshots/never").unwrap();
        s.flush().unwrap();
        assert_eq!(s.size("snapshots/a").unwrap(), None, "{name}");
        assert!(s.list("snapshots/").unwrap().is_empty(), "{name}");
        let err = s.open("snapshots/a").err().expect("gone");
        assert!(err.is_not_found(), "{name}: {err}");
        let err = s.read("snapshots/a").unwrap_err();
        assert!(err.is_not_found(), "{name}: {err}");
    }
}

#[test]
fn keys_that_could_leave_the_repository_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, s) in each_storage(dir.path()) {
        for bad in [
            "../x", "/abs", "a//b", ".hidden", "a/./b", "a/../b", "", "a/",
        ] {
            assert!(s.put(bad, b"x").is_err(), "{name}: put {bad:?}");
            assert!(s.open(bad).is_err(), "{name}: open {bad:?}");
            assert!(s.delete(bad).is_err(), "{name}: delete {bad:?}");
        }
        // A streamed object commits only under the directory it began in.
        let w = s.create("packs").unwrap();
        assert!(w.commit("snapshots/x").is_err(), "{name}");
        assert!(s.list("").unwrap().is_empty(), "{name}");
    }
    assert!(!dir.path().join("x").exists());
}

#[test]
fn a_reader_during_a_put_sees_nothing_or_the_whole_object() {
    let dir = tempfile::tempdir().unwrap();
    for (name, s) in each_storage(dir.path()) {
        let data = noise(3, 8 << 20);
        let seen = std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                let mut w = s.create("packs").unwrap();
                for piece in data.chunks(64 << 10) {
                    w.write(piece).unwrap();
                }
                w.commit("packs/aa/big.pack").unwrap();
            });
            let mut seen = BTreeMap::new();
            loop {
                let done = writer.is_finished();
                match s.size("packs/aa/big.pack").unwrap() {
                    None => *seen.entry("absent").or_insert(0) += 1,
                    Some(n) => {
                        assert_eq!(n, data.len() as u64, "{name}: a partial object");
                        assert_eq!(s.read("packs/aa/big.pack").unwrap(), data, "{name}");
                        *seen.entry("whole").or_insert(0) += 1;
                    }
                }
                if done {
                    break;
                }
            }
            writer.join().unwrap();
            seen
        });
        assert!(seen.contains_key("whole"), "{name}: {seen:?}");
    }
}

/// A fixed sequence of storage work; records each put that returned Ok.
fn script(s: &dyn Storage, acked: &mut Vec<(String, Vec<u8>)>) -> snap::Result<()> {
    let put = |acked: &mut Vec<_>, k: &str, v: Vec<u8>| -> snap::Result<()> {
        s.put(k, &v)?;
        acked.push((k.to_string(), v));
        Ok(())
    };
    put(acked, "config", b"{\"v\":1}".to_vec())?;
    put(acked, "snapshots/one", noise(5, 3000))?;
    let mut w = s.create("packs")?;
    let body = noise(6, 200_000);
    for piece in body.chunks(50_000) {
        w.write(piece)?;
    }
    w.commit("packs/ee/streamed.pack")?;
    acked.push(("packs/ee/streamed.pack".into(), body));
    s.delete("snapshots/one")?;
    acked.retain(|(k, _)| k != "snapshots/one");
    put(acked, "changes/one-1", b"pin".to_vec())?;
    s.flush()
}

/// After a crash: every acknowledged put is whole, every other key holds a
/// whole object or nothing, and the interrupted put's temporaries are
/// invisible to listings and removed by `remove_partial`.
fn assert_survived(inner: &dyn Storage, acked: &[(String, Vec<u8>)], n: u64, root: Option<&Path>) {
    let mut expected: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    expected.insert("config".into(), vec![b"{\"v\":1}".to_vec()]);
    expected.insert("snapshots/one".into(), vec![noise(5, 3000)]);
    expected.insert("packs/ee/streamed.pack".into(), vec![noise(6, 200_000)]);
    expected.insert("changes/one-1".into(), vec![b"pin".to_vec()]);
    for (k, v) in acked {
        assert_eq!(&inner.read(k).unwrap(), v, "crash at {n}: acknowledged {k}");
    }
    for o in inner.list("").unwrap() {
        let whole = &expected[&o.key];
        let got = inner.read(&o.key).unwrap();
        assert!(whole.contains(&got), "crash at {n}: {} holds a part", o.key);
    }
    inner.remove_partial().unwrap();
    if let Some(root) = root {
        for e in walkdir::WalkDir::new(root) {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy();
            assert!(
                !name.starts_with(".tmp"),
                "crash at {n}: {} left",
                e.path().display()
            );
        }
    }
}

#[test]
fn a_crash_at_every_storage_call_leaves_whole_objects_or_none() {
    let dir = tempfile::tempdir().unwrap();
    // How many calls the script makes.
    let counter = FaultyStorage::new(Arc::new(MemoryStorage::new()), Fault::None);
    script(&counter, &mut Vec::new()).unwrap();
    let calls = counter.calls();
    assert!(calls >= 10, "the script made only {calls} calls");
    let mut torn_temps = 0;
    for n in 1..=calls {
        let local_root = dir.path().join(format!("crash-{n}"));
        std::fs::create_dir_all(&local_root).unwrap();
        let inners: Vec<(Arc<dyn Storage>, Option<&Path>)> = vec![
            (Arc::new(MemoryStorage::new()), None),
            (Arc::new(LocalStorage::new(&local_root)), Some(&local_root)),
        ];
        for (inner, root) in inners {
            let faulty = FaultyStorage::new(inner.clone(), Fault::CrashAt(n));
            let mut acked = Vec::new();
            assert!(
                script(&faulty, &mut acked).is_err(),
                "crash at {n} not seen"
            );
            assert!(faulty.crashed());
            if let Some(r) = root {
                torn_temps += walkdir::WalkDir::new(r)
                    .into_iter()
                    .filter(|e| {
                        e.as_ref()
                            .unwrap()
                            .file_name()
                            .to_string_lossy()
                            .starts_with(".tmp")
                    })
                    .count();
            }
            assert_survived(&*inner, &acked, n, root);
        }
    }
    // Some crashes tore a streamed write: its temporary was there to find.
    assert!(torn_temps > 0, "no crash left a torn temporary");
}

#[test]
fn a_failed_call_fails_alone_and_a_failed_put_leaves_nothing() {
    let counter = FaultyStorage::new(Arc::new(MemoryStorage::new()), Fault::None);
    script(&counter, &mut Vec::new()).unwrap();
    for n in 1..=counter.calls() {
        let inner = Arc::new(MemoryStorage::new());
        let faulty = FaultyStorage::new(inner.clone(), Fault::FailCall(n));
        let mut acked = Vec::new();
        assert!(script(&faulty, &mut acked).is_err(), "fault {n} not seen");
        assert!(!faulty.crashed());
        assert_survived(&*inner, &acked, n, None);
        // The next call works again.
        faulty.put("snapshots/after", b"ok").unwrap();
        assert_eq!(inner.read("snapshots/after").unwrap(), b"ok");
    }
}

#[test]
fn short_reads_are_damage_named_by_pack_never_wrong_bytes() {
    let inner: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let data = noise(8, 20_000);
    let mut w = snap::pack::PackWriter::create(&*inner, snap::pack::PackKind::Data).unwrap();
    let id = snap::ChunkId::of(&data);
    w.add(
        snap::pack::Blob::whole(id, snap::compress::Codec::Raw, data.len() as u32),
        &data,
    )
    .unwrap();
    let f = w.finish().unwrap();
    assert!(inner.size(&pack_key(&f.id)).unwrap().is_some());
    let short = FaultyStorage::new(inner.clone(), Fault::ShortReads);
    let r = PackReader::open(&short, &f.id).unwrap();
    let err = r.footer().unwrap_err();
    assert!(err.is_damage(), "{err}");
    assert!(err.to_string().contains(&f.id.to_hex()), "{err}");
    let e = f.entries[0];
    let err = r.read_chunk(&e, None).unwrap_err();
    assert!(err.is_damage(), "{err}");
    // The same pack read honestly is fine.
    let good = PackReader::open(&*inner, &f.id).unwrap();
    assert_eq!(good.footer().unwrap().id, f.id);
}

// ---- A whole repository on a storage other than its local directory ----

use snap::Repository;
use snap::lock::LockMode;
use snap::ops::check::{CheckOptions, check};
use snap::ops::create::{CreateOptions, create};
use snap::ops::gc::{GcOptions, gc};
use snap::ops::restore::{RestoreOptions, restore};
use snap::progress::NoProgress;

fn snapshot_on(
    storage: Arc<dyn Storage>,
    local: &Path,
    source: &Path,
) -> snap::Result<snap::Snapshot> {
    let repo = Repository::open_on(storage, local, Some(LockMode::Exclusive), false)?;
    let opts = CreateOptions {
        source: source.to_path_buf(),
        ..CreateOptions::default()
    };
    create(&repo, &opts, &NoProgress)
}

fn restore_on(storage: Arc<dyn Storage>, local: &Path, id: &snap::SnapshotId, target: &Path) {
    let repo = Repository::open_on(storage, local, Some(LockMode::Shared), false).unwrap();
    let s = repo.snapshot_by_id(id).unwrap().expect("listed");
    let opts = RestoreOptions {
        target: Some(target.to_path_buf()),
        ..RestoreOptions::default()
    };
    let (_, stats) = restore(&repo, &s, &opts, &NoProgress).unwrap();
    assert!(stats.is_some());
}

fn read_data_check(storage: Arc<dyn Storage>, local: &Path) -> snap::ops::check::CheckReport {
    let repo = Repository::open_on(storage, local, Some(LockMode::Shared), false).unwrap();
    check(&repo, &CheckOptions { read_data: true }, &NoProgress).unwrap()
}

#[test]
fn a_repository_in_memory_keeps_every_fact_in_its_objects() {
    let dir = tempfile::tempdir().unwrap();
    let (src, local, out) = (
        dir.path().join("src"),
        dir.path().join("local"),
        dir.path().join("out"),
    );
    make_rich_tree(&src);
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    Repository::init_on(storage.clone(), &local, &Default::default()).unwrap();
    let s = snapshot_on(storage.clone(), &local, &src).unwrap();
    restore_on(storage.clone(), &local, &s.id, &out);
    assert_same_tree(&src, &out);
    // The local directory holds only the cache, the lock and scratch space;
    // the objects are all in the storage.
    let mut local_names: Vec<String> = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    local_names.sort();
    for n in &local_names {
        assert!(
            n.starts_with("index.db") || n == "lock" || n == "tmp",
            "{n} in the local dir"
        );
    }
    let objects = keys(storage.list("").unwrap());
    assert!(objects.contains(&"config".to_string()));
    assert!(objects.contains(&format!("snapshots/{}", s.id.to_hex())));
    assert!(
        objects.iter().filter(|k| k.starts_with("packs/")).count() >= 2,
        "{objects:?}"
    );
    let report = read_data_check(storage.clone(), &local);
    assert!(report.is_sound(), "{:?}", report.problems);
    // Lose the index: the objects rebuild it, and the snapshot restores.
    for n in &local_names {
        if n.starts_with("index.db") {
            std::fs::remove_file(local.join(n)).unwrap();
        }
    }
    let stats = snap::ops::repair::repair_index_on(storage.clone(), &local, &NoProgress).unwrap();
    assert!(stats.is_clean(), "{stats:?}");
    assert_eq!(stats.snapshots, 1);
    let again = dir.path().join("again");
    restore_on(storage.clone(), &local, &s.id, &again);
    assert_same_tree(&src, &again);
}

/// A second create through a storage that fails at its N-th call, for
/// every N: afterwards the first snapshot restores exactly, the second is
/// there whole or not at all, and gc plus check leave a sound repository.
#[test]
fn create_and_gc_through_a_storage_that_fails_at_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let (src, out) = (dir.path().join("src"), dir.path().join("out"));
    make_rich_tree(&src);
    let first = dir.path().join("first");
    cp_a(&src, &first);
    write(&src.join("docs/new.txt"), noise(9, 300_000));
    write(&src.join("prefs.json"), b"{\"theme\":\"light\"}");

    // One run to count the calls of the second create.
    let setup = |n: u64, fault: Fault| {
        let local = dir.path().join(format!("local-{n}"));
        let inner: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        Repository::init_on(inner.clone(), &local, &Default::default()).unwrap();
        let a = snapshot_on(inner.clone(), &local, &first).unwrap();
        let faulty = Arc::new(FaultyStorage::new(inner.clone(), fault));
        (local, inner, a, faulty)
    };
    let (local0, _, _, counter) = setup(0, Fault::None);
    snapshot_on(counter.clone(), &local0, &src).unwrap();
    let calls = counter.calls();
    assert!(calls >= 8, "create made only {calls} storage calls");

    let mut committed = 0;
    for n in 1..=calls {
        let (local, inner, a, faulty) = setup(n, Fault::CrashAt(n));
        let r = snapshot_on(faulty.clone(), &local, &src);
        assert!(faulty.crashed(), "call {n} was never made");
        let repo =
            Repository::open_on(inner.clone(), &local, Some(LockMode::Exclusive), false).unwrap();
        let listed = repo.snapshots().unwrap();
        assert!(
            listed.iter().any(|s| s.id == a.id),
            "crash at {n}: lost the first snapshot"
        );
        let b = listed.iter().find(|s| s.id != a.id).cloned();
        assert_eq!(r.is_ok(), b.is_some(), "crash at {n}: create said {r:?}");
        committed += b.is_some() as u32;
        gc(&repo, &GcOptions::default(), &NoProgress).unwrap();
        drop(repo);
        let report = read_data_check(inner.clone(), &local);
        assert!(
            report.is_sound() && report.unreferenced_packs == 0,
            "crash at {n}: {:?}",
            report.problems
        );
        let target = out.join(format!("a-{n}"));
        restore_on(inner.clone(), &local, &a.id, &target);
        assert_same_tree(&first, &target);
        if let Some(b) = b {
            let target = out.join(format!("b-{n}"));
            restore_on(inner.clone(), &local, &b.id, &target);
            assert_same_tree(&src, &target);
        }
    }
    // Every storage call of a create comes before its index commit (the
    // write order), so no failure leaves the second snapshot committed.
    assert_eq!(committed, 0);
}
