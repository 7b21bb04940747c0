//! Trust, round 3: each finding of the review as a test that failed on the
//! main it was found on. Nothing is lost and nothing outside the target is
//! touched, whatever the repository, the bucket or the filesystem says.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common::*;

/// An env whose repository is a path given by the test (inside a source).
fn env_at(dir: tempfile::TempDir, repo: &Path) -> Env {
    Env {
        repo: repo.to_path_buf(),
        dir,
        vars: vec![("SNAP_PASSWORD", TEST_PASSWORD.to_string())],
    }
}

fn files_under(p: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(p)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(p).unwrap().display().to_string())
        .collect();
    out.sort();
    out
}

/// Finding 1: an encrypted local repository inside its source is neither
/// stored in a snapshot nor deleted by an in-place restore (the safety
/// snapshot it just took included).
#[test]
fn encrypted_local_repository_inside_its_source_survives_restore() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("S");
    fs::create_dir(&src).unwrap();
    write(&src.join("a.txt"), "a");
    let env = env_at(dir, &src.join(".backup"));
    env.snap().args(["init", "--encrypt"]).assert().success();
    let before = files_under(&env.repo);
    assert!(before.iter().any(|f| f.starts_with("keys/")), "{before:?}");
    let id = env.create_id(&src);
    // The snapshot holds the source, not the repository's own objects.
    let out = env.snap().args(["ls", &id, "-r"]).assert().success();
    let ls = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(ls.contains("a.txt"), "{ls}");
    assert!(
        !ls.contains(".backup"),
        "the repository was stored in its own snapshot:\n{ls}"
    );
    write(&src.join("b.txt"), "b");
    env.snap().args(["restore", "latest"]).assert().success();
    assert!(!src.join("b.txt").exists());
    assert_eq!(fs::read(src.join("a.txt")).unwrap(), b"a");
    // Every object the repository had is still there, and both snapshots
    // (the first and the safety snapshot) are listed and check clean.
    let after = files_under(&env.repo);
    for f in &before {
        assert!(after.contains(f), "{f} was deleted from the repository");
    }
    assert_eq!(env.list().len(), 2, "the snapshots are gone");
    env.snap().args(["check", "--read-data"]).assert().success();
}

/// Finding 1, with `--target`: a repository below the target stays whole.
#[test]
fn encrypted_local_repository_below_a_target_survives_restore() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("S");
    fs::create_dir(&src).unwrap();
    write(&src.join("a.txt"), "a");
    let target = dir.path().join("T");
    let repo = target.join("sub/repo");
    fs::create_dir_all(&target).unwrap();
    let env = env_at(dir, &repo);
    env.snap().args(["init", "--encrypt"]).assert().success();
    let id = env.create_id(&src);
    write(&target.join("extra.txt"), "x");
    let before = files_under(&repo);
    env.snap()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"a");
    assert!(!target.join("extra.txt").exists());
    let after = files_under(&repo);
    for f in &before {
        assert!(after.contains(f), "{f} was deleted from the repository");
    }
    env.snap().args(["check", "--read-data"]).assert().success();
}

/// Root is this test's precondition: CI runs as root, and a run without it
/// fails rather than passing untested.
fn require_root(what: &str) {
    assert!(
        is_root(),
        "this test needs root ({what}); run the tests as root, as CI does"
    );
}

/// A bind mount, unmounted (lazily) when dropped.
struct BindMount(std::path::PathBuf);

impl BindMount {
    fn new(from: &Path, at: &Path) -> BindMount {
        fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount --bind failed");
        BindMount(at.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Finding 2: a bind mount of a directory of the same filesystem inside
/// the target (same `st_dev`) is another mount: its contents stay.
#[test]
fn a_bind_mount_on_the_same_filesystem_is_not_emptied() {
    require_root("mount --bind");
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), "a");
    let id = env.create_id(&src);
    let outside = env.path("outside");
    write(&outside.join("precious.txt"), "keep me");
    write(&outside.join("deep/more.txt"), "and me");
    let _m = BindMount::new(&outside, &src.join("mnt"));
    assert_eq!(
        fs::metadata(&outside).unwrap().dev(),
        fs::metadata(src.join("mnt")).unwrap().dev()
    );
    let out = env.snap().args(["restore", &id]).assert();
    let out = out.get_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(fs::read(outside.join("precious.txt")).unwrap(), b"keep me");
    assert_eq!(fs::read(outside.join("deep/more.txt")).unwrap(), b"and me");
    assert!(
        stderr.contains("mounted"),
        "the kept mount is not named: {stderr}"
    );
    assert_eq!(fs::read(src.join("a.txt")).unwrap(), b"a");
}

/// Finding 3: `--target` through a symlink another user planted in a
/// sticky, world-writable directory is refused, and the directory it
/// points to is untouched.
#[test]
fn a_target_symlink_planted_by_another_user_is_not_followed() {
    require_root("a symlink owned by another user");
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), "a");
    let id = env.create_id(&src);
    let victim = env.path("root-dir");
    write(&victim.join("secret.txt"), "mine");
    let shared = env.path("tmp");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let link = shared.join("NAME");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let out = env
        .snap()
        .args(["restore", &id, "--target"])
        .arg(&link)
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("symlink"), "{stderr}");
    assert!(
        stderr.contains("NAME"),
        "the error names the link: {stderr}"
    );
    assert_eq!(fs::read(victim.join("secret.txt")).unwrap(), b"mine");
    assert!(!victim.join("a.txt").exists());
    // The same link owned by the one restoring is followed as before.
    std::os::unix::fs::lchown(&link, Some(0), Some(0)).unwrap();
    let fresh = env.path("fresh");
    fs::create_dir(&fresh).unwrap();
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&fresh, &link).unwrap();
    env.restore_to(&id, &link);
    assert_eq!(fs::read(fresh.join("a.txt")).unwrap(), b"a");
}

