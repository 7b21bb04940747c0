//! The C ABI from C: ffi/tests/c/upgrade.c, compiled here with the system
//! `cc` against the checked-in header and linked to libsnap_ffi.so, runs
//! the app-upgrade scenario on a real directory with a SQLite database.

mod support;

use std::process::Command;

use support::{app_dir, library_dir};

#[test]
fn the_upgrade_scenario_runs_from_c() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    app_dir(&data, false);
    let exe = tmp.path().join("upgrade");
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = library_dir();
    let out = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("tests/c/upgrade.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg("-lsnap_ffi")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .output()
        .expect("the system C compiler `cc` runs");
    assert!(
        out.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // cargo puts target/<profile> on LD_LIBRARY_PATH, where an older
    // libsnap_ffi.so from `cargo build` may be; the rpath names this one.
    let run = Command::new(&exe)
        .env_remove("LD_LIBRARY_PATH")
        .arg(tmp.path().join("repo"))
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the C program failed ({}):\n{}{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), "ok\n");

    // The successful migration's changes stayed; the failed one's did not.
    assert!(data.join("new-good.txt").exists());
    assert!(!data.join("new-broken.txt").exists());
    assert!(!data.join("media/a.bin").exists());
    let db = std::fs::read(data.join("app.db")).unwrap();
    assert!(db[4096..8192].iter().all(|&b| b == b'g'));
    // Four snapshots: the plain one, two pre-migration ones (one rolled
    // back, one migrated) and the rollback's safety snapshot.
    let list = support::cli_list(&tmp.path().join("repo"));
    let tags: Vec<String> = list
        .iter()
        .map(|s| {
            let t: Vec<&str> = s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            t.join(",")
        })
        .collect();
    assert_eq!(
        tags,
        [
            "first",
            "pre-migration,rolled-back",
            "pre-restore",
            "pre-migration,migration-kept"
        ],
        "tags of the snapshots, oldest first"
    );
    assert!(
        list.iter().all(|s| s["pinned"] == false),
        "no session is left pinned"
    );
}
