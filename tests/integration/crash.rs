//! Crash injection: snap aborts at every fault point of create, in-place
//! restore and gc (`SNAP_FAULT_AFTER=N`, as abrupt as kill -9), and at random
//! moments under a real `kill -9`. After each crash: `snap check --read-data`
//! passes, every snapshot committed before the crash restores exactly, a
//! rerun of the interrupted command succeeds, and no temporary file is left.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

/// How many fault points a command passes when it runs to the end.
fn fault_points(env: &Env, args: &[&str]) -> u64 {
    let out = env
        .snap()
        .args(args)
        .env("SNAP_FAULT_REPORT", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("fault points passed"))
        .expect("fault report");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Count the fault points of `args` against a throwaway copy of the
/// repository (the source, if the command changes it, is the caller's).
fn fault_points_on_a_copy(env: &Env, args: &[&str]) -> u64 {
    // Counted on the repository itself (this client knows its sources
    // there, by its place), which is then put back as it was.
    let saved = tempfile::tempdir().unwrap();
    let copy = saved.path().join("repo");
    cp_a(&env.repo, &copy);
    let n = fault_points(env, args);
    fs::remove_dir_all(&env.repo).unwrap();
    cp_a(&copy, &env.repo);
    n
}

/// Run `args` with a crash injected at point `n`. Returns false when the
/// command passed fewer points this time and finished normally (the count
/// can vary between runs: parallel work, a safety snapshot re-reading files).
fn crash_at(env: &Env, args: &[&str], n: u64) -> bool {
    let out = env
        .snap()
        .args(args)
        .env("SNAP_FAULT_AFTER", n.to_string())
        .output()
        .unwrap();
    if out.status.success() {
        return false;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("injected crash"),
        "{args:?} failed without a crash: {err}"
    );
    true
}

/// A temporary an interrupted restore left (the next restore removes it).
fn is_restore_temporary(p: &Path) -> bool {
    p.file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(".snap-tmp-")
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy();
            // Restore's temporaries, the storage's (`.tmp-*`), SQLite images.
            n.starts_with(".snap-tmp-") || n.starts_with(".tmp-")
        })
        .map(|e| e.path().to_path_buf())
        .collect()
}

