//! Trees: one per directory, a canonical sorted list of entries.
//!
//! Encoding (little-endian, docs/format.md is the reference):
//!
//! ```text
//! "SNAPTREE" | version u8 (=1) | count u32 | entries sorted by name bytes, unique
//! entry: name_len u16 | name | kind u8 | flags u8 | mode u32 | uid u32 | gid u32
//!        | mtime_ns i64 | ctime_ns i64 | size u64 | dev u64 | ino u64 | nlink u32
//!        | payload (by kind)
//! payload: file: n u32 | n chunk ids [32]   dir: tree id [32]
//!          symlink: len u16 | target bytes   chardev/blockdev: rdev u64   fifo/socket: none
//! then, only when flags has XATTRS (16):
//!        count u16 (>= 1) | count × (name_len u8 | name | value_len u32 | value), sorted by name, unique
//! ```
//!
//! An entry without extended attributes encodes exactly as before they
//! existed, so trees (and their ids) of such data never change.
//!
//! A tree's id is the BLAKE3 of this encoding, so an unchanged directory
//! encodes to the same id and costs nothing in a new snapshot.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::id::{ChunkId, TreeId};

const MAGIC: &[u8; 8] = b"SNAPTREE";
const VERSION: u8 = 1;
/// Longest name a tree accepts (Linux NAME_MAX is 255; leave room).
const NAME_MAX: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Kind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    Fifo = 4,
    Socket = 5,
    CharDev = 6,
    BlockDev = 7,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::File,
            2 => Kind::Dir,
            3 => Kind::Symlink,
            4 => Kind::Fifo,
            5 => Kind::Socket,
            6 => Kind::CharDev,
            7 => Kind::BlockDev,
            _ => return None,
        })
    }

    /// The `ls -l` type letter.
    pub fn letter(self) -> char {
        match self {
            Kind::File => '-',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
            Kind::CharDev => 'c',
            Kind::BlockDev => 'b',
        }
    }
}

/// Entry flags (bit values are part of the format).
pub mod flags {
    /// The file could not be read: no content was stored.
    pub const UNREADABLE: u8 = 1;
    /// The file changed while it was read; the content may mix versions.
    pub const CHANGED_DURING_READ: u8 = 2;
    /// Modified too close to snapshot time to trust its mtime next time.
    pub const RACY: u8 = 4;
    /// A SQLite database stored as a consistent online-backup image.
    pub const SQLITE_IMAGE: u8 = 8;
    /// Extended attributes follow the payload. Set by the encoder from
    /// `Entry::xattrs`; decoded entries do not carry it in `flags`.
    pub const XATTRS: u8 = 16;
    pub const ALL: u8 = UNREADABLE | CHANGED_DURING_READ | RACY | SQLITE_IMAGE | XATTRS;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    None,
    Chunks(Vec<ChunkId>),
    Subtree(TreeId),
    Target(Vec<u8>),
    Device(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: Kind,
    pub flags: u8,
    /// Permission bits including setuid/setgid/sticky (mode & 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    /// ctime, device and inode serve change detection and hardlink identity.
    pub ctime_ns: i64,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u32,
    pub payload: Payload,
    /// Extended attributes (name, value), sorted by name: see crate::xattr
    /// for which namespaces are kept.
    pub xattrs: Xattrs,
}

/// Extended attributes, (name, value) sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Bounds a decoder enforces (Linux's own: a name of at most 255 bytes, a
/// value of at most 64 KiB).
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_VALUE_MAX: usize = 65536;

impl Entry {
    pub fn name_os(&self) -> &OsStr {
        OsStr::from_bytes(&self.name)
    }

    pub fn chunks(&self) -> &[ChunkId] {
        match &self.payload {
            Payload::Chunks(c) => c,
            _ => &[],
        }
    }

    pub fn subtree(&self) -> Option<TreeId> {
        match self.payload {
            Payload::Subtree(t) => Some(t),
            _ => None,
        }
    }

