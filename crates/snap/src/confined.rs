//! Filesystem changes confined below a directory handle.
//!
//! An in-place restore runs inside a live directory, maybe as root, while
//! other processes may change it. So every write, delete and metadata change
//! goes through a handle of the directory that holds the entry, reached from
//! the restore root's handle one component at a time with `O_NOFOLLOW |
//! O_DIRECTORY`, and acts on a name in that directory with the `*at` calls
//! that do not follow a symlink in the last component. A symlink swapped in
//! anywhere below the root makes a step fail; it can never redirect it
//! outside the root. (A directory already opened can still be *moved*
//! elsewhere by someone with write access to both places: that needs access
//! outside the root, which is not ours to defend.)

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps};

/// An open directory, shared by the threads that write into it.
pub type DirFd = Arc<OwnedFd>;

/// Flags for walking down: never a symlink, always a directory. On Linux an
/// `O_PATH` handle needs no read permission on the directory.
#[cfg(any(target_os = "linux", target_os = "android"))]
const WALK: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const WALK: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Handles kept open at once; beyond that the cache starts over.
const CACHE_MAX: usize = 1024;

/// A directory tree that changes are confined to.
pub struct Confined {
    root_path: PathBuf,
    root: DirFd,
    cache: HashMap<PathBuf, DirFd>,
}

impl Confined {
    /// Open the root. Its own path is trusted (the caller vetted it: a
    /// `--target` the user named, or a source checked not to be a symlink).
    pub fn open(root: &Path) -> io::Result<Confined> {
        let fd = rfs::openat(
            rfs::CWD,
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Confined {
            root_path: root.to_path_buf(),
            root: Arc::new(fd),
            cache: HashMap::new(),
        })
    }

    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// The root's own handle (opened for reading, so `fchmod`, `futimens`
    /// and `syncfs` work on it).
    pub fn root(&self) -> &DirFd {
        &self.root
    }

    /// The handle of directory `rel` ("" is the root).
    pub fn dir(&mut self, rel: &Path) -> io::Result<DirFd> {
        if rel.as_os_str().is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(fd) = self.cache.get(rel) {
            return Ok(fd.clone());
        }
        let (parent, name) = split(rel)?;
        let pfd = self.dir(parent)?;
        let fd = Arc::new(rfs::openat(&*pfd, name, WALK, Mode::empty())?);
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(rel.to_path_buf(), fd.clone());
        Ok(fd)
    }

    /// The handle of the directory holding `rel`, and `rel`'s name in it.
    pub fn parent<'a>(&mut self, rel: &'a Path) -> io::Result<(DirFd, &'a OsStr)> {
        let (parent, name) = split(rel)?;
        Ok((self.dir(parent)?, name))
    }

    /// Forget handles at or below `rel`: it was deleted or replaced.
    pub fn forget(&mut self, rel: &Path) {
        self.cache.retain(|k, _| !k.starts_with(rel));
    }
}

/// Split a relative path of plain names into its parent and last name.
fn split(rel: &Path) -> io::Result<(&Path, &OsStr)> {
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path inside the restore target is not a plain relative path",
        ));
    }
    match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => Ok((p, n)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty path inside the restore target",
        )),
    }
}

fn errno(e: rustix::io::Errno) -> io::Error {
    e.into()
}

pub fn lstat(dir: &OwnedFd, name: &OsStr) -> io::Result<Stat> {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)
}

pub fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode as _) == FileType::Directory
}

pub fn mkdir(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    rfs::mkdirat(dir, name, Mode::from_raw_mode(mode as _)).map_err(errno)
}

pub fn unlink(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    rfs::unlinkat(dir, name, AtFlags::empty()).map_err(errno)
}

pub fn rename(dir: &OwnedFd, from: &OsStr, to_dir: &OwnedFd, to: &OsStr) -> io::Result<()> {
    rfs::renameat(dir, from, to_dir, to).map_err(errno)
}

pub fn symlink(target: &OsStr, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    rfs::symlinkat(target, dir, name).map_err(errno)
}

