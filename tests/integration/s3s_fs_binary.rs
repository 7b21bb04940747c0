//! Where the s3s-fs binary is: `$SNAP_S3S_FS`, else `s3s-fs` on PATH, else
//! the tools folder `.ci/run` installs it into
//! (`${XDG_CACHE_HOME:-$HOME/.cache}/snap-tools/bin`). Shared by the
//! integration tests and the end-to-end benchmark's s3 set.

use std::path::PathBuf;

pub fn find_s3s_fs() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SNAP_S3S_FS") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("s3s-fs"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = tools_dir()?.join("bin/s3s-fs");
        p.is_file().then_some(p)
    })
}

/// The tools folder: `${XDG_CACHE_HOME:-$HOME/.cache}/snap-tools`.
#[allow(dead_code)] // the benchmark only finds the binary
pub fn tools_dir() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("snap-tools"))
}
