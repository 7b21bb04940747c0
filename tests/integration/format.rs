//! The on-disk formats through the library: packs and the index version.

use snap::compress::Codec;
use snap::id::ChunkId;
use snap::pack::{Blob, PackKind, PackReader, PackWriter};
use snap::storage::{LocalStorage, pack_key};

use crate::common::*;

#[test]
fn pack_round_trip_and_the_footer_alone_lists_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");
    let storage = LocalStorage::new(dir.path());
    let chunks: Vec<Vec<u8>> = (0..20).map(|i| noise(i, 1000 + i as usize * 517)).collect();
    let mut w = PackWriter::create(&storage, PackKind::Data).unwrap();
    for (i, c) in chunks.iter().enumerate() {
        let (codec, stored) = if i % 2 == 0 {
            (Codec::Zstd, zstd::bulk::compress(c, 3).unwrap())
        } else {
            (Codec::Raw, c.clone())
        };
        w.add(Blob::whole(ChunkId::of(c), codec, c.len() as u32), &stored)
            .unwrap();
    }
    let finished = w.finish().unwrap();
    let path = dir.path().join(pack_key(&finished.id));
    assert!(path.is_file());
    // The pack id is the hash of the footer entries, which the trailer holds.
    let bytes = std::fs::read(&path).unwrap();
    let footer = &bytes[bytes.len() - 48 - 48 * chunks.len()..bytes.len() - 48];
    assert_eq!(blake3::hash(footer).as_bytes(), finished.id.as_bytes());
    assert_eq!(
        &bytes[bytes.len() - 40..bytes.len() - 8],
        finished.id.as_bytes()
    );
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&packs)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp")
        })
        .collect();
    assert!(leftovers.is_empty());

    let reader = PackReader::open(&storage, &finished.id).unwrap();
    let footer = reader.footer().unwrap();
    assert_eq!(footer.entries, finished.entries);
    assert_eq!(footer.id, finished.id);
    for (e, c) in footer.entries.iter().zip(&chunks) {
        assert_eq!(e.id, ChunkId::of(c));
        let got = reader.read_chunk(e, None).unwrap();
        assert_eq!(&got, c);
    }
}

#[test]
fn damaged_packs_are_reported_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    let data = noise(9, 5000);
    let mut w = PackWriter::create(&storage, PackKind::Data).unwrap();
    w.add(Blob::whole(ChunkId::of(&data), Codec::Raw, 5000), &data)
        .unwrap();
    let f = w.finish().unwrap();
    let path = dir.path().join(pack_key(&f.id));
    let good = std::fs::read(&path).unwrap();
    let open = || PackReader::open(&storage, &f.id).unwrap();
    let read_footer = || open().footer().map(|f| f.entries);

    // A flipped byte in the chunk frame: the footer is fine, the chunk is not.
    let mut bad = good.clone();
    bad[100] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let e = read_footer().unwrap()[0];
    let err = open().read_chunk(&e, None).unwrap_err();
    assert!(err.to_string().contains("BLAKE3"), "{err}");
    // Errors name the pack by id, not by where it is stored.
    assert!(err.to_string().contains(&f.id.to_hex()), "{err}");
    assert!(!err.to_string().contains(".pack"), "{err}");

    // A flipped byte in the footer.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 60] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(read_footer().unwrap_err().to_string().contains("footer"));

    // Truncated.
    std::fs::write(&path, &good[..good.len() - 10]).unwrap();
    assert!(read_footer().is_err());
    // Gone.
    std::fs::remove_file(&path).unwrap();
    let err = PackReader::open(&storage, &f.id).err().unwrap();
    assert!(
        err.is_damage() && err.to_string().contains("missing"),
        "{err}"
    );
}

