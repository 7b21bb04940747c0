//! The Rust API, called directly (no binary): create, restore as a plan
//! then the execution of that plan, cancellation, migration sessions, and
//! the policy that lives in the library (a pinned snapshot is not
//! forgotten).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

// Only the crate root: what an embedder sees.
use snap::{
    CheckOptions, CreateOptions, Error, HeldFiles, LockMode, NoProgress, Outcome, Progress,
    Repository, RestoreOptions, begin_migration, check, create, execute_restore, finish_migration,
    forget, plan_restore,
};

use crate::common::{listing, make_rich_tree, sqlite_db, write};

fn repo_in(dir: &Path) -> Repository {
    let path = dir.join("repo");
    Repository::init(&path, &Default::default()).unwrap();
    Repository::open(&path, Some(LockMode::Exclusive)).unwrap()
}

fn options(source: &Path) -> CreateOptions {
    CreateOptions {
        source: source.to_path_buf(),
        ..CreateOptions::default()
    }
}

/// Asks to stop once `after` files' worth of bytes were reported.
struct CancelAfter {
    calls: AtomicU64,
    after: u64,
}

impl Progress for CancelAfter {
    fn bytes(&self, _n: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
    fn cancelled(&self) -> bool {
        self.calls.load(Ordering::Relaxed) >= self.after
    }
}

#[test]
fn create_then_a_restore_plan_executed_as_planned() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_rich_tree(&src);
    sqlite_db(&src.join("app.db"), 300);
    let repo = repo_in(tmp.path());
    let snap = create(&repo, &options(&src), &NoProgress).unwrap();
    assert!(snap.complete);
    let before = listing(&src);

    write(&src.join("added.txt"), "new");
    write(&src.join("app.db"), "not a database any more");
    let opts = RestoreOptions {
        safety_snapshot: true,
        ..RestoreOptions::default()
    };
    let plan = plan_restore(&repo, &snap, &opts).unwrap();
    assert!(plan.changes_anything());
    assert_eq!(plan.summary.delete_entries, 1, "added.txt is deleted");
    assert_eq!(plan.summary.write_files, 1, "app.db is rewritten");
    // The plan changed nothing.
    assert!(src.join("added.txt").exists());

    let stats = execute_restore(&repo, &snap, &plan, &opts, &NoProgress).unwrap();
    assert_eq!((stats.deleted_entries, stats.written_files), (1, 1));
    assert!(stats.safety_snapshot.is_some());
    assert_eq!(listing(&src), before);

    // A plan is for the snapshot it was made from.
    let other = create(&repo, &options(&src), &NoProgress).unwrap();
    let err = execute_restore(&repo, &other, &plan, &opts, &NoProgress).unwrap_err();
    assert!(
        err.to_string().contains("the plan is for snapshot"),
        "{err}"
    );
}

#[test]
fn a_cancelled_create_commits_nothing_and_leaves_the_repository_sound() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..200 {
        write(
            &src.join(format!("d{}/f{i}", i % 7)),
            crate::common::noise(i, 20_000),
        );
    }
    let repo = repo_in(tmp.path());
    let progress = CancelAfter {
        calls: AtomicU64::new(0),
        after: 20,
    };
    let err = create(&repo, &options(&src), &progress).unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err}");
    assert!(
        progress.calls.load(Ordering::Relaxed) >= 20,
        "the create was under way when it was cancelled"
    );
    assert!(repo.snapshots().unwrap().is_empty());
    let report = check(&repo, &CheckOptions { read_data: true }, &NoProgress).unwrap();
    assert!(report.is_sound(), "{report:?}");
    // And the next create works and stores everything.
    let snap = create(&repo, &options(&src), &NoProgress).unwrap();
    assert_eq!(snap.stats.files, 200);
}

#[test]
fn a_failed_migration_session_rolls_back_and_a_good_one_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app");
    make_rich_tree(&src);
    sqlite_db(&src.join("state.db"), 500);
    let repo = repo_in(tmp.path());
    let before = listing(&src);

    let pre = begin_migration(&repo, &options(&src), &NoProgress).unwrap();
    assert!(pre.pinned && pre.tags.contains(&"pre-migration".to_string()));
    // A pinned snapshot cannot be forgotten through the library either.
    let err = forget(&repo, &[pre.id]).unwrap_err();
    assert!(err.to_string().contains("pinned"), "{err}");
    // Nor can a second session begin.
    let err = begin_migration(&repo, &options(&src), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("did not finish"), "{err}");

    let c = rusqlite::Connection::open(src.join("state.db")).unwrap();
    c.execute_batch("ALTER TABLE users ADD COLUMN extra TEXT; PRAGMA user_version=7;")
        .unwrap();
    drop(c);
    write(&src.join("migrated-marker"), "half way");
    let end = finish_migration(&repo, &pre.id, false, None, &NoProgress).unwrap();
    assert_eq!(end.outcome, Outcome::RolledBack);
    assert!(!end.rolled_back.is_empty());
    assert_eq!(listing(&src), before, "exactly as before the migration");

    let pre = begin_migration(&repo, &options(&src), &NoProgress).unwrap();
    write(&src.join("migrated-marker"), "done");
    let end = finish_migration(&repo, &pre.id, true, None, &NoProgress).unwrap();
    assert_eq!(end.outcome, Outcome::Migrated);
    assert_eq!(std::fs::read(src.join("migrated-marker")).unwrap(), b"done");
    let kept = repo.snapshot_by_id(&pre.id).unwrap().unwrap();
    assert!(!kept.pinned && kept.tags.contains(&"migration-kept".to_string()));
}

#[test]
fn in_process_mode_holds_the_database_descriptors_and_still_captures_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app");
    std::fs::create_dir_all(&src).unwrap();
    let db = src.join("live.db");
    let app = rusqlite::Connection::open(&db).unwrap();
    app.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t(v); INSERT INTO t VALUES (1), (2), (3);",
    )
    .unwrap();
    write(&src.join("plain.txt"), "not held");
    let held = std::sync::Arc::new(HeldFiles::default());
    let repo = repo_in(tmp.path()).with_held_files(held.clone());
    let snap = create(&repo, &options(&src), &NoProgress).unwrap();
    // The database and its -wal are held; the plain file is not, nor -shm.
    assert_eq!(held.len(), 2, "{held:?}");
    // Committed rows that are still only in the WAL are in the snapshot.
    let target = tmp.path().join("copy");
    let opts = RestoreOptions {
        target: Some(target.clone()),
        ..RestoreOptions::default()
    };
    let plan = plan_restore(&repo, &snap, &opts).unwrap();
    execute_restore(&repo, &snap, &plan, &opts, &NoProgress).unwrap();
    let copy = rusqlite::Connection::open(target.join("live.db")).unwrap();
    let n: i64 = copy
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    // A second snapshot reuses the held descriptors instead of opening more.
    app.execute_batch("INSERT INTO t VALUES (4)").unwrap();
    create(&repo, &options(&src), &NoProgress).unwrap();
    assert_eq!(held.len(), 2, "{held:?}");
}
