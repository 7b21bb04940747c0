//! Extended attributes: stored, restored, reset in place, noticed through
//! ctime, and compared by diff. Read back here with libc directly (not
//! with snap's own reader).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::common::*;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set(p: &Path, name: &str, value: &[u8]) -> bool {
    let n = CString::new(name).unwrap();
    unsafe {
        libc::lsetxattr(
            c(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
}

fn remove(p: &Path, name: &str) {
    let n = CString::new(name).unwrap();
    assert_eq!(unsafe { libc::lremovexattr(c(p).as_ptr(), n.as_ptr()) }, 0);
}

/// Every attribute of `p` but SELinux's own label, by name.
fn all(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = unsafe { libc::llistxattr(c(p).as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
    {
        let name = String::from_utf8(name.to_vec()).unwrap();
        if name == "security.selinux" {
            continue;
        }
        let cn = CString::new(name.clone()).unwrap();
        let mut v = vec![0u8; 65536];
        let len =
            unsafe { libc::lgetxattr(c(p).as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(len >= 0);
        v.truncate(len as usize);
        out.insert(name, v);
    }
    out
}

/// A valid POSIX ACL (user::rwx, user:1000:r--, group::r--, mask::r--, other::---).
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 7u16, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn extended_attributes_round_trip_and_an_in_place_restore_resets_them() {
    let env = Env::new();
    let src = env.path("app");
    write(&src.join("doc.txt"), b"text");
    write(&src.join("plain.txt"), b"no attributes");
    fs::create_dir_all(src.join("dir")).unwrap();
    assert!(
        set(&src.join("doc.txt"), "user.mime", b"text/plain"),
        "this test needs user extended attributes on the temporary directory's filesystem"
    );
    assert!(set(&src.join("doc.txt"), "user.empty", b""));
    assert!(set(&src.join("doc.txt"), "user.bin", &[0, 1, 2, 255]));
    assert!(set(&src.join("dir"), "user.dir", b"on a directory"));
    let with_acl = set(&src.join("plain.txt"), "system.posix_acl_access", &acl());
    if is_root() {
        assert!(set(&src.join("doc.txt"), "trusted.app", b"root only"));
        assert!(set(&src.join("doc.txt"), "security.snap-test", b"label"));
    }
    let before: Vec<_> = ["doc.txt", "plain.txt", "dir"]
        .iter()
        .map(|n| all(&src.join(n)))
        .collect();
    if with_acl {
        assert!(before[1].contains_key("system.posix_acl_access"));
    } else {
        eprintln!("(POSIX ACLs not supported here; the ACL half is skipped)");
    }
    let id = env.create_id(&src);

    // Into a new directory: the same attributes, file and directory.
    let out = env.path("out");
    env.restore_to(&id, &out);
    let got: Vec<_> = ["doc.txt", "plain.txt", "dir"]
        .iter()
        .map(|n| all(&out.join(n)))
        .collect();
    assert_eq!(got, before);
    assert_same_tree(&src, &out);

    // Changed in place: a value, an added and a removed attribute. Only
    // ctime moves, and create notices it.
    assert!(set(
        &src.join("doc.txt"),
        "user.mime",
        b"application/x-changed"
    ));
    assert!(set(&src.join("plain.txt"), "user.added", b"new"));
    remove(&src.join("doc.txt"), "user.empty");
    let changed = env.create(&src);
    assert!(
        changed["stats"]["read_bytes"].as_u64().unwrap() > 0,
        "the xattr change was not noticed"
    );
    let changed_id = changed["id"].as_str().unwrap();
    let diff = String::from_utf8(
        env.snap()
            .args(["diff", &id, changed_id])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    )
    .unwrap();
    assert_eq!(diff, "m  doc.txt\nm  plain.txt\n");

    // An in-place restore puts back exactly the first set, by fixing
    // metadata only (two files and the directory), never rewriting.
    assert!(set(
        &src.join("dir"),
        "user.dir",
        b"changed on the directory"
    ));
    let out = env
        .snap()
        .args(["restore", &id, "--json"])
        .assert()
        .success();
    let st: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(
        (st["fixed_metadata"].as_u64(), st["written_files"].as_u64()),
        (Some(3), Some(0)),
        "{st}"
    );
    let back: Vec<_> = ["doc.txt", "plain.txt", "dir"]
        .iter()
        .map(|n| all(&src.join(n)))
        .collect();
    assert_eq!(back, before);
    // And then there is nothing left to do.
    env.snap().args(["restore", &id]).assert().code(6);
    assert_eq!(
        String::from_utf8(
            env.snap()
                .args(["diff", &id])
                .assert()
                .success()
                .get_output()
                .stdout
                .clone()
        )
        .unwrap(),
        ""
    );
}