    pub fn has_flag(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    /// Files with more than one link share content by (dev, ino).
    pub fn hardlink_key(&self) -> Option<(u64, u64)> {
        (self.kind == Kind::File && self.nlink > 1).then_some((self.dev, self.ino))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed tree: {0}")]
pub struct DecodeError(pub &'static str);

impl Tree {
    /// Sort entries into canonical order. Names must be unique.
    pub fn new(mut entries: Vec<Entry>) -> Tree {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Tree { entries }
    }

    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.entries.len() * 96);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            debug_assert!(e.name.len() <= NAME_MAX);
            out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            out.extend_from_slice(&e.name);
            out.push(e.kind as u8);
            let f = if e.xattrs.is_empty() {
                e.flags & !flags::XATTRS
            } else {
                e.flags | flags::XATTRS
            };
            out.push(f);
            for v in [e.mode, e.uid, e.gid] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&e.mtime_ns.to_le_bytes());
            out.extend_from_slice(&e.ctime_ns.to_le_bytes());
            for v in [e.size, e.dev, e.ino] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&e.nlink.to_le_bytes());
            match (&e.kind, &e.payload) {
                (Kind::File, Payload::Chunks(ids)) => {
                    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
                    for id in ids {
                        out.extend_from_slice(id.as_bytes());
                    }
                }
                (Kind::File, _) => out.extend_from_slice(&0u32.to_le_bytes()),
                (Kind::Dir, Payload::Subtree(t)) => out.extend_from_slice(t.as_bytes()),
                (Kind::Symlink, Payload::Target(t)) => {
                    // Linux caps symlink targets at PATH_MAX (4096 bytes).
                    debug_assert!(t.len() <= u16::MAX as usize);
                    out.extend_from_slice(&(t.len() as u16).to_le_bytes());
                    out.extend_from_slice(t);
                }
                (Kind::CharDev | Kind::BlockDev, Payload::Device(r)) => {
                    out.extend_from_slice(&r.to_le_bytes())
                }
                (Kind::Fifo | Kind::Socket, _) => {}
                _ => panic!(
                    "tree entry {:?} has a payload that does not fit its kind",
                    e.name_os()
                ),
            }
            if !e.xattrs.is_empty() {
                out.extend_from_slice(&(e.xattrs.len() as u16).to_le_bytes());
                for (k, v) in &e.xattrs {
                    debug_assert!(k.len() <= XATTR_NAME_MAX && v.len() <= XATTR_VALUE_MAX);
                    out.push(k.len() as u8);
                    out.extend_from_slice(k);
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    out.extend_from_slice(v);
                }
            }
        }
        out
    }

    /// The id of an encoding in a repository with plain ids (tests and
    /// the format's golden files); a repository's own is `Ids::tree`.
    pub fn id_of_encoding(encoded: &[u8]) -> TreeId {
        TreeId::of(encoded)
    }

    /// Decode, checking every length against the input, the canonical order,
    /// and that no unknown kind or flag appears. Never panics.
    pub fn decode(data: &[u8]) -> Result<Tree, DecodeError> {
        let mut r = Cursor { data, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(DecodeError("bad magic"));
        }
        if r.u8()? != VERSION {
            return Err(DecodeError("unknown version"));
        }
        let count = r.u32()? as usize;
        // Each entry takes at least 61 bytes: refuse counts the input cannot hold.
        if count > data.len() / 61 {
            return Err(DecodeError("entry count exceeds data"));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(count);
        for _ in 0..count {
            let name_len = r.u16()? as usize;
            if name_len == 0 || name_len > NAME_MAX {
                return Err(DecodeError("bad name length"));
            }
            let name = r.take(name_len)?.to_vec();
            if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
                return Err(DecodeError("invalid name"));
            }
            if let Some(prev) = entries.last()
                && prev.name >= name
            {
                return Err(DecodeError("entries not sorted or not unique"));
            }
            let kind = Kind::from_u8(r.u8()?).ok_or(DecodeError("unknown kind"))?;
            let flags = r.u8()?;
            if flags & !flags::ALL != 0 {
                return Err(DecodeError("unknown flag"));
            }
            let mode = r.u32()?;
            let uid = r.u32()?;
            let gid = r.u32()?;
            let mtime_ns = r.i64()?;
            let ctime_ns = r.i64()?;
            let size = r.u64()?;
            let dev = r.u64()?;
            let ino = r.u64()?;
            let nlink = r.u32()?;
            let payload = match kind {
                Kind::File => {
                    let n = r.u32()? as usize;
                    if n > (data.len() - r.pos) / 32 {
                        return Err(DecodeError("chunk count exceeds data"));
                    }
                    let mut ids = Vec::with_capacity(n);
                    for _ in 0..n {
                        ids.push(ChunkId::from_slice(r.take(32)?).unwrap());
                    }
                    Payload::Chunks(ids)
                }
                Kind::Dir => Payload::Subtree(TreeId::from_slice(r.take(32)?).unwrap()),
                Kind::Symlink => {
                    let n = r.u16()? as usize;
                    Payload::Target(r.take(n)?.to_vec())
                }
                Kind::CharDev | Kind::BlockDev => Payload::Device(r.u64()?),
                Kind::Fifo | Kind::Socket => Payload::None,
            };
            let xattrs = if flags & flags::XATTRS != 0 {
                decode_xattrs(&mut r)?
            } else {
                Vec::new()
            };
            let flags = flags & !flags::XATTRS;
            entries.push(Entry {
                name,
                kind,
                flags,
                mode,
                uid,
                gid,
                mtime_ns,
                ctime_ns,
                size,
                dev,
                ino,
                nlink,
                payload,
                xattrs,
            });
        }
        if r.pos != data.len() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(Tree { entries })
    }
}

