//! Encryption at the storage boundary: every object of an encrypted
//! repository except `config` and the key objects (`keys/*`, sealed by
//! their own password-derived keys) is stored sealed, and everything above
//! this layer sees plain bytes.
//!
//! An object is cut into segments of [`SEGMENT`] plain bytes (the last one
//! shorter, possibly empty), each sealed on its own with XChaCha20-Poly1305
//! under a random 24-byte nonce, so that a range read opens only the
//! segments it covers (packs are read by range):
//!
//! ```text
//! segment: object id (16) | nonce (24) | ciphertext (n) | tag (16)
//! AAD:     object id (16) | segment index u64 LE | 1 if last else 0
//! ```
//!
//! The object id is random per object and the same in all its segments:
//! segments cannot be reordered, dropped from the end, or mixed between
//! objects without failing to open (a reader compares the ids of the
//! segments it reads). Sizes map without reading: `n` full segments of
//! `SEGMENT + 56` bytes, then the last. The layout is in docs/format.md.

use std::sync::{Arc, Mutex};

use chacha20poly1305::aead::{Aead, AeadInOut, KeyInit, Payload, Tag};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::{CONFIG_FILE, KEYS_DIR};
use super::{ObjectInfo, ObjectReader, ObjectWriter, RequestCounts, Storage};
use crate::error::{Error, Result};
use zeroize::{Zeroize, Zeroizing};

/// The repository secret everything else is derived from.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl MasterKey {
    pub fn random() -> MasterKey {
        MasterKey(rand::random())
    }

    /// The secret itself, for sealing it into a key object.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key a key object holds, once opened.
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    /// The key objects are sealed with (a key per purpose, derived with
    /// BLAKE3's key derivation mode, so one never doubles as another).
    pub fn sealing_key(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key("snap 2026-12 object sealing", &self.0))
    }

    /// The key of chunk and tree ids (BLAKE3 keyed mode).
    pub fn id_key(&self) -> [u8; 32] {
        blake3::derive_key("snap 2026-12 content ids", &self.0)
    }
}

/// Plain bytes per segment.
pub const SEGMENT: u64 = 64 * 1024;
const OBJECT_ID: usize = 16;
const NONCE: usize = 24;
const TAG: usize = 16;
/// Bytes a segment adds to its plain bytes.
pub const OVERHEAD: u64 = (OBJECT_ID + NONCE + TAG) as u64;

/// A storage whose objects are sealed with a repository's key.
pub struct SealedStorage {
    inner: Arc<dyn Storage>,
    cipher: Arc<XChaCha20Poly1305>,
    id_key: [u8; 32],
}

impl SealedStorage {
    pub fn new(inner: Arc<dyn Storage>, master: &MasterKey) -> SealedStorage {
        SealedStorage {
            inner,
            cipher: Arc::new(XChaCha20Poly1305::new(&(*master.sealing_key()).into())),
            id_key: master.id_key(),
        }
    }

    fn sealed_reader(
        &self,
        key: &str,
        inner: Box<dyn ObjectReader>,
    ) -> Result<Box<dyn ObjectReader>> {
        let stored = inner.size();
        let size = plain_size(stored).ok_or_else(|| damaged(&*self.inner, key, "its size"))?;
        Ok(Box::new(SealedReader {
            describe: self.inner.describe(key),
            inner,
            cipher: self.cipher.clone(),
            stored,
            size,
            object_id: Mutex::new(None),
            last: Mutex::new(None),
        }))
    }
}

/// Objects read before the key is known.
fn is_plain(key: &str) -> bool {
    key == CONFIG_FILE || key.starts_with(KEYS_DIR) && key[KEYS_DIR.len()..].starts_with('/')
}

/// The stored size of a sealed object of `plain` bytes (the inverse of
/// [`plain_size`]): every segment, the last one possibly short or empty,
/// carries its overhead.
pub fn stored_size(plain: u64) -> u64 {
    plain + plain.div_ceil(SEGMENT).max(1) * OVERHEAD
}

/// The plain size of a sealed object of `stored` bytes, `None` when no
/// sealed object has that size.
pub fn plain_size(stored: u64) -> Option<u64> {
    let full = SEGMENT + OVERHEAD;
    let (n, rest) = (stored / full, stored % full);
    match rest {
        0 if n > 0 => Some(n * SEGMENT),
        r if r >= OVERHEAD => Some(n * SEGMENT + r - OVERHEAD),
        _ => None,
    }
}

fn aad(object_id: &[u8], index: u64, last: bool) -> [u8; OBJECT_ID + 9] {
    let mut a = [0u8; OBJECT_ID + 9];
    a[..OBJECT_ID].copy_from_slice(object_id);
    a[OBJECT_ID..OBJECT_ID + 8].copy_from_slice(&index.to_le_bytes());
    a[OBJECT_ID + 8] = last as u8;
    a
}

