//! Micro-benchmarks of each pipeline stage (criterion, throughput in bytes):
//! `cargo bench --bench micro`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use snap::chunker::{ChunkerParams, chunk_lengths};
use snap::compress::{Codec, Compressor};
use snap::config::RepoConfig;
use snap::id::{ChunkId, TreeId};
use snap::pack::{PackKind, PackReader, PackWriter};
use snap::storage::{LocalStorage, Storage, pack_key};
use snap::tree::{Entry, Kind, Payload, Tree};

fn noise(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"seed")
        .finalize_xof()
        .fill(&mut out);
    out
}

fn text(len: usize) -> Vec<u8> {
    let words = [
        "user", "event", "error", "sync", "cache", "request", "status", "42", "1337", "ok",
    ];
    let mut s = Vec::with_capacity(len + 16);
    let mut x: u64 = 1;
    while s.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.extend_from_slice(words[(x >> 60) as usize % words.len()].as_bytes());
        s.push(if (x >> 40).is_multiple_of(10) {
            b'\n'
        } else {
            b' '
        });
    }
    s.truncate(len);
    s
}

/// Half text, half noise, in 64 KiB stripes: "mixed" app data.
fn mixed(len: usize) -> Vec<u8> {
    let t = text(len);
    let n = noise(len);
    (0..len)
        .map(|i| if (i / 65536) % 2 == 0 { t[i] } else { n[i] })
        .collect()
}

fn chunker(c: &mut Criterion) {
    let data = mixed(32 << 20);
    let params = ChunkerParams::from(&RepoConfig::default());
    let mut g = c.benchmark_group("chunker");
    g.sample_size(10)
        .throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("fastcdc-16k", |b| {
        b.iter(|| chunk_lengths(black_box(&data[..]), params).unwrap())
    });
    g.finish();
}

fn hash(c: &mut Criterion) {
    let data = noise(16 << 20);
    let mut g = c.benchmark_group("blake3");
    g.sample_size(10)
        .throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("16k-chunks", |b| {
        b.iter(|| {
            data.chunks(16384)
                .map(ChunkId::of)
                .fold(0u8, |a, id| a ^ id.0[0])
        })
    });
    g.finish();
}

fn compress(c: &mut Criterion) {
    let mut g = c.benchmark_group("zstd");
    g.sample_size(10);
    for (name, data) in [
        ("text", text(8 << 20)),
        ("mixed", mixed(8 << 20)),
        ("noise", noise(8 << 20)),
    ] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        for level in [1, 3] {
            g.bench_with_input(
                BenchmarkId::new(format!("level{level}"), name),
                &data,
                |b, data| {
                    let mut comp = Compressor::new(level).unwrap();
                    b.iter(|| {
                        data.chunks(16384)
                            .map(|ch| comp.compress(ch).unwrap().1.len())
                            .sum::<usize>()
                    })
                },
            );
        }
    }
    g.finish();
}

fn pack(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    let data = noise(16 << 20);
    let chunks: Vec<&[u8]> = data.chunks(16384).collect();
    let mut g = c.benchmark_group("pack");
    g.sample_size(10)
        .throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("write-16MiB-fsync", |b| {
        b.iter(|| {
            let mut w = PackWriter::create(&storage, PackKind::Data).unwrap();
            for ch in &chunks {
                w.add(
                    snap::pack::Blob::whole(ChunkId::of(ch), Codec::Raw, ch.len() as u32),
                    ch,
                )
                .unwrap();
            }
            let f = w.finish().unwrap();
            storage.delete(&pack_key(&f.id)).unwrap();
        })
    });
    let mut w = PackWriter::create(&storage, PackKind::Data).unwrap();
    for ch in &chunks {
        w.add(
            snap::pack::Blob::whole(ChunkId::of(ch), Codec::Raw, ch.len() as u32),
            ch,
        )
        .unwrap();
    }
    let f = w.finish().unwrap();
    g.bench_function("read-verify-all-chunks", |b| {
        b.iter(|| {
            let r = PackReader::open(&storage, &f.id).unwrap();
            r.footer()
                .unwrap()
                .entries
                .iter()
                .map(|e| r.read_chunk(e, None).unwrap().len())
                .sum::<usize>()
        })
    });
    g.finish();
}

fn index(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let repo_path = dir.path().join("repo");
    snap::Repository::init(&repo_path, &RepoConfig::default()).unwrap();
    // The index alone: what a create's inserts and lookups cost.
    let (index, _) =
        snap::index::Index::open(&repo_path.join("index.db"), &repo_path, false).unwrap();
    let n = 100_000u32;
    let entries: Vec<snap::pack::PackEntry> = (0..n)
        .map(|i| snap::pack::PackEntry {
            id: ChunkId::of(&i.to_le_bytes()),
            offset: 16 + i,
            stored_len: 1,
            raw_len: 1,
            codec: Codec::Raw,
            base: None,
            inner: 0,
        })
        .collect();
    let mut g = c.benchmark_group("index");
    g.sample_size(10).throughput(Throughput::Elements(n as u64));
    let mut round = 0u64;
    g.bench_function("insert-100k-chunks", |b| {
        b.iter(|| {
            round += 1;
            let pack = snap::pack::FinishedPack {
                id: snap::PackId::of(&round.to_le_bytes()),
                size: 1 << 20,
                kind: PackKind::Data,
                entries: entries.clone(),
            };
            index.begin().unwrap();
            index.insert_pack(&pack).unwrap();
            index.rollback().unwrap();
        })
    });
    index.begin().unwrap();
    index
        .insert_pack(&snap::pack::FinishedPack {
            id: snap::PackId::of(b"p"),
            size: 1 << 20,
            kind: PackKind::Data,
            entries: entries.clone(),
        })
        .unwrap();
    index.commit().unwrap();
    g.bench_function("lookup-100k-chunks", |b| {
        b.iter(|| {
            entries
                .iter()
                .filter(|e| index.has_chunk(&e.id).unwrap())
                .count()
        })
    });
    g.finish();
}

fn tree(c: &mut Criterion) {
    let entries: Vec<Entry> = (0..10_000u32)
        .map(|i| Entry {
            name: format!("file-{i:06}.json").into_bytes(),
            kind: Kind::File,
            flags: 0,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime_ns: 1_700_000_000_000_000_000 + i as i64,
            ctime_ns: 1_700_000_000_000_000_000 + i as i64,
            size: 5000,
            dev: 1,
            ino: i as u64,
            nlink: 1,
            payload: Payload::Chunks(vec![ChunkId::of(&i.to_le_bytes())]),
            xattrs: Vec::new(),
        })
        .collect();
    let t = Tree::new(entries);
    let enc = t.encode();
    let mut g = c.benchmark_group("tree");
    g.sample_size(10)
        .throughput(Throughput::Bytes(enc.len() as u64));
    g.bench_function("encode-10k-entries", |b| {
        b.iter(|| TreeId::of(&black_box(&t).encode()))
    });
    g.bench_function("decode-10k-entries", |b| {
        b.iter(|| Tree::decode(black_box(&enc)).unwrap().entries.len())
    });
    g.finish();
}

criterion_group!(benches, chunker, hash, compress, pack, index, tree);
criterion_main!(benches);