fn assert_sound(env: &Env) {
    let out = env.snap().args(["check", "--read-data"]).output().unwrap();
    assert!(
        out.status.success(),
        "check failed after a crash:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ids(env: &Env) -> Vec<String> {
    env.list()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Restore `id` into a fresh directory and compare with `expected`.
fn assert_restores(env: &Env, id: &str, expected: &Path, tag: &str) {
    let out = env.path(&format!("verify-{tag}"));
    let _ = fs::remove_dir_all(&out);
    env.restore_to(id, &out);
    assert_same_tree(expected, &out);
    fs::remove_dir_all(&out).unwrap();
}

fn small_tree(root: &Path, seed: u64) {
    make_rich_tree(root);
    for i in 0..6 {
        write(
            &root.join(format!("bulk/{i}.bin")),
            noise(seed * 100 + i, 700_000),
        );
        write(
            &root.join(format!("text/{i}.txt")),
            format!("seed {seed} file {i}\n").repeat(20_000),
        );
    }
}

fn churn(root: &Path, seed: u64) {
    for i in 0..6 {
        if i % 2 == 0 {
            write(
                &root.join(format!("bulk/{i}.bin")),
                noise(seed * 1000 + i, 600_000),
            );
        }
    }
    let _ = fs::remove_file(root.join("text/1.txt"));
    write(
        &root.join(format!("added-{seed}.txt")),
        format!("added {seed}"),
    );
    write(&root.join("docs/readme.txt"), format!("rewritten {seed}\n"));
}

/// A repository with 1 MiB packs, so that small data spans several packs.
fn env_with_small_packs() -> Env {
    let env = Env::new();
    fs::remove_dir_all(&env.repo).unwrap();
    env.snap()
        .args(["init", "--pack-size", "1"])
        .assert()
        .success();
    env
}

/// Returns how many crashes it injected.
fn create_crash_cycle(rounds: u64) -> u64 {
    let env = env_with_small_packs();
    let src = env.path("src");
    small_tree(&src, 1);
    let first = env.create_id(&src);
    let first_copy = env.path("first-copy");
    cp_a(&src, &first_copy);
    let args = ["create", src.to_str().unwrap()];
    let mut crashes = 0;
    for round in 0..rounds {
        churn(&src, 2 + round);
        let total = fault_points_on_a_copy(&env, &args);
        assert!(total >= 8, "create passed only {total} fault points");
        let committed = ids(&env);
        for n in 1..=total {
            if !crash_at(&env, &args, n) {
                break;
            }
            crashes += 1;
            assert_sound(&env);
            let now = ids(&env);
            assert_eq!(
                now[..committed.len()],
                committed[..],
                "a committed snapshot vanished"
            );
            assert_restores(&env, &first, &first_copy, "create");
        }
        // A rerun completes.
        env.create(&src);
    }
    // gc then leaves no temporary and no orphan.
    env.snap().arg("gc").assert().success();
    assert!(
        temp_files(&env.repo).is_empty(),
        "{:?}",
        temp_files(&env.repo)
    );
    assert_sound(&env);
    let out = env.snap().args(["check", "--json"]).assert().success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["unreferenced_packs"], 0);
    assert_restores(&env, &first, &first_copy, "create-final");
    crashes
}

#[test]
fn create_survives_a_crash_at_every_fault_point() {
    let crashes = create_crash_cycle(4);
    eprintln!("create: {crashes} injected crashes survived");
    assert!(crashes >= 40, "only {crashes} crashes");
}

/// Content of every regular file under `root`, by relative path.
fn contents(root: &Path) -> BTreeMap<PathBuf, blake3::Hash> {
    listing(root)
        .into_iter()
        .filter_map(|(p, i)| i.content.map(|c| (p, c)))
        .collect()
}

fn restore_crash_cycle(every: u64, safety: bool) -> u64 {
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src, 3);
    for i in 0..40 {
        write(
            &src.join(format!("many/{i}.txt")),
            format!("original {i}\n"),
        );
    }
    let id = env.create_id(&src);
    let reference = env.path("reference");
    cp_a(&src, &reference);
    let old_files = contents(&reference);

    let migrate = |src: &Path| {
        churn(src, 4);
        for i in 0..40 {
            if i % 3 == 0 {
                fs::remove_file(src.join(format!("many/{i}.txt"))).ok();
            } else {
                write(
                    &src.join(format!("many/{i}.txt")),
                    format!("migrated {i}\n"),
                );
            }
        }
        write(&src.join("many/extra.txt"), b"added by the migration");
    };
    migrate(&src);
    let migrated = env.path("migrated");
    cp_a(&src, &migrated);
    let new_files = contents(&migrated);

    let mut args = vec!["restore", id.as_str()];
    if !safety {
        args.push("--no-safety-snapshot");
    }
    let total = {
        let probe_src = env.path("src");
        // Count on the real source, then put the migrated state back.
        let n = fault_points_on_a_copy(&env, &args);
        fs::remove_dir_all(&probe_src).unwrap();
        cp_a(&migrated, &probe_src);
        n
    };
    assert!(total >= 20, "restore passed only {total} fault points");
    let mut crashes = 0;
    for n in (1..=total).step_by(every as usize) {
        if !crash_at(&env, &args, n) {
            // Fewer points this time: the restore completed.
            assert_same_tree(&reference, &src);
            fs::remove_dir_all(&src).unwrap();
            cp_a(&migrated, &src);
            continue;
        }
        crashes += 1;
        assert_sound(&env);
        // Every file is either its old or its new version, never torn.
        for (p, h) in contents(&src) {
            if is_restore_temporary(&p) {
                continue;
            }
            assert!(
                old_files.get(&p) == Some(&h) || new_files.get(&p) == Some(&h),
                "{} is neither old nor new after a crash at point {n}",
                p.display()
            );
        }
        // The rerun completes the restore exactly, and cleans up.
        env.snap()
            .args(["restore", &id, "--no-safety-snapshot"])
            .assert()
            .success();
        assert_same_tree(&reference, &src);
        assert!(temp_files(&src).is_empty());
        // Back to the migrated state for the next crash.
        fs::remove_dir_all(&src).unwrap();
        cp_a(&migrated, &src);
    }
    assert_restores(&env, &id, &reference, "restore");
    crashes
}

