use std::fs;

use crate::common::*;

#[test]
fn every_kind_of_entry_round_trips_with_metadata() {
    let env = Env::new();
    let src = env.path("src");
    make_rich_tree(&src);
    let snap = env.create(&src);
    assert_eq!(snap["complete"], true);
    assert_eq!(
        snap["source"],
        src.canonicalize().unwrap().to_str().unwrap()
    );
    let id = snap["id"].as_str().unwrap();

    let out = env.path("out");
    env.restore_to(id, &out);
    assert_same_tree(&src, &out);

    // Hard links are linked again, not copied.
    assert_eq!(inode(&out.join("hard/one")), inode(&out.join("docs/two")));
    // The restored database opens and is sound.
    let conn = rusqlite::Connection::open(out.join("data/app.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 5000);
}

#[test]
fn restore_into_an_empty_existing_directory_and_by_prefix() {
    let env = Env::new();
    let src = env.path("src");
    make_rich_tree(&src);
    let id = env.create_id(&src);
    let out = env.path("empty");
    fs::create_dir(&out).unwrap();
    env.restore_to(&id[..6], &out);
    assert_same_tree(&src, &out);
}

/// A restore into a new directory writes the files of the directories it
/// creates from their trees, a window at a time, not from a step per file:
/// it must write exactly what the dry run's plan lists. 70,000 files, more
/// than one window (65,536), beside the rich tree's hard links, symlinks
/// and special files.
#[test]
fn a_restore_into_a_new_directory_writes_what_its_dry_run_lists() {
    let env = Env::new();
    let src = env.path("src");
    make_rich_tree(&src);
    for i in 0..70_000u32 {
        let dir = src.join(format!("many/{:03}", i / 500));
        if i % 500 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        fs::write(
            dir.join(format!("f{i}")),
            format!("file {i}\n").repeat((i % 7) as usize),
        )
        .unwrap();
    }
    let id = env.create_id(&src);
    let out = env.path("out");
    let plan = env
        .snap()
        .args(["restore", &id, "--dry-run", "--json", "--target"])
        .arg(&out)
        .assert()
        .success();
    let plan: serde_json::Value = serde_json::from_slice(&plan.get_output().stdout).unwrap();
    let writes = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "write")
        .count() as u64;
    assert!(writes > 70_000, "{writes}");
    assert_eq!(plan["summary"]["write_files"].as_u64().unwrap(), writes);
    assert!(!out.exists(), "a dry run created the target");
    // A name that is not UTF-8 is in the JSON plan, its bad byte replaced.
    assert!(
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["path"].as_str().unwrap().ends_with("caf\u{fffd}-latin1")),
        "no step for the latin-1 name"
    );
    let done = env
        .snap()
        .args(["restore", &id, "--json", "--target"])
        .arg(&out)
        .assert()
        .success();
    let done: serde_json::Value = serde_json::from_slice(&done.get_output().stdout).unwrap();
    assert_eq!(done["written_files"].as_u64().unwrap(), writes);
    assert_eq!(done["failed"].as_array().unwrap().len(), 0);
    assert_same_tree(&src, &out);
    assert_eq!(inode(&out.join("hard/one")), inode(&out.join("docs/two")));
}

#[test]
fn ls_lists_entries_like_ls_l() {
    let env = Env::new();
    let src = env.path("src");
    make_rich_tree(&src);
    env.create(&src);
    let out = env.snap().args(["ls", "latest"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(text.contains("drwxr-xr-x"), "{text}");
    assert!(
        text.contains(" caf\\xe9-latin1\n"),
        "non-UTF-8 names are escaped: {text}"
    );
    assert!(
        text.contains(" spaces and\\nnewline\n"),
        "one entry, one line: {text}"
    );
    assert!(text.contains(" prefs.json"), "{text}");
    assert!(text.contains("link-rel -> prefs.json"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("prw-r--r--") && l.ends_with(" pipe")),
        "{text}"
    );
    let out = env
        .snap()
        .args(["ls", "latest", "modes"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with("-rw-------") && l.ends_with(" m0600")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("-r--r--r--") && l.ends_with(" m0444")),
        "{text}"
    );
    let out = env.snap().args(["ls", "latest", "docs"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.contains(&format!(" {:>12} ", 2_460_000)),
        "big.log size shown: {text}"
    );
    let out = env.snap().args(["ls", "-r", "latest"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(text.contains("deep/a/b/c/d/leaf"), "{text}");
}

#[test]
fn list_json_has_the_documented_fields() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"1");
    let first = env.create_id(&src);
    write(&src.join("f"), b"2");
    let out = env
        .snap()
        .args(["create", "--tag", "a", "--tag", "b", "--json"])
        .arg(&src)
        .assert()
        .success();
    let second: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let list = env.list();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], first.as_str());
    assert_eq!(list[1]["id"], second["id"]);
    assert_eq!(list[1]["parent"], first.as_str());
    assert_eq!(list[0]["parent"], serde_json::Value::Null);
    assert_eq!(list[1]["tags"], serde_json::json!(["a", "b"]));
    for key in ["id", "time", "source", "tags", "parent"] {
        assert!(list[1].get(key).is_some(), "missing {key}");
    }
    for key in [
        "files",
        "dirs",
        "read_bytes",
        "new_stored_bytes",
        "duration_ms",
    ] {
        assert!(second["stats"].get(key).is_some(), "missing stats.{key}");
    }
}

/// Not a test: `SNAP_FIXTURE=DIR cargo test --test integration make_fixture -- --ignored`
/// writes the rich fixture tree to DIR for manual experiments.
#[test]
#[ignore]
fn make_fixture() {
    let dir = std::env::var("SNAP_FIXTURE").expect("set SNAP_FIXTURE");
    make_rich_tree(std::path::Path::new(&dir));
}
