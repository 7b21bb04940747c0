//! Any bytes as a pack object: the footer decoder and the chunk reader
//! return errors, never panic, and never allocate beyond the limits; any
//! chunk they do return matches its BLAKE3 id.
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
            if let Ok(chunk) = reader.read_chunk(&e.id, e.offset as u64, e.stored_len, e.raw_len, e.codec) {
                assert_eq!(ChunkId::of(&chunk), e.id);
            }
        }
    }
});
