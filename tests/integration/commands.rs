//! The commands users of restic and borg reach for: diff, find, stats,
//! dump, tag, ids (`latest~N`, `tag:`), completions and the man page.

use std::fs;

use crate::common::*;

fn stdout_of(env: &Env, args: &[&str]) -> String {
    let out = env.snap().args(args).assert().success();
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

fn json_of(env: &Env, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&stdout_of(env, args)).unwrap()
}

/// A source, its snapshot, then a known set of changes.
fn changed_source(env: &Env) -> (std::path::PathBuf, String) {
    let src = env.path("app");
    write(&src.join("keep.txt"), b"unchanged");
    write(&src.join("edit.txt"), b"before");
    write(&src.join("gone.txt"), b"removed later");
    write(&src.join("dir/inner.txt"), b"in a dir that goes");
    write(&src.join("chmod.txt"), b"same bytes");
    write(&src.join("kind"), b"a file that becomes a directory");
    std::os::unix::fs::symlink("keep.txt", src.join("link")).unwrap();
    let id = env.create_id(&src);
    write(&src.join("edit.txt"), b"after, longer");
    fs::remove_file(src.join("gone.txt")).unwrap();
    fs::remove_dir_all(src.join("dir")).unwrap();
    write(&src.join("new/added.txt"), b"new");
    fs::set_permissions(
        src.join("chmod.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    fs::remove_file(src.join("kind")).unwrap();
    write(&src.join("kind/child"), b"x");
    fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("edit.txt", src.join("link")).unwrap();
    (src, id)
}

const EXPECTED_DIFF: &str = "\
m  chmod.txt
-  dir/
-  dir/inner.txt
M  edit.txt
-  gone.txt
T  kind/
+  kind/child
M  link
+  new/
+  new/added.txt
";

#[test]
fn diff_names_every_change_between_snapshots_and_against_the_source() {
    let env = Env::new();
    let (src, first) = changed_source(&env);
    // Against the source as it is now.
    assert_eq!(stdout_of(&env, &["diff", &first]), EXPECTED_DIFF);
    // Between two snapshots: the same set.
    let second = env.create_id(&src);
    assert_eq!(stdout_of(&env, &["diff", &first, &second]), EXPECTED_DIFF);
    let v = json_of(&env, &["diff", &first, &second, "--json"]);
    let got: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("chmod.txt", "metadata"),
        ("dir", "removed"),
        ("dir/inner.txt", "removed"),
        ("edit.txt", "modified"),
        ("gone.txt", "removed"),
        ("kind", "type"),
        ("kind/child", "added"),
        ("link", "modified"),
        ("new", "added"),
        ("new/added.txt", "added"),
    ]
    .iter()
    .map(|(p, c)| (p.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(v[3]["size_before"], 6);
    assert_eq!(v[3]["size_after"], 13);
    // Nothing changed since the second: empty, and the reverse is the inverse.
    assert_eq!(stdout_of(&env, &["diff", &second]), "");
    let back = stdout_of(&env, &["diff", &second, &first]);
    assert!(
        back.contains("+  gone.txt\n") && back.contains("-  new/\n"),
        "{back}"
    );
}

#[test]
fn diff_against_the_source_reads_content_only_when_asked_or_when_mtime_moved() {
    let env = Env::new();
    let src = env.path("app");
    write(&src.join("same-size.bin"), b"AAAA");
    set_mtime(&src.join("same-size.bin"), 1_600_000_000, 5);
    write(&src.join("touched.txt"), b"same content");
    let id = env.create_id(&src);
    // Same size and mtime, other bytes: only --verify sees it.
    write(&src.join("same-size.bin"), b"BBBB");
    set_mtime(&src.join("same-size.bin"), 1_600_000_000, 5);
    // A new mtime over the same bytes: metadata only, found by reading.
    set_mtime(&src.join("touched.txt"), 1_700_000_000, 0);
    assert_eq!(stdout_of(&env, &["diff", &id]), "m  touched.txt\n");
    assert_eq!(
        stdout_of(&env, &["diff", &id, "--verify"]),
        "M  same-size.bin\nm  touched.txt\n"
    );
}

#[test]
fn find_lists_matches_across_snapshots() {
    let env = Env::new();
    let src = env.path("app");
    write(&src.join("logs/a.log"), b"1");
    write(&src.join("notes.txt"), b"n");
    let one = env.create_id(&src);
    write(&src.join("logs/b.log"), b"22");
    let two = env.create_id(&src);
    fs::remove_dir_all(src.join("logs")).unwrap();
    let three = env.create_id(&src);
    let v = json_of(&env, &["find", "*.log", "--json"]);
    let got: Vec<(String, String, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["snapshot"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (one.clone(), "logs/a.log".into(), 1),
            (two.clone(), "logs/a.log".into(), 1),
            (two.clone(), "logs/b.log".into(), 2)
        ]
    );
    assert!(v[0]["mtime"].as_str().is_some());
    // Anchored patterns, several patterns, one snapshot.
    let text = stdout_of(&env, &["find", "logs/b.*", "notes.txt", "--snapshot", &two]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].ends_with("logs/b.log") && lines[1].ends_with("notes.txt"),
        "{text}"
    );
    assert_eq!(
        json_of(&env, &["find", "*.log", "-s", &three, "--json"]),
        serde_json::json!([])
    );
    // A bad pattern names itself.
    let out = env.snap().args(["find", "a[", "--json"]).assert().failure();
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("\"a[\""));
}

#[test]
fn stats_add_up_to_what_was_written() {
    let env = Env::new();
    let src = env.path("app");
    write(&src.join("a.bin"), noise(1, 300_000));
    write(&src.join("b.bin"), noise(2, 200_000));
    write(&src.join("copy-of-a.bin"), noise(1, 300_000));
    let first = env.create_id(&src);
    write(&src.join("c.bin"), noise(3, 100_000));
    env.create_id(&src);
    let v = json_of(&env, &["stats", "--json"]);
    assert_eq!(v["snapshots"], 2);
    // Logical: every snapshot's files. Unique: distinct data only.
    assert_eq!(v["logical_bytes"], 800_000 + 900_000);
    assert_eq!(v["unique_bytes"], 600_000);
    // Noise does not compress; packs hold it plus headers and footers.
    let compressed = v["compressed_bytes"].as_u64().unwrap();
    assert_eq!(compressed, 600_000);
    let stored = v["stored_bytes"].as_u64().unwrap();
    assert!(stored > compressed && stored < compressed + 200_000, "{v}");
    assert!((v["dedup_ratio"].as_f64().unwrap() - 1_700_000.0 / 600_000.0).abs() < 1e-9);
    let s = json_of(&env, &["stats", &first, "--json"]);
    assert_eq!(s["files"], 3);
    assert_eq!(s["total_bytes"], 800_000);
    assert_eq!(s["added_raw_bytes"], 500_000);
    let text = stdout_of(&env, &["stats"]);
    assert!(
        text.contains("dedup ratio:") && text.contains("snapshots:          2"),
        "{text}"
    );
}

#[test]
fn dump_writes_a_file_or_a_tar_that_unpacks_to_the_same_tree() {
    let env = Env::new();
    let src = env.path("app");
    make_rich_tree(&src);
    let id = env.create_id(&src);
    let out = env
        .snap()
        .args(["dump", &id, "media/photo.jpg"])
        .assert()
        .success();
    assert_eq!(
        out.get_output().stdout,
        fs::read(src.join("media/photo.jpg")).unwrap()
    );
    let tar = env.snap().args(["dump", &id, "."]).assert().success();
    let unpacked = env.path("unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    fs::write(env.path("all.tar"), &tar.get_output().stdout).unwrap();
    let st = std::process::Command::new("tar")
        .args(["-x", "--same-permissions", "--same-owner", "-f"])
        .arg(env.path("all.tar"))
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(st.success());
    let (a, b) = (listing(&src), listing(&unpacked));
    let names = |m: &std::collections::BTreeMap<std::path::PathBuf, Info>| {
        m.keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(names(&a), names(&b));
    for (p, want) in a.iter().filter(|(p, _)| !p.as_os_str().is_empty()) {
        let got = &b[p];
        assert_eq!(
            (want.kind, want.size, want.content, &want.target),
            (got.kind, got.size, got.content, &got.target),
            "{}",
            p.display()
        );
        if want.kind != "symlink" {
            assert_eq!(want.mode, got.mode, "mode of {}", p.display());
            // tar keeps nanoseconds through the PAX mtime record.
            assert_eq!(want.mtime, got.mtime, "mtime of {}", p.display());
        }
        assert_eq!(
            want.link_group.is_some(),
            got.link_group.is_some(),
            "hard link {}",
            p.display()
        );
    }
    // A subdirectory alone; a path that is not there.
    let sub = env.snap().args(["dump", &id, "docs"]).assert().success();
    let names_in_tar = tar_names(&sub.get_output().stdout);
    assert!(
        names_in_tar.contains(&"readme.txt".to_string()),
        "{names_in_tar:?}"
    );
    let err = env.snap().args(["dump", &id, "no/such"]).assert().failure();
    assert!(String::from_utf8_lossy(&err.get_output().stderr).contains("no/such"));
}

fn tar_names(bytes: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn latest_tilde_and_tag_ids_and_latest_is_never_a_safety_snapshot() {
    let env = Env::new();
    let src = env.path("app");
    write(&src.join("v"), b"1");
    let one = env.create_id(&src);
    write(&src.join("v"), b"2");
    let out = env
        .snap()
        .args(["create", "--json", "--tag", "pre-migration"])
        .arg(&src)
        .assert()
        .success();
    let two: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let two = two["id"].as_str().unwrap().to_string();
    write(&src.join("v"), b"3");
    let three = env.create_id(&src);
    let id_of = |spec: &str| {
        json_of(&env, &["stats", spec, "--json"])["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(id_of("latest"), three);
    assert_eq!(id_of("latest~1"), two);
    assert_eq!(id_of("latest~2"), one);
    assert_eq!(id_of("tag:pre-migration"), two);
    assert_eq!(id_of("tag:pre-migration~1"), one);
    let err = env.snap().args(["stats", "latest~3"]).assert().failure();
    assert!(String::from_utf8_lossy(&err.get_output().stderr).contains("latest~3"));
    // Restoring `latest` twice into the source: the second restore does
    // not pick the first one's safety snapshot.
    write(&src.join("v"), b"changed by hand");
    env.snap().args(["restore", "latest"]).assert().success();
    assert_eq!(fs::read(src.join("v")).unwrap(), b"3");
    write(&src.join("v"), b"changed again");
    env.snap().args(["restore", "latest"]).assert().success();
    assert_eq!(fs::read(src.join("v")).unwrap(), b"3");
    assert_eq!(id_of("latest"), three);
    // The safety snapshot is still there by tag.
    let safety = id_of("tag:pre-restore");
    assert_ne!(safety, three);
    env.snap()
        .args(["restore", "tag:pre-restore", "--no-safety-snapshot"])
        .assert()
        .success();
    assert_eq!(fs::read(src.join("v")).unwrap(), b"changed again");
}

#[test]
fn tag_adds_and_removes_and_survives_an_index_rebuild() {
    let env = Env::new();
    let src = env.path("app");
    write(&src.join("f"), b"x");
    let out = env
        .snap()
        .args(["create", "--json", "--tag", "a"])
        .arg(&src)
        .assert()
        .success();
    let id = serde_json::from_slice::<serde_json::Value>(&out.get_output().stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let text = stdout_of(
        &env,
        &["tag", &id, "--add", "b", "--add", "c", "--remove", "a"],
    );
    assert!(text.ends_with("tags: b,c\n"), "{text}");
    let tags = |env: &Env| env.list()[0]["tags"].clone();
    assert_eq!(tags(&env), serde_json::json!(["b", "c"]));
    for f in ["index.db", "index.db-wal", "index.db-shm"] {
        let _ = fs::remove_file(env.repo.join(f));
    }
    env.snap().args(["repair", "index"]).assert().success();
    assert_eq!(tags(&env), serde_json::json!(["b", "c"]));
    env.snap().args(["tag", &id]).assert().failure();
    let bad = env
        .snap()
        .args(["tag", &id, "--add", "x,y"])
        .assert()
        .failure();
    assert!(String::from_utf8_lossy(&bad.get_output().stderr).contains("x,y"));
}

#[test]
fn completions_and_man_page_are_generated() {
    let env = Env::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef snap"),
        ("fish", "complete -c snap"),
    ] {
        let text = stdout_of(&env, &["completions", shell]);
        assert!(
            text.contains(marker),
            "{shell}: {}",
            &text[..text.len().min(200)]
        );
        assert!(text.contains("restore") && text.contains("diff"), "{shell}");
    }
    let man = stdout_of(&env, &["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH snap"),
        "{}",
        &man[..200]
    );
    assert!(man.contains("restore") && man.contains("repair"));
    let page = stdout_of(&env, &["man", "restore"]);
    assert!(
        page.contains(".TH snap-restore") && page.contains("dry\\-run"),
        "{}",
        &page[..300]
    );
    env.snap().args(["man", "nope"]).assert().failure();
}

#[test]
fn exclude_file_and_one_file_system() {
    let env = Env::new();
    let src = env.path("app");
    write(&src.join("keep.txt"), b"k");
    write(&src.join("cache/big.bin"), b"c");
    write(&src.join("x.tmp"), b"t");
    fs::write(env.path("excludes"), "# caches\ncache/\n\n*.tmp   \n").unwrap();
    let out = env
        .snap()
        .args(["create", "--json", "--exclude-file"])
        .arg(env.path("excludes"))
        .arg(&src)
        .assert()
        .success();
    let id = serde_json::from_slice::<serde_json::Value>(&out.get_output().stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ls = stdout_of(&env, &["ls", &id, "-r"]);
    assert!(
        ls.contains("keep.txt") && !ls.contains("cache") && !ls.contains("x.tmp"),
        "{ls}"
    );
    // A bad pattern in the file names the file and the pattern.
    fs::write(env.path("bad"), "a[\n").unwrap();
    let err = env
        .snap()
        .args(["create", "--exclude-file"])
        .arg(env.path("bad"))
        .arg(&src)
        .assert()
        .failure();
    let msg = String::from_utf8_lossy(&err.get_output().stderr).to_string();
    assert!(msg.contains("bad") && msg.contains("a["), "{msg}");

    let disk = SmallDisk::mount(&src.join("mnt"), "1m")
        .expect("this test needs root to mount a tmpfs: run the tests as root, as CI does");
    write(&disk.path.join("other-fs.txt"), b"on the tmpfs");
    let out = env
        .snap()
        .args(["create", "--json", "-x"])
        .arg(&src)
        .assert()
        .success();
    let warn = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        warn.contains("mnt") && warn.contains("another filesystem"),
        "{warn}"
    );
    let id = serde_json::from_slice::<serde_json::Value>(&out.get_output().stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ls = stdout_of(&env, &["ls", &id, "-r"]);
    assert!(
        ls.contains(" mnt\n") && !ls.contains("other-fs.txt"),
        "{ls}"
    );
    // Without -x the tmpfs is read like any directory.
    let all = env.create_id(&src);
    assert!(stdout_of(&env, &["ls", &all, "-r"]).contains("other-fs.txt"));
    drop(disk);
}

#[test]
fn restore_of_one_file_into_a_new_target_creates_its_directories() {
    let env = Env::new();
    let src = env.path("app");
    write(&src.join("a/b/file.txt"), b"deep");
    fs::set_permissions(
        src.join("a"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    set_mtime(&src.join("a"), 1_600_000_000, 7);
    let id = env.create_id(&src);
    let target = env.path("new/target");
    env.snap()
        .args(["restore", &id, "--path", "a/b/file.txt", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(fs::read(target.join("a/b/file.txt")).unwrap(), b"deep");
    let (want, got) = (listing(&src), listing(&target));
    assert_eq!(
        want[std::path::Path::new("a")],
        got[std::path::Path::new("a")]
    );
}

#[test]
fn ctrl_c_during_create_commits_nothing_and_says_so() {
    use std::process::Stdio;
    let env = Env::new();
    let src = env.path("app");
    write(&src.join("a.bin"), noise(1, 2_000_000));
    let flag = env.path("pause-flag");
    let child = env
        .snap_process()
        .args(["create"])
        .arg(&src)
        .env("SNAP_REPO", &env.repo)
        .env("SNAP_PAUSE_AT", "create started")
        .env("SNAP_PAUSE_FILE", &flag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_pause(&flag, "create");
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    std::thread::sleep(std::time::Duration::from_millis(100));
    fs::remove_file(&flag).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no snapshot was committed") && err.contains("snap gc"),
        "{err}"
    );
    assert!(env.list().is_empty());
    env.snap().args(["check", "--read-data"]).assert().success();
    // The next create works as if nothing had happened.
    let id = env.create_id(&src);
    let out = env.path("out");
    env.restore_to(&id, &out);
    assert_same_tree(&src, &out);
}