/// Finding 4: root's in-place restore never chowns or chmods another
/// user's file that was hard-linked in place of one the snapshot holds
/// (same size and mtime, so the plan would only "fix metadata"): the name
/// gets a new inode with the snapshot's content, the other file keeps its
/// owner, mode and bytes.
#[test]
fn root_restore_does_not_chown_a_file_hard_linked_in_place() {
    require_root("files of other owners");
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f.txt"), "aaaa");
    std::os::unix::fs::lchown(src.join("f.txt"), Some(65534), Some(65534)).unwrap();
    set_mtime(&src.join("f.txt"), 1_600_000_000, 0);
    let victim = env.path("other-user/v.txt");
    write(&victim, "bbbb");
    std::os::unix::fs::lchown(&victim, Some(1234), Some(1234)).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    set_mtime(&victim, 1_600_000_000, 0);
    env.create_id(&src);
    fs::remove_file(src.join("f.txt")).unwrap();
    fs::hard_link(&victim, src.join("f.txt")).unwrap();
    env.snap().args(["restore", "latest"]).assert().success();
    let v = fs::metadata(&victim).unwrap();
    assert_eq!((v.uid(), v.gid()), (1234, 1234), "the victim was chowned");
    assert_eq!(v.mode() & 0o7777, 0o600, "the victim was chmodded");
    assert_eq!(fs::read(&victim).unwrap(), b"bbbb");
    let f = fs::metadata(src.join("f.txt")).unwrap();
    assert_eq!(fs::read(src.join("f.txt")).unwrap(), b"aaaa");
    assert_eq!(f.uid(), 65534);
    assert_eq!(f.nlink(), 1);
    assert_ne!(f.ino(), v.ino());
}

/// Finding 5: whoever can write a plain repository adds a later snapshot
/// whose source is another of the victim's directories. `restore latest`
/// in place means the newest snapshot of a source this client snapshotted,
/// and that snapshot by id is refused in place (it needs `--target`): the
/// other directory is neither emptied nor copied into the repository.
#[test]
fn the_repository_does_not_choose_where_an_in_place_restore_writes() {
    let env = Env::new();
    let app = env.path("app");
    write(&app.join("state.json"), "v1");
    let mine = env.create_id(&app);
    write(&app.join("state.json"), "v2");
    // Another writer of the repository (its own client state) adds a
    // snapshot of the victim's key directory, dated later.
    let ssh = env.path("ssh");
    write(&ssh.join("id_ed25519"), "old key");
    let attacker = env.another_client();
    let planted = attacker.create_id(&ssh);
    write(&ssh.join("id_ed25519"), "private key");
    write(&ssh.join("new_key"), "another");
    let out = env.snap().args(["restore", "latest"]).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        stdout.contains(&mine[..8]),
        "latest was not the client's own: {stdout}"
    );
    assert_eq!(fs::read(app.join("state.json")).unwrap(), b"v1");
    assert_eq!(fs::read(ssh.join("id_ed25519")).unwrap(), b"private key");
    assert!(ssh.join("new_key").exists());
    // By id, in place: refused, naming the directory and --target.
    let out = env.snap().args(["restore", &planted]).assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("--target"), "{stderr}");
    assert!(stderr.contains("ssh"), "{stderr}");
    assert_eq!(fs::read(ssh.join("id_ed25519")).unwrap(), b"private key");
    assert!(ssh.join("new_key").exists());
    // No safety snapshot of the key directory went into the repository.
    let ssh_snapshots = env
        .list()
        .iter()
        .filter(|s| s["source"].as_str().is_some_and(|p| p.ends_with("/ssh")))
        .count();
    assert_eq!(ssh_snapshots, 1, "only the planted one");
    // The one who took it may restore it in place.
    attacker
        .snap()
        .args(["restore", &planted])
        .assert()
        .success();
    assert_eq!(fs::read(ssh.join("id_ed25519")).unwrap(), b"old key");
}