fn seal_segment(
    cipher: &XChaCha20Poly1305,
    object_id: &[u8; OBJECT_ID],
    index: u64,
    last: bool,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let nonce: [u8; NONCE] = rand::random();
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plain,
                aad: &aad(object_id, index, last),
            },
        )
        .map_err(|_| Error::internal("object sealing", "sealing an object failed"))?;
    out.extend_from_slice(object_id);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(())
}

/// Seal a whole object.
fn seal_all(cipher: &XChaCha20Poly1305, plain: &[u8]) -> Result<Vec<u8>> {
    let object_id: [u8; OBJECT_ID] = rand::random();
    let segments = plain.len().div_ceil(SEGMENT as usize).max(1);
    let mut out = Vec::with_capacity(plain.len() + segments * OVERHEAD as usize);
    for i in 0..segments {
        let start = i * SEGMENT as usize;
        let end = (start + SEGMENT as usize).min(plain.len());
        let last = i + 1 == segments;
        seal_segment(
            cipher,
            &object_id,
            i as u64,
            last,
            &plain[start..end],
            &mut out,
        )?;
    }
    Ok(out)
}

impl Storage for SealedStorage {
    fn describe(&self, key: &str) -> String {
        self.inner.describe(key)
    }

    fn local_dir(&self) -> Option<&std::path::Path> {
        self.inner.local_dir()
    }

    fn create(&self, dir: &str) -> Result<Box<dyn ObjectWriter>> {
        let inner = self.inner.create(dir)?;
        if dir == KEYS_DIR {
            return Ok(inner);
        }
        Ok(Box::new(SealedWriter {
            inner,
            cipher: self.cipher.clone(),
            object_id: rand::random(),
            buf: Vec::with_capacity(SEGMENT as usize),
            index: 0,
            len: 0,
        }))
    }

    fn open(&self, key: &str) -> Result<Box<dyn ObjectReader>> {
        let inner = self.inner.open(key)?;
        if is_plain(key) {
            return Ok(inner);
        }
        self.sealed_reader(key, inner)
    }

    /// `size` is the plain size (what `list` reports); the stored one
    /// follows from it.
    fn open_sized(&self, key: &str, size: u64) -> Result<Box<dyn ObjectReader>> {
        if is_plain(key) {
            return self.inner.open_sized(key, size);
        }
        let inner = self.inner.open_sized(key, stored_size(size))?;
        self.sealed_reader(key, inner)
    }

    fn read(&self, key: &str) -> Result<Vec<u8>> {
        self.read_if_exists(key)?.ok_or_else(|| {
            Error::io(
                self.inner.describe(key),
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such object"),
            )
        })
    }