#[test]
fn in_place_restore_survives_a_crash_at_every_fault_point() {
    let crashes = restore_crash_cycle(1, false);
    eprintln!("restore: {crashes} injected crashes survived");
    assert!(crashes >= 45, "only {crashes} crashes");
}

#[test]
fn in_place_restore_with_its_safety_snapshot_survives_crashes() {
    let crashes = restore_crash_cycle(3, true);
    assert!(crashes >= 10, "only {crashes} crashes");
}

fn gc_crash_cycle(rounds: u64) -> u64 {
    let env = env_with_small_packs();
    let src = env.path("src");
    small_tree(&src, 5);
    let mut gens = Vec::new();
    let args = ["gc", "--keep-last", "2", "--repack-threshold", "1"];
    let mut crashes = 0;
    for round in 0..rounds {
        for g in 0..3u64 {
            churn(&src, 10 + round * 10 + g);
            let id = env.create_id(&src);
            let copy = env.path(&format!("gen-{round}-{g}"));
            cp_a(&src, &copy);
            gens.push((id, copy));
        }
        let kept = &gens[gens.len() - 2..];
        let total = fault_points_on_a_copy(&env, &args);
        assert!(total >= 8, "gc passed only {total} fault points");
        let pristine = env.path(&format!("pristine-repo-{round}"));
        cp_a(&env.repo, &pristine);
        for n in 1..=total {
            if !crash_at(&env, &args, n) {
                break;
            }
            crashes += 1;
            assert_sound(&env);
            let now = ids(&env);
            for (id, copy) in &gens {
                if now.contains(id) {
                    assert_restores(&env, id, copy, "gc");
                }
            }
            assert!(
                now.contains(&kept[0].0) && now.contains(&kept[1].0),
                "kept snapshots lost"
            );
            // The rerun completes and leaves nothing behind.
            env.snap().args(args).assert().code(DONE_OR_NOTHING_TO_DO);
            assert_eq!(ids(&env), vec![kept[0].0.clone(), kept[1].0.clone()]);
            assert!(temp_files(&env.repo).is_empty());
            assert_sound(&env);
            // Start the next crash from the same repository.
            fs::remove_dir_all(&env.repo).unwrap();
            cp_a(&pristine, &env.repo);
        }
        env.snap().args(args).assert().code(DONE_OR_NOTHING_TO_DO);
    }
    crashes
}

#[test]
fn gc_survives_a_crash_at_every_fault_point() {
    let crashes = gc_crash_cycle(4);
    eprintln!("gc: {crashes} injected crashes survived");
    // How many points a gc passes depends on how chunks land in packs, so
    // the floor is what every run reaches: 4 rounds of at least 8 points
    // (each asserted in the cycle), every one of them survived.
    assert!(crashes >= 32, "only {crashes} crashes");
}

