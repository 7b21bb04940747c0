//! Any bytes as a pack file: the footer decoder and the chunk reader return
//! errors, never panic, and never allocate beyond the limits; any chunk they
//! do return matches its BLAKE3 id.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use snap::id::ChunkId;
use snap::pack::{PackReader, read_footer};

fuzz_target!(|data: &[u8]| {
    let mut f = tempfile::NamedTempFile::new_in(std::env::temp_dir()).unwrap();
    f.write_all(data).unwrap();
    f.flush().unwrap();
    let path = f.path();
    if let Ok(entries) = read_footer(path) {
        let reader = PackReader::open(path).unwrap();
        for e in entries {
            if let Ok(chunk) = reader.read_chunk(&e.id, e.offset as u64, e.stored_len, e.raw_len, e.codec) {
                assert_eq!(ChunkId::of(&chunk), e.id);
            }
        }
    }
});