    fn read_if_exists(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let Some(bytes) = self.inner.read_if_exists(key)? else {
            return Ok(None);
        };
        if is_plain(key) {
            return Ok(Some(bytes));
        }
        let describe = self.inner.describe(key);
        let r = self.sealed_reader(key, Box::new(super::BytesReader { describe, bytes }))?;
        r.read_at(0, r.size()).map(Some)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        match self.inner.size(key)? {
            Some(s) if !is_plain(key) => Ok(Some(
                plain_size(s).ok_or_else(|| damaged(&*self.inner, key, "its size"))?,
            )),
            other => Ok(other),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut list = self.inner.list(prefix)?;
        for o in &mut list {
            if !is_plain(&o.key) {
                // A size no sealed object has: reported as 0, and named as
                // damaged when the object is opened.
                o.size = plain_size(o.size).unwrap_or(0);
            }
        }
        Ok(list)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn remove_partial(&self) -> Result<u64> {
        self.inner.remove_partial()
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        if is_plain(key) {
            return self.inner.put(key, bytes);
        }
        self.inner.put(key, &seal_all(&self.cipher, bytes)?)
    }

    fn request_counts(&self) -> Option<RequestCounts> {
        self.inner.request_counts()
    }

    fn id_key(&self) -> Option<[u8; 32]> {
        Some(self.id_key)
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
}

fn damaged(storage: &dyn Storage, key: &str, what: &str) -> Error {
    Error::Damaged {
        path: storage.describe(key).into(),
        reason: format!("not a sealed object: {what} does not open with the repository's key"),
    }
}

struct SealedWriter {
    inner: Box<dyn ObjectWriter>,
    cipher: Arc<XChaCha20Poly1305>,
    object_id: [u8; OBJECT_ID],
    /// Plain bytes not sealed yet: a full segment is sealed only once more
    /// bytes follow, since the last segment is marked as last.
    buf: Vec<u8>,
    index: u64,
    len: u64,
}

impl SealedWriter {
    fn seal(&mut self, last: bool) -> Result<()> {
        let n = self.buf.len().min(SEGMENT as usize);
        let mut out = Vec::with_capacity(n + OVERHEAD as usize);
        let (cipher, id, index) = (&*self.cipher, &self.object_id, self.index);
        seal_segment(cipher, id, index, last, &self.buf[..n], &mut out)?;
        self.inner.write(&out)?;
        self.buf.drain(..n);
        self.index += 1;
        Ok(())
    }
}

impl ObjectWriter for SealedWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.len += bytes.len() as u64;
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.buf.len() == SEGMENT as usize {
                self.seal(false)?;
            }
            let take = rest.len().min(SEGMENT as usize - self.buf.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn commit(mut self: Box<Self>, key: &str) -> Result<()> {
        self.seal(true)?;
        self.inner.commit(key)
    }
}

struct SealedReader {
    describe: String,
    inner: Box<dyn ObjectReader>,
    cipher: Arc<XChaCha20Poly1305>,
    stored: u64,
    size: u64,
    /// The object id of the first segment read: every other must match.
    object_id: Mutex<Option<[u8; OBJECT_ID]>>,
    /// The last segment opened, for runs of small reads inside one.
    last: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

impl SealedReader {
    fn segments(&self) -> u64 {
        self.size.div_ceil(SEGMENT).max(1)
    }

    fn bad(&self, why: String) -> Error {
        Error::Damaged {
            path: self.describe.clone().into(),
            reason: why,
        }
    }

    /// Open segments `first..=last` from their stored bytes, in place: each
    /// segment is decrypted where it lies and its plaintext moved down to
    /// follow the one before (one buffer for a whole read run, not three).
    fn open_segments(&self, first: u64, last: u64, planned: bool) -> Result<Vec<u8>> {
        let full = SEGMENT + OVERHEAD;
        let start = first * full;
        let end = ((last + 1) * full).min(self.stored);
        let mut buf = if planned {
            self.inner.read_planned(start, end - start)?
        } else {
            self.inner.read_at(start, end - start)?
        };
        let (full, head) = (full as usize, OBJECT_ID + NONCE);
        let mut plain_len = 0;
        for (i, seg_start) in (0..buf.len()).step_by(full).enumerate() {
            let index = first + i as u64;
            let seg_end = (seg_start + full).min(buf.len());
            let seg = &mut buf[seg_start..seg_end];
            if seg.len() < OVERHEAD as usize {
                return Err(self.bad(format!(
                    "segment {index} is shorter than its header and tag"
                )));
            }
            let id: [u8; OBJECT_ID] = seg[..OBJECT_ID].try_into().expect("segment length");
            {
                let mut known = self.object_id.lock().unwrap_or_else(|e| e.into_inner());
                if *known.get_or_insert(id) != id {
                    return Err(self.bad(format!("segment {index} belongs to another object")));
                }
            }
            let nonce: [u8; NONCE] = seg[OBJECT_ID..head].try_into().expect("segment length");
            let is_last = index + 1 == self.segments();
            let msg_len = seg.len() - head - TAG;
            let (msg, tag) = seg[head..].split_at_mut(msg_len);
            let tag = Tag::<XChaCha20Poly1305>::try_from(&*tag).expect("tag length");
            self.cipher
                .decrypt_inout_detached(
                    &XNonce::from(nonce),
                    &aad(&id, index, is_last),
                    msg.into(),
                    &tag,
                )
                .map_err(|_| {
                    self.bad(format!(
                        "segment {index} fails authentication (altered, or sealed with another key)"
                    ))
                })?;
            let m = msg.len();
            buf.copy_within(seg_start + head..seg_start + head + m, plain_len);
            plain_len += m;
        }
        buf.truncate(plain_len);
        Ok(buf)
    }

    /// The end of the plain range `offset..offset + len`, or the short
    /// read error when it runs past the object.
    fn end_of(&self, offset: u64, len: u64) -> Result<u64> {
        offset
            .checked_add(len)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| super::short_object(self.describe.clone(), offset, len, self.size))
    }
}

impl ObjectReader for SealedReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = self.end_of(offset, len)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let (first, last) = (offset / SEGMENT, (end - 1) / SEGMENT);
        if first == last {
            let cached = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let seg = match cached {
                Some((i, seg)) if i == first => seg,
                _ => {
                    let seg = Arc::new(self.open_segments(first, first, false)?);
                    *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((first, seg.clone()));
                    seg
                }
            };
            let at = (offset - first * SEGMENT) as usize;
            return Ok(seg[at..at + len as usize].to_vec());
        }
        let plain = self.open_segments(first, last, false)?;
        let at = (offset - first * SEGMENT) as usize;
        Ok(plain[at..at + len as usize].to_vec())
    }

    fn read_planned(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = self.end_of(offset, len)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let first = offset / SEGMENT;
        let mut plain = self.open_segments(first, (end - 1) / SEGMENT, true)?;
        let at = (offset - first * SEGMENT) as usize;
        plain.truncate(at + len as usize);
        plain.drain(..at);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStorage;

    fn sealed() -> (Arc<MemoryStorage>, SealedStorage) {
        let inner = Arc::new(MemoryStorage::new());
        let s = SealedStorage::new(inner.clone(), &MasterKey::random());
        (inner, s)
    }

    #[test]
    fn sizes_map_both_ways_at_segment_edges() {
        for plain in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            3 * SEGMENT,
            5 * SEGMENT + 7,
        ] {
            let stored = seal_all(
                &XChaCha20Poly1305::new(&[7u8; 32].into()),
                &vec![1; plain as usize],
            )
            .unwrap()
            .len() as u64;
            assert_eq!(plain_size(stored), Some(plain), "plain {plain}");
        }
        assert_eq!(plain_size(OVERHEAD - 1), None);
        for plain in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            3 * SEGMENT,
            5 * SEGMENT + 7,
        ] {
            assert_eq!(plain_size(stored_size(plain)), Some(plain), "{plain}");
        }
        assert_eq!(plain_size(0), None);
    }

