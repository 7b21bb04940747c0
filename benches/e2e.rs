//! End-to-end throughput benchmark: `cargo bench --bench e2e`.
//!
//! Generates a realistic app data set (SQLite databases, JSON documents,
//! incompressible media, text logs, duplicates and near-duplicates; about
//! 1.5 GB) and a set of 200,000 small files, then measures, side by side in
//! one run: first backup, unchanged rerun, rerun after a simulated migration,
//! restore into an empty directory, in-place rollback of the migration,
//! repository size and peak memory, for snap, `cp -a`, `tar | zstd -3 -T2`,
//! and restic and borg when they are installed. Prints a table of medians and
//! writes all samples as JSON to `target/bench-e2e.json`.
//!
//! Environment:
//! - `SNAP_BENCH_SCALE` (default 1.0): data set size factor.
//! - `SNAP_BENCH_RUNS` (default 3): runs per measurement (medians reported).
//! - `SNAP_BENCH_DIR` (default `target/bench-e2e`): scratch space.
//! - `SNAP_BENCH_SETS` (default `app,small`): which data sets; `s3` runs
//!   the app set against a bucket on s3s-fs on loopback (snap encrypted,
//!   the default for a bucket, and `--no-encrypt`, beside restic's
//!   `s3:` backend): first backup, unchanged rerun, restore, and snap's
//!   request counts. s3s-fs is found on PATH or in the tools folder
//!   `.ci/run` builds it into.
//! - `SNAP_BENCH_TOOLS` (default all found): e.g. `snap,cp,tar,restic,borg`.
//!
//! Every backup by restic and borg (which leave dirty pages that snap,
//! fsyncing its packs and index, has already flushed), and every restore,
//! copy and archive is followed by `sync` inside the timed
//! region, so that snap (which syncs) and `cp -a` and `tar | zstd` make data
//! durable the same way.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
mod s3;
use common::{Rng, WORDS, sqlite_db_in, text};

const SNAP: &str = env!("CARGO_BIN_EXE_snap");

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut key = [7u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut out = vec![0u8; len];
    blake3::Hasher::new_keyed(&key)
        .finalize_xof()
        .fill(&mut out);
    out
}

fn json_doc(rng: &mut Rng, i: usize, len: usize) -> String {
    let mut s = format!("{{\"id\":{i},\"items\":[");
    while s.len() < len {
        s.push_str(&format!(
            "{{\"k\":\"{}\",\"v\":{},\"t\":\"{}\"}},",
            WORDS[rng.below(WORDS.len() as u64) as usize],
            rng.below(1_000_000),
            text(rng, 20)
        ));
    }
    s.push_str("{}]}");
    s
}

fn write(p: &Path, data: impl AsRef<[u8]>) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// The app data set: ~1.5 GB at scale 1 in ~20,500 files.
fn make_app_set(root: &Path, scale: f64) {
    let mut rng = Rng(0x5eed);
    let n = |x: f64| ((x * scale) as usize).max(1);
    // SQLite databases: ~480 MB, the app's own in WAL mode at rest (as most
    // apps leave them), the cache in rollback-journal mode. The migration
    // changes messages.db (~55 MB); the large media index is read-mostly.
    let wal = true;
    sqlite_db_in(
        &root.join("databases/messages.db"),
        n(250_000.0),
        &mut rng,
        wal,
    );
    sqlite_db_in(
        &root.join("databases/media_index.db"),
        n(1_000_000.0),
        &mut rng,
        wal,
    );
    sqlite_db_in(
        &root.join("databases/cache.db"),
        n(250_000.0),
        &mut rng,
        !wal,
    );
    sqlite_db_in(
        &root.join("databases/settings.db"),
        n(2_000.0),
        &mut rng,
        wal,
    );
    // JSON documents: 12,000 of 1-20 KB (~120 MB).
    for i in 0..n(12_000.0) {
        let len = 1000 + rng.below(19_000) as usize;
        write(
            &root.join(format!("documents/{:03}/doc-{i}.json", i % 300)),
            json_doc(&mut rng, i, len),
        );
    }
    // Incompressible media: 400 files of ~1.1 MB (~450 MB) plus 20 duplicates.
    for i in 0..n(400.0) {
        let len = 200_000 + rng.below(1_800_000) as usize;
        write(
            &root.join(format!("media/{:02}/img-{i}.jpg", i % 20)),
            noise(i as u64, len),
        );
    }
    for i in 0..n(20.0) {
        let data = fs::read(root.join(format!("media/{:02}/img-{i}.jpg", i % 20))).unwrap();
        write(&root.join(format!("media/shared/copy-{i}.jpg")), &data);
    }
    // Logs: 10 files of ~35 MB of text (~350 MB).
    for i in 0..n(10.0) {
        write(
            &root.join(format!("logs/app-{i}.log")),
            text(&mut rng, 35_000_000),
        );
    }
    // Near-duplicate documents and small cache and preference files (~8,000).
    for i in 0..n(1000.0) {
        let base = fs::read_to_string(root.join(format!("documents/{:03}/doc-{i}.json", i % 300)))
            .unwrap();
        write(
            &root.join(format!("drafts/draft-{i}.json")),
            base.replace("\"id\"", "\"draft_id\""),
        );
    }
    for i in 0..n(7000.0) {
        let len = 100 + rng.below(4000) as usize;
        write(
            &root.join(format!("cache/{:02}/entry-{i}", i % 64)),
            text(&mut rng, len),
        );
    }
    for i in 0..n(100.0) {
        write(
            &root.join(format!("prefs/pref-{i}.json")),
            json_doc(&mut rng, i, 300),
        );
    }
}

