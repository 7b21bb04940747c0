//! A file's content into chunks: cut, hashed, claimed, compressed (a
//! delta of the parent's page, in a group, or alone) and sent to the pack
//! writer.

use super::*;

/// Chunk a file, sending new chunks to the pack writer. Returns the chunk
/// list and the number of bytes read. With `base_pages` (a database's
/// pages in the parent snapshot), a new page may be stored as a delta of
/// the page at the same place.
pub(super) fn chunk_file(
    ctx: &WorkerCtx,
    file: &File,
    size_hint: u64,
    fixed: Option<usize>,
    base_pages: Option<&[ChunkId]>,
) -> std::result::Result<(Vec<ChunkId>, u64), ReadError> {
    let mut chunker = match fixed {
        Some(size) => Chunker::fixed(ReadAdapter(file, 0), size, BATCH_BYTES, size_hint),
        None => Chunker::with_size_hint(ReadAdapter(file, 0), ctx.params, BATCH_BYTES, size_hint),
    };
    let mut ids_all = Vec::new();
    let mut total = 0u64;
    while let Some((buf, cuts)) = chunker.next_batch().map_err(ReadError::Io)? {
        let ids = store_batch(ctx, buf, &cuts, base_pages, ids_all.len())?;
        let batch_bytes: u64 = cuts.iter().map(|c| c.1 as u64).sum();
        total += batch_bytes;
        ctx.progress.bytes(batch_bytes);
        ids_all.extend(ids);
        if ctx.cancel.load(Ordering::Relaxed) {
            return Err(ReadError::Fatal(Error::Interrupted));
        }
    }
    Ok((ids_all, total))
}

/// One batch of a file's chunks (`cuts` into `buf`; the file's chunks
/// before it: `first`): hashed, the ones nobody stored claimed, and those
/// compressed (a delta of the parent's page where there is one, in this
/// thread's group when small, else alone) and sent to the pack writer.
/// Returns the batch's chunk ids.
pub(super) fn store_batch(
    ctx: &WorkerCtx,
    buf: &[u8],
    cuts: &[(usize, usize)],
    base_pages: Option<&[ChunkId]>,
    first: usize,
) -> std::result::Result<Vec<ChunkId>, ReadError> {
    let hasher = ctx.ids;
    let hash = |&(o, l): &(usize, usize)| hasher.chunk(&buf[o..o + l]);
    let ids: Vec<ChunkId> = if cuts.len() > 1 {
        cuts.par_iter().map(hash).collect()
    } else {
        cuts.iter().map(hash).collect()
    };
    // Claim the chunks nobody has stored: once in this run (the set) or
    // before it (the index, as committed).
    let fresh = ctx
        .claimed
        .claim(&ids, |id| ctx.index.has_chunk(id))
        .map_err(ReadError::Fatal)?;
    let bases = delta_bases(ctx, base_pages, first, &ids, &fresh)?;
    let chunk = |i: usize| {
        let (o, l) = cuts[i];
        &buf[o..o + l]
    };
    // Chunks without a delta base go in this thread's group when they are
    // small and compressible; the rest are compressed alone.
    let (grouped, alone): (Vec<_>, Vec<_>) = fresh
        .iter()
        .zip(&bases.each)
        .partition(|(i, base)| base.is_none() && groupable(chunk(**i)));
    let (level, reader) = (ctx.level, &ctx.reader);
    let compress = |(&i, base): (&usize, &Option<(ChunkId, ChunkLocation)>)| {
        compress_alone((level, reader), ids[i], chunk(i), base.as_ref(), &bases)
    };
    let full = ctx
        .group
        .borrow_mut()
        .fill(grouped.iter().map(|&(&i, _)| (ids[i], chunk(i))));
    // One job (a small file) runs here: handing it to rayon would cost a
    // hop between threads.
    let frames: io::Result<Vec<Frame>> = if alone.len() + full.len() > 1 {
        alone
            .into_par_iter()
            .map(compress)
            .chain(full.into_par_iter().map(|g| g.into_frame(level)))
            .collect()
    } else {
        alone
            .into_iter()
            .map(compress)
            .chain(full.into_iter().map(|g| g.into_frame(level)))
            .collect()
    };
    let new =
        frames.map_err(|e| ReadError::Fatal(Error::internal("compression", e.to_string())))?;
    if !new.is_empty() && ctx.chunk_tx.send(new).is_err() {
        return Err(ReadError::Fatal(Error::internal(
            "create",
            "the pack writer stopped",
        )));
    }
    Ok(ids)
}

