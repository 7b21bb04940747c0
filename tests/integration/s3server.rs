//! A real S3 server for the tests: s3s-fs (an S3 API over a directory),
//! started once per test process on 127.0.0.1 and killed with it.
//!
//! The binary is found as `$SNAP_S3S_FS`, else `s3s-fs` on PATH, else in
//! the tools folder `.ci/run` installs it into
//! (`${XDG_CACHE_HOME:-$HOME/.cache}/snap-tools/bin`). When it is missing,
//! the first S3 test builds it there from crates.io (`cargo install`, about
//! three minutes, once per machine) exactly as `.ci/run` does; if that
//! fails, every S3 test fails with the reason. No S3 test is skipped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use snap::storage::{S3Options, S3Storage, S3Url};

pub const BUCKET: &str = "snap-test";
const ACCESS_KEY: &str = "snap-test-access";
const SECRET_KEY: &str = "snap-test-secret-key";

pub struct S3Server {
    pub endpoint: String,
    /// The directory s3s-fs serves: `<root>/<bucket>/<key>`.
    pub root: PathBuf,
}

/// Build s3s-fs into the tools folder, as `.ci/run` does (a test server:
/// no optimisation, which halves the build).
fn install_s3s_fs() -> Result<PathBuf, String> {
    let tools = crate::s3s_fs_binary::tools_dir()
        .ok_or("no home directory for the tools folder; set SNAP_S3S_FS")?;
    std::fs::create_dir_all(&tools).map_err(|e| format!("{}: {e}", tools.display()))?;
    eprintln!(
        "building s3s-fs into {} for the S3 tests (once)",
        tools.display()
    );
    let st = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "install",
            "s3s-fs@0.14.1",
            "--features",
            "binary",
            "--locked",
            "--quiet",
        ])
        .arg("--root")
        .arg(&tools)
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256")
        .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "false")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if !st.success() {
        return Err(format!(
            "cargo install s3s-fs failed ({st}); install it with .ci/run, or set SNAP_S3S_FS"
        ));
    }
    crate::s3s_fs_binary::find_s3s_fs().ok_or_else(|| "s3s-fs built but not found".to_string())
}

fn start() -> Result<S3Server, String> {
    let bin = match crate::s3s_fs_binary::find_s3s_fs() {
        Some(b) => b,
        None => install_s3s_fs()?,
    };
    let root = tempfile::Builder::new()
        .prefix("snap-s3-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    std::fs::create_dir_all(root.join(BUCKET)).map_err(|e| e.to_string())?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    // The child must die with this process, not with the test thread that
    // happened to start it: spawn it from a thread that never ends.
    let (tx, rx) = std::sync::mpsc::channel();
    let root2 = root.clone();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&bin);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root2)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs in pre_exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let r = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()));
        let ok = r.is_ok();
        let _ = tx.send(r.map(|_| ()));
        if ok {
            loop {
                std::thread::park();
            }
        }
    });
    rx.recv().map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("s3s-fs did not listen on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        root,
    })
}

/// The process's server; a test that needs it fails when it cannot run.
pub fn server(test: &str) -> &'static S3Server {
    static SERVER: OnceLock<Result<S3Server, String>> = OnceLock::new();
    match SERVER.get_or_init(start) {
        Ok(s) => s,
        Err(why) => panic!("{test}: the S3 server is unavailable: {why}"),
    }
}

impl S3Server {
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint.clone()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            max_retries: Some(2),
            retry_timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        }
    }

    /// A repository URL no other test in this process uses.
    pub fn fresh_url(&self) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        format!("s3://{BUCKET}/t{}-{n}", std::process::id())
    }

    /// A storage on a fresh prefix.
    pub fn fresh_storage(&self) -> S3Storage {
        let url = S3Url::parse(&self.fresh_url()).unwrap().unwrap();
        S3Storage::new(&url, &self.options()).unwrap()
    }

    /// The keys of the objects under a repository URL, as the server
    /// stores them (files under its directory), sorted.
    /// The directory that holds the objects of the repository at `url`.
    pub fn object_dir(&self, url: &str) -> PathBuf {
        self.root.join(url.strip_prefix("s3://").unwrap())
    }

    pub fn object_keys(&self, url: &str) -> Vec<String> {
        let rest = url.strip_prefix("s3://").unwrap();
        let dir = self.root.join(rest);
        let mut keys: Vec<String> = walkdir::WalkDir::new(&dir)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let rel = e.path().strip_prefix(&dir).unwrap();
                rel.to_string_lossy().into_owned()
            })
            .collect();
        keys.sort();
        keys
    }

    /// The variables the snap binary reads to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}
