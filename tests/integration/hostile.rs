//! Hostile inputs: each gets a clear outcome, and nothing is lost.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use predicates::prelude::*;

use crate::common::*;

#[test]
fn names_and_paths_near_the_os_limits_round_trip() {
    let env = Env::new();
    let src = env.path("src");
    // A 255-byte name (NAME_MAX), and a path close to PATH_MAX (4096).
    let long_name = "n".repeat(255);
    write(&src.join(&long_name), b"longest name");
    let mut deep = src.clone();
    while deep.as_os_str().len() < 3800 {
        deep = deep.join("d".repeat(200));
    }
    write(&deep.join("leaf"), b"deep leaf");
    let id = env.create_id(&src);
    let out = env.path("o");
    env.restore_to(&id, &out);
    assert_same_tree(&src, &out);
}

#[test]
fn special_files_are_recorded_never_read_and_recreated() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write(&src.join("regular"), b"x");
    let fifo = std::ffi::CString::new(src.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    // A live socket: never opened by snap, recreated as a socket node.
    let _listener = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    if is_root() {
        let dev =
            std::ffi::CString::new(src.join("null-dev").as_os_str().as_encoded_bytes()).unwrap();
        let rdev = libc::makedev(1, 3);
        assert_eq!(
            unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o600, rdev) },
            0
        );
    }
    // If snap opened the FIFO for reading it would block forever; the test
    // harness would time out instead of passing.
    let id = env.create_id(&src);
    let out = env.path("out");
    env.restore_to(&id, &out);
    assert!(
        fs::symlink_metadata(out.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        fs::symlink_metadata(out.join("sock"))
            .unwrap()
            .file_type()
            .is_socket()
    );
    if is_root() {
        let m = fs::symlink_metadata(out.join("null-dev")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(
            m.rdev(),
            fs::symlink_metadata(src.join("null-dev")).unwrap().rdev()
        );
    }
}

#[test]
fn sparse_files_are_restored_sparse() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let f = fs::File::create(src.join("sparse.img")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"data at the end", (64 << 20) - 100)
        .unwrap();
    f.write_all_at(b"data at the start", 0).unwrap();
    drop(f);
    let id = env.create_id(&src);
    assert!(
        env.repo_bytes() < 1 << 20,
        "zeros are stored once, compressed"
    );
    let out = env.path("out");
    env.restore_to(&id, &out);
    let m = fs::metadata(out.join("sparse.img")).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 < 4 << 20,
        "restored file allocates {} bytes",
        m.blocks() * 512
    );
    assert_eq!(
        fs::read(out.join("sparse.img")).unwrap(),
        fs::read(src.join("sparse.img")).unwrap()
    );
}

#[test]
fn a_repository_inside_the_source_is_excluded() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write(&src.join("data.txt"), b"app data");
    let repo = src.join(".snap-repo");
    let snap = || {
        let mut c = assert_cmd::Command::cargo_bin("snap").unwrap();
        c.env("SNAP_REPO", &repo);
        c
    };
    snap().arg("init").assert().success();
    snap()
        .arg("create")
        .arg(&src)
        .assert()
        .success()
        .stderr(predicate::str::contains(".snap-repo").and(predicate::str::contains("excluded")));
    let out = snap().args(["ls", "latest"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        text.contains("data.txt") && !text.contains(".snap-repo"),
        "{text}"
    );
}

#[test]
fn two_concurrent_creates_both_commit() {
    let env = Env::new();
    let a = env.path("a");
    let b = env.path("b");
    for (d, seed) in [(&a, 1), (&b, 2)] {
        for i in 0..8 {
            write(
                &d.join(format!("{i}.bin")),
                noise(seed * 100 + i, 1_000_000),
            );
        }
    }
    let bin = assert_cmd::cargo::cargo_bin("snap");
    let spawn = |d: &Path| {
        Command::new(&bin)
            .arg("create")
            .arg(d)
            .env("SNAP_REPO", &env.repo)
            .env("SNAP_LOCK_WAIT", "60")
            .output()
            .unwrap()
    };
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| spawn(&a));
        let hb = s.spawn(|| spawn(&b));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert!(
        ra.status.success(),
        "{}",
        String::from_utf8_lossy(&ra.stderr)
    );
    assert!(
        rb.status.success(),
        "{}",
        String::from_utf8_lossy(&rb.stderr)
    );
    assert_eq!(env.list().len(), 2);
    env.snap().args(["check", "--read-data"]).assert().success();
}

