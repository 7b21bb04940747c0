//! `snap guard`: migrations that fail are rolled back exactly; migrations
//! that succeed keep their changes and their snapshot.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use predicates::prelude::*;

use crate::common::*;

/// A migration in Python with sqlite3: alters a table, rewrites rows,
/// adds and deletes files, changes a mode, then ends as `how` says:
/// `exit N`, `kill` (SIGKILL to itself) or `sleep` (waits to be signalled).
const MIGRATION: &str = r#"
import os, signal, sqlite3, sys, time
root, how = sys.argv[1], sys.argv[2]
c = sqlite3.connect(os.path.join(root, "data/app.db"))
c.execute("ALTER TABLE users ADD COLUMN plan TEXT")
c.execute("UPDATE users SET name = upper(name), plan = 'pro' WHERE id % 3 = 0")
c.execute("PRAGMA user_version = 2")
c.commit()
c.close()
with open(os.path.join(root, "docs/migrated.txt"), "w") as f:
    f.write("added by the migration\n")
os.remove(os.path.join(root, "prefs.json"))
with open(os.path.join(root, "docs/readme.txt"), "a") as f:
    f.write("appended\n")
os.chmod(os.path.join(root, "modes/m0600"), 0o644)
print("migration done", flush=True)
if how == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
if how == "sleep":
    with open(os.path.join(root, "..", "migration-waiting"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
sys.exit(int(how))
"#;

struct Setup {
    env: Env,
    src: PathBuf,
    script: PathBuf,
    before: PathBuf,
}

fn setup() -> Setup {
    let env = Env::new();
    let src = env.path("app");
    make_rich_tree(&src);
    let script = env.path("migrate.py");
    fs::write(&script, MIGRATION).unwrap();
    let before = env.path("before");
    cp_a(&src, &before);
    Setup {
        env,
        src,
        script,
        before,
    }
}

impl Setup {
    fn guard(&self, extra: &[&str], how: &str) -> assert_cmd::assert::Assert {
        self.env
            .snap()
            .args(["guard", "--json", "--source"])
            .arg(&self.src)
            .args(extra)
            .arg("--")
            .arg("python3")
            .arg(&self.script)
            .arg(&self.src)
            .arg(how)
            .assert()
    }

    /// `snap guard --json` of a migration that waits to be signalled,
    /// returned once the migration runs, with the migration's pid.
    // The caller waits for the child it gets back.
    #[allow(clippy::zombie_processes)]
    fn spawn_waiting_guard(&self) -> (std::process::Child, i32) {
        let mut child = self
            .env
            .snap_process()
            .env("SNAP_REPO", &self.env.repo)
            .env("XDG_CONFIG_HOME", self.env.path("config"))
            .args(["guard", "--json", "--source"])
            .arg(&self.src)
            .arg("--")
            .arg("python3")
            .arg(&self.script)
            .arg(&self.src)
            .arg("sleep")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let waiting = self.env.path("migration-waiting");
        let t0 = std::time::Instant::now();
        loop {
            let pid = fs::read_to_string(&waiting)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            if let Some(pid) = pid {
                return (child, pid);
            }
            if t0.elapsed().as_secs() >= 60 {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the migration never started");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The JSON report: the last line of stdout (the migration prints first).
fn report(a: &assert_cmd::assert::Assert) -> serde_json::Value {
    last_line_json(&a.get_output().stdout)
}

fn last_line_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(text.lines().last().expect("a report")).unwrap()
}

fn snapshot(env: &Env, id: &str) -> serde_json::Value {
    env.list()
        .into_iter()
        .find(|s| s["id"] == id)
        .expect("snapshot listed")
}

fn user_version(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_failing_migration_is_rolled_back_exactly() {
    let s = setup();
    let a = s.guard(&[], "1").code(7);
    let r = report(&a);
    assert_eq!(r["outcome"], "rolled_back");
    assert_eq!(r["exit_code"], 1);
    assert_same_tree(&s.before, &s.src);
    // It says what it rolled back.
    let lines: Vec<&str> = r["rolled_back"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let has = |verb: &str, tail: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(verb) && l.ends_with(tail))
    };
    assert!(has("delete", "docs/migrated.txt"), "{lines:?}");
    assert!(has("write", "prefs.json"), "{lines:?}");
    assert!(has("write", "data/app.db"), "{lines:?}");
    assert!(has("write", "docs/readme.txt"), "{lines:?}");
    assert!(has("metadata", "modes/m0600"), "{lines:?}");
    let snap = snapshot(&s.env, r["snapshot"].as_str().unwrap());
    assert_eq!(
        snap["tags"],
        serde_json::json!(["pre-migration", "rolled-back"])
    );
    assert_eq!(snap["pinned"], false);
    assert_eq!(snap["labels"]["user_version:data/app.db"], "0");
    // The failed state was kept too, and can be brought back.
    let failed = r["restore"]["safety_snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    s.env.snap().args(["restore", &failed]).assert().success();
    assert!(s.src.join("docs/migrated.txt").exists());
    assert_eq!(user_version(&s.src.join("data/app.db")), 2);
}

#[test]
fn a_successful_migration_keeps_its_changes_and_its_snapshot() {
    let s = setup();
    let a = s.guard(&[], "0").success();
    let r = report(&a);
    assert_eq!(r["outcome"], "migrated");
    assert!(r["restore"].is_null());
    assert!(s.src.join("docs/migrated.txt").exists());
    assert!(!s.src.join("prefs.json").exists());
    assert_eq!(user_version(&s.src.join("data/app.db")), 2);
    let id = r["snapshot"].as_str().unwrap();
    let snap = snapshot(&s.env, id);
    assert_eq!(
        snap["tags"],
        serde_json::json!(["pre-migration", "migration-kept"])
    );
    assert_eq!(snap["pinned"], false);
    // The kept snapshot is the state before the migration.
    let out = s.env.path("out");
    s.env.restore_to(id, &out);
    assert_same_tree(&s.before, &out);
}

#[test]
fn a_migration_killed_by_a_signal_is_rolled_back() {
    let s = setup();
    let a = s.guard(&[], "kill").code(7);
    let r = report(&a);
    assert_eq!(r["signal"], 9);
    assert!(r["exit_code"].is_null());
    assert!(r["failure"].as_str().unwrap().contains("signal 9"));
    assert_same_tree(&s.before, &s.src);
}

#[test]
fn sigterm_to_snap_reaches_the_migration_and_rolls_back() {
    let s = setup();
    let t0 = std::time::Instant::now();
    let (child, _) = s.spawn_waiting_guard();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = last_line_json(&out.stdout);
    assert_eq!(r["signal"], libc::SIGTERM);
    assert!(
        t0.elapsed().as_secs() < 30,
        "the migration got the signal instead of sleeping on"
    );
    assert_same_tree(&s.before, &s.src);
}

#[test]
fn a_failing_check_rolls_back_a_migration_that_exited_zero() {
    let s = setup();
    let check = format!(
        "test \"$(python3 -c 'import sqlite3; print(sqlite3.connect(\"{}\").execute(\"PRAGMA user_version\").fetchone()[0])')\" = 3 || exit 4",
        s.src.join("data/app.db").display()
    );
    let a = s.guard(&["--check", &check], "0").code(7);
    let r = report(&a);
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["check_exit_code"], 4);
    assert!(r["failure"].as_str().unwrap().contains("check"));
    assert_same_tree(&s.before, &s.src);
    // The same check, satisfied: the migration stays.
    let ok = check.replace("= 3", "= 2");
    s.guard(&["--check", &ok], "0").success();
    assert_eq!(user_version(&s.src.join("data/app.db")), 2);
}

#[test]
fn keep_leaves_only_the_newest_guard_snapshots() {
    let env = Env::new();
    let src = env.path("app");
    write(&src.join("version"), "0");
    let mut ids = Vec::new();
    for v in 1..=3 {
        let out = env
            .snap()
            .args(["guard", "--json", "--keep", "2", "--source"])
            .arg(&src)
            .args(["--", "sh", "-c"])
            .arg(format!("echo {v} > '{}'", src.join("version").display()))
            .assert()
            .success();
        ids.push(report(&out)["snapshot"].as_str().unwrap().to_string());
    }
    let left: Vec<String> = env
        .list()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, ids[1..].to_vec());
    assert_eq!(fs::read_to_string(src.join("version")).unwrap(), "3\n");
}

#[test]
fn a_migration_that_cannot_start_changes_nothing() {
    let s = setup();
    s.env
        .snap()
        .args(["guard", "--source"])
        .arg(&s.src)
        .args(["--", "/no/such/migration"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("/no/such/migration"));
    assert_same_tree(&s.before, &s.src);
}

/// Crash snap at every fault point of a guard whose migration fails (the
/// snapshot, then the rollback): afterwards either nothing ran and the
/// directory is as before, or the pinned pre-migration snapshot is there and
/// `snap restore` of it finishes the rollback exactly.
#[test]
fn a_crash_during_guard_leaves_what_completes_the_rollback() {
    let guard_args = |s: &Setup| {
        let mut a: Vec<std::ffi::OsString> = vec!["guard".into(), "--source".into()];
        a.push(s.src.clone().into());
        a.extend(["--".into(), "python3".into(), s.script.clone().into()]);
        a.push(s.src.clone().into());
        a.push("1".into());
        a
    };
    let s = setup();
    let out = s
        .env
        .snap()
        .args(guard_args(&s))
        .env("SNAP_FAULT_REPORT", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let err = String::from_utf8_lossy(&out.stderr);
    let points: u64 = err
        .lines()
        .find_map(|l| l.split("fault points passed: ").nth(1))
        .expect("fault report")
        .trim()
        .parse()
        .unwrap();
    assert!(
        points >= 15,
        "every step of snapshot and rollback: {points}"
    );
    let mut crashes = 0;
    for k in 1..=points {
        let s = setup();
        let out = s
            .env
            .snap()
            .args(guard_args(&s))
            .env("SNAP_FAULT_AFTER", k.to_string())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("injected crash"), "point {k}: {err}");
        crashes += 1;
        let pre: Vec<serde_json::Value> = s
            .env
            .list()
            .into_iter()
            .filter(|x| x["tags"] == serde_json::json!(["pre-migration"]))
            .collect();
        match pre.as_slice() {
            [] => assert_same_tree(&s.before, &s.src),
            [snap] => {
                assert_eq!(snap["pinned"], true, "point {k}");
                s.env
                    .snap()
                    .args(["restore", snap["id"].as_str().unwrap()])
                    .assert()
                    .code(DONE_OR_NOTHING_TO_DO);
                assert_same_tree(&s.before, &s.src);
            }
            more => panic!("point {k}: {} pre-migration snapshots", more.len()),
        }
        s.env.snap().arg("check").assert().success();
    }
    assert_eq!(crashes, points);
    eprintln!("guard: {crashes} injected crashes survived");
}

#[test]
fn a_guard_whose_snap_was_killed_blocks_the_next_until_resolved() {
    let s = setup();
    let (mut child, pid) = s.spawn_waiting_guard();
    // snap dies without a chance to roll back; so does the migration.
    child.kill().unwrap();
    child.wait().unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let stuck = s.env.list().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The next guard refuses and says what to do.
    s.env
        .snap()
        .args(["guard", "--source"])
        .arg(&s.src)
        .args(["--", "true"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains(&stuck[..8])
                .and(predicate::str::contains("did not finish"))
                .and(predicate::str::contains(format!(
                    "snap unpin {}",
                    &stuck[..8]
                ))),
        );
    // Roll back by hand, release the snapshot: the next guard runs.
    s.env.snap().args(["restore", &stuck]).assert().success();
    assert_same_tree(&s.before, &s.src);
    s.env.snap().args(["unpin", &stuck]).assert().success();
    s.env
        .snap()
        .args(["guard", "--source"])
        .arg(&s.src)
        .args(["--", "true"])
        .assert()
        .success();
}

#[test]
fn a_signal_after_the_migration_exited_stops_snap_and_the_next_guard_refuses() {
    let s = setup();
    let flag = s.env.path("pause-flag");
    let mut child = s
        .env
        .snap_process()
        .env("SNAP_REPO", &s.env.repo)
        .env("XDG_CONFIG_HOME", s.env.path("config"))
        .env("SNAP_PAUSE_AT", "restore planned")
        .env("SNAP_PAUSE_FILE", &flag)
        .args(["guard", "--source"])
        .arg(&s.src)
        .arg("--")
        .arg("python3")
        .arg(&s.script)
        .arg(&s.src)
        .arg("1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The migration failed and exited; snap is rolling back (held still
    // between plan and execute). SIGTERM must not be swallowed.
    let t0 = std::time::Instant::now();
    while !flag.exists() {
        assert!(t0.elapsed().as_secs() < 60, "the rollback never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    let _ = fs::remove_file(&flag);
    // The pinned pre-migration snapshot stops the next guard.
    s.guard(&[], "0")
        .failure()
        .stderr(predicate::str::contains("did not finish"));
}

#[test]
fn a_migration_that_replaces_the_source_with_a_symlink_is_rolled_back() {
    let s = setup();
    let elsewhere = s.env.path("elsewhere");
    write(&elsewhere.join("theirs"), b"not ours to touch");
    let script = s.env.path("swap.py");
    fs::write(
        &script,
        format!(
            "import os, sys\nos.rename({src:?}, {src:?} + '.moved')\nos.symlink({dst:?}, {src:?})\nsys.exit(1)\n",
            src = s.src.to_str().unwrap(),
            dst = elsewhere.to_str().unwrap()
        ),
    )
    .unwrap();
    s.env
        .snap()
        .args(["guard", "--source"])
        .arg(&s.src)
        .args(["--", "python3"])
        .arg(&script)
        .assert()
        .code(7)
        .stderr(predicate::str::contains("symlink"));
    assert!(fs::symlink_metadata(&s.src).unwrap().is_dir());
    assert_same_tree(&s.before, &s.src);
    assert_eq!(
        fs::read(elsewhere.join("theirs")).unwrap(),
        b"not ours to touch"
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 1);
}

/// Every snapshot of one guard run is named for what it holds and carries
/// the run's labels and id: the pre-migration snapshot (`pre-migration`
/// plus the outcome), a rollback's safety snapshot (`pre-restore`), and
/// with `--snapshot-after` the migrated state (`migrated`, restoring to
/// exactly what the migration left).
#[test]
fn each_snapshot_of_a_run_is_named_for_what_it_holds_and_carries_its_labels() {
    let s = setup();
    let failed = report(&s.guard(&["--label", "release=2.0"], "1").code(7));
    let run = failed["run"].as_str().expect("the run id").to_string();
    let pre = snapshot(&s.env, failed["snapshot"].as_str().unwrap());
    let safety = s
        .env
        .list()
        .into_iter()
        .find(|x| x["tags"] == serde_json::json!(["pre-restore"]))
        .expect("the rollback's safety snapshot");
    for x in [&pre, &safety] {
        assert_eq!(x["labels"]["release"], "2.0", "{x}");
        assert_eq!(x["labels"]["migration:run"], run.as_str(), "{x}");
    }
    assert_eq!(
        pre["tags"],
        serde_json::json!(["pre-migration", "rolled-back"])
    );

    let kept = report(
        &s.guard(&["--label", "release=2.1", "--snapshot-after"], "0")
            .success(),
    );
    assert_ne!(kept["run"], run.as_str(), "each run has its own id");
    let after_id = kept["migrated_snapshot"]
        .as_str()
        .expect("the after snapshot");
    let after = snapshot(&s.env, after_id);
    assert_eq!(after["tags"], serde_json::json!(["migrated"]));
    assert_eq!(after["labels"]["release"], "2.1");
    assert_eq!(after["labels"]["migration:run"], kept["run"]);
    let pre = snapshot(&s.env, kept["snapshot"].as_str().unwrap());
    assert_eq!(
        pre["tags"],
        serde_json::json!(["pre-migration", "migration-kept"])
    );
    let migrated = s.env.path("migrated");
    cp_a(&s.src, &migrated);
    let out = s.env.path("out-after");
    s.env.restore_to(after_id, &out);
    assert_same_tree(&migrated, &out);
}