fn decode_xattrs(r: &mut Cursor) -> Result<Xattrs, DecodeError> {
    let n = r.u16()? as usize;
    if n == 0 {
        return Err(DecodeError("xattr flag without xattrs"));
    }
    let mut out: Xattrs = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let klen = r.u8()? as usize;
        let k = r.take(klen)?.to_vec();
        if k.is_empty() || k.contains(&0) {
            return Err(DecodeError("bad xattr name"));
        }
        if out.last().is_some_and(|(prev, _)| *prev >= k) {
            return Err(DecodeError("xattrs not sorted or not unique"));
        }
        let vlen = r.u32()? as usize;
        if vlen > XATTR_VALUE_MAX {
            return Err(DecodeError("xattr value too long"));
        }
        out.push((k, r.take(vlen)?.to_vec()));
    }
    Ok(out)
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError("length overflow"))?;
        let s = self
            .data
            .get(self.pos..end)
            .ok_or(DecodeError("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn entry(name: &[u8], kind: Kind, payload: Payload) -> Entry {
        Entry {
            name: name.to_vec(),
            kind,
            flags: 0,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 1_700_000_000_123_456_789,
            size: 10,
            dev: 1,
            ino: 2,
            nlink: 1,
            payload,
            xattrs: Vec::new(),
        }
    }

    fn sample() -> Tree {
        Tree::new(vec![
            entry(
                b"z",
                Kind::File,
                Payload::Chunks(vec![ChunkId::of(b"a"), ChunkId::of(b"b")]),
            ),
            entry(
                b"\xff\xfe",
                Kind::Symlink,
                Payload::Target(b"../x".to_vec()),
            ),
            entry(b"dir", Kind::Dir, Payload::Subtree(TreeId::of(b"t"))),
            entry(b"fifo", Kind::Fifo, Payload::None),
            entry(b"null", Kind::CharDev, Payload::Device(0x0103)),
            Entry {
                xattrs: vec![
                    (b"security.selinux".to_vec(), b"label\0".to_vec()),
                    (b"user.mime".to_vec(), b"text/plain".to_vec()),
                ],
                ..entry(b"tagged", Kind::File, Payload::Chunks(vec![]))
            },
        ])
    }

    #[test]
    fn an_entry_without_xattrs_encodes_as_before_they_existed() {
        // Frozen: a FIFO entry's bytes, from before xattrs were added.
        let t = Tree::new(vec![entry(b"p", Kind::Fifo, Payload::None)]);
        let id = Tree::id_of_encoding(&t.encode());
        assert_eq!(
            id.to_hex(),
            TreeId::of(&t.encode()).to_hex(),
            "ids are the hash of the encoding"
        );
        assert_eq!(
            t.encode()[13..13 + 2 + 1 + 1 + 1],
            [1, 0, b'p', Kind::Fifo as u8, 0]
        );
        let mut x = t.clone();
        x.entries[0].xattrs = vec![(b"user.a".to_vec(), b"1".to_vec())];
        let enc = x.encode();
        assert_eq!(enc[17], flags::XATTRS);
        let back = Tree::decode(&enc).unwrap();
        assert_eq!(back, x);
        assert_eq!(back.entries[0].flags, 0);
    }

    #[test]
    fn round_trip_and_canonical_order() {
        let t = sample();
        let enc = t.encode();
        let back = Tree::decode(&enc).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.entries[0].name, b"dir");
        let mut shuffled = t.entries.clone();
        shuffled.reverse();
        assert_eq!(Tree::new(shuffled).encode(), enc, "encoding is canonical");
        assert!(back.get(b"fifo").is_some());
        assert!(back.get(b"nope").is_none());
    }

    #[test]
    fn every_truncation_and_byte_flip_is_an_error_or_valid() {
        let enc = sample().encode();
        for n in 0..enc.len() {
            assert!(Tree::decode(&enc[..n]).is_err(), "truncated at {n}");
        }
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x80;
            let _ = Tree::decode(&bad); // must not panic
        }
    }

    #[test]
    fn unsorted_input_is_refused() {
        let t = sample();
        let mut enc = Vec::new();
        enc.extend_from_slice(MAGIC);
        enc.push(VERSION);
        enc.extend_from_slice(&2u32.to_le_bytes());
        let one = |name: &[u8]| {
            Tree {
                entries: vec![entry(name, Kind::Fifo, Payload::None)],
            }
            .encode()[13..]
                .to_vec()
        };
        enc.extend(one(b"b"));
        enc.extend(one(b"a"));
        assert!(Tree::decode(&enc).is_err());
        drop(t);
    }
}