/// A hard link `dir/name` to `from_dir/from` (a symlink there is linked
/// itself, never followed).
pub fn hard_link(from_dir: &OwnedFd, from: &OsStr, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    rfs::linkat(from_dir, from, dir, name, AtFlags::empty()).map_err(errno)
}

/// A FIFO, socket or device node.
pub fn mknod(dir: &OwnedFd, name: &OsStr, kind: FileType, mode: u32, rdev: u64) -> io::Result<()> {
    #[cfg(not(any(target_os = "macos", target_os = "ios")))]
    {
        rfs::mknodat(dir, name, kind, Mode::from_raw_mode(mode as _), rdev as _).map_err(errno)
    }
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    {
        let _ = rdev;
        match kind {
            FileType::Fifo => {
                rfs::mkfifoat(dir, name, Mode::from_raw_mode(mode as _)).map_err(errno)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "special files other than FIFOs are not restored on this platform",
            )),
        }
    }
}

/// An owner to set. (uid_t)-1 means "leave unchanged" to chown(2) and is
/// no one's id: from a repository it is damage, refused here.
fn owner(uid: u32, gid: u32) -> io::Result<(rfs::Uid, rfs::Gid)> {
    if uid == u32::MAX || gid == u32::MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("owner {uid}:{gid} is not a valid user and group"),
        ));
    }
    Ok((rfs::Uid::from_raw(uid), rfs::Gid::from_raw(gid)))
}

/// Owner of `dir/name`, never through a symlink.
pub fn chown(dir: &OwnedFd, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let (u, g) = owner(uid, gid)?;
    rfs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW).map_err(errno)
}

fn timestamps(mtime_ns: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000) as _,
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Access and modification time of `dir/name`, never through a symlink.
pub fn set_mtime(dir: &OwnedFd, name: &OsStr, mtime_ns: i64) -> io::Result<()> {
    rfs::utimensat(dir, name, &timestamps(mtime_ns), AtFlags::SYMLINK_NOFOLLOW).map_err(errno)
}

/// Mode of `dir/name`, never through a symlink (a symlink is an error).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn chmod(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let c = std::ffi::CString::new(name.as_bytes())?;
    // fchmodat2 (Linux 6.6) is the one call that honours AT_SYMLINK_NOFOLLOW.
    const SYS_FCHMODAT2: libc::c_long = 452;
    // SAFETY: a valid descriptor and NUL-terminated name; plain integers otherwise.
    let rc = unsafe {
        libc::syscall(
            SYS_FCHMODAT2,
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::c_uint,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // Older kernels: pin the entry itself with O_PATH, check it is no
    // symlink, and change it through its /proc handle (the way systemd does).
    let (fd, st) = pin(dir, name)?;
    if FileType::from_raw_mode(st.st_mode as _) == FileType::Symlink {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rfs::chmod(proc.as_str(), Mode::from_raw_mode(mode as _)).map_err(errno)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn chmod(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    rfs::chmodat(
        dir,
        name,
        Mode::from_raw_mode(mode as _),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(errno)
}

/// `dir/name` itself, never through a symlink: an `O_PATH` handle that
/// keeps naming this inode whatever happens to the name, and its stat.
fn pin(dir: &OwnedFd, name: &OsStr) -> io::Result<(OwnedFd, Stat)> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rfs::fstat(&fd)?;
    Ok((fd, st))
}

/// Owner, mode and times of `dir/name`, set only on the inode `seen`
/// (device, inode) that the plan looked at: the entry is pinned with
/// `O_PATH|O_NOFOLLOW`, compared, and changed through that handle, so a
/// name swapped since (a symlink, another user's file linked in its
/// place) is never changed. `lone`: a regular file must have one name
/// (root's restore must not chown a file someone linked here).
pub fn set_meta_seen(
    dir: &OwnedFd,
    name: &OsStr,
    seen: (u64, u64),
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
    mtime_ns: i64,
    lone: bool,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (fd, st) = pin(dir, name)?;
    if (st.st_dev, st.st_ino) != seen {
        return Err(io::Error::other(
            "it is not the entry the plan saw (replaced since): left as it is",
        ));
    }
    let kind = FileType::from_raw_mode(st.st_mode as _);
    if lone && kind == FileType::RegularFile && st.st_nlink > 1 {
        return Err(io::Error::other(format!(
            "it has {} names now, not one: its owner and mode are left as they are",
            st.st_nlink
        )));
    }
    if let Some((uid, gid)) = owner {
        let (u, g) = self::owner(uid, gid)?;
        rfs::chownat(&fd, "", Some(u), Some(g), AtFlags::EMPTY_PATH).map_err(errno)?;
    }
    if kind == FileType::Symlink {
        // A symlink has no mode of its own; its times, by name.
        return set_mtime(dir, name, mtime_ns);
    }
    // The /proc handle resolves to the pinned inode itself.
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    if let Some(mode) = mode {
        rfs::chmod(proc.as_str(), Mode::from_raw_mode(mode as _)).map_err(errno)?;
    }
    rfs::utimensat(
        rfs::CWD,
        proc.as_str(),
        &timestamps(mtime_ns),
        AtFlags::empty(),
    )
    .map_err(errno)
}

/// Owner, mode and times of an open file or directory.
pub fn set_meta_fd(
    fd: impl AsFd,
    owner: Option<(u32, u32)>,
    mode: u32,
    mtime_ns: i64,
) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        let (u, g) = self::owner(uid, gid)?;
        rfs::fchown(&fd, Some(u), Some(g))?;
    }
    rfs::fchmod(&fd, Mode::from_raw_mode(mode as _))?;
    rfs::futimens(&fd, &timestamps(mtime_ns)).map_err(errno)
}

/// Flush the filesystem that holds `fd` (one barrier for many files).
pub fn sync_filesystem(fd: impl AsFd) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        rfs::syncfs(fd).map_err(errno)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        // Without syncfs, files are fsynced one by one as they are written;
        // this flushes the directory the handle names.
        rfs::fsync(fd).map_err(errno)
    }
}