/// Finding 6: a config object edited to drop `encryption` (and to name a
/// new cache) does not make an encrypted repository plain: no command
/// opens it, and nothing is written in the clear.
#[test]
fn an_encrypted_repository_is_not_downgraded_by_its_config() {
    let env = Env::encrypted();
    let src = env.path("src");
    write(&src.join("secret.txt"), "top secret text");
    env.create_id(&src);
    let config = env.repo.join("config");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("encryption");
    v["id"] = serde_json::json!("00112233445566778899aabbccddeeff");
    fs::write(&config, serde_json::to_vec(&v).unwrap()).unwrap();
    let packs_before = files_under(&env.repo.join("packs"));
    for args in [vec!["list"], vec!["create"]] {
        let mut c = env.snap();
        c.args(&args);
        if args[0] == "create" {
            c.arg(&src);
        }
        let out = c.assert().failure();
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(stderr.contains("altered"), "{args:?}: {stderr}");
    }
    // The same without SNAP_PASSWORD: still refused, not opened as plain.
    let mut bare = env.snap();
    bare.env_remove("SNAP_PASSWORD");
    bare.arg("list").assert().failure();
    assert_eq!(files_under(&env.repo.join("packs")), packs_before);
    for f in files_under(&env.repo) {
        let bytes = fs::read(env.repo.join(&f)).unwrap();
        assert!(
            !bytes.windows(15).any(|w| w == b"top secret text"),
            "{f} holds the source in the clear"
        );
    }
}

/// Plant a root tree (a tree copy in the index, read before the tree
/// pack) for every snapshot.
fn plant_root(repo: &Path, tree: &snap::tree::Tree) {
    let enc = tree.encode();
    let id = snap::tree::Tree::id_of_encoding(&enc);
    let conn = rusqlite::Connection::open(repo.join("index.db")).unwrap();
    conn.execute(
        "INSERT OR IGNORE INTO trees(hash, codec, data) VALUES (?1, 0, ?2)",
        rusqlite::params![id.as_bytes().to_vec(), enc],
    )
    .unwrap();
    conn.execute("UPDATE snapshots SET root = ?1", [id.as_bytes().to_vec()])
        .unwrap();
}

fn file_entry(name: &str, size: u64, chunks: Vec<snap::ChunkId>) -> snap::tree::Entry {
    use snap::tree::{Entry, Kind, Payload};
    Entry {
        name: name.as_bytes().to_vec(),
        kind: Kind::File,
        flags: 0,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        size,
        dev: 0,
        ino: 0,
        nlink: 1,
        payload: Payload::Chunks(chunks),
        xattrs: Vec::new(),
    }
}

/// Finding 10: `dump ID DIR` never writes a tar member whose data length
/// differs from its header (the surplus would be read as further members,
/// names such as `../../escaped.txt` included): it is damage, exit 5.
#[test]
fn dump_refuses_an_entry_whose_chunks_hold_another_length() {
    let env = Env::new();
    let src = env.path("src");
    let body = vec![b'x'; 1536];
    write(&src.join("a.bin"), &body);
    let id = env.create_id(&src);
    let chunk = snap::ChunkId::of(&body);
    plant_root(
        &env.repo,
        &snap::tree::Tree::new(vec![file_entry("a.bin", 10, vec![chunk])]),
    );
    let out = env.snap().args(["dump", &id, "."]).assert().code(5);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("a.bin"), "{stderr}");
    assert!(stderr.contains("10 bytes"), "{stderr}");
    // No header for the lying entry was written.
    let stdout = &out.get_output().stdout;
    assert!(
        !stdout.windows(5).any(|w| w == b"a.bin"),
        "a member was written"
    );
}

/// Finding 12: two sources of the config file with identical content make
/// one create write the same pack twice: it is the same pack, not an error.
#[test]
fn two_sources_with_identical_content_snapshot_and_restore() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    for d in [&a, &b] {
        write(&d.join("x.txt"), "hello\n");
        set_mtime(&d.join("x.txt"), 1_600_000_000, 0);
        set_mtime(d, 1_600_000_000, 0);
    }
    write(
        &env.path("config/snap/snap.toml"),
        format!(
            "[sources.one]\npath = {:?}\n[sources.two]\npath = {:?}\n",
            a.display().to_string(),
            b.display().to_string()
        ),
    );
    env.snap().arg("create").assert().success();
    env.snap().arg("create").assert().success();
    env.snap().args(["check", "--read-data"]).assert().success();
    write(&b.join("x.txt"), "changed");
    env.snap().args(["restore", "latest"]).assert().success();
    assert_eq!(fs::read(b.join("x.txt")).unwrap(), b"hello\n");
}

