//! One module per command: each turns its arguments into library options,
//! calls the library, and renders the result (text or `--json`) on stdout.

pub mod check;
pub mod copy;
pub mod create;
pub mod diff;
pub mod docs;
pub mod dump;
pub mod find;
pub mod gc;
pub mod guard;
pub mod init;
pub mod key;
pub mod list;
pub mod ls;
pub mod password;
pub mod pin;
pub mod repair;
pub mod restore;
pub mod stats;
pub mod tag;

use std::path::Path;

/// A path as JSON and text show it: lossy UTF-8.
pub fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
