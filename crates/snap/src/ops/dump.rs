//! `snap dump`: a file's bytes, or a directory as a tar stream, without a
//! restore. Every chunk is verified against its BLAKE3 id as it is read.
//!
//! The tar stream (POSIX ustar with PAX extensions, written by the `tar`
//! crate) holds modes, owners, mtimes with nanoseconds (PAX `mtime`),
//! symlinks, hard links (a later name of an inode is a link to the first),
//! FIFOs and device nodes; sockets cannot be stored in tar and are left out
//! with a warning. Paths are relative to the dumped directory.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::{ChunkId, TreeId};
use crate::ops::ls::walk;
use crate::repo::{ChunkReader, Repository};
use crate::tree::{Entry, Kind, Payload};

/// Write the content of file entry `e` to `out`.
pub fn dump_file(repo: &Repository, e: &Entry, out: &mut dyn Write) -> Result<u64> {
    let mut r = FileReader::new(repo, e.chunks());
    let n = io::copy(&mut r, out).map_err(|err| r.take_error().unwrap_or_else(|| pipe(err)))?;
    if n != e.size {
        return Err(Error::Damaged {
            path: repo.index_path(),
            reason: format!("the file lists {} bytes but its chunks hold {n}", e.size),
        });
    }
    Ok(n)
}

/// The first `n` bytes of file entry `e` (fewer when it is shorter): its
/// first chunks only.
pub fn read_head(repo: &Repository, e: &Entry, n: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut r = FileReader::new(repo, e.chunks());
    let mut buf = Vec::with_capacity(n);
    (&mut r)
        .take(n as u64)
        .read_to_end(&mut buf)
        .map_err(|err| r.take_error().unwrap_or_else(|| pipe(err)))?;
    Ok(buf)
}

fn pipe(e: io::Error) -> Error {
    Error::io("stdout", e)
}

/// Write the tree `root` as a tar stream; returns the names of entries
/// tar cannot hold (sockets), which were left out.
pub fn dump_tar(repo: &Repository, root: &TreeId, out: &mut dyn Write) -> Result<Vec<PathBuf>> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    let mut first_name: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut skipped = Vec::new();
    walk(repo, root, Path::new(""), &mut |p, e| {
        if e.kind == Kind::Socket {
            skipped.push(p.to_path_buf());
            return Ok(());
        }
        let mut h = header_of(e);
        append_mtime(&mut b, e)?;
        let linked = e.hardlink_key().and_then(|k| match first_name.get(&k) {
            Some(first) => Some(first.clone()),
            None => {
                first_name.insert(k, p.to_path_buf());
                None
            }
        });
        let r = match (linked, e.kind, &e.payload) {
            (Some(first), _, _) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, p, &first)
            }
            (None, Kind::File, _) => {
                // The header states the entry's size: its chunks must hold
                // exactly that, or a reader of the stream would take data
                // for headers (a forged member name, written anywhere).
                check_length(repo, p, e)?;
                let mut r = Exactly {
                    inner: FileReader::new(repo, e.chunks()),
                    left: e.size,
                };
                let res = b.append_data(&mut h, p, &mut r);
                if let Some(err) = r.inner.take_error() {
                    return Err(err);
                }
                res
            }
            (None, Kind::Symlink, Payload::Target(t)) => {
                b.append_link(&mut h, p, Path::new(std::ffi::OsStr::from_bytes(t)))
            }
            (None, _, _) => b.append_data(&mut h, p, io::empty()),
        };
        r.map_err(pipe)
    })?;
    b.finish().map_err(pipe)?;
    Ok(skipped)
}

/// The raw lengths the index gives the entry's chunks add up to its size.
fn check_length(repo: &Repository, path: &Path, e: &Entry) -> Result<()> {
    let mut total = 0u64;
    for id in e.chunks() {
        let loc = repo
            .chunk_location(id)?
            .ok_or_else(|| Error::MissingChunk {
                id: id.short(),
                context: format!("{}: missing from the index", path.display()),
            })?;
        total += u64::from(loc.raw_len);
    }
    if total != e.size {
        return Err(length_damage(repo, path, e.size, total));
    }
    Ok(())
}

fn length_damage(repo: &Repository, path: &Path, size: u64, held: u64) -> Error {
    Error::Damaged {
        path: repo.index_path(),
        reason: format!(
            "{}: the entry lists {size} bytes but its chunks hold {held}; nothing more is written",
            path.display()
        ),
    }
}

/// A file's bytes, exactly `left` of them: more or fewer is damage (the
/// chunks are each verified, but the entry's size is the tree's word).
struct Exactly<'a> {
    inner: FileReader<'a>,
    left: u64,
}

impl Read for Exactly<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(
                    "the chunks hold more bytes than the entry lists",
                )),
            };
        }
        let want = out.len().min(self.left as usize);
        let n = self.inner.read(&mut out[..want])?;
        if n == 0 {
            return Err(io::Error::other(
                "the chunks hold fewer bytes than the entry lists",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn header_of(e: &Entry) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_mode(e.mode & 0o7777);
    h.set_uid(e.uid as u64);
    h.set_gid(e.gid as u64);
    h.set_mtime(e.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
    h.set_size(if e.kind == Kind::File { e.size } else { 0 });
    h.set_entry_type(match e.kind {
        Kind::File => tar::EntryType::Regular,
        Kind::Dir => tar::EntryType::Directory,
        Kind::Symlink => tar::EntryType::Symlink,
        Kind::Fifo => tar::EntryType::Fifo,
        Kind::CharDev => tar::EntryType::Char,
        Kind::BlockDev => tar::EntryType::Block,
        Kind::Socket => tar::EntryType::Regular,
    });
    if let Payload::Device(rdev) = e.payload {
        let _ = h.set_device_major(libc::major(rdev));
        let _ = h.set_device_minor(libc::minor(rdev));
    }
    h
}

/// The nanosecond mtime, as a PAX record before the entry.
fn append_mtime(b: &mut tar::Builder<&mut dyn Write>, e: &Entry) -> Result<()> {
    let (s, ns) = (
        e.mtime_ns.div_euclid(1_000_000_000),
        e.mtime_ns.rem_euclid(1_000_000_000),
    );
    let v = format!("{s}.{ns:09}");
    b.append_pax_extensions([("mtime", v.as_bytes())])
        .map_err(pipe)
}

/// A file's content as a reader: chunk after chunk, each verified.
struct FileReader<'a> {
    repo: &'a Repository,
    reader: ChunkReader,
    chunks: &'a [ChunkId],
    next: usize,
    buf: Vec<u8>,
    at: usize,
    error: Option<Error>,
}

impl<'a> FileReader<'a> {
    fn new(repo: &'a Repository, chunks: &'a [ChunkId]) -> Self {
        FileReader {
            repo,
            reader: ChunkReader::new(repo.storage().clone()),
            chunks,
            next: 0,
            buf: Vec::new(),
            at: 0,
            error: None,
        }
    }

    /// The snap error behind an io error this reader returned.
    fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    fn fill(&mut self) -> Result<()> {
        let id = self.chunks[self.next];
        let loc = self.repo.require_chunk_location(&id)?;
        self.buf = self.reader.read(&id, &loc, self.repo)?;
        self.at = 0;
        self.next += 1;
        Ok(())
    }
}

impl Read for FileReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            if self.next == self.chunks.len() {
                return Ok(0);
            }
            if let Err(e) = self.fill() {
                let msg = e.to_string();
                self.error = Some(e);
                return Err(io::Error::other(msg));
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
