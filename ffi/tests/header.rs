//! `ffi/include/snap.h` is what cbindgen makes from the source: the header
//! apps compile against never drifts from the ABI. After changing the ABI,
//! regenerate it with `SNAP_BLESS=1 cargo test -p snap-ffi --test header`.

use std::path::Path;

#[test]
fn the_checked_in_header_is_what_cbindgen_generates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = dir.join("include/snap.h");
    if std::env::var_os("SNAP_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the header");
        return;
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} differs from what cbindgen generates from ffi/src; regenerate it with `SNAP_BLESS=1 cargo test -p snap-ffi --test header` and commit it",
        path.display()
    );
}
