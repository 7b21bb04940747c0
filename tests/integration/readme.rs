//! README's "Example: an app upgrade, end to end", run as written (with
//! `S` pointing at the binary under test and `~` at a scratch directory),
//! so the README cannot drift from what snap does.

use std::process::Command;

fn example_script() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let at = readme
        .find("### Example: an app upgrade, end to end")
        .expect("README has the example");
    let rest = &readme[at..];
    let start = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + rest[start..].find("\n```\n").expect("the block ends");
    rest[start..end].to_string()
}

#[test]
fn the_readme_upgrade_example_runs_as_written() {
    let script = example_script();
    let bin = assert_cmd::cargo::cargo_bin("snap");
    let lines: Vec<String> = script
        .lines()
        .map(|l| {
            if l.starts_with("S=\"cargo run") {
                format!("S={}", bin.display())
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with("S=/")),
        "README's S= line changed"
    );
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(lines.join("\n"))
        .env("HOME", home.path())
        .env_remove("SNAP_REPO")
        .env_remove("SNAP_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .current_dir(home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the example failed:\n{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("error"), "{stderr}");
    // `echo $?` after the failing guard prints 7, as README says.
    assert!(stdout.lines().any(|l| l.trim() == "7"), "{stdout}");
    // The dry run and the diff name what the failed migration had changed.
    assert!(stdout.contains("db/notes.db"), "{stdout}");
    assert!(stdout.contains("M  docs/todo.txt"), "{stdout}");
    // gc applies snap.toml's keep_last = 2 (the safety snapshot counted apart).
    assert!(stdout.contains("removed snapshot "), "{stdout}");
    // After the second guard: migrated.
    let demo = home.path().join("notes-demo");
    assert_eq!(
        std::fs::read_to_string(demo.join("docs/todo.txt")).unwrap(),
        "rewritten by 2.0\n"
    );
    let c = rusqlite::Connection::open(demo.join("db/notes.db")).unwrap();
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 2);
    let list = Command::new(&bin)
        .args(["--config", "snap.toml", "list", "--json"])
        .current_dir(&demo)
        .env("HOME", home.path())
        .output()
        .unwrap();
    let snaps: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let tagged = |t: &str| {
        snaps
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["tags"].as_array().unwrap().iter().any(|x| x == t))
    };
    assert!(
        tagged("migration-kept") && tagged("rolled-back") && tagged("pre-restore"),
        "{snaps}"
    );
}