/// One chunk compressed alone: as a delta of `base` when that is smaller,
/// else whole.
pub(super) fn compress_alone(
    (level, reader): (i32, &ChunkReader),
    id: ChunkId,
    page: &[u8],
    base: Option<&(ChunkId, ChunkLocation)>,
    bases: &DeltaBases,
) -> io::Result<Frame> {
    let raw = base.and_then(|b| Some((b.0, read_base(reader, b, bases)?)));
    let (codec, data, base) = match raw {
        Some((base_id, base)) => {
            match crate::delta::encode(level, &base, page, || compress_with(level, page))? {
                Stored::Delta(d) => (Codec::Delta, d, Some(base_id)),
                Stored::Whole(c, d) => (c, d, None),
            }
        }
        None => {
            let (c, d) = compress_with(level, page)?;
            (c, d, None)
        }
    };
    let blob = Blob {
        id,
        codec,
        raw_len: page.len() as u32,
        base,
        inner: 0,
    };
    Ok(Frame::single(blob, data))
}

/// Where the bases of a batch's fresh chunks lie: one per fresh chunk
/// (`None`: store it whole), and the locations of those bases' own bases.
pub(super) struct DeltaBases {
    pub(super) each: Vec<Option<(ChunkId, ChunkLocation)>>,
    pub(super) chains: HashMap<ChunkId, ChunkLocation>,
    /// Bases that are not deltas, read ahead by runs.
    pub(super) whole: HashMap<ChunkId, Arc<Vec<u8>>>,
}

/// For each fresh chunk (`fresh`, indexes into `ids`, the batch that
/// starts at chunk `first` of the file), the base to store it as a delta
/// of: the parent's page at the same place, when it is a chunk this
/// repository dedups against (not one a gc condemned). Only index lookups
/// here (a connection is this thread's); the bases are read in parallel.
pub(super) fn delta_bases(
    ctx: &WorkerCtx,
    base_pages: Option<&[ChunkId]>,
    first: usize,
    ids: &[ChunkId],
    fresh: &[usize],
) -> std::result::Result<DeltaBases, ReadError> {
    let mut each = Vec::with_capacity(fresh.len());
    for &i in fresh {
        let base = match base_pages.and_then(|p| p.get(first + i)) {
            Some(b) if *b != ids[i] => ctx
                .index
                .dedup_location(b)
                .map_err(ReadError::Fatal)?
                .map(|loc| (*b, loc)),
            _ => None,
        };
        each.push(base);
    }
    let locs = each.iter().flatten().map(|(_, l)| l);
    let chains = crate::delta::bases_of(&ctx.index, locs).map_err(ReadError::Fatal)?;
    // Pages of one database lie together in the packs of an earlier
    // create: a few reads fetch a batch's bases (on a bucket, without
    // pulling whole windows of the packs around them).
    let whole = ctx
        .reader
        .clone()
        .read_by_runs(&each.iter().flatten().copied().collect::<Vec<_>>());
    Ok(DeltaBases {
        each,
        chains,
        whole,
    })
}

/// A base's raw bytes, when it can be read and is less than
/// `delta::MAX_DEPTH` deltas deep. One that cannot be read is no base: the
/// page is stored whole, and `check` names the damage.
pub(super) fn read_base(
    reader: &ChunkReader,
    (id, loc): &(ChunkId, ChunkLocation),
    bases: &DeltaBases,
) -> Option<Arc<Vec<u8>>> {
    if let Some(bytes) = bases.whole.get(id) {
        return Some(bytes.clone());
    }
    let (bytes, depth) = reader
        .clone()
        .read_with_depth(id, loc, &bases.chains)
        .ok()?;
    (depth < crate::delta::MAX_DEPTH && bytes.len() <= CHUNK_MAX_LIMIT as usize).then_some(bytes)
}
