//! One module per command added since the first release: each turns its
//! arguments into library options, calls the library, and renders the
//! result (text or `--json`) on stdout. (The older commands still live in
//! main.rs.)

pub mod diff;
pub mod docs;
pub mod dump;
pub mod find;
pub mod guard;
pub mod stats;
pub mod tag;

use std::path::Path;

/// A path as JSON and text show it: lossy UTF-8.
pub fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
