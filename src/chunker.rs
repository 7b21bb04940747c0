//! Content-defined chunking (FastCDC 2020) over a stream.
//!
//! The file is read into a buffer that always holds at least `max` bytes past
//! the current position (or the end of the file), so every cut is the cut
//! FastCDC would make over the whole file: boundaries never depend on how
//! the reads happened to be split.

use std::io::{self, Read};

use fastcdc::v2020::FastCDC;

use crate::config::RepoConfig;

#[derive(Debug, Clone, Copy)]
pub struct ChunkerParams {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
}

impl From<&RepoConfig> for ChunkerParams {
    fn from(c: &RepoConfig) -> Self {
        ChunkerParams {
            min: c.chunk_min_bytes as usize,
            avg: c.chunk_avg_bytes as usize,
            max: c.chunk_max_bytes as usize,
        }
    }
}

/// A buffer and the (offset, len) of each whole chunk in it.
pub type Batch<'a> = (&'a [u8], Vec<(usize, usize)>);

/// Reads a stream and hands out batches of whole chunks.
pub struct Chunker<R> {
    reader: R,
    params: ChunkerParams,
    buf: Vec<u8>,
    /// Start of the bytes not yet handed out.
    pos: usize,
    eof: bool,
    batch_bytes: usize,
}

impl<R: Read> Chunker<R> {
    /// `batch_bytes` is how much data one `next_batch` aims to cover.
    pub fn new(reader: R, params: ChunkerParams, batch_bytes: usize) -> Self {
        Chunker {
            reader,
            params,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            batch_bytes: batch_bytes.max(params.max),
        }
    }

    /// Fill the buffer up to `batch_bytes + max` (or EOF).
    fn fill(&mut self) -> io::Result<()> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let want = self.batch_bytes + self.params.max;
        let mut filled = self.buf.len();
        if filled >= want || self.eof {
            return Ok(());
        }
        self.buf.resize(want, 0);
        while !self.eof && filled < want {
            match self.reader.read(&mut self.buf[filled..want]) {
                Ok(0) => self.eof = true,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(filled);
                    return Err(e);
                }
            }
        }
        self.buf.truncate(filled);
        Ok(())
    }

    /// The next batch: the buffer and the (offset, len) of each chunk in it.
    /// Returns `None` at the end of the stream.
    pub fn next_batch(&mut self) -> io::Result<Option<Batch<'_>>> {
        self.fill()?;
        if self.buf.len() == self.pos {
            return Ok(None);
        }
        let p = self.params;
        let mut cuts = Vec::new();
        let mut consumed = 0;
        let data = &self.buf[self.pos..];
        for c in FastCDC::new(data, p.min, p.avg, p.max) {
            // A chunk is final only if at least `max` bytes followed its start
            // in the buffer, or the stream has ended.
            if !self.eof && data.len() - c.offset < p.max {
                break;
            }
            cuts.push((self.pos + c.offset, c.length));
            consumed = c.offset + c.length;
            if consumed >= self.batch_bytes && !self.eof {
                break;
            }
        }
        self.pos += consumed;
        Ok(Some((&self.buf[..], cuts)))
    }

    pub fn into_inner(self) -> R {
        self.reader
    }
}

/// Convenience: all chunk lengths of a stream (tests, benches).
pub fn chunk_lengths<R: Read>(reader: R, params: ChunkerParams) -> io::Result<Vec<usize>> {
    let mut chunker = Chunker::new(reader, params, 1 << 20);
    let mut out = Vec::new();
    while let Some((_, cuts)) = chunker.next_batch()? {
        out.extend(cuts.iter().map(|c| c.1));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (xorshift), no external state.
    pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// A reader that returns at most `step` bytes per call.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn params() -> ChunkerParams {
        ChunkerParams::from(&RepoConfig::default())
    }

    #[test]
    fn boundaries_do_not_depend_on_read_sizes() {
        let data = seeded_bytes(7, 700_000);
        let whole: Vec<usize> = FastCDC::new(&data, 4096, 16384, 65536)
            .map(|c| c.length)
            .collect();
        for (step, batch) in [
            (1usize, 1usize),
            (7, 100_000),
            (4096, 1),
            (65536, 1 << 20),
            (1 << 20, 1),
            (10 << 20, 100_000),
        ] {
            {
                let mut chunker = Chunker::new(Trickle { data: &data, step }, params(), batch);
                let mut got = Vec::new();
                while let Some((_, cuts)) = chunker.next_batch().unwrap() {
                    got.extend(cuts.iter().map(|c| c.1));
                }
                assert_eq!(got, whole, "step {step} batch {batch}");
            }
        }
    }

    #[test]
    fn golden_boundaries_for_seeded_data() {
        // Frozen: if this changes, old repositories stop deduplicating.
        let data = seeded_bytes(42, 200_000);
        let lens = chunk_lengths(&data[..], params()).unwrap();
        assert_eq!(lens.iter().sum::<usize>(), 200_000);
        assert_eq!(
            lens, GOLDEN_42,
            "chunk boundaries changed: this breaks deduplication against old repositories"
        );
    }

    const GOLDEN_42: &[usize] = &[
        12941, 10627, 9460, 19780, 17283, 18842, 35064, 16949, 14127, 13692, 31235,
    ];

    #[test]
    fn empty_and_tiny_inputs() {
        assert!(chunk_lengths(&b""[..], params()).unwrap().is_empty());
        assert_eq!(chunk_lengths(&b"abc"[..], params()).unwrap(), vec![3]);
    }
}