/// A temporary file in a directory handle, removed on drop unless renamed.
pub struct TempFile {
    dir: DirFd,
    name: OsString,
    armed: bool,
}

impl TempFile {
    /// A new file `<prefix><random>` in `dir`, mode 0600, never a symlink.
    pub fn create(dir: &DirFd, prefix: &str) -> io::Result<(TempFile, File)> {
        loop {
            let name = OsString::from(format!("{prefix}{:016x}", rand::random::<u64>()));
            match rfs::openat(
                &**dir,
                name.as_os_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => {
                    let t = TempFile {
                        dir: dir.clone(),
                        name,
                        armed: true,
                    };
                    return Ok((t, File::from(fd)));
                }
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Rename over `name` in the same directory.
    pub fn persist(mut self, name: &OsStr) -> io::Result<()> {
        rename(&self.dir, &self.name, &self.dir, name)?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = unlink(&self.dir, &self.name);
        }
    }
}

/// The mount an entry is on, never through a symlink: statx's mount id
/// (Linux 5.8), which tells a bind mount of a directory of the same
/// filesystem apart from its parent where `st_dev` cannot; the device
/// where the kernel gives no mount id. `name` empty: `dir` itself.
pub fn mount_id(dir: impl AsFd, name: &OsStr) -> io::Result<u64> {
    use rustix::fs::{StatxFlags, statx};
    let mut flags = AtFlags::SYMLINK_NOFOLLOW;
    if name.is_empty() {
        flags |= AtFlags::EMPTY_PATH;
    }
    let st = statx(
        dir,
        name,
        flags,
        StatxFlags::MNT_ID | StatxFlags::BASIC_STATS,
    )?;
    if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
        Ok(st.stx_mnt_id)
    } else {
        // A kernel without mount ids: the device, marked apart.
        Ok((1 << 63) | (u64::from(st.stx_dev_major) << 32) | u64::from(st.stx_dev_minor))
    }
}

/// [`mount_id`] of a path (for the plan, which works with paths).
pub fn mount_id_of(path: &Path) -> io::Result<u64> {
    mount_id(rfs::CWD, path.as_os_str())
}

/// Why a deletion stopped short.
#[derive(Debug)]
pub enum RemoveError {
    Io(PathBuf, io::Error),
    /// A directory below is another filesystem (a mount point) or is
    /// protected (the repository or one of its parents): left in place.
    Refused(PathBuf, &'static str),
}

/// Delete `name` in `dir`: a directory with everything below it. Never
/// follows a symlink, never descends into another filesystem, never enters
/// a directory that `protect` names (by device and inode); those stop the
/// deletion with what remains left in place. `path` is for messages.
pub fn remove_all(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    protect: &dyn Fn(u64, u64) -> bool,
) -> Result<(), RemoveError> {
    let io_err = |p: &Path, e: io::Error| RemoveError::Io(p.to_path_buf(), e);
    let st = lstat(dir, name).map_err(|e| io_err(path, e))?;
    if !is_dir(&st) {
        return unlink(dir, name).map_err(|e| io_err(path, e));
    }
    let dev = st.st_dev as u64;
    // A bind mount of the same filesystem has the parent's device: compare
    // mount ids too.
    let mount = mount_id(dir, OsStr::new("")).map_err(|e| io_err(path, e))?;
    // One level per open directory: its handle, the names left to remove,
    // its own name in the level above, and its path.
    struct Level {
        fd: OwnedFd,
        names: Vec<OsString>,
        name: OsString,
        path: PathBuf,
    }
    let open_level = |parent: &OwnedFd, name: &OsStr, path: &Path| -> Result<Level, RemoveError> {
        let st = lstat(parent, name).map_err(|e| io_err(path, e))?;
        if st.st_dev as u64 != dev {
            return Err(RemoveError::Refused(
                path.to_path_buf(),
                "another filesystem is mounted there",
            ));
        }
        if protect(st.st_dev as u64, st.st_ino as u64) {
            return Err(RemoveError::Refused(
                path.to_path_buf(),
                "it holds the repository",
            ));
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rfs::openat(parent, name, flags, Mode::empty()) {
            Err(rustix::io::Errno::ACCESS) => {
                // Our own unreadable directory: let us in, then open.
                chmod(parent, name, 0o700).map_err(|e| io_err(path, e))?;
                rfs::openat(parent, name, flags, Mode::empty())
            }
            r => r,
        }
        .map_err(|e| io_err(path, e.into()))?;
        if mount_id(&fd, OsStr::new("")).map_err(|e| io_err(path, e))? != mount {
            return Err(RemoveError::Refused(
                path.to_path_buf(),
                "another filesystem is mounted there",
            ));
        }
        let st = rfs::fstat(&fd).map_err(|e| io_err(path, e.into()))?;
        if st.st_mode & 0o300 != 0o300 {
            rfs::fchmod(&fd, Mode::from_raw_mode((st.st_mode & 0o7777 | 0o700) as _))
                .map_err(|e| io_err(path, e.into()))?;
        }
        let mut names = Vec::new();
        for de in rfs::Dir::read_from(&fd).map_err(|e| io_err(path, e.into()))? {
            let de = de.map_err(|e| io_err(path, e.into()))?;
            let n = de.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsString::from_vec(n.to_vec()));
            }
        }
        Ok(Level {
            fd,
            names,
            name: name.to_os_string(),
            path: path.to_path_buf(),
        })
    };
    let mut stack = vec![open_level(dir, name, path)?];
    while let Some(top) = stack.last_mut() {
        match top.names.pop() {
            Some(n) => {
                let child = top.path.join(&n);
                let st = lstat(&top.fd, &n).map_err(|e| io_err(&child, e))?;
                if is_dir(&st) {
                    let level = open_level(&top.fd, &n, &child)?;
                    stack.push(level);
                } else {
                    unlink(&top.fd, &n).map_err(|e| io_err(&child, e))?;
                }
            }
            None => {
                let done = stack.pop().expect("the loop holds a level");
                let parent = stack.last().map_or(dir, |l| &l.fd);
                rfs::unlinkat(parent, done.name.as_os_str(), AtFlags::REMOVEDIR)
                    .map_err(|e| io_err(&done.path, e.into()))?;
            }
        }
    }
    Ok(())
}
