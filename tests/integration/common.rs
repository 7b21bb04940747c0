//! Helpers shared by the integration tests: a scratch repository, the real
//! binary, fixture directories and an entry-by-entry tree comparison.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use filetime::FileTime;
use tempfile::TempDir;

/// Exit codes of a command that either did its work (0) or found nothing
/// to do (6), for reruns whose outcome depends on where a crash landed.
pub const DONE_OR_NOTHING_TO_DO: &[i32] = &[0, 6];

/// The password of the tests' encrypted repositories.
pub const TEST_PASSWORD: &str = "correct horse battery staple";

pub struct Env {
    pub dir: TempDir,
    /// A directory, or `s3://BUCKET/PREFIX` (see [`Env::on_s3`]).
    pub repo: PathBuf,
    /// Variables every command gets (the S3 server's endpoint and keys).
    pub vars: Vec<(&'static str, String)>,
}

impl Env {
    /// A fresh directory with an initialised repository at `<dir>/repo`.
    pub fn new() -> Env {
        Env::initialised(&[])
    }

    /// As `new`, with a copy of every snapshot's trees in the index, as
    /// a bucket's repository keeps them (a local one reads its trees from
    /// tree packs): the copies are what tests damage or forge. A copy is
    /// read before the tree pack.
    pub fn with_tree_copies(&self) {
        let repo = snap::Repository::open(&self.repo, Some(snap::LockMode::Exclusive)).unwrap();
        let conn = rusqlite::Connection::open(self.repo.join("index.db")).unwrap();
        // Oldest snapshot first, each tree before its subtrees.
        for snapshot in repo.snapshots().unwrap() {
            let mut todo = std::collections::VecDeque::from([snapshot.root]);
            while let Some(id) = todo.pop_front() {
                let tree = repo.load_tree(&id).unwrap();
                for e in &tree.entries {
                    if let snap::tree::Payload::Subtree(sub) = e.payload {
                        todo.push_back(sub);
                    }
                }
                conn.execute(
                    "INSERT OR IGNORE INTO trees(hash, codec, data) VALUES (?1, 0, ?2)",
                    rusqlite::params![id.as_bytes().to_vec(), tree.encode()],
                )
                .unwrap();
            }
        }
    }

    fn initialised(init_args: &[&str]) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("snap-it-")
            .tempdir()
            .unwrap();
        let repo = dir.path().join("repo");
        let env = Env {
            dir,
            repo,
            vars: Vec::new(),
        };
        env.snap().arg("init").args(init_args).assert().success();
        env
    }

    /// A fresh repository in the test S3 server's bucket, encrypted (the
    /// default there; the password in `SNAP_PASSWORD`). The test fails
    /// when the server cannot run.
    pub fn on_s3(test: &str) -> Env {
        Env::on_s3_with(test, true)
    }

    /// The same, encrypted or not (`--no-encrypt`).
    pub fn on_s3_with(test: &str, encrypted: bool) -> Env {
        let srv = crate::s3server::server(test);
        let dir = tempfile::Builder::new()
            .prefix("snap-it-")
            .tempdir()
            .unwrap();
        let mut vars = srv.env();
        if encrypted {
            vars.push(("SNAP_PASSWORD", TEST_PASSWORD.to_string()));
        }
        let env = Env {
            dir,
            repo: PathBuf::from(srv.fresh_url()),
            vars,
        };
        let mut init = env.snap();
        init.arg("init");
        if !encrypted {
            init.arg("--no-encrypt");
        }
        init.assert().success();
        env
    }