/// 200,000 files of 1 to 4 KiB (~0.5 GB) at scale 1.
fn make_small_set(root: &Path, scale: f64) {
    let mut rng = Rng(0xfeed);
    let count = ((200_000.0 * scale) as usize).max(1);
    for i in 0..count {
        let len = 1024 + rng.below(3072) as usize;
        let data = if i % 2 == 0 {
            text(&mut rng, len).into_bytes()
        } else {
            noise(i as u64, len)
        };
        write(
            &root.join(format!("{:03}/{:02}/f{i}", i % 500, (i / 500) % 40)),
            data,
        );
    }
}

/// The migration-like change: 5% of the rows of one database updated and a
/// column added, 200 files added, 100 deleted, 1% of small files modified,
/// a log appended.
fn migrate(root: &Path, small: bool, round: u64) {
    let mut rng = Rng(0xabc + round);
    if small {
        for i in (0..200_000).step_by(100) {
            let p = root.join(format!("{:03}/{:02}/f{i}", i % 500, (i / 500) % 40));
            if p.exists() {
                let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
                writeln!(f, "changed {round}").unwrap();
            }
        }
        return;
    }
    let conn = rusqlite::Connection::open(root.join("databases/messages.db")).unwrap();
    let total: i64 = conn
        .query_row("SELECT max(id) FROM messages", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch(&format!(
        "ALTER TABLE messages ADD COLUMN migrated_{round} INTEGER"
    ))
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut st = tx
            .prepare("UPDATE messages SET flags = flags + 1 WHERE id = ?1")
            .unwrap();
        for _ in 0..total / 20 {
            st.execute([1 + rng.below(total as u64) as i64]).unwrap();
        }
    }
    tx.commit().unwrap();
    drop(conn);
    for i in 0..200 {
        write(
            &root.join(format!("documents/new-{round}/doc-{i}.json")),
            json_doc(&mut rng, i, 5000),
        );
    }
    let mut deleted = 0;
    for i in 0..12_000usize {
        if deleted == 100 {
            break;
        }
        let p = root.join(format!(
            "documents/{:03}/doc-{}.json",
            i % 300,
            i * 7 % 12_000
        ));
        if fs::remove_file(&p).is_ok() {
            deleted += 1;
        }
    }
    for i in (0..7000).step_by(100) {
        let p = root.join(format!("cache/{:02}/entry-{i}", i % 64));
        if p.exists() {
            let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
            writeln!(f, "modified {round}").unwrap();
        }
    }
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(root.join("logs/app-0.log"))
        .unwrap();
    log.write_all(text(&mut rng, 2_000_000).as_bytes()).unwrap();
}

#[derive(Default, Clone, serde::Serialize)]
struct Sample {
    secs: f64,
    max_rss_kb: i64,
}

