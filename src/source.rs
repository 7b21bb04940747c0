//! Reading the source: metadata of entries and the file system facts the
//! snapshot records.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::tree::{Entry, Kind, Payload};

pub fn kind_of(md: &Metadata) -> Kind {
    let ft = md.file_type();
    if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_socket() {
        Kind::Socket
    } else if ft.is_char_device() {
        Kind::CharDev
    } else if ft.is_block_device() {
        Kind::BlockDev
    } else {
        Kind::File
    }
}

/// An entry with the metadata of `md` and no payload yet.
pub fn entry_from_metadata(name: Vec<u8>, md: &Metadata) -> Entry {
    let kind = kind_of(md);
    Entry {
        name,
        kind,
        flags: 0,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        size: if kind == Kind::File || kind == Kind::Symlink {
            md.size()
        } else {
            0
        },
        dev: md.dev(),
        ino: md.ino(),
        nlink: md.nlink().min(u32::MAX as u64) as u32,
        payload: match kind {
            Kind::File => Payload::Chunks(Vec::new()),
            Kind::CharDev | Kind::BlockDev => Payload::Device(md.rdev()),
            Kind::Symlink => Payload::Target(Vec::new()),
            Kind::Dir => Payload::Subtree(crate::id::TreeId([0; 32])),
            Kind::Fifo | Kind::Socket => Payload::None,
        },
    }
}

/// Does a file's current metadata say it is unchanged since `old` was taken?
/// Size, mtime, ctime, inode and mode must all match (ctime catches changes
/// that preserve mtime, such as `touch -r` or a restore).
pub fn unchanged(old: &Entry, new: &Entry) -> bool {
    old.kind == Kind::File
        && new.kind == Kind::File
        && old.flags
            & (crate::tree::flags::UNREADABLE
                | crate::tree::flags::CHANGED_DURING_READ
                | crate::tree::flags::RACY)
            == 0
        && old.size == new.size
        && old.mtime_ns == new.mtime_ns
        && old.ctime_ns == new.ctime_ns
        && old.ino == new.ino
        && old.mode == new.mode
}