/// Finding 17: a file name with a newline and a terminal escape is one
/// escaped line in `find`, `diff` and `restore --dry-run`; a tag with a
/// control character is refused (it would forge `list` rows).
#[test]
fn names_are_escaped_in_every_listing_and_tags_are_checked() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("plain.txt"), "p");
    let id = env.create_id(&src);
    let evil = "x\n-  database.db\x1b[2J";
    write(&src.join(evil), "e");
    let runs: Vec<Vec<String>> = vec![
        vec!["diff".into(), id.clone()],
        vec!["restore".into(), id.clone(), "--dry-run".into()],
    ];
    for args in runs {
        let out = env.snap().args(&args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(!stdout.contains('\x1b'), "{args:?}: raw escape: {stdout:?}");
        assert!(
            !stdout.lines().any(|l| l.starts_with("-  database.db")),
            "{args:?}: a forged line: {stdout:?}"
        );
        assert!(
            stdout.contains("x\\n-  database.db"),
            "{args:?}: {stdout:?}"
        );
    }
    env.create_id(&src);
    let out = env.snap().args(["find", "x*"]).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    assert!(!stdout.contains('\x1b'));
    for bad in ["a\nb", "x\x1b", "", "a,b"] {
        env.snap()
            .args(["create", "--tag", bad])
            .arg(&src)
            .assert()
            .failure();
        env.snap()
            .args(["tag", &id, "--add", bad])
            .assert()
            .failure();
    }
    assert!(env.list().iter().all(|s| {
        s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| !t.as_str().unwrap().contains('\n'))
    }));
}

/// Finding 7: one flipped bit in a pack's footer checksum no longer makes
/// `repair index` drop the pack: every blob proven by its id is kept (in a
/// new pack), the repair says so, and the snapshot restores exactly.
#[test]
fn repair_keeps_the_intact_chunks_of_a_pack_with_a_damaged_footer() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("big.bin"), noise(7, 700_000));
    for i in 0..20 {
        write(
            &src.join(format!("small/{i}.txt")),
            format!("small file {i}\n"),
        );
    }
    let id = env.create_id(&src);
    let packs = data_packs(&env.repo);
    assert_eq!(packs.len(), 1, "{packs:?}");
    let mut bytes = fs::read(&packs[0]).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0x01; // the trailer's footer checksum
    fs::write(&packs[0], &bytes).unwrap();
    fs::remove_file(env.repo.join("index.db")).unwrap();
    let out = env.snap().args(["repair", "index"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.contains("salvaged"), "{stderr}");
    assert!(stderr.contains("0 could not be proven"), "{stderr}");
    let target = env.path("out");
    env.restore_to(&id, &target);
    assert_same_tree(&src, &target);
    env.snap().args(["check", "--read-data"]).assert().success();
}

fn dir_entry(name: &str, sub: snap::TreeId) -> snap::tree::Entry {
    let mut e = file_entry(name, 0, Vec::new());
    e.kind = snap::tree::Kind::Dir;
    e.mode = 0o755;
    e.payload = snap::tree::Payload::Subtree(sub);
    e
}

/// Store `tree` as a tree copy in the index; its id.
fn put_tree(conn: &rusqlite::Connection, tree: &snap::tree::Tree) -> snap::TreeId {
    let enc = tree.encode();
    let id = snap::tree::Tree::id_of_encoding(&enc);
    conn.execute(
        "INSERT OR IGNORE INTO trees(hash, codec, data) VALUES (?1, 0, ?2)",
        rusqlite::params![id.as_bytes().to_vec(), enc],
    )
    .unwrap();
    id
}

/// A repository whose snapshot's root is the last tree `build`
/// makes, with statistics claiming `files` files.
fn hostile_graph(
    build: impl Fn(&rusqlite::Connection) -> snap::TreeId,
    files: u64,
) -> (Env, String) {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("leaf.txt"), "leaf");
    let id = env.create_id(&src);
    let conn = rusqlite::Connection::open(env.repo.join("index.db")).unwrap();
    let root = build(&conn);
    let stats = format!(
        r#"{{"files":{files},"dirs":{files},"symlinks":0,"others":0,"total_bytes":0,"read_bytes":0,"reused_files":0,"new_chunks":0,"new_raw_bytes":0,"new_stored_bytes":0,"new_packs":0,"duration_ms":0}}"#
    );
    conn.execute(
        "UPDATE snapshots SET root = ?1, stats = ?2",
        rusqlite::params![root.as_bytes().to_vec(), stats],
    )
    .unwrap();
    (env, id)
}

