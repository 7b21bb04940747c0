//! Groups of small chunks compressed as one frame (format 4).
//!
//! zstd compresses a 4 KiB database page or a small file poorly and
//! slowly when it sees it alone: it builds its tables for each, and has no
//! earlier bytes to match against. `create` gathers a reader thread's new
//! chunks, across files, until they hold `GROUP_TARGET` bytes, and
//! compresses them together; each chunk keeps its own id and footer entry
//! (docs/format.md, "Grouped chunks").

use std::io;

use crate::compress::{
    Codec, GROUP_MEMBER_MAX, GROUP_MEMBERS_MAX, GROUP_TARGET, compress_group, looks_incompressible,
};
use crate::id::ChunkId;
use crate::pack::Blob;

/// Stored bytes for the pack writer, and the blobs they hold: one chunk,
/// a group's members sharing one zstd frame, or (a group that did not
/// compress) its members raw, back to back, each its own frame in the
/// pack. One buffer either way: a group of a thousand tiny chunks sent
/// as a thousand buffers held 8 MB more in the writer's queue at a
/// million files.
pub struct Frame {
    pub blobs: Vec<Blob>,
    pub data: Vec<u8>,
}

impl Frame {
    pub fn single(blob: Blob, data: Vec<u8>) -> Frame {
        Frame {
            blobs: vec![blob],
            data,
        }
    }

    /// The (blobs, stored bytes) pairs to append to a pack, in order.
    pub fn parts(&self) -> Vec<(&[Blob], &[u8])> {
        let shared = self.blobs.len() == 1 || self.blobs[0].codec == Codec::Grouped;
        if shared {
            return vec![(&self.blobs, &self.data)];
        }
        let mut at = 0usize;
        self.blobs
            .iter()
            .map(|b| {
                let part = &self.data[at..at + b.raw_len as usize];
                at += b.raw_len as usize;
                (std::slice::from_ref(b), part)
            })
            .collect()
    }
}

/// Whether a chunk is compressed in a group rather than alone: small
/// enough, and not one of those zstd would not shrink anyway.
pub fn groupable(data: &[u8]) -> bool {
    data.len() <= GROUP_MEMBER_MAX && !looks_incompressible(data)
}

/// New chunks waiting to be compressed together: their raw bytes back to
/// back, and each one's id and length.
pub struct Group {
    raw: Vec<u8>,
    members: Vec<(ChunkId, u32)>,
    /// Raw bytes at which the group is full (at most `GROUP_TARGET`).
    target: usize,
}

impl Default for Group {
    fn default() -> Self {
        Group::with_target(GROUP_TARGET)
    }
}

impl Group {
    /// A group that is full at `target` raw bytes (trees use smaller ones).
    pub fn with_target(target: usize) -> Self {
        Group {
            raw: Vec::new(),
            members: Vec::new(),
            target: target.min(GROUP_TARGET),
        }
    }

    pub fn push(&mut self, id: ChunkId, data: &[u8]) {
        if self.raw.capacity() == 0 {
            // A group of tiny chunks closes at GROUP_MEMBERS_MAX long before
            // its target: start small, grow only when the chunks are large.
            self.raw
                .reserve(self.target.min(128 << 10) + GROUP_MEMBER_MAX);
        }
        self.raw.extend_from_slice(data);
        self.members.push((id, data.len() as u32));
    }

    pub fn is_full(&self) -> bool {
        self.raw.len() >= self.target || self.members.len() >= GROUP_MEMBERS_MAX
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Append `chunks` to this group; the groups they filled are returned,
    /// the rest stays here.
    pub fn fill<'a>(
        &mut self,
        chunks: impl IntoIterator<Item = (ChunkId, &'a [u8])>,
    ) -> Vec<Group> {
        let mut full = Vec::new();
        for (id, data) in chunks {
            self.push(id, data);
            if self.is_full() {
                full.push(std::mem::replace(self, Group::with_target(self.target)));
            }
        }
        full
    }

    /// What to store: one group frame; a lone member compressed alone;
    /// or, when the group does not compress, each member raw.
    pub fn into_frame(self, level: i32) -> io::Result<Frame> {
        if let [(id, len)] = self.members[..] {
            let (codec, stored) = crate::compress::compress_with(level, &self.raw)?;
            return Ok(Frame::single(Blob::whole(id, codec, len), stored));
        }
        match compress_group(level, &self.raw)? {
            Some(data) => {
                let mut at = 0u32;
                let blobs = self
                    .members
                    .iter()
                    .map(|&(id, len)| {
                        let blob = Blob::grouped(id, len, at);
                        at += len;
                        blob
                    })
                    .collect();
                Ok(Frame { blobs, data })
            }
            None => {
                let blobs = (self.members.iter())
                    .map(|&(id, len)| Blob::whole(id, Codec::Raw, len))
                    .collect();
                Ok(Frame {
                    blobs,
                    data: self.raw,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(i: u32) -> Vec<u8> {
        format!("row {i}: name=user{i} email=user{i}@example.com status=active;")
            .repeat(100)
            .into_bytes()[..4096]
            .to_vec()
    }

    #[test]
    fn small_chunks_fill_groups_and_the_rest_waits() {
        let pages: Vec<Vec<u8>> = (0..40).map(page).collect();
        let mut g = Group::with_target(128 << 10);
        let full = g.fill(pages.iter().map(|p| (ChunkId::of(p), p.as_slice())));
        // 32 pages of 4 KiB make a group of 128 KiB; 8 wait for more, in a
        // group of the same target.
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].members.len(), 32);
        assert_eq!(g.members.len(), 8);
        assert_eq!(g.target, 128 << 10);
        // The default target is the largest; no target goes beyond it.
        assert_eq!(Group::default().target, GROUP_TARGET);
        assert_eq!(Group::with_target(GROUP_TARGET * 2).target, GROUP_TARGET);

        let f = &full.into_iter().next().unwrap().into_frame(3).unwrap();
        assert_eq!(f.parts().len(), 1, "one frame for the whole group");
        assert!(f.data.len() < 32 * 4096 / 10, "{} bytes", f.data.len());
        let content = crate::compress::decompress_group(&f.data).unwrap();
        for (i, b) in f.blobs.iter().enumerate() {
            assert_eq!(b.codec, Codec::Grouped);
            assert_eq!(b.inner, i as u32 * 4096);
            let s = b.inner as usize;
            assert_eq!(&content[s..s + 4096], pages[i].as_slice());
        }
    }

    #[test]
    fn a_lone_or_incompressible_group_is_stored_chunk_by_chunk() {
        let mut g = Group::default();
        let p = page(1);
        g.push(ChunkId::of(&p), &p);
        let frame = g.into_frame(3).unwrap();
        assert_eq!(frame.blobs.len(), 1);
        assert_eq!(frame.blobs[0].codec, Codec::Zstd);

        let noise: Vec<Vec<u8>> = (0..3u8)
            .map(|i| {
                let mut v = vec![0u8; 2000];
                blake3::Hasher::new()
                    .update(&[i])
                    .finalize_xof()
                    .fill(&mut v);
                v
            })
            .collect();
        let mut g = Group::default();
        for n in &noise {
            g.push(ChunkId::of(n), n);
        }
        let frame = g.into_frame(3).unwrap();
        let parts = frame.parts();
        assert_eq!(parts.len(), 3);
        for ((blobs, data), n) in parts.iter().zip(&noise) {
            assert_eq!(blobs.len(), 1);
            assert_eq!(blobs[0].codec, Codec::Raw);
            assert_eq!(blobs[0].id, ChunkId::of(n));
            assert_eq!(data, n);
        }
    }
}