    #[test]
    fn range_reads_across_segments_return_the_plain_bytes_and_hide_them() {
        let (inner, s) = sealed();
        let data: Vec<u8> = (0..3 * SEGMENT as usize + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut w = s.create("packs").unwrap();
        for piece in data.chunks(10_000) {
            w.write(piece).unwrap();
        }
        w.commit("packs/ab/x.pack").unwrap();
        s.put("snapshots/a", b"marker text").unwrap();
        assert_eq!(s.size("packs/ab/x.pack").unwrap(), Some(data.len() as u64));
        let r = s.open("packs/ab/x.pack").unwrap();
        for (o, l) in [
            (0, 10),
            (SEGMENT - 5, 10),
            (100, 2 * SEGMENT),
            (data.len() as u64 - 1, 1),
        ] {
            assert_eq!(
                r.read_at(o, l).unwrap(),
                &data[o as usize..(o + l) as usize]
            );
        }
        assert!(r.read_at(data.len() as u64, 1).is_err());
        assert_eq!(s.read("snapshots/a").unwrap(), b"marker text");
        let raw = inner.read("snapshots/a").unwrap();
        assert!(!raw.windows(6).any(|w| w == b"marker"));
    }

    #[test]
    fn altered_truncated_or_spliced_objects_are_damage() {
        let (inner, s) = sealed();
        let data = vec![9u8; 2 * SEGMENT as usize + 10];
        s.put("snapshots/a", &data).unwrap();
        s.put("snapshots/b", &data).unwrap();
        let raw = inner.read("snapshots/a").unwrap();
        let mut flipped = raw.clone();
        flipped[SEGMENT as usize + 100] ^= 1;
        inner.put("snapshots/c", &flipped).unwrap();
        assert!(s.read("snapshots/c").unwrap_err().is_damage());
        // Cut at a segment boundary: the new last segment was not sealed as last.
        let full = (SEGMENT + OVERHEAD) as usize;
        inner.put("snapshots/d", &raw[..2 * full]).unwrap();
        assert!(s.read("snapshots/d").unwrap_err().is_damage());
        // The second segment of another object in place of this one's.
        let other = inner.read("snapshots/b").unwrap();
        let mut spliced = raw.clone();
        spliced[full..2 * full].copy_from_slice(&other[full..2 * full]);
        inner.put("snapshots/e", &spliced).unwrap();
        assert!(s.read("snapshots/e").unwrap_err().is_damage());
        // Another key does not open it.
        let stranger = SealedStorage::new(inner.clone(), &MasterKey::random());
        assert!(stranger.read("snapshots/a").unwrap_err().is_damage());
    }

    #[test]
    fn config_and_key_objects_stay_plain() {
        let (inner, s) = sealed();
        s.put("config", b"{}").unwrap();
        s.put("keys/k1", b"{\"k\":1}").unwrap();
        assert_eq!(inner.read("config").unwrap(), b"{}");
        assert_eq!(inner.read("keys/k1").unwrap(), b"{\"k\":1}");
        assert_eq!(s.read("keys/k1").unwrap(), b"{\"k\":1}");
    }
}