/// Every command that walks trees ends with damage (exit 5), in bounded
/// time and memory: never a hang, a stack overflow (exit 134) or "ok".
fn every_walk_is_damage(env: &Env, id: &str, why: &str) {
    let target = env.path("target-of-hostile");
    let target = target.to_str().unwrap();
    let runs: Vec<Vec<&str>> = vec![
        vec!["ls", id, "-r"],
        vec!["find", "*"],
        vec!["dump", id, "."],
        vec!["diff", id],
        vec!["check"],
        vec!["restore", id, "--target", target],
    ];
    for args in runs {
        let started = std::time::Instant::now();
        let out = env
            .snap()
            .args(&args)
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(5), "{args:?}: {stderr}");
        assert!(
            stderr.contains(why) || stdout.contains(why),
            "{args:?} does not say why ({why}): {stderr}"
        );
        assert!(
            started.elapsed().as_secs() < 30,
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}

/// Finding 8: 41 trees, each naming the next twice (2^40 entries), with a
/// snapshot claiming 2^62 files: every walk stops, and check reports it.
#[test]
fn an_expanding_tree_graph_is_damage_for_every_command() {
    let (env, id) = hostile_graph(
        |conn| {
            let leaf = snap::tree::Tree::new(vec![file_entry("f", 0, Vec::new())]);
            let mut t = put_tree(conn, &leaf);
            for _ in 0..40 {
                let level = snap::tree::Tree::new(vec![dir_entry("a", t), dir_entry("b", t)]);
                t = put_tree(conn, &level);
            }
            t
        },
        1 << 62,
    );
    every_walk_is_damage(&env, &id, "over and over");
}

/// Finding 9: 40,000 levels of nesting: every walk refuses it as damage,
/// none overflows its stack.
#[test]
fn deep_nesting_is_damage_for_every_command() {
    let (env, id) = hostile_graph(
        |conn| {
            let leaf = snap::tree::Tree::new(vec![file_entry("f", 0, Vec::new())]);
            let mut t = put_tree(conn, &leaf);
            for _ in 0..40_000 {
                t = put_tree(conn, &snap::tree::Tree::new(vec![dir_entry("d", t)]));
            }
            t
        },
        50_000,
    );
    every_walk_is_damage(&env, &id, "deep");
}

/// A key object that opens with no password: valid fields, `params` cost.
fn planted_key(memory_kib: u32, iterations: u32) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kdf": "argon2id",
        "memory_kib": memory_kib,
        "iterations": iterations,
        "parallelism": 1,
        "salt": "00".repeat(16),
        "nonce": "00".repeat(24),
        "sealed_key": "00".repeat(48),
        "created_ns": 0
    }))
    .unwrap()
}

/// Finding 13: a planted 1 GiB / 20-pass key object does not make every
/// command take half a minute and a gigabyte (objects are tried cheapest
/// first within a work bound), and an unbounded number of them is refused.
#[test]
fn planted_key_objects_cost_a_bounded_unlock() {
    let env = Env::encrypted();
    let src = env.path("src");
    write(&src.join("a"), "a");
    env.create_id(&src);
    fs::write(
        env.repo.join("keys/0000000000000000"),
        planted_key(1024 * 1024, 20),
    )
    .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(env.list().len(), 1);
    assert!(
        started.elapsed().as_secs() < 10,
        "list took {:?}",
        started.elapsed()
    );
    // The wrong password, with the costly object skipped: damage that says so.
    let out = env
        .snap()
        .env("SNAP_PASSWORD", "wrong")
        .arg("list")
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("not tried"), "{stderr}");
    for i in 0..16 {
        fs::write(
            env.repo.join(format!("keys/10000000000000{i:02x}")),
            planted_key(8192, 1),
        )
        .unwrap();
    }
    let out = env.snap().arg("list").assert().code(5);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("key objects, more than"), "{stderr}");
}

/// Finding 14: `key passwd` removes every key object the old password
/// opens (so it stops working), and `key add`, `key list` and `key remove`
/// exist, never removing the last way in.
#[test]
fn key_passwd_revokes_every_object_of_the_old_password() {
    let env = Env::encrypted();
    let src = env.path("src");
    write(&src.join("a"), "a");
    env.create_id(&src);
    // A second object for the same password, and one for another.
    env.snap()
        .args(["key", "add"])
        .env("SNAP_NEW_PASSWORD", TEST_PASSWORD)
        .assert()
        .success();
    env.snap()
        .args(["key", "add"])
        .env("SNAP_NEW_PASSWORD", "second password")
        .assert()
        .success();
    let out = env
        .snap()
        .args(["key", "list", "--json"])
        .assert()
        .success();
    let keys: Vec<serde_json::Value> = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys.iter().filter(|k| k["opens"] == true).count(), 2);
    let out = env
        .snap()
        .args(["key", "passwd"])
        .env("SNAP_NEW_PASSWORD", "new password")
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(stdout.contains("removed 2 key object"), "{stdout}");
    env.snap().arg("list").assert().code(10);
    env.snap()
        .env("SNAP_PASSWORD", "new password")
        .arg("list")
        .assert()
        .success();
    env.snap()
        .env("SNAP_PASSWORD", "second password")
        .arg("list")
        .assert()
        .success();
    // Remove the other password's object; the last one stays.
    let out = env
        .snap()
        .env("SNAP_PASSWORD", "new password")
        .args(["key", "list", "--json"])
        .assert()
        .success();
    let keys: Vec<serde_json::Value> = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let other = keys.iter().find(|k| k["opens"] == false).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let mine = keys.iter().find(|k| k["opens"] == true).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let as_new = |args: &[&str]| {
        let mut c = env.snap();
        c.env("SNAP_PASSWORD", "new password").args(args);
        c
    };
    as_new(&["key", "remove", &mine]).assert().failure();
    as_new(&["key", "remove", &other]).assert().success();
    env.snap()
        .env("SNAP_PASSWORD", "second password")
        .arg("list")
        .assert()
        .code(10);
    as_new(&["key", "remove", &mine]).assert().failure();
    as_new(&["list"]).assert().success();
}

