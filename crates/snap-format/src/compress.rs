//! Per-chunk compression: zstd, or the raw bytes when zstd does not shrink them.

use std::io;

/// How a chunk's bytes are stored in a pack. The values are part of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
    /// A zstd frame made with another chunk's raw bytes (its *base*, named
    /// in the pack footer) as a prefix: a changed database page stored as
    /// the difference from the same page in the parent snapshot.
    Delta = 2,
    /// One of several chunks compressed together in one zstd frame (a
    /// *group*): small chunks alone compress poorly and slowly (zstd
    /// builds its tables for each). The entry names the frame and where
    /// the chunk's bytes start in what it decodes to.
    Grouped = 3,
}

impl Codec {
    pub fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            2 => Some(Codec::Delta),
            3 => Some(Codec::Grouped),
            _ => None,
        }
    }
}

/// A per-thread compressor; reuses the zstd context between chunks.
pub struct Compressor {
    main: zstd::bulk::Compressor<'static>,
}

/// Order-0 entropy above which a chunk is stored raw without trying zstd
/// (bits per byte; random data measures ~7.95 on a 4 KiB sample).
const RAW_ENTROPY_BITS: f64 = 7.8;

/// Shannon entropy of the byte histogram, in bits per byte.
fn entropy_bits(data: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether `data` is one of those chunks zstd would not shrink: a 4 KiB
/// sample from the middle decides (a quarter of a 16 KiB chunk); chunks
/// under 8 KiB are always tried.
pub fn looks_incompressible(data: &[u8]) -> bool {
    data.len() >= 8192
        && entropy_bits(&data[data.len() / 2 - 2048..data.len() / 2 + 2048]) > RAW_ENTROPY_BITS
}

impl Compressor {
    pub fn new(level: i32) -> io::Result<Self> {
        Ok(Compressor {
            main: zstd::bulk::Compressor::new(level)?,
        })
    }

    /// Compress `data`; returns `Raw` with a copy when that would not shrink it.
    ///
    /// Incompressible data (media, already-compressed files) is common in app
    /// directories: its byte histogram is flat, which a counting pass spots
    /// at a small fraction of the cost of running zstd over it.
    pub fn compress(&mut self, data: &[u8]) -> io::Result<(Codec, Vec<u8>)> {
        if looks_incompressible(data) {
            return Ok((Codec::Raw, data.to_vec()));
        }
        let out = self.main.compress(data)?;
        if out.len() < data.len() {
            Ok((Codec::Zstd, out))
        } else {
            Ok((Codec::Raw, data.to_vec()))
        }
    }
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        zstd::zstd_safe::get_error_name(code),
    )
}

/// `data` compressed with `base` as a raw-content prefix (zstd's
/// `refPrefix`: never parsed as a dictionary, whatever its first bytes).
/// Only a frame smaller than `data` is worth storing; `None` otherwise.
pub fn delta_compress(level: i32, base: &[u8], data: &[u8]) -> io::Result<Option<Vec<u8>>> {
    use zstd::zstd_safe::{CCtx, CParameter, ResetDirective};
    // One context per thread: making one per page was a fifth of the time
    // of a create that stored a migration's pages as deltas.
    thread_local! {
        static CCTX: std::cell::RefCell<Option<CCtx<'static>>> = const { std::cell::RefCell::new(None) };
    }
    CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(CCtx::try_create().ok_or_else(|| io::Error::other("no zstd context"))?);
        }
        let cctx = c.as_mut().expect("just made");
        cctx.set_parameter(CParameter::CompressionLevel(level))
            .map_err(zstd_error)?;
        // SAFETY: zstd uses a prefix for the next frame only, and the
        // session reset below (on every path) drops it before `base` can
        // go away; the context never sees `base` again.
        let prefix: &'static [u8] = unsafe { std::mem::transmute::<&[u8], &'static [u8]>(base) };
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
        let r = cctx
            .ref_prefix(prefix)
            .and_then(|_| cctx.compress2(&mut out, data));
        let reset = cctx.reset(ResetDirective::SessionOnly);
        r.and(reset).map_err(zstd_error)?;
        Ok((out.len() < data.len()).then_some(out))
    })
}

/// Decode a [`Codec::Delta`] frame against its base's raw bytes.
pub fn delta_decompress(stored: &[u8], base: &[u8], raw_len: usize) -> io::Result<Vec<u8>> {
    use zstd::zstd_safe::{DCtx, ResetDirective};
    thread_local! {
        static DCTX: std::cell::RefCell<Option<DCtx<'static>>> = const { std::cell::RefCell::new(None) };
    }
    let out = DCTX.with(|d| -> io::Result<Vec<u8>> {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(DCtx::try_create().ok_or_else(|| io::Error::other("no zstd context"))?);
        }
        let dctx = d.as_mut().expect("just made");
        // SAFETY: as in `delta_compress`: the prefix serves the next frame
        // only and the reset drops it before `base` can go away.
        let prefix: &'static [u8] = unsafe { std::mem::transmute::<&[u8], &'static [u8]>(base) };
        let mut out = Vec::with_capacity(raw_len);
        let r = dctx
            .ref_prefix(prefix)
            .and_then(|_| dctx.decompress(&mut out, stored));
        let reset = dctx.reset(ResetDirective::SessionOnly);
        r.and(reset).map_err(zstd_error)?;
        Ok(out)
    })?;
    of_len(out, raw_len)
}

/// `out` when it has the length the chunk claims.
fn of_len(out: Vec<u8>, raw_len: usize) -> io::Result<Vec<u8>> {
    if out.len() != raw_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "decompressed chunk length mismatch",
        ));
    }
    Ok(out)
}

