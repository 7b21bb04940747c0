//! What a new user tripped over (each a finding of a run of README from a
//! fresh clone): the printed undo command works as printed, every ID
//! argument documents its grammar, messages say what to type, `ls` keeps
//! stderr for warnings, `tag --remove` of a missing tag warns, `dump ID /`
//! is the whole snapshot, README lists every completion shell.

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::common::*;

fn stdout_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).to_string()
}

fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).to_string()
}

/// The words of a shell command line, as bash splits them.
fn shell_words(line: &str) -> Vec<String> {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("printf '%s\\0' {line}"))
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .collect()
}

/// Finding 1: `restore ID --target DIR` into a non-empty directory (owned
/// by another user, as in the report) prints an undo command that, run as
/// printed, puts DIR back as it was.
#[test]
fn the_printed_undo_command_works_as_printed() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), "from the snapshot\n");
    let id = env.create_id(&src);
    let target = env.path("out dir/t2");
    write(&target.join("a.txt"), "mine before\n");
    write(&target.join("b.txt"), "only mine\n");
    if is_root() {
        for p in [&target, &target.join("a.txt"), &target.join("b.txt")] {
            std::os::unix::fs::chown(p, Some(1000), Some(1000)).unwrap();
        }
    }
    let before = listing(&target);
    let out = env
        .snap()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .assert()
        .success();
    let text = stdout_of(&out);
    let undo = text
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no undo command in {text}"));
    assert!(undo.starts_with("snap restore "), "{undo}");
    assert_eq!(
        fs::read_to_string(target.join("a.txt")).unwrap(),
        "from the snapshot\n"
    );
    assert!(!target.join("b.txt").exists());
    let words = shell_words(&undo["snap ".len()..]);
    env.snap().args(&words).assert().success();
    assert_eq!(
        listing(&target),
        before,
        "the undo did not put the directory back"
    );
    if is_root() {
        assert_eq!(fs::metadata(target.join("b.txt")).unwrap().uid(), 1000);
    }
}

/// Finding 2: a guard without a source says how to name one.
#[test]
fn a_guard_without_a_source_says_how_to_name_one() {
    let env = Env::new();
    let out = env.snap().args(["guard", "--", "true"]).assert().failure();
    let err = stderr_of(&out);
    assert!(err.contains("--source DIR"), "{err}");
}

/// Finding 4: every command that takes a snapshot documents the whole
/// grammar of a snapshot id.
#[test]
fn every_snapshot_argument_documents_the_id_grammar() {
    let env = Env::new();
    for cmd in [
        "ls", "restore", "pin", "unpin", "forget", "stats", "dump", "tag", "diff",
    ] {
        let out = env.snap().args([cmd, "--help"]).assert().success();
        let help = stdout_of(&out);
        for part in ["latest", "tag:NAME", "~N"] {
            assert!(
                help.contains(part),
                "`snap {cmd} --help` lacks {part}:\n{help}"
            );
        }
    }
}

/// Findings 6 and 9: `ls` writes nothing on stderr; removing a tag the
/// snapshot lacks warns; `dump ID /` is `dump ID .`.
#[test]
fn ls_tag_and_dump_do_what_they_say() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("docs/a.txt"), "alpha\n");
    let out = env
        .snap()
        .args(["create", "--json", "--label", "app=notes"])
        .arg(&src)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let ls = env.snap().args(["ls", &id]).assert().success();
    assert_eq!(stderr_of(&ls), "");
    assert!(stdout_of(&ls).contains("docs"));

    let tag = env
        .snap()
        .args(["tag", &id, "--remove", "notthere"])
        .assert()
        .success();
    assert!(
        stderr_of(&tag).contains("no tag notthere"),
        "{}",
        stderr_of(&tag)
    );

    let dot = env.snap().args(["dump", &id, "."]).assert().success();
    let slash = env.snap().args(["dump", &id, "/"]).assert().success();
    assert!(!dot.get_output().stdout.is_empty());
    assert_eq!(dot.get_output().stdout, slash.get_output().stdout);
    let file = env
        .snap()
        .args(["dump", &id, "/docs/a.txt"])
        .assert()
        .success();
    assert_eq!(file.get_output().stdout, b"alpha\n");
}

/// Finding 9: README names every shell `snap completions` takes.
#[test]
fn readme_lists_every_completion_shell() {
    let env = Env::new();
    let help = stdout_of(
        &env.snap()
            .args(["completions", "--help"])
            .assert()
            .success(),
    );
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("snap completions "))
        .expect("README's usage line for completions");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        assert!(help.contains(shell), "{help}");
        assert!(line.contains(shell), "README lacks {shell}: {line}");
    }
}

/// Finding 8: at a terminal, a `--target` restore that would delete what
/// the snapshot lacks says so and asks; `n` changes nothing (exit 6),
/// `--yes` does not ask. (`script` gives the command a terminal.)
#[test]
fn a_target_restore_that_deletes_asks_at_a_terminal() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), "from the snapshot\n");
    let id = env.create_id(&src);
    let target = env.path("t");
    write(&target.join("extra.txt"), "only here\n");
    let before = listing(&target);
    let bin = assert_cmd::cargo::cargo_bin("snap");
    let line = format!(
        "{} restore {id} --target {}",
        bin.display(),
        target.display()
    );
    let run = |answer: &str, line: &str| {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", line, "/dev/null"]);
        // The environment every snap of this test gets.
        for (k, v) in env.snap_process().get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("script(1), from util-linux");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, text) = run("n\n", &line);
    assert!(
        text.contains("deletes 1 entry the snapshot lacks"),
        "{text}"
    );
    assert!(text.contains("go on? [y/N]"), "{text}");
    assert_eq!(code, Some(6), "{text}");
    assert_eq!(
        listing(&target),
        before,
        "a refused restore changed the target"
    );
    let (code, text) = run("", &format!("{line} --yes"));
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("go on?"), "{text}");
    assert!(!target.join("extra.txt").exists());
    assert!(target.join("a.txt").exists());
}

/// Finding 3: `snap man --dir DIR` writes every page the top page refers
/// to, each with EXIT STATUS (7: rolled back) and ENVIRONMENT; `man`
/// renders them.
#[test]
fn every_man_page_is_written_with_exit_status_and_environment() {
    let env = Env::new();
    let dir = env.path("man1");
    env.snap()
        .args(["man", "--dir"])
        .arg(&dir)
        .assert()
        .success();
    let top = fs::read_to_string(dir.join("snap.1")).unwrap();
    let mut referred = std::collections::BTreeSet::new();
    for (i, _) in top.match_indices("snap\\-") {
        let name: String = top[i + 6..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase())
            .collect();
        referred.insert(name);
    }
    assert!(referred.len() >= 19, "{referred:?}");
    for name in &referred {
        let page = dir.join(format!("snap-{name}.1"));
        let text = fs::read_to_string(&page)
            .unwrap_or_else(|_| panic!("snap.1 refers to snap-{name}(1), not written"));
        for part in [
            ".SH \"EXIT STATUS\"",
            "rolled back exactly",
            ".SH \"ENVIRONMENT\"",
            "SNAP_REPO",
        ] {
            assert!(text.contains(part), "snap-{name}.1 lacks {part}");
        }
    }
    let rendered = std::process::Command::new("man")
        .arg("-l")
        .arg(dir.join("snap-restore.1"))
        .env("MANWIDTH", "80")
        .output();
    if let Ok(out) = rendered {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("EXIT STATUS") && text.contains("ENVIRONMENT"),
            "{text}"
        );
    }
}