/// A real `kill -9` at random moments while the command works on data large
/// enough that the kill lands mid-work.
#[test]
fn kill_9_at_random_moments_during_create_restore_and_gc() {
    let env = Env::new();
    let src = env.path("src");
    for i in 0..24 {
        write(&src.join(format!("big/{i}.bin")), noise(900 + i, 3_000_000));
        write(
            &src.join(format!("log/{i}.log")),
            format!("line {i} of a log\n").repeat(100_000),
        );
    }
    for i in 0..300 {
        write(
            &src.join(format!("small/{i}.json")),
            format!("{{\"n\":{i}}}"),
        );
    }
    let first = env.create_id(&src);
    env.snap().args(["pin", &first]).assert().success();
    let reference = env.path("reference");
    cp_a(&src, &reference);
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut kills = 0;
    for round in 0..6u64 {
        // Change the data so create, restore and gc all have work.
        for i in 0..24 {
            if (i + round) % 3 == 0 {
                write(
                    &src.join(format!("big/{i}.bin")),
                    noise(round * 50 + i, 3_000_000),
                );
            }
        }
        for cmd in [
            vec!["create", src.to_str().unwrap()],
            vec!["restore", first.as_str()],
            vec!["gc", "--keep-last", "2"],
        ] {
            let mut child = env
                .snap_process()
                .args(&cmd)
                .env("SNAP_REPO", &env.repo)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(2 + next() % 60));
            let _ = child.kill();
            let status = child.wait().unwrap();
            if status.code().is_none() {
                kills += 1;
            }
            assert_sound(&env);
            for id in ids(&env) {
                if id == first {
                    assert_restores(&env, &id, &reference, "kill");
                }
            }
            // The rerun succeeds.
            env.snap().args(&cmd).assert().code(DONE_OR_NOTHING_TO_DO);
        }
        assert!(temp_files(&env.repo).is_empty());
        assert!(temp_files(&src).is_empty());
    }
    eprintln!("kill -9: {kills} of 18 commands killed mid-work");
    assert!(kills >= 5, "only {kills} kills landed mid-work");
}

/// A restore of more files than one write batch holds (4,096): one
/// batch's barrier runs while the next batch is written, and its renames
/// wait for it. Crashes spread over the whole restore, batch boundaries
/// included, leave every file old or new, and a rerun finishes exactly.
#[test]
fn an_in_place_restore_of_several_batches_survives_crashes() {
    let env = Env::new();
    let src = env.path("src");
    let files = 9_000;
    let name = |i: usize| format!("d{:02}/f{i}.txt", i % 90);
    for i in 0..files {
        write(&src.join(name(i)), format!("original {i}\n"));
    }
    let id = env.create_id(&src);
    let reference = env.path("reference");
    cp_a(&src, &reference);
    let old_files = contents(&reference);
    for i in 0..files {
        write(&src.join(name(i)), format!("migrated {i}\n"));
    }
    let migrated = env.path("migrated");
    cp_a(&src, &migrated);
    let new_files = contents(&migrated);

    let args = ["restore", id.as_str(), "--no-safety-snapshot"];
    let total = fault_points_on_a_copy(&env, &args);
    fs::remove_dir_all(&src).unwrap();
    cp_a(&migrated, &src);
    assert!(
        total > 2 * files as u64,
        "every file passes a write and a rename point: {total}"
    );
    let mut crashes = 0;
    // Through the first batch, near its end, in the next ones, near the end.
    for percent in [25, 45, 50, 75, 95] {
        let n = total * percent / 100;
        if !crash_at(&env, &args, n) {
            assert_same_tree(&reference, &src);
        } else {
            crashes += 1;
            assert_sound(&env);
            let (mut old, mut new) = (0, 0);
            for (p, h) in contents(&src) {
                if is_restore_temporary(&p) {
                    continue;
                }
                if old_files.get(&p) == Some(&h) {
                    old += 1;
                } else if new_files.get(&p) == Some(&h) {
                    new += 1;
                } else {
                    panic!(
                        "{} is neither old nor new after a crash at point {n}",
                        p.display()
                    );
                }
            }
            assert_eq!(old + new, files, "crash at point {n}: files missing");
            env.snap().args(args).assert().success();
            assert_same_tree(&reference, &src);
            assert!(temp_files(&src).is_empty());
        }
        fs::remove_dir_all(&src).unwrap();
        cp_a(&migrated, &src);
    }
    assert!(crashes >= 4, "only {crashes} of 5 crashes happened");
}
