//! Extended attributes: which are kept, and reading and setting them
//! without following symlinks.
//!
//! Kept: `user.*`, `security.*`, `trusted.*` (only root can read and set
//! the last two, SELinux labels and capabilities among them) and the POSIX
//! ACLs, `system.posix_acl_access` and `system.posix_acl_default`. Other
//! `system.*` names are views of inode state the kernel computes, not data.
//!
//! Change detection needs nothing more: setting or removing an attribute
//! changes the inode's ctime, which create already compares.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

pub use crate::tree::Xattrs;
use crate::tree::{XATTR_NAME_MAX, XATTR_VALUE_MAX};

/// Is the attribute `name` part of what a snapshot keeps?
pub fn is_kept(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name.starts_with(b"security.")
        || name.starts_with(b"trusted.")
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

/// May a restore running as this user set or remove `name`?
pub fn is_settable(name: &[u8], is_root: bool) -> bool {
    is_kept(name) && (is_root || name.starts_with(b"user.") || name.starts_with(b"system."))
}

/// Where the attributes are: a path (never following its last component)
/// or an open file.
#[derive(Clone, Copy)]
pub enum At<'a> {
    Path(&'a Path),
    Fd(BorrowedFd<'a>),
}

fn list(at: At) -> io::Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 1024];
    loop {
        let r = match at {
            At::Path(p) => rustix::fs::llistxattr(p, &mut buf[..]),
            At::Fd(fd) => rustix::fs::flistxattr(fd, &mut buf[..]),
        };
        match r {
            Ok(n) => {
                return Ok(buf[..n]
                    .split(|&b| b == 0)
                    .filter(|n| !n.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            // Filesystems without xattrs (and special files on some).
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
}

fn get(at: At, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        let r = match at {
            At::Path(p) => rustix::fs::lgetxattr(p, name, &mut buf[..]),
            At::Fd(fd) => rustix::fs::fgetxattr(fd, name, &mut buf[..]),
        };
        match r {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < XATTR_VALUE_MAX => {
                buf.resize(XATTR_VALUE_MAX, 0)
            }
            // Removed between list and get.
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The kept attributes, sorted by name.
pub fn read(at: At) -> io::Result<Xattrs> {
    let mut out = Vec::new();
    for name in list(at)? {
        if !is_kept(&name) || name.len() > XATTR_NAME_MAX {
            continue;
        }
        if let Some(v) = get(at, &name)? {
            out.push((name, v));
        }
    }
    out.sort();
    Ok(out)
}

/// Make the kept, settable attributes at `at` exactly `want`: set what
/// differs, remove what `want` lacks. Returns what could not be set.
pub fn apply(at: At, want: &Xattrs, is_root: bool) -> io::Result<Vec<String>> {
    let have = read(at)?;
    let mut refused = Vec::new();
    for (name, _) in &have {
        if is_settable(name, is_root) && !want.iter().any(|(n, _)| n == name) {
            let r = match at {
                At::Path(p) => rustix::fs::lremovexattr(p, name.as_slice()),
                At::Fd(fd) => rustix::fs::fremovexattr(fd, name.as_slice()),
            };
            if let Err(e) = r {
                refused.push(format!("remove {}: {e}", String::from_utf8_lossy(name)));
            }
        }
    }
    for (name, value) in want {
        if have.iter().any(|(n, v)| n == name && v == value) {
            continue;
        }
        if !is_settable(name, is_root) {
            refused.push(format!("{}: needs root", String::from_utf8_lossy(name)));
            continue;
        }
        let flags = rustix::fs::XattrFlags::empty();
        let r = match at {
            At::Path(p) => rustix::fs::lsetxattr(p, name.as_slice(), value, flags),
            At::Fd(fd) => rustix::fs::fsetxattr(fd, name.as_slice(), value, flags),
        };
        if let Err(e) = r {
            refused.push(format!("{}: {e}", String::from_utf8_lossy(name)));
        }
    }
    Ok(refused)
}

/// Do the attributes at `at` differ from `want` in anything a restore by
/// this user would change?
pub fn differs(at: At, want: &Xattrs, is_root: bool) -> bool {
    match read(at) {
        Ok(have) => {
            let mine = |x: &Xattrs| -> Xattrs {
                x.iter()
                    .filter(|(n, _)| is_settable(n, is_root))
                    .cloned()
                    .collect()
            };
            mine(&have) != mine(want)
        }
        Err(_) => !want.is_empty(),
    }
}
