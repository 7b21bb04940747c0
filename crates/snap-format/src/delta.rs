//! Delta chunks: a changed SQLite page stored as its difference from the
//! same page of the parent snapshot (zstd with the old page as a prefix,
//! [`crate::compress::Codec::Delta`]).
//!
//! A delta names its *base* (a chunk id) in its pack's footer and in its
//! index row. Reading it reads the base first, which may itself be a delta:
//! chains are at most [`MAX_DEPTH`] deltas long, because create stores a
//! whole page instead of a delta whose base is already that deep. gc keeps
//! every base of a live delta live (`Index::live_add_bases`), so a base
//! outlives the snapshots that referenced it while a delta needs it.

use std::collections::HashMap;

use crate::compress::Codec;
use crate::error::Result;
use crate::id::ChunkId;
use crate::pack::ChunkLocation;

/// Longest chain of deltas: a page is stored whole again after this many.
/// A reader refuses a longer one (a damaged or hostile repository could
/// make a cycle).
pub const MAX_DEPTH: u32 = 8;

/// A delta is kept when it is at most this fraction of the page
/// (numerator over 8) without trying whole-page compression; otherwise the
/// smaller of the two is kept.
const CLEARLY_SMALLER_EIGHTHS: usize = 2;

/// Finds where a base chunk lies: the index itself, or a map taken from it
/// before parallel work starts (an index connection is one thread's).
pub trait Locate {
    fn locate(&self, id: &ChunkId) -> Result<Option<ChunkLocation>>;
}

impl Locate for HashMap<ChunkId, ChunkLocation> {
    fn locate(&self, id: &ChunkId) -> Result<Option<ChunkLocation>> {
        Ok(self.get(id).copied())
    }
}

/// Nothing is a delta: for readers of blobs that never are (trees).
pub struct NoBases;

impl Locate for NoBases {
    fn locate(&self, _: &ChunkId) -> Result<Option<ChunkLocation>> {
        Ok(None)
    }
}

/// The locations of every base (and base of a base) the given chunks need,
/// looked up once. A base the index does not know is left out: reading
/// the delta then reports it as damage.
pub fn bases_of<'a>(
    index: &dyn Locate,
    locs: impl IntoIterator<Item = &'a ChunkLocation>,
) -> Result<HashMap<ChunkId, ChunkLocation>> {
    let mut map = HashMap::new();
    for loc in locs {
        let mut next = loc.base;
        let mut hops = 0;
        while let Some(base) = next {
            hops += 1;
            if hops > MAX_DEPTH || map.contains_key(&base) {
                break;
            }
            match index.locate(&base)? {
                Some(l) => {
                    next = l.base;
                    map.insert(base, l);
                }
                None => break,
            }
        }
    }
    Ok(map)
}

/// How a changed page is stored.
pub enum Stored {
    /// A delta frame against the base.
    Delta(Vec<u8>),
    /// The page on its own (zstd or raw), when that is not larger.
    Whole(Codec, Vec<u8>),
}

/// Store a changed page given its base's raw bytes: as a delta when that is
/// smaller than the page compressed alone (`whole`), which is only tried
/// when the delta is not clearly small.
pub fn encode(
    level: i32,
    base: &[u8],
    page: &[u8],
    whole: impl FnOnce() -> std::io::Result<(Codec, Vec<u8>)>,
) -> std::io::Result<Stored> {
    let delta = crate::compress::delta_compress(level, base, page)?;
    if let Some(d) = &delta
        && d.len() * 8 <= page.len() * CLEARLY_SMALLER_EIGHTHS
    {
        return Ok(Stored::Delta(delta.expect("checked")));
    }
    let (codec, data) = whole()?;
    // A delta also costs its base's record in the footer and the index.
    let overhead = crate::pack::BASE_LEN as usize;
    Ok(match delta {
        Some(d) if d.len() + overhead < data.len() => Stored::Delta(d),
        _ => Stored::Whole(codec, data),
    })
}