#[test]
fn a_repository_of_a_newer_format_is_refused() {
    let env = Env::new();
    let conn = rusqlite::Connection::open(env.repo.join("index.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let out = env.snap().args(["list"]).assert().failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("newer") && err.contains("99"), "{err}");
}

#[test]
fn an_index_that_is_not_a_database_is_reported() {
    let env = Env::new();
    std::fs::write(
        env.repo.join("index.db"),
        b"this is not sqlite, just text that is long enough to look like a header..",
    )
    .unwrap();
    let _ = std::fs::remove_file(env.repo.join("index.db-wal"));
    let _ = std::fs::remove_file(env.repo.join("index.db-shm"));
    let out = env.snap().args(["list"]).assert().failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("index.db"), "{err}");
}

#[test]
fn golden_bytes() {
    use snap::snapshot::{RootMeta, Snapshot, SnapshotStats};
    // A tree pack's header names its kind.
    assert_eq!(
        snap::pack::encode_header(PackKind::Tree),
        *b"SNAPPACK\x05\x00\x00\x00\x01\x00\x00\x00"
    );
    // How a snapshot id is computed, frozen.
    let root = snap::TreeId::of(b"root");
    let id = Snapshot::compute_id(
        1_700_000_000_000_000_000,
        "host",
        b"/data/app",
        &root,
        None,
        42,
    );
    assert_eq!(
        id.to_hex(),
        "adb9a708f86698d0b0f465cd2e7396bfece3e12967d4f0f95fadc99db93b920c"
    );
    // A snapshot object's bytes, frozen.
    let s = Snapshot {
        id,
        time_ns: 1_700_000_000_000_000_000,
        host: "host".into(),
        source: "/data/app".into(),
        root,
        parent: None,
        tags: vec!["pre-migration".into()],
        labels: [("app".to_string(), "notes".to_string())].into(),
        complete: true,
        pinned: false,
        unreadable: vec![],
        stats: SnapshotStats::default(),
        root_meta: RootMeta {
            mode: 0o755,
            uid: 1000,
            gid: 1000,
            mtime_ns: 5,
        },
        sources: vec![],
    };
    let enc = snap::objects::encode_snapshot(&s, 42);
    assert_eq!(
        blake3::hash(&enc).to_hex().as_str(),
        "d970e31813f352a91e68894f1142bce7553ba73c41a343c1937d7ed38af51080",
        "{}",
        String::from_utf8_lossy(&enc)
    );
    assert_eq!(snap::objects::decode_snapshot(&enc).unwrap().id, id);
}

/// A data pack holds a delta and names its base in the table after the
/// entries; the pack id covers both.
#[test]
fn a_pack_names_each_delta_base_after_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    let base_page = noise(1, 4096);
    let mut page = base_page.clone();
    page[100..121].copy_from_slice(b"a changed row, twenty");
    let delta = snap::compress::delta_compress(3, &base_page, &page)
        .unwrap()
        .expect("a small change makes a small delta");
    assert!(delta.len() < 200, "{} bytes", delta.len());
    let (base_id, page_id) = (ChunkId::of(&base_page), ChunkId::of(&page));

    // A tree pack cannot hold a delta; a delta needs a base.
    let mut trees = PackWriter::create(&storage, PackKind::Tree).unwrap();
    let as_delta = Blob {
        id: page_id,
        codec: Codec::Delta,
        raw_len: 4096,
        base: Some(base_id),
        inner: 0,
    };
    assert!(trees.add(as_delta, &delta).is_err());
    let mut w = PackWriter::create(&storage, PackKind::Data).unwrap();
    let no_base = Blob {
        base: None,
        ..as_delta
    };
    assert!(w.add(no_base, &delta).is_err());
    w.add(Blob::whole(base_id, Codec::Raw, 4096), &base_page)
        .unwrap();
    w.add(as_delta, &delta).unwrap();
    let f = w.finish().unwrap();

    let bytes = std::fs::read(dir.path().join(pack_key(&f.id))).unwrap();
    assert_eq!(&bytes[..16], b"SNAPPACK\x05\x00\x00\x00\x00\x00\x00\x00");
    let n = bytes.len();
    // Trailer: 2 entries, 1 base; the base table is the 32 bytes before it.
    assert_eq!(&bytes[n - 48..n - 40], &[2, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(&bytes[n - 80..n - 48], base_id.as_bytes());
    assert_eq!(
        bytes[n - 80 - 48 + 44],
        2,
        "the second entry's codec is delta"
    );
    let covered = &bytes[n - 48 - 32 - 2 * 48..n - 48];
    assert_eq!(blake3::hash(covered).as_bytes(), f.id.as_bytes());

    let r = PackReader::open(&storage, &f.id).unwrap();
    let footer = r.footer().unwrap();
    assert_eq!(footer.entries, f.entries);
    assert_eq!(footer.entries[1].base, Some(base_id));
    let e = footer.entries[1];
    let read = |base: Option<&[u8]>| r.read_chunk(&e, base);
    assert_eq!(read(Some(&base_page)).unwrap(), page);
    // Without its base, or against another one, it is an error, never
    // wrong bytes.
    assert!(read(None).is_err());
    assert!(read(Some(&noise(2, 4096))).is_err());

    // The same pack under the header of an unreleased older format is
    // refused, never read with other rules.
    for old in [2u8, 3, 4] {
        let mut old_header = bytes.clone();
        old_header[8] = old;
        std::fs::write(dir.path().join(pack_key(&f.id)), &old_header).unwrap();
        let err = PackReader::open(&storage, &f.id)
            .unwrap()
            .footer()
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("pack version {old}")),
            "{err}"
        );
    }
}

