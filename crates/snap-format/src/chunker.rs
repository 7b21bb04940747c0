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
    /// Allocated (and zeroed) once; `start..end` holds unread data.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The size the buffer grows to when a file is larger than its hint.
    full_cap: usize,
    eof: bool,
    batch_bytes: usize,
    /// Fixed-size cuts (SQLite images: whole pages) instead of FastCDC.
    fixed: Option<usize>,
}

impl<R: Read> Chunker<R> {
    /// `batch_bytes` is how much data one `next_batch` aims to cover.
    pub fn new(reader: R, params: ChunkerParams, batch_bytes: usize) -> Self {
        Self::with_size_hint(reader, params, batch_bytes, u64::MAX)
    }

    /// As `new`, for a stream of about `size_hint` bytes: small files get a
    /// small buffer (zeroing a 4 MiB buffer per 2 KiB file would dominate).
    pub fn with_size_hint(
        reader: R,
        params: ChunkerParams,
        batch_bytes: usize,
        size_hint: u64,
    ) -> Self {
        let batch_bytes = batch_bytes.max(params.max);
        let full_cap = batch_bytes + params.max;
        let cap = (size_hint.saturating_add(4096)).min(full_cap as u64) as usize;
        Chunker {
            reader,
            params,
            buf: vec![0; cap],
            start: 0,
            end: 0,
            full_cap,
            eof: false,
            batch_bytes,
            fixed: None,
        }
    }

    /// Cut every `size` bytes (the last chunk may be shorter): for files
    /// whose changes are aligned to fixed units, such as SQLite pages.
    pub fn fixed(reader: R, size: usize, batch_bytes: usize, size_hint: u64) -> Self {
        let params = ChunkerParams {
            min: size,
            avg: size,
            max: size,
        };
        let mut c = Self::with_size_hint(reader, params, batch_bytes, size_hint);
        c.fixed = Some(size);
        c
    }

    /// Read until the buffer is full or the stream ends.
    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() && self.buf.len() < self.full_cap && !self.eof {
            // The file is larger than its hint.
            self.buf.resize(self.full_cap, 0);
        }
        while !self.eof && self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next batch: the buffer and the (offset, len) of each chunk in it.
    /// Returns `None` at the end of the stream.
    pub fn next_batch(&mut self) -> io::Result<Option<Batch<'_>>> {
        self.fill()?;
        if self.end == self.start {
            return Ok(None);
        }
        let p = self.params;
        let mut cuts = Vec::new();
        let mut consumed = 0;
        let data = &self.buf[self.start..self.end];
        if let Some(size) = self.fixed {
            while consumed < data.len() {
                let len = size.min(data.len() - consumed);
                if len < size && !self.eof {
                    break;
                }
                cuts.push((self.start + consumed, len));
                consumed += len;
                if consumed >= self.batch_bytes && !self.eof {
                    break;
                }
            }
            self.start += consumed;
            return Ok(Some((&self.buf[..self.end], cuts)));
        }
        for c in FastCDC::new(data, p.min, p.avg, p.max) {
            // A chunk is final only if at least `max` bytes followed its start
            // in the buffer, or the stream has ended.
            if !self.eof && data.len() - c.offset < p.max {
                break;
            }
            cuts.push((self.start + c.offset, c.length));
            consumed = c.offset + c.length;
            if consumed >= self.batch_bytes && !self.eof {
                break;
            }
        }
        self.start += consumed;
        Ok(Some((&self.buf[..self.end], cuts)))
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

    #[test]
    fn fixed_cuts_are_whole_units_for_any_read_size() {
        let data = seeded_bytes(9, 100_000);
        for step in [1usize, 777, 4096, 65536] {
            let mut c = Chunker::fixed(Trickle { data: &data, step }, 4096, 1 << 16, 1000);
            let mut lens = Vec::new();
            let mut joined = Vec::new();
            while let Some((buf, cuts)) = c.next_batch().unwrap() {
                for (o, l) in cuts {
                    lens.push(l);
                    joined.extend_from_slice(&buf[o..o + l]);
                }
            }
            assert_eq!(joined, data);
            assert!(lens[..lens.len() - 1].iter().all(|&l| l == 4096));
            assert_eq!(lens.last(), Some(&(100_000 % 4096)));
        }
    }

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

    /// The sizes of repositories made before 2026-12-07 (4/16/64 KiB).
    fn params_2026_11() -> ChunkerParams {
        ChunkerParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        }
    }

    #[test]
    fn boundaries_do_not_depend_on_read_sizes() {
        let data = seeded_bytes(7, 2_000_000);
        let p = params();
        let whole: Vec<usize> = FastCDC::new(&data, p.min, p.avg, p.max)
            .map(|c| c.length)
            .collect();
        assert!(whole.len() > 10, "{} chunks", whole.len());
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
    fn wrong_size_hints_do_not_change_boundaries() {
        let data = seeded_bytes(11, 300_000);
        let whole = chunk_lengths(&data[..], params()).unwrap();
        for hint in [0u64, 10, 70_000, 300_000, 10_000_000] {
            let mut chunker = Chunker::with_size_hint(
                Trickle {
                    data: &data,
                    step: 5000,
                },
                params(),
                100_000,
                hint,
            );
            let mut got = Vec::new();
            while let Some((_, cuts)) = chunker.next_batch().unwrap() {
                got.extend(cuts.iter().map(|c| c.1));
            }
            assert_eq!(got, whole, "hint {hint}");
        }
    }

    #[test]
    fn golden_boundaries_for_seeded_data() {
        // Frozen: if this changes, old repositories stop deduplicating.
        let data = seeded_bytes(42, 200_000);
        let lens = chunk_lengths(&data[..], params_2026_11()).unwrap();
        assert_eq!(lens.iter().sum::<usize>(), 200_000);
        assert_eq!(
            lens, GOLDEN_42,
            "chunk boundaries changed: this breaks deduplication against old repositories"
        );
        // And with today's default sizes.
        let data = seeded_bytes(42, 1_000_000);
        let lens = chunk_lengths(&data[..], params()).unwrap();
        assert_eq!(lens.iter().sum::<usize>(), 1_000_000);
        assert_eq!(
            lens, GOLDEN_42_DEFAULT,
            "chunk boundaries changed: this breaks deduplication against old repositories"
        );
    }

    const GOLDEN_42: &[usize] = &[
        12941, 10627, 9460, 19780, 17283, 18842, 35064, 16949, 14127, 13692, 31235,
    ];
    const GOLDEN_42_DEFAULT: &[usize] = &[
        34625, 89372, 16949, 119607, 145954, 104697, 106705, 109539, 32775, 82218, 107730, 49829,
    ];

    #[test]
    fn empty_and_tiny_inputs() {
        assert!(chunk_lengths(&b""[..], params()).unwrap().is_empty());
        assert_eq!(chunk_lengths(&b"abc"[..], params()).unwrap(), vec![3]);
    }
}