    /// A fresh encrypted repository in `<dir>/repo`; the password in
    /// `SNAP_PASSWORD`.
    pub fn encrypted() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("snap-it-")
            .tempdir()
            .unwrap();
        let env = Env {
            repo: dir.path().join("repo"),
            dir,
            vars: vec![("SNAP_PASSWORD", TEST_PASSWORD.to_string())],
        };
        env.snap().args(["init", "--encrypt"]).assert().success();
        env
    }

    /// This client's cache of remote repositories.
    pub fn cache_dir(&self) -> PathBuf {
        self.path("cache")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The snap binary, pointed at this repository.
    pub fn snap(&self) -> Command {
        Command::from_std(self.snap_process())
    }

    /// Another client of the same repository: its own directory, config
    /// and cache.
    pub fn another_client(&self) -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            repo: self.repo.clone(),
            vars: self.vars.clone(),
        }
    }

    /// The snap binary as a std Command (to spawn it), with the same
    /// environment as [`Env::snap`].
    pub fn snap_process(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("snap"));
        c.env("SNAP_REPO", &self.repo)
            .env("SNAP_LOCK_WAIT", "10")
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("XDG_CACHE_HOME", self.cache_dir())
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env_remove("XDG_DATA_HOME");
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// `snap create DIR --json`, returning the parsed JSON (asserts exit 0).
    pub fn create(&self, dir: &Path) -> serde_json::Value {
        let out = self
            .snap()
            .args(["create", "--json"])
            .arg(dir)
            .assert()
            .success();
        serde_json::from_slice(&out.get_output().stdout).expect("create --json prints JSON")
    }

    pub fn create_id(&self, dir: &Path) -> String {
        self.create(dir)["id"].as_str().unwrap().to_string()
    }

    /// `snap restore ID --target DIR`, asserting success.
    pub fn restore_to(&self, id: &str, target: &Path) {
        self.snap()
            .args(["restore", id, "--target"])
            .arg(target)
            .assert()
            .success();
    }

    pub fn list(&self) -> Vec<serde_json::Value> {
        let out = self.snap().args(["list", "--json"]).assert().success();
        serde_json::from_slice(&out.get_output().stdout).unwrap()
    }

    /// Total bytes of all files in the repository.
    pub fn repo_bytes(&self) -> u64 {
        dir_bytes(&self.repo)
    }
}

/// Wait for a snap process armed with `SNAP_PAUSE_FILE=flag` to pause
/// (it writes the flag; removing the flag lets it go on).
pub fn wait_for_pause(flag: &Path, what: &str) {
    let start = std::time::Instant::now();
    while !flag.exists() {
        assert!(start.elapsed().as_secs() < 60, "{what} never paused");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

pub fn dir_bytes(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Deterministic incompressible bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut out = vec![0u8; len];
    blake3::Hasher::new_keyed(&key)
        .finalize_xof()
        .fill(&mut out);
    out
}

pub fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    filetime::set_symlink_file_times(
        p,
        FileTime::from_unix_time(secs, nanos),
        FileTime::from_unix_time(secs, nanos),
    )
    .unwrap();
}

pub fn write(p: &Path, data: impl AsRef<[u8]>) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(p, data).unwrap();
}

