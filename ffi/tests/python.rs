//! The C ABI from Python (ctypes), inside a process that has its own
//! SQLite databases open: the app-upgrade scenario and the in-process lock
//! hazard (ffi/tests/python/*.py). Needs `python3` with its sqlite3 module
//! (.ci/run installs it); without it these tests fail, they do not skip.

mod support;

use std::path::Path;
use std::process::Command;

fn run_script(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let lib = support::library_dir().join("libsnap_ffi.so");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name);
    let out = Command::new("python3")
        .arg(&script)
        .arg(&lib)
        .arg(tmp.path())
        .output()
        .expect("python3 runs (install it: the C ABI tests need it)");
    assert!(
        out.status.success() && out.stdout.ends_with(b"ok\n"),
        "{name} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_upgrade_scenario_runs_from_python_with_the_databases_open() {
    run_script("upgrade.py");
}

#[test]
fn snap_create_in_the_apps_process_keeps_the_apps_sqlite_locks() {
    run_script("lock_hazard.py");
}

#[test]
fn an_encrypted_repository_works_through_the_c_abi() {
    run_script("encrypted.py");
}
