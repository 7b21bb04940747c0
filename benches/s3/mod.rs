//! The `s3` set of the end-to-end benchmark: the app data set to buckets
//! on one s3s-fs on loopback, snap encrypted (the default for a bucket)
//! and `--no-encrypt` beside restic's `s3:` backend (always encrypted).

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Results, SNAP, has, record, run, sh};

const ACCESS_KEY: &str = "bench-access";
const SECRET_KEY: &str = "bench-secret-key";

/// s3s-fs serving a directory, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[path = "../../tests/integration/s3s_fs_binary.rs"]
mod s3s_fs_binary;
use s3s_fs_binary::find_s3s_fs;

fn start(root: &Path) -> Server {
    let bin = find_s3s_fs().expect("the s3 set needs s3s-fs (bash .ci/run builds it)");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, port }
}

/// The total requests in a `--json` output file, if any.
fn requests(out: &Path) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out).ok()?).ok()?;
    let r = &v["requests"];
    Some(
        ["put", "get", "head", "list", "delete"]
            .iter()
            .filter_map(|k| r[k].as_u64())
            .sum(),
    )
}

/// Run the s3 set `runs` times over `data`, recording into `res` and
/// `sizes` (bucket bytes, requests per operation).
pub fn run_set(
    base: &Path,
    data: &Path,
    runs: usize,
    tools: &[&str],
    res: &mut Results,
    sizes: &mut BTreeMap<String, u64>,
) {
    let mut variants = Vec::new();
    if tools.contains(&"snap") {
        variants.extend(["snap-enc", "snap-plain"]);
    }
    if tools.contains(&"restic") && has("restic") {
        variants.push("restic");
    }
    let work = base.join("s3-work");
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(&work);
        let root = work.join("buckets");
        for v in &variants {
            std::fs::create_dir_all(root.join(v)).unwrap();
        }
        let server = start(&root);
        let endpoint = format!("http://127.0.0.1:{}", server.port);
        let w = work.display().to_string();
        let env = [
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("SNAP_PASSWORD", "bench"),
            ("RESTIC_PASSWORD", "bench"),
        ];
        let exports: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let src = data.display();
        for v in &variants {
            let out = format!("{w}/restore-{v}");
            let json = work.join("out.json");
            let j = json.display();
            // Each tool starts with an empty cache, like a new client.
            let (init, first, restore) = match *v {
                "restic" => {
                    let r = format!("restic -r s3:{endpoint}/restic --cache-dir {w}/rc");
                    (
                        format!("{r} -q init"),
                        format!("{r} -q backup {src}"),
                        format!("{r} -q restore latest --target {out} && sync"),
                    )
                }
                _ => {
                    let flag = if *v == "snap-plain" {
                        "--no-encrypt"
                    } else {
                        ""
                    };
                    let c = format!("XDG_CACHE_HOME={w}/xc-{v} {SNAP} -q");
                    let s = format!("{c} --repo s3://{v}/r");
                    (
                        format!("{c} init {flag} s3://{v}/r"),
                        format!("{s} create --json {src} >{j}"),
                        format!("{s} restore latest --target {out} --json >{j} && sync"),
                    )
                }
            };
            sh(&format!("{exports} {init} >/dev/null"));
            for (step, cmd) in [
                ("first backup", &first),
                ("unchanged rerun", &first),
                ("restore into empty dir", &restore),
            ] {
                let _ = std::fs::remove_file(&json);
                let s = run(cmd, &env);
                record(res, "s3", step, v, s);
                if let Some(n) = requests(&json) {
                    sizes.insert(format!("s3/{v}/requests {step}"), n);
                }
            }
            sizes.insert(format!("s3/{v}/bucket_bytes"), super::du(&root.join(v)));
            // restic restores the source's absolute path under the target.
            let restored = match *v {
                "restic" => PathBuf::from(format!("{out}{}", data.display())),
                _ => PathBuf::from(&out),
            };
            let diff = Command::new("diff")
                .arg("-r")
                .arg(data)
                .arg(&restored)
                .output()
                .unwrap();
            assert!(
                diff.status.success(),
                "{v}: restore differs from the source"
            );
            let _ = std::fs::remove_dir_all(&out);
        }
        drop(server);
    }
}