pub fn sqlite_db(path: &Path, rows: usize) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, email TEXT, score REAL);
         CREATE INDEX users_email ON users(email);",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut st = tx
            .prepare("INSERT INTO users(name, email, score) VALUES (?1, ?2, ?3)")
            .unwrap();
        for i in 0..rows {
            st.execute(rusqlite::params![
                format!("user {i}"),
                format!("u{i}@example.org"),
                i as f64 * 0.5
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// A directory holding every kind of entry snap must round-trip.
pub fn make_rich_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    write(&root.join("prefs.json"), br#"{"theme":"dark","volume":7}"#);
    write(&root.join("docs/readme.txt"), b"hello\n");
    write(
        &root.join("docs/big.log"),
        "log line with some repetition 0123456789\n".repeat(60_000),
    );
    write(&root.join("media/photo.jpg"), noise(1, 1_500_000));
    write(&root.join("media/copy-of-photo.jpg"), noise(1, 1_500_000));
    write(&root.join("empty-file"), b"");
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("deep/a/b/c/d")).unwrap();
    write(&root.join("deep/a/b/c/d/leaf"), b"leaf");
    // Names that are not UTF-8, and awkward ones.
    write(
        &root.join(OsStr::from_bytes(b"caf\xe9-latin1")),
        b"latin1 name",
    );
    write(&root.join("spaces and\nnewline"), b"odd");
    write(&root.join("-starts-with-dash"), b"dash");
    // Symlinks: relative, absolute, dangling, to a directory, a loop.
    std::os::unix::fs::symlink("prefs.json", root.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink("docs", root.join("link-dir")).unwrap();
    std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
    // A hard link pair across directories.
    write(&root.join("hard/one"), b"shared by two names");
    fs::hard_link(root.join("hard/one"), root.join("docs/two")).unwrap();
    // Modes.
    for (name, mode) in [
        ("m0444", 0o444),
        ("m0600", 0o600),
        ("m0700", 0o700),
        ("m0755", 0o755),
    ] {
        let p = root.join("modes").join(name);
        write(&p, name);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::create_dir_all(root.join("modes/private-dir")).unwrap();
    fs::set_permissions(
        root.join("modes/private-dir"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    // A FIFO (never read, recreated).
    let fifo = std::ffi::CString::new(root.join("pipe").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // A SQLite database.
    sqlite_db(&root.join("data/app.db"), 5000);
    // Nanosecond mtimes everywhere, directories last (children first).
    let mut all: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .contents_first(true)
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect();
    all.retain(|p| p != root);
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64 * 1000, 123_456_789 + i as u32);
    }
    set_mtime(root, 1_650_000_000, 987_654_321);
}

#[derive(Debug, PartialEq, Eq)]
pub struct Info {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub content: Option<blake3::Hash>,
    pub target: Option<PathBuf>,
    /// Index of the first path with the same inode (hard links), if any.
    pub link_group: Option<PathBuf>,
}

/// Every entry under `root` (root itself as ""), with metadata and content.
pub fn listing(root: &Path) -> BTreeMap<PathBuf, Info> {
    let mut out = BTreeMap::new();
    let mut first_path_of_ino: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_file() {
            "file"
        } else {
            "other"
        };
        let link_group = if ft.is_file() && m.nlink() > 1 {
            Some(
                first_path_of_ino
                    .entry(m.ino())
                    .or_insert_with(|| rel.clone())
                    .clone(),
            )
        } else {
            None
        };
        out.insert(
            rel,
            Info {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: if ft.is_dir() { 0 } else { m.size() },
                content: ft
                    .is_file()
                    .then(|| blake3::hash(&fs::read(e.path()).unwrap())),
                target: ft.is_symlink().then(|| fs::read_link(e.path()).unwrap()),
                link_group,
            },
        );
    }
    out
}

/// Assert two trees are equal entry by entry, metadata included.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = listing(expected);
    let b = listing(actual);
    let names_a: Vec<_> = a.keys().collect();
    let names_b: Vec<_> = b.keys().collect();
    assert_eq!(
        names_a,
        names_b,
        "different entries in {} and {}",
        expected.display(),
        actual.display()
    );
    for (k, va) in &a {
        assert_eq!(Some(va), b.get(k), "entry {} differs", k.display());
    }
}

pub fn inode(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

/// Copy a tree with `cp -a`, the reference the model tests compare against.
pub fn cp_a(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Mount a small tmpfs (root only); `None` where that is not possible.
pub struct SmallDisk {
    pub path: std::path::PathBuf,
}

impl SmallDisk {
    pub fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        fs::create_dir_all(path).unwrap();
        let ok = is_root()
            && std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// The data packs of a repository (header kind 0; tree packs are kind 1).
pub fn data_packs(repo: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(repo.join("packs"))
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .filter(|p| fs::read(p).unwrap()[12..16] == [0, 0, 0, 0])
        .collect()
}

/// A Python venv `name` in the tools folder (`$XDG_CACHE_HOME/snap-tools`)
/// with `packages` from PyPI, made on first use; its python. The test
/// fails, saying why, when it cannot be made.
pub fn tools_python(name: &str, packages: &[&str], import: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    let venv = base.join("snap-tools").join(name);
    let python = venv.join("bin/python");
    let ready = || {
        std::process::Command::new(&python)
            .args(["-c", import])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready() {
        let made = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(
            made.success(),
            "python3 -m venv failed (apt-get install python3-venv)"
        );
        let pip = std::process::Command::new(&python)
            .args(["-m", "pip", "install", "-q"])
            .args(packages)
            .status()
            .unwrap();
        assert!(
            pip.success(),
            "pip could not install {packages:?} from PyPI"
        );
    }
    assert!(ready(), "{import} fails in {}", venv.display());
    python
}