/// Finding 6 on a bucket: a new client (fresh cache) of a bucket whose
/// config was edited to drop `encryption` and name a new id refuses it,
/// asks no password, and uploads nothing.
#[test]
fn a_new_client_never_opens_an_encrypted_bucket_as_plain() {
    let env = Env::on_s3("trust_bucket_downgrade");
    let srv = crate::s3server::server("trust_bucket_downgrade");
    let objects = srv.object_dir(env.repo.to_str().unwrap());
    let src = env.path("app");
    write(&src.join("secret.txt"), "bucket secret text");
    env.create_id(&src);
    let mut v: serde_json::Value =
        serde_json::from_slice(&fs::read(objects.join("config")).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("encryption");
    v["id"] = serde_json::json!("ffeeddccbbaa99887766554433221100");
    fs::write(objects.join("config"), v.to_string()).unwrap();
    let before = srv.object_keys(env.repo.to_str().unwrap());
    let fresh = env.another_client();
    for args in [vec!["list"], vec!["create", src.to_str().unwrap()]] {
        let out = fresh.snap().args(&args).assert().code(5);
        let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(err.contains("the config was altered"), "{args:?}: {err}");
    }
    assert_eq!(srv.object_keys(env.repo.to_str().unwrap()), before);
}

/// Finding 11: on a bucket, a snapshot whose pack vanished is damage in
/// `check` on a client that already has a cache (not "not used yet"
/// forever), as on a new client; and `--grace` under an hour needs
/// `--no-other-writers`.
#[test]
fn a_bucket_snapshot_whose_pack_vanished_is_damage_on_every_client() {
    let a = Env::on_s3_with("trust_vanished_pack", false);
    let srv = crate::s3server::server("trust_vanished_pack");
    let url = a.repo.to_str().unwrap().to_string();
    let src = a.path("app");
    write(&src.join("a.txt"), "first");
    a.create_id(&src);
    a.snap().arg("check").assert().success();
    let before = srv.object_keys(&url);
    let b = a.another_client();
    write(&src.join("b.bin"), noise(3, 200_000));
    let second = b.create_id(&src);
    let new_packs: Vec<String> = srv
        .object_keys(&url)
        .into_iter()
        .filter(|k| k.starts_with("packs/") && !before.contains(k))
        .collect();
    assert!(!new_packs.is_empty());
    for k in &new_packs {
        fs::remove_file(srv.object_dir(&url).join(k)).unwrap();
    }
    for client in [&a, &a, &a.another_client()] {
        let out = client
            .snap()
            .args(["check", "--read-data"])
            .assert()
            .code(5);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.get_output().stdout),
            String::from_utf8_lossy(&out.get_output().stderr)
        );
        assert!(
            all.contains(&second[..8]),
            "the snapshot is not named: {all}"
        );
    }
    let out = a.snap().args(["gc", "--grace", "0s"]).assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("--no-other-writers"), "{stderr}");
}

/// The files in `dir` whose bytes contain `marker`.
fn holding(dir: &Path, marker: &[u8]) -> Vec<String> {
    files_under(dir)
        .into_iter()
        .filter(|f| {
            fs::read(dir.join(f)).is_ok_and(|b| b.windows(marker.len()).any(|w| w == marker))
        })
        .collect()
}

