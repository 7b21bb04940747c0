//! Model-based property test: random sequences of changes to a tree,
//! snapshots, and in-place restores. Each restore must reproduce exactly the
//! plain copy (`cp -a`) taken when that snapshot was made.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use proptest::prelude::*;

use crate::common::*;

const FILES: &[&str] = &["f1", "f2", "a/f3", "a/b/f4", "c/f5", "c/d/f6"];
const DIRS: &[&str] = &["a", "a/b", "c", "c/d", "e"];

#[derive(Debug, Clone)]
enum Op {
    Write(usize, Vec<u8>),
    Append(usize, Vec<u8>),
    Truncate(usize, usize),
    Delete(usize),
    Rename(usize, usize),
    Chmod(usize, u32),
    Symlink(usize, usize),
    Mkdir(usize),
    Rmdir(usize),
    Snapshot,
    Restore(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let f = 0..FILES.len();
    let d = 0..DIRS.len();
    prop_oneof![
        3 => (f.clone(), prop::collection::vec(any::<u8>(), 0..3000)).prop_map(|(i, v)| Op::Write(i, v)),
        1 => (f.clone(), prop::collection::vec(any::<u8>(), 1..100)).prop_map(|(i, v)| Op::Append(i, v)),
        1 => (f.clone(), 0..2000usize).prop_map(|(i, n)| Op::Truncate(i, n)),
        1 => f.clone().prop_map(Op::Delete),
        1 => (f.clone(), f.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (f.clone(), prop::sample::select(vec![0o600u32, 0o644, 0o755, 0o400])).prop_map(|(i, m)| Op::Chmod(i, m)),
        1 => (f.clone(), f.clone()).prop_map(|(a, b)| Op::Symlink(a, b)),
        1 => d.clone().prop_map(Op::Mkdir),
        1 => d.prop_map(Op::Rmdir),
        2 => Just(Op::Snapshot),
        2 => (0..4usize).prop_map(Op::Restore),
    ]
}

fn apply(root: &Path, op: &Op) {
    let p = |rel: &str| root.join(rel);
    let parent = |rel: &str| {
        if let Some(d) = p(rel).parent() {
            let _ = fs::create_dir_all(d);
        }
    };
    // Errors are part of the game (a missing file, a name taken by a
    // directory): the model is whatever the file system ends up holding.
    match op {
        Op::Write(i, data) => {
            parent(FILES[*i]);
            let _ = fs::remove_file(p(FILES[*i]));
            let _ = fs::write(p(FILES[*i]), data);
        }
        Op::Append(i, data) => {
            use std::io::Write;
            if let Ok(mut f) = fs::OpenOptions::new().append(true).open(p(FILES[*i])) {
                let _ = f.write_all(data);
            }
        }
        Op::Truncate(i, n) => {
            if let Ok(f) = fs::OpenOptions::new().write(true).open(p(FILES[*i])) {
                let _ = f.set_len(*n as u64);
            }
        }
        Op::Delete(i) => {
            let _ = fs::remove_file(p(FILES[*i]));
        }
        Op::Rename(a, b) => {
            parent(FILES[*b]);
            let _ = fs::rename(p(FILES[*a]), p(FILES[*b]));
        }
        Op::Chmod(i, m) => {
            let _ = fs::set_permissions(p(FILES[*i]), fs::Permissions::from_mode(*m));
        }
        Op::Symlink(a, b) => {
            parent(FILES[*a]);
            let _ = fs::remove_file(p(FILES[*a]));
            let _ = std::os::unix::fs::symlink(FILES[*b], p(FILES[*a]));
        }
        Op::Mkdir(i) => {
            let _ = fs::create_dir_all(p(DIRS[*i]));
        }
        Op::Rmdir(i) => {
            let _ = fs::remove_dir_all(p(DIRS[*i]));
        }
        Op::Snapshot | Op::Restore(_) => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_changes_snapshots_and_restores_match_a_plain_copy(ops in prop::collection::vec(op(), 1..24)) {
        let env = Env::new();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        write(&src.join("f1"), b"seed");
        let mut snaps: Vec<(String, std::path::PathBuf)> = Vec::new();
        for op in &ops {
            match op {
                Op::Snapshot => {
                    let id = env.create_id(&src);
                    let copy = env.path(&format!("copy-{}", snaps.len()));
                    cp_a(&src, &copy);
                    snaps.push((id, copy));
                }
                Op::Restore(k) => {
                    if snaps.is_empty() {
                        continue;
                    }
                    let (id, copy) = &snaps[k % snaps.len()];
                    env.snap()
                        .args(["restore", id, "--no-safety-snapshot"])
                        .assert()
                        .code(DONE_OR_NOTHING_TO_DO);
                    assert_same_tree(copy, &src);
                }
                other => apply(&src, other),
            }
        }
        // Finally every snapshot restores exactly, in place, one after another.
        for (id, copy) in &snaps {
            env.snap()
                .args(["restore", id])
                .assert()
                .code(DONE_OR_NOTHING_TO_DO);
            assert_same_tree(copy, &src);
        }
    }
}
