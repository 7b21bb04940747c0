//! The on-disk formats through the library: packs and the index version.

use snap::compress::Codec;
use snap::id::ChunkId;
use snap::pack::{PackKind, PackReader, PackWriter};
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
        w.add(ChunkId::of(c), codec, c.len() as u32, &stored)
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
        let got = reader
            .read_chunk(&e.id, e.offset as u64, e.stored_len, e.raw_len, e.codec)
            .unwrap();
        assert_eq!(&got, c);
    }
}

#[test]
fn damaged_packs_are_reported_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    let data = noise(9, 5000);
    let mut w = PackWriter::create(&storage, PackKind::Data).unwrap();
    w.add(ChunkId::of(&data), Codec::Raw, 5000, &data).unwrap();
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
    let err = open()
        .read_chunk(&e.id, e.offset as u64, e.stored_len, e.raw_len, e.codec)
        .unwrap_err();
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
fn format_2_golden_bytes() {
    use snap::snapshot::{RootMeta, Snapshot, SnapshotStats};
    // A tree pack's header names its kind.
    assert_eq!(
        snap::pack::encode_header(PackKind::Tree),
        *b"SNAPPACK\x02\x00\x00\x00\x01\x00\x00\x00"
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