/// Finding 15: the plaintext image of a database a create was capturing
/// when it was killed does not outlive the next command that takes the
/// repository's lock; the cache directory is private.
#[test]
fn a_killed_capture_leaves_no_plaintext_behind() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::encrypted();
    let src = env.path("app");
    write(&src.join("a.txt"), "a");
    let first = env.create_id(&src);
    let marker = b"PLAINTEXT-MARKER-ROW";
    let db = rusqlite::Connection::open(src.join("live.db")).unwrap();
    db.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x TEXT);")
        .unwrap();
    for _ in 0..50 {
        db.execute(
            "INSERT INTO t VALUES (?1)",
            [String::from_utf8_lossy(marker)],
        )
        .unwrap();
    }
    let flag = env.path("pause-flag");
    let mut child = env
        .snap_process()
        .arg("create")
        .arg(&src)
        .env("SNAP_PAUSE_AT", "sqlite image written")
        .env("SNAP_PAUSE_FILE", &flag)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_pause(&flag, "the capture");
    child.kill().unwrap();
    child.wait().unwrap();
    let cache = env.cache_dir();
    assert!(
        !holding(&cache, marker).is_empty(),
        "the test needs a plaintext image"
    );
    for d in walkdir::WalkDir::new(&cache).into_iter().flatten() {
        if d.file_type().is_dir() && d.path() != cache {
            let mode = d.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", d.path().display());
        }
    }
    env.snap()
        .args(["tag", &first, "--add", "x"])
        .assert()
        .success();
    assert_eq!(holding(&cache, marker), Vec::<String>::new());
    drop(db);
}

/// `--cache-dir` puts this machine's index of an encrypted repository
/// where the user says, private, and nothing in the default cache.
#[test]
fn the_cache_dir_is_the_users_choice() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::encrypted();
    let src = env.path("app");
    write(&src.join("a.txt"), "a");
    let chosen = env.path("my-cache");
    env.snap()
        .arg("--cache-dir")
        .arg(&chosen)
        .arg("create")
        .arg(&src)
        .assert()
        .success();
    let index = files_under(&chosen)
        .into_iter()
        .find(|f| f.ends_with("index.db"))
        .expect("the index is in the chosen cache");
    let dir = chosen.join(&index);
    let dir = dir.parent().unwrap();
    assert_eq!(fs::metadata(dir).unwrap().permissions().mode() & 0o077, 0);
    env.snap()
        .env("SNAP_CACHE_DIR", &chosen)
        .arg("list")
        .assert()
        .success();
    assert_eq!(
        env.list().len(),
        1,
        "the default cache is rebuilt from the repository"
    );
}

/// Finding 16: a repository on a read-only mount can be read: list, ls,
/// stats, find, diff, dump, check, restore --dry-run and restore --target
/// all work, and nothing is created in it.
#[test]
fn a_read_only_repository_can_be_read() {
    require_root("a read-only bind mount");
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), "a");
    let first = env.create_id(&src);
    write(&src.join("b.txt"), "b");
    let second = env.create_id(&src);
    let view = env.path("ro-view");
    let _m = BindMount::new(&env.repo, &view);
    let st = std::process::Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(&view)
        .status()
        .unwrap();
    assert!(st.success());
    let before = files_under(&view);
    let target = env.path("restored");
    let target_s = target.to_str().unwrap().to_string();
    let runs: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["ls", &second],
        vec!["stats"],
        vec!["find", "*.txt"],
        vec!["diff", &first, &second],
        vec!["check", "--read-data"],
        vec!["restore", &second, "--dry-run", "--target", &target_s],
        vec!["restore", &second, "--target", &target_s],
    ];
    for args in runs {
        let out = env
            .snap()
            .env("SNAP_REPO", &view)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = env
        .snap()
        .env("SNAP_REPO", &view)
        .args(["dump", &second, "b.txt"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"b");
    assert_same_tree(&src, &target);
    assert_eq!(files_under(&view), before, "something was created");
}

/// Finding 18, errors: each gets the exit code and message it should.
#[test]
fn errors_say_what_happened_with_the_right_exit_code() {
    // A directory whose `config` is some other program's: not a
    // repository, not a damaged one.
    let env = Env::new();
    let stray = env.path("stray");
    write(&stray.join("config"), "title = \"my app settings\"\n");
    let out = env
        .snap()
        .env("SNAP_REPO", &stray)
        .arg("list")
        .assert()
        .failure();
    assert_ne!(out.get_output().status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("not a snap repository"), "{stderr}");

    // `--path d/e/f` into an existing, empty target makes d/e.
    let src = env.path("src");
    write(&src.join("d/e/f"), "deep");
    let id = env.create_id(&src);
    let target = env.path("empty-target");
    fs::create_dir(&target).unwrap();
    env.snap()
        .args(["restore", &id, "--path", "d/e/f", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(fs::read(target.join("d/e/f")).unwrap(), b"deep");

    // A pseudo-filesystem is refused as a source, at once.
    let out = env.snap().args(["create", "/proc"]).assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("proc filesystem"), "{stderr}");

    // A row of the index that is not what snap wrote is damage.
    let conn = rusqlite::Connection::open(env.repo.join("index.db")).unwrap();
    conn.execute("UPDATE snapshots SET time_ns = 'not a time'", [])
        .unwrap();
    drop(conn);
    env.snap().arg("list").assert().code(5);
}

/// Finding 18: an owner of 4294967295 (chown's "unchanged") is damage,
/// exit 5, not a partial restore.
#[test]
fn an_owner_of_minus_one_is_damage() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), "abc");
    let id = env.create_id(&src);
    let mut e = file_entry("a.txt", 3, vec![snap::ChunkId::of(b"abc")]);
    e.uid = u32::MAX;
    e.gid = u32::MAX;
    plant_root(&env.repo, &snap::tree::Tree::new(vec![e]));
    let out = env
        .snap()
        .args(["restore", &id, "--target"])
        .arg(env.path("t"))
        .assert()
        .code(5);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("4294967295"), "{stderr}");
}

