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

/// docs/embedding.md's Python example, run as written: the block after
/// `<!-- example: python -->`.
#[test]
fn the_python_example_in_the_docs_runs_as_written() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/embedding.md"))
            .unwrap();
    let at = doc
        .find("<!-- example: python -->")
        .expect("the example's marker in docs/embedding.md");
    let body = &doc[at..];
    let start = body
        .find("```python\n")
        .expect("a python block after the marker")
        + 10;
    let code = &body[start..start + body[start..].find("```").unwrap()];
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("example.py");
    std::fs::write(&script, code).unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(support::library_dir().join("libsnap_ffi.so"))
        .arg(&work)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("ok\n"),
        "the example failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rolled back:"), "{stdout}");
}

#[test]
fn an_app_killed_during_a_migration_recovers_through_the_c_abi() {
    run_script("recover.py");
}

/// Every result and event of the snapshot calls has the shape its schema
/// in ffi/schemas states.
#[test]
fn results_and_events_have_their_documented_shapes() {
    run_script("schemas.py");
}