/// A group's members share one frame, each entry says where its chunk
/// starts in the frame's content; a hostile entry (outside the content, a
/// frame too large) is damage.
#[test]
fn packs_hold_groups_and_refuse_hostile_ones() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    let pages: Vec<Vec<u8>> = (0..5u32)
        .map(|i| {
            format!("page {i} of rows, rows and rows; ")
                .repeat(130)
                .into_bytes()
        })
        .collect();
    let raw = pages.concat();
    let frame = zstd::bulk::compress(&raw, 3).unwrap();
    let mut at = 0u32;
    let blobs: Vec<Blob> = pages
        .iter()
        .map(|p| {
            let b = Blob::grouped(ChunkId::of(p), p.len() as u32, at);
            at += p.len() as u32;
            b
        })
        .collect();

    // A group that runs past the bound of a group's content is refused.
    let mut w = PackWriter::create(&storage, PackKind::Data).unwrap();
    let past = Blob::grouped(ChunkId::of(b"x"), 10, (1 << 20) - 5);
    assert!(w.add_frame(&[past], &frame).is_err());
    let mut w = PackWriter::create(&storage, PackKind::Tree).unwrap();
    w.add_frame(&blobs, &frame).unwrap();
    let trees = w.finish().unwrap();
    let r = PackReader::open(&storage, &trees.id).unwrap();
    let entries = r.footer().unwrap().entries;
    assert_eq!(entries.len(), pages.len());
    for (e, p) in entries.iter().zip(&pages) {
        assert_eq!(&r.read_chunk(e, None).unwrap(), p);
    }
    let mut w = PackWriter::create(&storage, PackKind::Data).unwrap();
    let loose = noise(9, 3000);
    w.add(Blob::whole(ChunkId::of(&loose), Codec::Raw, 3000), &loose)
        .unwrap();
    w.add_frame(&blobs, &frame).unwrap();
    let f = w.finish().unwrap();
    let r = PackReader::open(&storage, &f.id).unwrap();
    let footer = r.footer().unwrap();
    assert_eq!(footer.entries, f.entries);
    let members = &footer.entries[1..];
    assert!(members.iter().all(|e| e.offset == members[0].offset
        && e.stored_len == frame.len() as u32
        && e.codec == Codec::Grouped));
    for (e, p) in members.iter().zip(&pages) {
        assert_eq!(&r.read_chunk(e, None).unwrap(), p);
    }
    // The inner offset is the entry's last three bytes.
    let bytes = std::fs::read(dir.path().join(pack_key(&f.id))).unwrap();
    let n = bytes.len();
    let third = n - 48 - 3 * 48;
    assert_eq!(bytes[third + 44], 3, "codec grouped");
    let inner = (pages[0].len() + pages[1].len()) as u32;
    assert_eq!(&bytes[third + 45..third + 48], &inner.to_le_bytes()[..3]);

    // An entry pointing past its group's content, or at another chunk's
    // bytes, reads as damage, never as wrong bytes.
    let mut e = members[1];
    e.inner = raw.len() as u32 - 10;
    let err = r.read_chunk(&e, None).unwrap_err();
    assert!(
        err.is_damage() && err.to_string().contains("outside its group"),
        "{err}"
    );
    e.inner = 0;
    assert!(r.read_chunk(&e, None).unwrap_err().is_damage());
    // A frame that claims more content than a group may hold.
    let big = zstd::bulk::compress(&vec![7u8; (1 << 20) + 1], 3).unwrap();
    let mut w = PackWriter::create(&storage, PackKind::Data).unwrap();
    let one = Blob::grouped(ChunkId::of(&[7u8; 10]), 10, 0);
    w.add_frame(&[one, Blob::grouped(ChunkId::of(&[7u8; 11]), 11, 10)], &big)
        .unwrap();
    let f = w.finish().unwrap();
    let r = PackReader::open(&storage, &f.id).unwrap();
    let err = r
        .read_chunk(&r.footer().unwrap().entries[0], None)
        .unwrap_err();
    assert!(
        err.is_damage() && err.to_string().contains("larger than a group"),
        "{err}"
    );
}