/// Finding 6: every field of an encrypted repository's plain config is
/// authenticated by its sealed copy; an edited chunker or format is
/// damage, and the repository is left as it was.
#[test]
fn an_encrypted_repositorys_config_is_authenticated() {
    let env = Env::encrypted();
    let src = env.path("src");
    write(&src.join("a.txt"), "a");
    env.create_id(&src);
    let config = env.repo.join("config");
    let good = fs::read(&config).unwrap();
    for (field, value) in [
        ("chunk_avg_bytes", serde_json::json!(32768)),
        ("pack_target_bytes", serde_json::json!(2 << 20)),
        ("zstd_level", serde_json::json!(19)),
    ] {
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        v[field] = value;
        fs::write(&config, serde_json::to_vec(&v).unwrap()).unwrap();
        let out = env.snap().arg("list").assert().code(5);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(stderr.contains("sealed copy"), "{field}: {stderr}");
    }
    fs::write(&config, &good).unwrap();
    env.snap().args(["check", "--read-data"]).assert().success();
}

/// Finding 17, JSON: a name that is not UTF-8 comes with its exact bytes
/// (`path_hex`) beside the lossy text in `ls`, `find` and `diff`.
#[test]
fn json_output_carries_the_bytes_of_names_that_are_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("plain.txt"), "p");
    let id = env.create_id(&src);
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    write(&src.join(name), "latin-1");
    let second = env.create_id(&src);
    let runs: Vec<Vec<&str>> = vec![
        vec!["ls", &second, "-r", "--json"],
        vec!["find", "caf*", "--json"],
        vec!["diff", &id, &second, "--json"],
    ];
    for args in runs {
        let out = env.snap().args(&args).assert().success();
        let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
        assert!(stdout.contains("\"path_hex\""), "{args:?}: {stdout}");
        assert!(stdout.contains("636166e92e747874"), "{args:?}: {stdout}");
    }
}

/// Finding 18: a bucket that stops answering in the middle of a create of
/// several packs fails the create with the storage's error (which request,
/// which object), not "the pack finisher stopped after an error"; and
/// nothing is committed.
#[test]
fn a_bucket_that_stops_mid_create_reports_its_cause() {
    use crate::faultproxy::{Fault, FaultProxy, Plan};
    let srv = crate::s3server::server("trust_bucket_stops");
    let proxy = FaultProxy::start(srv.endpoint.trim_start_matches("http://"));
    let mut env = Env::on_s3_with("trust_bucket_stops", false);
    env.repo = std::path::PathBuf::from(srv.fresh_url());
    for (k, v) in env.vars.iter_mut() {
        if *k == "AWS_ENDPOINT_URL" {
            *v = proxy.endpoint.clone();
        }
    }
    env.vars.extend([
        ("SNAP_S3_RETRIES", "1".to_string()),
        ("SNAP_S3_RETRY_TIMEOUT", "2".to_string()),
        ("SNAP_S3_TIMEOUT", "2".to_string()),
    ]);
    env.snap()
        .args(["init", "--no-encrypt", "--pack-size", "1"])
        .assert()
        .success();
    let src = env.path("app");
    for i in 0..8 {
        write(
            &src.join(format!("media/{i}.bin")),
            noise(100 + i, 1_500_000),
        );
    }
    env.create_id(&src);
    // Every request from the `at`-th of a create on fails: the sync's
    // listings are the first few, then the pack uploads, several at once.
    for at in [10, 12, 14, 16] {
        for i in 0..8 {
            write(
                &src.join(format!("media/{i}.bin")),
                noise(at * 100 + i, 1_500_000),
            );
        }
        proxy.set(Some(Plan {
            fault: Fault::Status500,
            at: at as usize,
            from_then_on: true,
        }));
        let out = env.snap().arg("create").arg(&src).output().unwrap();
        proxy.set(None);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "at {at}: {err}");
        assert!(
            !err.contains("the pack finisher stopped after an error"),
            "at {at}: the cause is lost: {err}"
        );
        assert!(err.contains("500"), "at {at}: no cause: {err}");
    }
    assert_eq!(env.list().len(), 1, "a failed create committed a snapshot");
}
