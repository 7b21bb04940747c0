//! Any bytes: decoding a tree returns an error or a tree, never panics, and
//! a tree that decodes re-encodes to exactly the same bytes (the encoding is
//! canonical, so its id is stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use snap::tree::Tree;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode(data) {
        assert_eq!(tree.encode(), data);
    }
});