#[test]
fn create_concurrent_with_gc_keeps_everything_consistent() {
    let env = Env::new();
    let src = env.path("src");
    for g in 0..4 {
        write(&src.join("gen.bin"), noise(g, 3_000_000));
        env.create(&src);
    }
    write(&src.join("gen.bin"), noise(99, 3_000_000));
    let bin = assert_cmd::cargo::cargo_bin("snap");
    let run = |args: &[&str]| {
        Command::new(&bin)
            .args(args)
            .env("SNAP_REPO", &env.repo)
            .env("SNAP_LOCK_WAIT", "60")
            .output()
            .unwrap()
    };
    let (c, g) = std::thread::scope(|s| {
        let hc = s.spawn(|| run(&["create", src.to_str().unwrap()]));
        let hg = s.spawn(|| run(&["gc", "--keep-last", "2"]));
        (hc.join().unwrap(), hg.join().unwrap())
    });
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    env.snap().args(["check", "--read-data"]).assert().success();
    let out = env.path("out");
    env.restore_to("latest", &out);
    assert_eq!(fs::read(out.join("gen.bin")).unwrap(), noise(99, 3_000_000));
}

#[test]
fn a_full_disk_during_create_commits_nothing_and_leaves_the_repository_valid() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), "6m")
        .expect("this test needs root to mount a tmpfs: run the tests as root, as CI does");
    let repo = disk.path.join("repo");
    let snap = || {
        let mut c = assert_cmd::Command::cargo_bin("snap").unwrap();
        c.env("SNAP_REPO", &repo);
        c
    };
    snap().arg("init").assert().success();
    let src = dir.path().join("src");
    write(&src.join("small.txt"), b"fits");
    snap().arg("create").arg(&src).assert().success();
    for i in 0..4 {
        write(&src.join(format!("big-{i}.bin")), noise(i, 3_000_000));
    }
    snap()
        .arg("create")
        .arg(&src)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("No space left on device"));
    let out = snap().args(["list", "--json"]).assert().success();
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(list.len(), 1, "nothing committed");
    snap().args(["check", "--read-data"]).assert().success();
    // gc reclaims what the failed create wrote; the old snapshot restores.
    snap().arg("gc").assert().code(DONE_OR_NOTHING_TO_DO);
    let target = dir.path().join("restored");
    snap()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(fs::read(target.join("small.txt")).unwrap(), b"fits");
}

#[test]
fn a_full_disk_during_restore_fails_cleanly_and_keeps_old_files() {
    let env = Env::new();
    let src = env.path("src");
    for i in 0..4 {
        write(&src.join(format!("big-{i}.bin")), noise(i, 3_000_000));
    }
    let id = env.create_id(&src);
    let disk = SmallDisk::mount(&env.path("disk"), "5m")
        .expect("this test needs root to mount a tmpfs: run the tests as root, as CI does");
    let target = disk.path.join("target");
    write(&target.join("precious.txt"), b"already here");
    env.snap()
        .args(["restore", &id, "--no-safety-snapshot", "--target"])
        .arg(&target)
        .assert()
        .failure()
        .stderr(predicate::str::contains("No space left on device"));
    // No temporary file under a real name; no half-written file renamed in.
    for e in fs::read_dir(&target).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("big-") {
            let i: u64 = name[4..5].parse().unwrap();
            assert_eq!(
                fs::read(e.path()).unwrap(),
                noise(i, 3_000_000),
                "{name} is torn"
            );
        }
    }
    env.snap().args(["check"]).assert().success();
}