/// A group is closed once its members hold this many raw bytes (512 KiB
/// stored 1.4 MB less than 256 KiB and 8 MB less than 128 KiB on the e2e
/// app set, at the same speed; docs/benchmarks.md).
pub const GROUP_TARGET: usize = 512 << 10;
/// Chunks in one group at most (a group of tiny files' chunks would
/// otherwise hold thousands of footer entries).
pub const GROUP_MEMBERS_MAX: usize = 1024;
/// Chunks larger than this are compressed alone, never grouped.
pub const GROUP_MEMBER_MAX: usize = 64 << 10;
/// The most a group frame may decode to: what a reader allocates at most
/// (writers stay under `GROUP_TARGET + GROUP_MEMBER_MAX`).
pub const GROUP_RAW_MAX: usize = 1 << 20;

/// Run `f` with this thread's compressor at `level` (one zstd context per
/// thread, reused between chunks and groups).
fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut Compressor) -> io::Result<T>,
) -> io::Result<T> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<(i32, Compressor)>> =
            const { std::cell::RefCell::new(None) };
    }
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, Compressor::new(level)?));
        }
        f(&mut c.as_mut().expect("just made").1)
    })
}

/// [`Compressor::compress`] with this thread's compressor.
pub fn compress_with(level: i32, data: &[u8]) -> io::Result<(Codec, Vec<u8>)> {
    with_compressor(level, |c| c.compress(data))
}

/// Compress a group's members, `raw` (back to back), as one frame (with
/// its content size); `None` when the frame would not be smaller.
pub fn compress_group(level: i32, raw: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let out = with_compressor(level, |c| c.main.compress(raw))?;
    Ok((out.len() < raw.len()).then_some(out))
}

/// Decode a whole group frame, refusing one that does not state its
/// content size or states more than [`GROUP_RAW_MAX`].
pub fn decompress_group(stored: &[u8]) -> io::Result<Vec<u8>> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let size = match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(n)) if n as usize <= GROUP_RAW_MAX => n as usize,
        Ok(Some(_)) => return Err(bad("group frame larger than a group may be")),
        _ => return Err(bad("group frame without a content size")),
    };
    decompress(Codec::Zstd, stored, size)
}

/// Decode stored bytes back to the chunk; `raw_len` bounds the allocation.
/// A delta needs its base: see [`delta_decompress`].
pub fn decompress(codec: Codec, stored: &[u8], raw_len: usize) -> io::Result<Vec<u8>> {
    match codec {
        Codec::Delta => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a delta chunk cannot be decoded without its base",
        )),
        Codec::Grouped => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a grouped chunk is decoded with its group (decompress_group)",
        )),
        Codec::Raw => {
            if stored.len() != raw_len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "raw chunk length mismatch",
                ));
            }
            Ok(stored.to_vec())
        }
        Codec::Zstd => {
            // One decompression context per thread: making one per chunk
            // (zstd::bulk::decompress) was 3% of a restore's time.
            thread_local! {
                static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                    const { std::cell::RefCell::new(None) };
            }
            let out = DCTX.with(|d| -> io::Result<Vec<u8>> {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                d.as_mut().expect("just made").decompress(stored, raw_len)
            })?;
            of_len(out, raw_len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_compresses_and_noise_stays_raw() {
        let mut c = Compressor::new(3).unwrap();
        let text = b"the quick brown fox jumps over the lazy dog. ".repeat(500);
        let (codec, out) = c.compress(&text).unwrap();
        assert_eq!(codec, Codec::Zstd);
        assert!(out.len() < text.len() / 10);
        assert_eq!(decompress(codec, &out, text.len()).unwrap(), text);

        let noise: Vec<u8> = (0..20000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let noise = blake3::Hasher::new()
            .update(&noise)
            .finalize_xof()
            .fill_return(20000);
        let (codec, out) = c.compress(&noise).unwrap();
        assert_eq!(codec, Codec::Raw);
        assert_eq!(out, noise);
    }

    #[test]
    fn a_changed_page_is_a_small_delta_of_its_base() {
        let base: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut page = base.clone();
        page[1000..1010].copy_from_slice(b"0123456789");
        // A dictionary's magic at the start must not make zstd parse it.
        let mut magic_base = base.clone();
        magic_base[..4].copy_from_slice(&0xEC30A437u32.to_le_bytes());
        for base in [&base, &magic_base] {
            let delta = delta_compress(3, base, &page).unwrap().expect("smaller");
            assert!(delta.len() < 100, "{} bytes", delta.len());
            assert_eq!(delta_decompress(&delta, base, page.len()).unwrap(), page);
            // Against another base it does not decode to the page.
            let other = vec![0u8; 4096];
            assert!(
                delta_decompress(&delta, &other, page.len()).is_ok_and(|d| d != page)
                    || delta_decompress(&delta, &other, page.len()).is_err()
            );
        }
        assert!(decompress(Codec::Delta, b"x", 1).is_err());
        assert!(delta_decompress(b"garbage", &base, 4096).is_err());
    }

    #[test]
    fn corrupt_zstd_is_an_error_not_a_panic() {
        assert!(decompress(Codec::Zstd, b"garbage", 100).is_err());
        assert!(decompress(Codec::Raw, b"abc", 4).is_err());
    }

    trait FillReturn {
        fn fill_return(self, n: usize) -> Vec<u8>;
    }
    impl FillReturn for blake3::OutputReader {
        fn fill_return(mut self, n: usize) -> Vec<u8> {
            let mut v = vec![0; n];
            self.fill(&mut v);
            v
        }
    }
}
