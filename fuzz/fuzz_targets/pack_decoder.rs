//! Any bytes as a pack object: the footer decoder, the chunk reader and
//! the salvage of a damaged footer (`repair index`) return errors, never
//! panic, and never allocate beyond the limits; any chunk they do return,
//! and any blob salvage keeps, matches its BLAKE3 id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snap::id::{ChunkId, PackId};
use snap::pack::PackReader;
use snap::storage::{MemoryStorage, Storage, pack_key};

fuzz_target!(|data: &[u8]| {
    let storage = MemoryStorage::new();
    let id = PackId([7; 32]);
    storage.put(&pack_key(&id), data).unwrap();
    let reader = PackReader::open(&storage, &id).unwrap();
    if let Ok(footer) = reader.footer() {
        for e in footer.entries {
            if e.base.is_none()
                && let Ok(chunk) = reader.read_chunk(&e, None)
            {
                assert_eq!(ChunkId::of(&chunk), e.id);
            }
        }
    }
    if let Ok(salvaged) = reader.salvage() {
        let max = salvaged.kind.blob_max();
        for (stored, entries) in &salvaged.frames {
            for e in entries {
                let proven = snap::pack::decode_blob(reader.ids(), &id, e, stored, max, None);
                assert!(proven.is_ok(), "salvage kept a blob that does not prove itself");
            }
        }
    }
});