#[test]
fn a_file_rewritten_while_it_is_read_is_never_stored_torn_without_a_warning() {
    let env = Env::new();
    let src = env.path("src");
    let a = vec![b'a'; 6_000_000];
    let b = vec![b'b'; 4_000_000];
    write(&src.join("busy.bin"), &a);
    write(&src.join("calm.txt"), b"calm");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let bin = assert_cmd::cargo::cargo_bin("snap");
    let outputs = std::thread::scope(|s| {
        s.spawn(|| {
            // Rewrite the file in place, alternating two versions of
            // different sizes, as fast as possible.
            let mut flip = false;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let data = if flip { &a } else { &b };
                // Truncate, then grow the file 64 KiB at a time.
                if let Ok(mut f) = fs::File::create(src.join("busy.bin")) {
                    use std::io::Write;
                    for piece in data.chunks(65536) {
                        let _ = f.write_all(piece);
                    }
                }
                flip = !flip;
            }
        });
        let mut outs = Vec::new();
        for _ in 0..6 {
            outs.push(
                Command::new(&bin)
                    .args(["create", "--force", "--json"])
                    .arg(&src)
                    .env("SNAP_REPO", &env.repo)
                    .output()
                    .unwrap(),
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        outs
    });
    for (i, out) in outputs.iter().enumerate() {
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let warned = String::from_utf8_lossy(&out.stderr).contains("changed while it was read");
        let snap: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = snap["id"].as_str().unwrap();
        let target = env.path(&format!("out-{i}"));
        env.restore_to(id, &target);
        let got = fs::read(target.join("busy.bin")).unwrap();
        // A state the file really had at one instant: a prefix of one
        // version (the writer truncates, then writes). Torn: both versions.
        let one_version = got.iter().all(|&c| c == b'a') || got.iter().all(|&c| c == b'b');
        assert!(
            one_version || warned,
            "snapshot {i}: a torn file ({} bytes) was stored without a warning",
            got.len()
        );
        assert_eq!(fs::read(target.join("calm.txt")).unwrap(), b"calm");
    }
}

#[test]
fn files_vanishing_during_create_are_left_out_with_a_warning_never_an_error() {
    let env = Env::new();
    let src = env.path("src");
    let content = |i: usize| format!("file number {i}\n").repeat(200);
    for i in 0..3000 {
        write(&src.join(format!("d{}/f{i}", i % 30)), content(i));
    }
    let bin = assert_cmd::cargo::cargo_bin("snap");
    let out = std::thread::scope(|s| {
        let deleter = s.spawn(|| {
            // Delete every file while create walks and reads them.
            for i in 0..3000 {
                let _ = fs::remove_file(src.join(format!("d{}/f{i}", i % 30)));
            }
        });
        let out = Command::new(&bin)
            .args(["create", "--json"])
            .arg(&src)
            .env("SNAP_REPO", &env.repo)
            .output()
            .unwrap();
        deleter.join().unwrap();
        out
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stored = snap["stats"]["files"].as_u64().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Files deleted before the walk listed their directory were never seen;
    // those listed and then gone are named in a warning, not an error.
    for line in stderr.lines().filter(|l| l.contains("vanished")) {
        assert!(
            line.contains("/f") && line.contains("not in the snapshot"),
            "{line}"
        );
    }
    assert!(stored <= 3000);
    // Whatever was stored restores with its exact content.
    let target = env.path("out");
    env.restore_to(snap["id"].as_str().unwrap(), &target);
    let mut restored = 0;
    for e in walkdir::WalkDir::new(&target)
        .into_iter()
        .map(|e| e.unwrap())
    {
        if e.file_type().is_file() {
            let i: usize = e.file_name().to_string_lossy()[1..].parse().unwrap();
            assert_eq!(fs::read_to_string(e.path()).unwrap(), content(i));
            restored += 1;
        }
    }
    assert_eq!(restored, stored);
}