/// Run a shell command, timing it; peak RSS of the largest process in its
/// tree comes from GNU time (`%M`), which forks the command from its own
/// small process, so the benchmark's memory never counts.
fn run(cmd: &str, env: &[(&str, &str)]) -> Sample {
    let rss_file = std::env::temp_dir().join(format!("snap-e2e-rss-{}", std::process::id()));
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .args(["sh", "-c", cmd]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(std::process::Stdio::null());
    let start = Instant::now();
    let status = c
        .status()
        .expect("spawn /usr/bin/time (apt-get install time)");
    let secs = start.elapsed().as_secs_f64();
    assert!(status.success(), "command failed ({status}): {cmd}");
    let max_rss_kb = fs::read_to_string(&rss_file)
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(-1);
    Sample { secs, max_rss_kb }
}

fn output(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}");
    String::from_utf8(out.stdout).unwrap()
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

fn du(p: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0)
}

fn has(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

type Results = BTreeMap<String, BTreeMap<String, Vec<Sample>>>;

fn record(res: &mut Results, set: &str, step: &str, tool: &str, s: Sample) {
    eprintln!(
        "  {set:<5} {step:<28} {tool:<10} {:>8.2} s  {:>7} MB rss",
        s.secs,
        s.max_rss_kb / 1024
    );
    res.entry(format!("{set}/{step}"))
        .or_default()
        .entry(tool.to_string())
        .or_default()
        .push(s);
}

fn main() {
    // `cargo bench` passes --bench; ignore harness arguments.
    let scale: f64 = std::env::var("SNAP_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let runs: usize = std::env::var("SNAP_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let sets = std::env::var("SNAP_BENCH_SETS").unwrap_or_else(|_| "app,small".into());
    let base =
        PathBuf::from(std::env::var("SNAP_BENCH_DIR").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-e2e").to_string()
        }));
    let tools_env = std::env::var("SNAP_BENCH_TOOLS").ok();
    let want = |t: &str| {
        tools_env
            .as_deref()
            .is_none_or(|l| l.split(',').any(|x| x == t))
    };
    let tools: Vec<&str> = ["snap", "cp", "tar", "restic", "borg"]
        .into_iter()
        .filter(|t| want(t))
        .filter(|t| match *t {
            "restic" => has("restic"),
            "borg" => has("borg"),
            "tar" => has("zstd"),
            _ => true,
        })
        .collect();
    fs::create_dir_all(&base).unwrap();
    let mut results: Results = BTreeMap::new();
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    eprintln!(
        "e2e: scale {scale}, {runs} runs, tools {tools:?}, in {}",
        base.display()
    );

    for set in sets.split(',') {
        let generated = if set == "s3" { "app" } else { set };
        // The version names the data set's recipe, so a cached copy made by
        // an older recipe is not reused (2: databases in WAL mode at rest).
        let pristine = base.join(format!("{generated}-v2-{scale}"));
        if !pristine.join(".complete").exists() {
            eprintln!("generating {set} data set at {}", pristine.display());
            let _ = fs::remove_dir_all(&pristine);
            match generated {
                "app" => make_app_set(&pristine.join("data"), scale),
                _ => make_small_set(&pristine.join("data"), scale),
            }
            fs::write(pristine.join(".complete"), b"").unwrap();
        }
        let data_bytes = du(&pristine.join("data"));
        sizes.insert(format!("{set}/data_bytes"), data_bytes);
        eprintln!("{set}: {} MB", data_bytes / 1_000_000);
        if set == "s3" {
            s3::run_set(
                &base,
                &pristine.join("data"),
                runs,
                &tools,
                &mut results,
                &mut sizes,
            );
            continue;
        }

        for round in 0..runs as u64 {
            let work = base.join("work");
            let _ = fs::remove_dir_all(&work);
            fs::create_dir_all(&work).unwrap();
            let src = work.join("src");
            sh(&format!(
                "cp -a {} {}",
                pristine.join("data").display(),
                src.display()
            ));
            sh("sync");
            let src_s = src.display().to_string();
            let w = work.display().to_string();
            for tool in &tools {
                // First backup, unchanged rerun.
                let (first, rerun, repo): (String, String, String) = match *tool {
                    "snap" => (
                        format!("{SNAP} -q create {src_s}"),
                        format!("{SNAP} -q create {src_s}"),
                        format!("{w}/snap-repo"),
                    ),
                    "restic" => (
                        format!("restic -q backup {src_s} && sync"),
                        format!("restic -q backup {src_s} && sync"),
                        format!("{w}/restic-repo"),
                    ),
                    "borg" => (
                        format!("borg create --compression zstd,3 ::first {src_s} && sync"),
                        format!("borg create --compression zstd,3 ::rerun {src_s} && sync"),
                        format!("{w}/borg-repo"),
                    ),
                    "tar" => (
                        // Synced like every other step: snap's create makes its
                        // packs durable, and an archive still in the page cache
                        // is not a backup yet.
                        format!(
                            "tar -C {src_s} -cf - . | zstd -3 -T2 -q -o {w}/data.tar.zst && sync"
                        ),
                        String::new(),
                        format!("{w}/data.tar.zst"),
                    ),
                    _ => (
                        format!("cp -a {src_s} {w}/cp-copy && sync"),
                        String::new(),
                        format!("{w}/cp-copy"),
                    ),
                };
                let env: Vec<(&str, &str)> = match *tool {
                    "snap" => vec![("SNAP_REPO", repo.as_str())],
                    "restic" => vec![
                        ("RESTIC_REPOSITORY", repo.as_str()),
                        ("RESTIC_PASSWORD", "bench"),
                    ],
                    "borg" => vec![
                        ("BORG_REPO", repo.as_str()),
                        ("BORG_PASSPHRASE", ""),
                        ("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes"),
                    ],
                    _ => vec![],
                };
                match *tool {
                    "snap" => sh(&format!("SNAP_REPO={repo} {SNAP} -q init >/dev/null")),
                    "restic" => sh(&format!(
                        "RESTIC_REPOSITORY={repo} RESTIC_PASSWORD=bench restic -q init >/dev/null"
                    )),
                    "borg" => sh(&format!(
                        "BORG_REPO={repo} BORG_PASSPHRASE= borg init -e none >/dev/null 2>&1"
                    )),
                    _ => {}
                }
                let s = run(&first, &env);
                record(&mut results, set, "first backup", tool, s);
                sizes.insert(
                    format!("{set}/{tool}/repo_bytes_first"),
                    du(Path::new(&repo)),
                );
                if rerun.is_empty() {
                    if *tool == "cp" {
                        let _ = fs::remove_dir_all(format!("{w}/cp-copy"));
                    }
                    continue;
                }
                let s = run(&rerun, &env);
                record(&mut results, set, "unchanged rerun", tool, s);
            }
            // The migration, then a rerun of each tool.
            migrate(&src, set == "small", round);
            for tool in &tools {
                let (cmd, env): (String, Vec<(String, String)>) = match *tool {
                    "snap" => (
                        format!("{SNAP} -q create {src_s}"),
                        vec![("SNAP_REPO".into(), format!("{w}/snap-repo"))],
                    ),
                    "restic" => (
                        format!("restic -q backup {src_s} && sync"),
                        vec![
                            ("RESTIC_REPOSITORY".into(), format!("{w}/restic-repo")),
                            ("RESTIC_PASSWORD".into(), "bench".into()),
                        ],
                    ),
                    "borg" => (
                        format!("borg create --compression zstd,3 ::migrated {src_s} && sync"),
                        vec![
                            ("BORG_REPO".into(), format!("{w}/borg-repo")),
                            ("BORG_PASSPHRASE".into(), "".into()),
                        ],
                    ),
                    _ => continue,
                };
                let repo = env[0].1.clone();
                let before = du(Path::new(&repo));
                let envr: Vec<(&str, &str)> =
                    env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                let s = run(&cmd, &envr);
                record(&mut results, set, "rerun after migration", tool, s);
                sizes.insert(
                    format!("{set}/{tool}/migration_added_bytes"),
                    du(Path::new(&repo)).saturating_sub(before),
                );
            }
            // Restore of the first snapshot into an empty directory.
            let first_id = |list: &str, key: &str| -> String {
                let v: serde_json::Value = serde_json::from_str(list).unwrap_or_default();
                v[0][key].as_str().unwrap_or_default().to_string()
            };
            let snap_first = if tools.contains(&"snap") {
                first_id(
                    &output(&format!("SNAP_REPO={w}/snap-repo {SNAP} list --json")),
                    "id",
                )
            } else {
                String::new()
            };
            let restic_first = if tools.contains(&"restic") {
                first_id(
                    &output(&format!(
                        "RESTIC_REPOSITORY={w}/restic-repo RESTIC_PASSWORD=bench restic snapshots --json"
                    )),
                    "short_id",
                )
            } else {
                String::new()
            };
            for tool in &tools {
                let out = format!("{w}/restore-{tool}");
                let (cmd, env): (String, Vec<(String, String)>) = match *tool {
                    "snap" => (
                        format!("{SNAP} -q restore {snap_first} --target {out} && sync"),
                        vec![("SNAP_REPO".into(), format!("{w}/snap-repo"))],
                    ),
                    "restic" => (
                        format!(
                            "mkdir -p {out} && restic -q restore {restic_first} --target {out} && sync"
                        ),
                        vec![
                            ("RESTIC_REPOSITORY".into(), format!("{w}/restic-repo")),
                            ("RESTIC_PASSWORD".into(), "bench".into()),
                        ],
                    ),
                    "borg" => (
                        format!("mkdir -p {out} && cd {out} && borg extract ::first && sync"),
                        vec![
                            ("BORG_REPO".into(), format!("{w}/borg-repo")),
                            ("BORG_PASSPHRASE".into(), "".into()),
                        ],
                    ),
                    "cp" => (
                        format!("cp -a {} {out} && sync", pristine.join("data").display()),
                        vec![],
                    ),
                    _ => continue,
                };
                let envr: Vec<(&str, &str)> =
                    env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                let s = run(&cmd, &envr);
                record(&mut results, set, "restore into empty dir", tool, s);
                let _ = fs::remove_dir_all(&out);
            }
            // snap only: roll the migrated source back in place to the first snapshot.
            if tools.contains(&"snap") {
                let repo = format!("{w}/snap-repo");
                let cmd = format!("{SNAP} -q restore {snap_first}");
                let s = run(&cmd, &[("SNAP_REPO", repo.as_str())]);
                record(&mut results, set, "in-place rollback", "snap", s);
                let diff = Command::new("diff")
                    .arg("-rq")
                    .arg(pristine.join("data"))
                    .arg(&src)
                    .output()
                    .unwrap();
                assert!(
                    diff.status.success(),
                    "rollback is not exact: {}",
                    String::from_utf8_lossy(&diff.stdout)
                );
            }
            sh(&format!("sync; rm -rf {w}"));
        }
    }

    // Report medians: a column per tool, and per variant the s3 set adds.
    // Only columns with a measurement.
    let measured = |t: &str| results.values().any(|by_tool| by_tool.contains_key(t));
    let mut columns: Vec<String> = tools
        .iter()
        .filter(|t| measured(t))
        .map(|t| t.to_string())
        .collect();
    for by_tool in results.values() {
        for t in by_tool.keys() {
            if !columns.contains(t) {
                columns.push(t.clone());
            }
        }
    }
    println!("\n| step | {} |", columns.join(" | "));
    println!("|---|{}", "---|".repeat(columns.len()));
    let mut json_steps = serde_json::Map::new();
    for (step, by_tool) in &results {
        let mut row = format!("| {step} |");
        let mut jt = serde_json::Map::new();
        for t in &columns {
            match by_tool.get(t) {
                Some(samples) => {
                    let mut secs: Vec<f64> = samples.iter().map(|s| s.secs).collect();
                    let mut rss: Vec<f64> = samples.iter().map(|s| s.max_rss_kb as f64).collect();
                    let m = median(&mut secs);
                    let r = median(&mut rss);
                    row.push_str(&format!(" {m:.2} s ({:.0} MB) |", r / 1024.0));
                    jt.insert(t.to_string(), serde_json::json!({"median_secs": m, "median_max_rss_kb": r, "samples": samples}));
                }
                None => row.push_str(" |"),
            }
        }
        println!("{row}");
        json_steps.insert(step.clone(), serde_json::Value::Object(jt));
    }
    println!();
    for (k, v) in &sizes {
        if k.contains("requests") {
            println!("{k}: {v}");
        } else {
            println!("{k}: {:.1} MB", *v as f64 / 1e6);
        }
    }
    let out = serde_json::json!({
        "date": jiff::Timestamp::now().to_string(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "scale": scale,
        "runs": runs,
        "steps": json_steps,
        "sizes": sizes,
    });
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-e2e.json");
    fs::write(path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    println!("samples written to {path}");
}
