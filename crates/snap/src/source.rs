//! Reading the source: metadata of entries and the file system facts the
//! snapshot records.

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use crate::tree::{Entry, Kind, Payload};

/// The parts of `stat` a snapshot records, from `std::fs::Metadata` or
/// from `fstatat`.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub rdev: u64,
}

impl From<&Metadata> for Stat {
    fn from(md: &Metadata) -> Stat {
        Stat {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            dev: md.dev(),
            ino: md.ino(),
            nlink: md.nlink(),
            rdev: md.rdev(),
        }
    }
}

impl Stat {
    pub fn kind(&self) -> Kind {
        match self.mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => Kind::File,
        }
    }
}

/// `lstat` of `name` inside the open directory `dir`: the kernel resolves
/// one component instead of walking the whole path for every entry.
pub fn lstat_at(dir: &File, name: &[u8]) -> io::Result<Stat> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, and a stat buffer we own.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Stat {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
        ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec,
        dev: st.st_dev,
        ino: st.st_ino,
        nlink: st.st_nlink,
        rdev: st.st_rdev,
    })
}

pub fn kind_of(md: &Metadata) -> Kind {
    Stat::from(md).kind()
}

/// An entry with the metadata of `md` and no payload yet.
pub fn entry_from_metadata(name: Vec<u8>, md: &Metadata) -> Entry {
    entry_from_stat(name, &Stat::from(md))
}

/// An entry with the metadata of `st` and no payload yet.
pub fn entry_from_stat(name: Vec<u8>, st: &Stat) -> Entry {
    let kind = st.kind();
    Entry {
        name,
        kind,
        flags: 0,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        mtime_ns: st.mtime_ns,
        ctime_ns: st.ctime_ns,
        size: if kind == Kind::File || kind == Kind::Symlink {
            st.size
        } else {
            0
        },
        dev: st.dev,
        ino: st.ino,
        nlink: st.nlink.min(u32::MAX as u64) as u32,
        payload: match kind {
            Kind::File => Payload::Chunks(Vec::new()),
            Kind::CharDev | Kind::BlockDev => Payload::Device(st.rdev),
            Kind::Symlink => Payload::Target(Vec::new()),
            Kind::Dir => Payload::Subtree(crate::id::TreeId([0; 32])),
            Kind::Fifo | Kind::Socket => Payload::None,
        },
        xattrs: Vec::new(),
    }
}

/// Does a file's current metadata say it is unchanged since `old` was taken?
/// Size, mtime, ctime, inode and mode must all match (ctime catches changes
/// that preserve mtime, such as `touch -r` or a restore).
pub fn unchanged(old: &Entry, new: &Entry) -> bool {
    use crate::tree::flags::{CHANGED_DURING_READ, RACY, UNREADABLE};
    old.kind == Kind::File
        && new.kind == Kind::File
        && old.flags & (UNREADABLE | CHANGED_DURING_READ | RACY) == 0
        && old.size == new.size
        && old.mtime_ns == new.mtime_ns
        && old.ctime_ns == new.ctime_ns
        && old.ino == new.ino
        && old.mode == new.mode
}
