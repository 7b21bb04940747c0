use std::fs;

use crate::common::*;

#[test]
fn identical_files_are_stored_once() {
    let env = Env::new();
    let src = env.path("src");
    let data = noise(7, 2_000_000);
    write(&src.join("a.bin"), &data);
    write(&src.join("b.bin"), &data);
    write(&src.join("sub/c.bin"), &data);
    let snap = env.create(&src);
    let raw = snap["stats"]["new_raw_bytes"].as_u64().unwrap();
    assert_eq!(raw, 2_000_000, "three copies store one copy of the data");
    assert!(
        env.repo_bytes() < 2_300_000,
        "repository holds {} bytes",
        env.repo_bytes()
    );
}

#[test]
fn an_unchanged_second_snapshot_costs_under_one_percent() {
    let env = Env::new();
    let src = env.path("src");
    make_rich_tree(&src);
    env.create(&src);
    let before = env.repo_bytes();
    let data_bytes = dir_bytes(&src);
    let second = env.create(&src);
    let grown = env.repo_bytes().saturating_sub(before);
    assert_eq!(second["stats"]["new_chunks"], 0);
    assert_eq!(
        second["stats"]["read_bytes"], 0,
        "unchanged files are not read again"
    );
    assert!(
        grown * 100 < data_bytes,
        "second snapshot grew the repository by {grown} bytes for {data_bytes} bytes of data"
    );
}

#[test]
fn a_small_edit_in_a_large_file_shares_nearly_all_chunks() {
    let env = Env::new();
    let src = env.path("src");
    let mut data = noise(3, 8_000_000);
    write(&src.join("big.bin"), &data);
    env.create(&src);
    for b in &mut data[4_000_000..4_000_010] {
        *b ^= 0xff;
    }
    // Also an insertion: content-defined chunking resynchronises after it.
    data.splice(6_000_000..6_000_000, b"inserted".iter().copied());
    fs::write(src.join("big.bin"), &data).unwrap();
    let second = env.create(&src);
    let new_raw = second["stats"]["new_raw_bytes"].as_u64().unwrap();
    assert!(new_raw > 0);
    assert!(
        new_raw < 300_000,
        "an edit and an insertion stored {new_raw} new bytes of 8 MB"
    );
    let out = env.path("out");
    env.restore_to("latest", &out);
    assert_eq!(fs::read(out.join("big.bin")).unwrap(), data);
}
